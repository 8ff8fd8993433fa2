"""ONNX ops that ONNX defines as functions, expanded into their bodies where kernelforge refuses the op itself.

ONNX writes many ops as functions of simpler ones (``Attention`` is 60-odd Shape/MatMul/Softmax/Where nodes
whose exact form depends on the node's attributes and input types). kernelforge converts such an op into its own
fused kernel, which cannot give everything the op can: ``Attention``'s ``qk_matmul_output`` (the score matrix a
fused kernel never stores) or a ``softmax_precision`` other than float32. For a node refused only for such a
reason, :func:`expand` returns the nodes of the op's function body, and the importer converts those instead (the
scores then run as their own MatMul and Softmax kernels). The ops of :data:`EXPANDED_OPS` have no converter of
their own and always run so. Shape arithmetic in a body folds at load, as in any exported model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import onnx
from onnx import helper

__all__ = ["EXPANDED_OPS", "EXPANDED_WHEN_REFUSED", "expand"]

EXPANDED_OPS = ("CenterCropPad", "DepthToSpace", "GroupNormalization", "SpaceToDepth", "SwiGLU")
"""ONNX op types kernelforge has no converter for and runs as their function bodies (of ops it converts)."""
EXPANDED_WHEN_REFUSED = ("Attention",)
"""ONNX op types whose nodes run as their function bodies where the converter refuses them: what they ask for
is valid ONNX that one fused kernel cannot give (Attention's ``qk_matmul_output``, a reduced
``softmax_precision``). Other refusals stand: an invalid attribute (a Gelu ``approximate='erf'``) is reported,
never expanded into a body that would quietly ignore it."""


def _function(node: onnx.NodeProto, opset: int, types: Mapping[str, int]) -> onnx.FunctionProto | None:
    """Return the function body ONNX defines for ``node`` at ``opset`` (built for its attributes), or None."""
    try:  # Any: the schema's function accessors are missing from onnx's type stubs
        schema: Any = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    if schema.has_context_dependent_function:
        # the builder reads the inputs' element types (float or float16 bodies differ in their Casts)
        input_types = [
            helper.make_tensor_type_proto(types.get(name, onnx.TensorProto.FLOAT), None).SerializeToString()
            if name
            else onnx.TypeProto().SerializeToString()
            for name in node.input
        ]
        try:
            raw = schema.get_context_dependent_function(node.SerializeToString(), input_types)
        except Exception:  # the builder refuses the node (an attribute it does not take): no expansion
            return None
        return onnx.FunctionProto.FromString(raw) if raw else None
    if schema.has_function:
        return schema.function_body
    return None


def expand(node: onnx.NodeProto, opset: int, types: Mapping[str, int], prefix: str) -> list[onnx.NodeProto] | None:
    """Return ``node`` as the nodes of its ONNX function body, or None when ONNX defines no body kernelforge takes.

    Args:
        node: A default-domain node.
        opset: The model's default-domain opset.
        types: Element type of the values the model declares (or shape inference found).
        prefix: Prepended to the body's internal value and node names (unique in the model).

    Returns:
        The body's nodes reading the node's inputs and writing its outputs (internal values renamed, attribute
        references resolved to the node's attributes), in the body's (topological) order; None for an op with
        no function body, or a body with subgraphs or ops of other domains.
    """
    function = _function(node, opset, types)
    if function is None:
        return None
    names = {formal: (node.input[k] if k < len(node.input) else "") for k, formal in enumerate(function.input)}
    names.update({formal: node.output[k] for k, formal in enumerate(function.output) if k < len(node.output)})
    attributes = {a.name: a for a in node.attribute}

    def rename(name: str) -> str:
        if not name:
            return ""
        return names[name] if name in names else prefix + name

    nodes = []
    for k, inner in enumerate(function.node):
        if inner.domain not in ("", "ai.onnx"):
            return None
        new = onnx.NodeProto()
        new.op_type, new.domain = inner.op_type, inner.domain
        new.name = f"{prefix}{inner.name or f'{inner.op_type}_{k}'}"
        new.input.extend(rename(name) for name in inner.input)
        new.output.extend(rename(name) for name in inner.output)
        for attribute in inner.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                return None
            if attribute.ref_attr_name:
                if attribute.ref_attr_name in attributes:  # absent: the attribute's default applies
                    resolved = new.attribute.add()
                    resolved.CopyFrom(attributes[attribute.ref_attr_name])
                    resolved.name = attribute.name
            else:
                new.attribute.add().CopyFrom(attribute)
        nodes.append(new)
    return nodes

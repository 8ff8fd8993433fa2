"""Small ONNX models for tests and benchmarks, built with ``onnx.helper`` (no downloads, no files in the repo).

Each builder returns a checker-valid :class:`onnx.ModelProto` with float32 weights from a seeded numpy rng, so
the same arguments give the same model byte for byte. The models are shaped like the real networks whose
structure they copy (MobileNetV2 inverted residuals, ResNet basic blocks) but narrow and on small inputs, so a
software GPU runs them in well under a second. ``opset`` picks the operator set; where an op's signature
changed between opsets (Clip, Pad, Squeeze/Unsqueeze, ReduceMean, Resize, HardSwish), the builders emit the
form that opset defines, so one model family exercises every import path of the importer.

    from kernelforge.testing.models import MODELS, save
    save(MODELS["mobilenet_v2_style"](opset=11), "mnv2.onnx")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_OPSET = 9
"""Oldest opset any builder emits (BatchNormalization lost its ``spatial`` attribute in 9)."""


class _Builder:
    """Accumulates nodes and initializers of one graph under fresh names, with one seeded rng for weights."""

    def __init__(self, name: str, opset: int, seed: int = 0) -> None:
        if opset < MIN_OPSET:
            raise ValueError(f"{name}: opset {opset} is older than the oldest supported ({MIN_OPSET})")
        self.name = name
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        """Return ``base_<k>`` with a per-base counter (names double as node names in error messages)."""
        k = self._count.get(base, 0)
        self._count[base] = k + 1
        return f"{base}_{k}"

    def const(self, base: str, array: np.ndarray) -> str:
        """Add an initializer and return its name."""
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, base: str, values: Sequence[int]) -> str:
        """Add an int64 1-D initializer (shapes, axes, pads) and return its name."""
        return self.const(base, np.asarray(values, dtype=np.int64))

    def floats(self, base: str, values: Sequence[float] | np.ndarray | float) -> str:
        """Add a float32 initializer (a 0-d scalar when ``values`` is a float) and return its name."""
        return self.const(base, np.asarray(values, dtype=np.float32))

    def weight(self, base: str, shape: Sequence[int], fan_in: int) -> str:
        """Add a He-scaled random float32 weight, so activations keep roughly unit scale through the net."""
        data = self.rng.standard_normal(tuple(shape)).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        return self.const(base, data)

    def node(self, op: str, inputs: Sequence[str], base: str | None = None, **attrs: Any) -> str:
        """Add a single-output node and return its output name (the node is named like its output)."""
        out = self.fresh(base or op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    # --- layers -------------------------------------------------------------------------------------

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, group: int = 1, bias: bool = False) -> str:
        """Add a ``k x k`` Conv with "same"-style padding ``k // 2``."""
        w = self.weight("w", (c_out, c_in // group, k, k), fan_in=(c_in // group) * k * k)
        inputs = [x, w]
        if bias:
            inputs.append(self.floats("b", self.rng.uniform(-0.1, 0.1, c_out).tolist()))
        pad = k // 2
        return self.node(
            "Conv", inputs, "conv", kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group
        )

    def batchnorm(self, x: str, channels: int) -> str:
        """Add an inference BatchNormalization with random but well-conditioned statistics."""
        scale = self.floats("bn_scale", self.rng.uniform(0.5, 1.5, channels).tolist())
        bias = self.floats("bn_bias", self.rng.uniform(-0.2, 0.2, channels).tolist())
        mean = self.floats("bn_mean", self.rng.uniform(-0.2, 0.2, channels).tolist())
        var = self.floats("bn_var", self.rng.uniform(0.5, 1.5, channels).tolist())
        return self.node("BatchNormalization", [x, scale, bias, mean, var], "bn", epsilon=1e-5)

    def relu6(self, x: str) -> str:
        """Add Clip(0, 6): attributes before opset 11, scalar inputs from 11 on."""
        if self.opset < 11:
            return self.node("Clip", [x], "relu6", min=0.0, max=6.0)
        return self.node("Clip", [x, self.floats("clip_min", 0.0), self.floats("clip_max", 6.0)], "relu6")

    def gemm(self, x: str, k: int, n: int) -> str:
        """Add Gemm ``x @ W^T + b`` (transB=1, the PyTorch Linear export form)."""
        w = self.weight("fc_w", (n, k), fan_in=k)
        b = self.floats("fc_b", self.rng.uniform(-0.1, 0.1, n).tolist())
        return self.node("Gemm", [x, w, b], "gemm", transB=1)

    def head(self, x: str, channels: int, classes: int) -> str:
        """Add GlobalAveragePool, Flatten and the classifier Gemm."""
        pooled = self.node("GlobalAveragePool", [x], "gap")
        flat = self.node("Flatten", [pooled], "flatten", axis=1)
        return self.gemm(flat, channels, classes)

    def squeeze(self, op: str, x: str, axes: Sequence[int]) -> str:
        """Add Squeeze or Unsqueeze: ``axes`` an attribute before opset 13, an input from 13 on."""
        if self.opset < 13:
            return self.node(op, [x], op.lower(), axes=list(axes))
        return self.node(op, [x, self.ints("axes", axes)], op.lower())

    def model(
        self,
        inputs: Sequence[tuple[str, Sequence[int]]],
        outputs: Sequence[tuple[str, str]],
        dtypes: Mapping[str, int] | None = None,
    ) -> onnx.ModelProto:
        """Return the checked model; ``outputs`` pairs an internal value with its public output name.

        ``dtypes`` gives the ONNX element type of inputs and (public) outputs that are not float32.
        """
        types = dtypes or {}
        # outputs get stable, readable names whatever the internal numbering is: rename the value everywhere
        # (an Identity node would do too, but would make every model exercise Identity)
        renames = dict(outputs)
        for node in self.nodes:
            for slot, names in ((node.input, list(node.input)), (node.output, list(node.output))):
                del slot[:]
                slot.extend(renames.get(n, n) for n in names)
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, types.get(n, TensorProto.FLOAT), list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(p, types.get(p, TensorProto.FLOAT), None) for _, p in outputs],
            initializer=self.initializers,
        )
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            producer_name="kernelforge.testing.models",
            # the oldest IR version the opset allows, so older onnxruntime builds load the file too
            ir_version=helper.find_min_ir_version_for(opsets),
        )
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model


def mlp(opset: int = 13, batch: int = 1, size: int = 64) -> onnx.ModelProto:
    """Two Gemm+Relu layers and a Softmax classifier: ``x [batch, size]`` -> ``y [batch, 10]``."""
    b = _Builder("mlp", opset, seed=1)
    hidden = 2 * size
    h = b.node("Relu", [b.gemm("x", size, hidden)], "relu")
    h = b.node("Relu", [b.gemm(h, hidden, size)], "relu")
    probs = b.node("Softmax", [b.gemm(h, size, 10)], "softmax", axis=1)
    return b.model([("x", (batch, size))], [(probs, "y")])


def small_cnn(opset: int = 13, batch: int = 1, size: int = 32) -> onnx.ModelProto:
    """Conv-BN-Relu, MaxPool, Conv-Relu, GlobalAveragePool, Flatten, Gemm, Softmax on ``[batch, 3, size, size]``."""
    b = _Builder("small_cnn", opset, seed=2)
    h = b.node("Relu", [b.batchnorm(b.conv("x", 3, 8, 3), 8)], "relu")
    h = b.node("MaxPool", [h], "maxpool", kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Relu", [b.conv(h, 8, 16, 3, bias=True)], "relu")
    probs = b.node("Softmax", [b.head(h, 16, 10)], "softmax", axis=1)
    return b.model([("x", (batch, 3, size, size))], [(probs, "y")])


# (expansion factor, output channels, stride) per inverted residual block: MobileNetV2's pattern, narrow
_MNV2_BLOCKS = ((1, 8, 1), (4, 12, 2), (4, 12, 1), (4, 16, 2))


def mobilenet_v2_style(opset: int = 13, batch: int = 1, size: int = 64) -> onnx.ModelProto:
    """A narrow MobileNetV2: stem, four inverted residual blocks (two with a residual Add), 1x1 conv, head.

    Each block is 1x1 expand conv-BN-relu6 (skipped at expansion 1, as in MobileNetV2), 3x3 depthwise
    conv-BN-relu6 (``group`` = channels), 1x1 project conv-BN, and an Add of the block input when the stride
    is 1 and the channel count is unchanged. relu6 is Clip(0, 6) in the form of the opset.
    """
    b = _Builder("mobilenet_v2_style", opset, seed=3)
    channels = 8
    h = b.relu6(b.batchnorm(b.conv("x", 3, channels, 3, stride=2), channels))
    for expand, out, stride in _MNV2_BLOCKS:
        hidden = channels * expand
        y = h
        if expand != 1:
            y = b.relu6(b.batchnorm(b.conv(y, channels, hidden, 1), hidden))
        y = b.relu6(b.batchnorm(b.conv(y, hidden, hidden, 3, stride=stride, group=hidden), hidden))
        y = b.batchnorm(b.conv(y, hidden, out, 1), out)
        if stride == 1 and out == channels:
            y = b.node("Add", [h, y], "residual")
        h, channels = y, out
    h = b.relu6(b.batchnorm(b.conv(h, channels, 64, 1), 64))
    return b.model([("x", (batch, 3, size, size))], [(b.head(h, 64, 10), "logits")])


# (output channels, stride) per basic block; a block that changes either gets a strided 1x1 downsample branch
_RESNET_BLOCKS = ((16, 1), (32, 2), (32, 1), (64, 2))


def resnet18_style(opset: int = 13, batch: int = 1, size: int = 64) -> onnx.ModelProto:
    """A narrow ResNet-18: 7x7/2 stem, 3x3/2 MaxPool, four basic blocks, GlobalAveragePool, Flatten, Gemm."""
    b = _Builder("resnet18_style", opset, seed=4)
    channels = 16
    h = b.node("Relu", [b.batchnorm(b.conv("x", 3, channels, 7, stride=2), channels)], "relu")
    h = b.node("MaxPool", [h], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for out, stride in _RESNET_BLOCKS:
        y = b.node("Relu", [b.batchnorm(b.conv(h, channels, out, 3, stride=stride), out)], "relu")
        y = b.batchnorm(b.conv(y, out, out, 3), out)
        shortcut = h
        if stride != 1 or out != channels:
            shortcut = b.batchnorm(b.conv(h, channels, out, 1, stride=stride), out)
        h = b.node("Relu", [b.node("Add", [shortcut, y], "residual")], "relu")
        channels = out
    return b.model([("x", (batch, 3, size, size))], [(b.head(h, channels, 10), "logits")])


ELEMENTWISE_MIN_OPSET = 11
"""Resize (with the ``roi``/``scales`` inputs the importer reads) needs opset 11."""


def elementwise_mix(opset: int = 13, batch: int = 1, size: int = 8) -> onnx.ModelProto:
    """Every elementwise, layout and shape op the importer maps, on ``x [batch, 4, size, size]``.

    Ranges are kept safe for any real input: Sqrt takes Exp's output, Div divides by ``sqrt(exp(x)) > 0``,
    Pow raises a Sigmoid (``> 0``) to 1.5, Reciprocal takes ``1 + positive``. HardSwish is an op from opset 14;
    older opsets get its textbook decomposition ``x * HardSigmoid(x; 1/6, 1/2)``. Outputs: ``y [batch, 8]``
    (ReduceMean, Squeeze, Unsqueeze, Reshape of the resized tensor) and ``z`` (the resized tensor itself,
    ``[batch, 8, 2 (size + 2), 2 (size + 2)]``), which is both an output and read by the ReduceMean.

    Raises:
        ValueError: For an opset below :data:`ELEMENTWISE_MIN_OPSET`.
    """
    if opset < ELEMENTWISE_MIN_OPSET:
        raise ValueError(f"elementwise_mix needs opset >= {ELEMENTWISE_MIN_OPSET} (Resize), got {opset}")
    b = _Builder("elementwise_mix", opset, seed=5)
    channel_bias = b.floats("channel_bias", b.rng.uniform(-0.5, 0.5, (1, 4, 1, 1)))
    centred = b.node("Sub", ["x", channel_bias], "sub")
    e = b.node("Exp", ["x"], "exp")
    root = b.node("Sqrt", [e], "sqrt")
    ratio = b.node("Div", [centred, root], "div")
    powered = b.node("Pow", [b.node("Sigmoid", ["x"], "sigmoid"), b.floats("exponent", 1.5)], "pow")
    squashed = b.node("Tanh", [ratio], "tanh")
    if opset >= 14:
        swish = b.node("HardSwish", ["x"], "hardswish")
    else:
        gate = b.node("HardSigmoid", ["x"], "hardswish_gate", alpha=1.0 / 6.0, beta=0.5)
        swish = b.node("Mul", ["x", gate], "hardswish")
    hard = b.node("HardSigmoid", [centred], "hardsigmoid", alpha=0.2, beta=0.5)
    leaky = b.node("LeakyRelu", [ratio], "leakyrelu", alpha=0.1)
    upper = b.node("Max", [squashed, powered], "max")
    lower = b.node("Min", [leaky, swish, hard], "min")
    recip = b.node("Reciprocal", [b.node("Sum", [powered, hard, b.floats("one", [1.0])], "sum")], "reciprocal")
    total = b.node("Sum", [upper, lower, recip], "sum")
    cat = b.node("Concat", [total, swish], "concat", axis=1)
    swapped = b.node("Transpose", [cat], "transpose", perm=[0, 1, 3, 2])
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    padded = b.node("Pad", [swapped, b.ints("pads", pads), b.floats("pad_value", 0.25)], "pad", mode="constant")
    roi = b.floats("roi", []) if opset < 13 else ""  # a required (ignored) input before opset 13
    resized = b.node(
        "Resize",
        [padded, roi, b.floats("scales", [1.0, 1.0, 2.0, 2.0])],
        "resize",
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    if opset < 18:
        mean = b.node("ReduceMean", [resized], "reducemean", axes=[2, 3], keepdims=1)
    else:
        mean = b.node("ReduceMean", [resized, b.ints("axes", [2, 3])], "reducemean", keepdims=1)
    flat = b.squeeze("Squeeze", mean, [2, 3])
    lifted = b.squeeze("Unsqueeze", flat, [1])
    reshaped = b.node("Reshape", [lifted, b.ints("shape", [batch, -1])], "reshape")
    return b.model([("x", (batch, 4, size, size))], [(reshaped, "y"), (resized, "z")])


def masked_tokens(opset: int = 13, batch: int = 1, size: int = 8) -> onnx.ModelProto:
    """Typed graph edges and a runtime mask, as token models have them, on ``size`` tokens.

    Inputs: ``ids`` int64 ``[batch, size]`` (0 is padding), ``x`` float32 and ``h`` float16 of the same shape.
    The mask ``ids > 0`` (bool) picks ``x`` or -1e4 before a Softmax over the tokens; ``h`` is added at half
    weight. Outputs: ``y`` float32, ``y16`` (y as float16), ``mask`` (bool) and ``twice`` (``ids + ids``, int64).
    """
    b = _Builder("masked_tokens", opset, seed=7)
    f = b.node("Cast", ["ids"], "ids_f", to=TensorProto.FLOAT)
    mask = b.node("Greater", [f, b.floats("half", 0.5)], "mask")
    masked = b.node("Where", [mask, "x", b.floats("neg", -1e4)], "masked")
    attention = b.node("Softmax", [masked], "softmax", axis=1)
    h = b.node("Cast", ["h"], "h_f", to=TensorProto.FLOAT)
    y = b.node("Add", [attention, b.node("Mul", [h, b.floats("w", 0.5)], "scaled")], "y")
    y16 = b.node("Cast", [y], "y16", to=TensorProto.FLOAT16)
    twice = b.node("Add", ["ids", "ids"], "twice")
    dtypes = {"ids": TensorProto.INT64, "h": TensorProto.FLOAT16, "y16": TensorProto.FLOAT16}
    dtypes |= {"mask": TensorProto.BOOL, "twice": TensorProto.INT64}
    shape = (batch, size)
    return b.model(
        [("ids", shape), ("x", shape), ("h", shape)],
        [(y, "y"), (y16, "y16"), (mask, "mask"), (twice, "twice")],
        dtypes,
    )


MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "mobilenet_v2_style": mobilenet_v2_style,
    "resnet18_style": resnet18_style,
    "elementwise_mix": elementwise_mix,
    "masked_tokens": masked_tokens,
}
"""Builder per model name; each takes ``opset``, ``batch`` and ``size`` keywords."""


def min_opset(name: str) -> int:
    """Return the oldest opset the builder ``name`` supports."""
    return ELEMENTWISE_MIN_OPSET if name == "elementwise_mix" else MIN_OPSET


def save(model: onnx.ModelProto, path: str | PathLike[str]) -> Path:
    """Write a model to ``path`` (parent folders created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(target))
    return target

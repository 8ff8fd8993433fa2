"""The graph-builder layer of :mod:`kernelforge.testing.families`: the node patterns of PyTorch's two exporters.

``torch.onnx.export(dynamo=True)`` (opset 18) writes static shapes as constants, one ``LayerNormalization`` node
and ``Split`` with a sizes input. The TorchScript exporter (``dynamo=False``, opsets 14-17) recomputes every
shape it needs at run time (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``), writes ``x.expand(...)`` as
``ConstantOfShape``/``Mul``/``Equal``/``Where``/``Expand``, literals as ``Constant`` nodes, and LayerNorm out
(``ReduceMean``/``Sub``/``Pow``/``Sqrt``/``Div``) below opset 17. :class:`_Styled` emits either form from one
call, so a family builder describes its network once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from kernelforge.testing.transformers import _Transformer

STYLES = ("dynamo", "legacy")
"""``dynamo``: ``torch.onnx.export(dynamo=True)``; ``legacy``: the TorchScript exporter."""
DYNAMO_OPSET = 18
LEGACY_OPSET = 14


class _Styled(_Transformer):
    """A transformer builder whose shape, expand, split and literal helpers follow one exporter's style."""

    def __init__(self, name: str, style: str, seed: int, opset: int | None = None) -> None:
        if style not in STYLES:
            raise ValueError(f"{name}: style must be one of {STYLES}, got {style!r}")
        self.style = style
        self.legacy = style == "legacy"
        super().__init__(name, opset or (LEGACY_OPSET if self.legacy else DYNAMO_OPSET), seed)

    # --- literals and shapes ------------------------------------------------------------------------------

    def lit(self, base: str, values: np.ndarray | Sequence[int] | int) -> str:
        """Add an int64 literal: a ``Constant`` node (TorchScript) or an initializer (dynamo)."""
        array = np.asarray(values, np.int64)
        if not self.legacy:
            return self.const(base, array)
        out = self.fresh(base)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=numpy_helper.from_array(array)))
        return out

    def dim(self, x: str, axis: int) -> str:
        """Add ``Unsqueeze(Gather(Shape(x), axis), 0)``: the size of one axis as a 1-D int64, at run time."""
        picked = self.node("Gather", [self.node("Shape", [x], "shape"), self.lit("axis", axis)], "dim", axis=0)
        return self.unsqueeze(picked, [0])

    def scalar_dim(self, x: str, axis: int) -> str:
        """Add ``Gather(Shape(x), axis)``: the size of one axis as a 0-d int64."""
        return self.node("Gather", [self.node("Shape", [x], "shape"), self.lit("axis", axis)], "dim", axis=0)

    def sizes(self, dims: Sequence[int], runtime: Mapping[int, tuple[str, int]]) -> str:
        """Return a 1-D int64 shape: constant (dynamo), or concatenated with ``runtime`` sizes (legacy).

        ``runtime`` maps an axis of the result to ``(tensor, axis)`` whose size it takes at run time.
        """
        if not self.legacy or not runtime:
            return self.lit("shape", dims)
        parts = [self.dim(*runtime[i]) if i in runtime else self.lit("size", [d]) for i, d in enumerate(dims)]
        return self.node("Concat", parts, "sizes", axis=0)

    def view(self, x: str, dims: Sequence[int], runtime: Sequence[int] = (), source: str | None = None) -> str:
        """Add ``x.view(dims)``; the legacy form reads the axes ``runtime`` from ``source`` (default ``x``)."""
        return self.node("Reshape", [x, self.sizes(dims, {i: (source or x, i) for i in runtime})], "view")

    def expand(
        self,
        x: str,
        shape: Sequence[int],
        keep: Sequence[int] = (),
        runtime: Mapping[int, tuple[str, int]] | None = None,
    ) -> str:
        """Add ``x.expand(...)`` to the static ``shape``.

        The legacy form is TorchScript's: the sizes list (``-1`` on the axes ``keep``, sizes read at run time
        on the axes of ``runtime``, see :meth:`sizes`) goes through ``Where(Equal(sizes, -1), 1, sizes)``.
        """
        if not self.legacy:
            return self.node("Expand", [x, self.lit("expand_shape", shape)], "expand")
        dims = [-1 if i in keep else d for i, d in enumerate(shape)]
        sizes = self.sizes(dims, runtime or {})
        ones = self.node(
            "ConstantOfShape",
            [self.node("Shape", [sizes], "shape")],
            "ones",
            value=numpy_helper.from_array(np.ones(1, np.int64)),
        )
        unset = self.node("Equal", [sizes, self.node("Mul", [ones, self.lit("minus_one", -1)], "neg")], "unset")
        return self.node("Expand", [x, self.node("Where", [unset, ones, sizes], "expand_sizes")], "expand")

    def split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:
        """Add ``x.split(sizes, axis)``: one ``Split`` (dynamo) or a ``Slice`` per part (legacy)."""
        if not self.legacy:
            parts = [self.fresh("part") for _ in sizes]
            self.nodes.append(
                helper.make_node("Split", [x, self.ints("split", sizes)], parts, name=self.fresh("split"), axis=axis)
            )
            return parts
        bounds = np.cumsum([0, *sizes])
        return [self.slice(x, int(lo), int(hi), axis) for lo, hi in itertools.pairwise(bounds)]

    def chunk(self, x: str, parts: int, size: int, axis: int) -> list[str]:
        """Add ``x.chunk(parts, axis)`` of an axis of ``size``: ``Split(num_outputs=parts)`` (opset 18) or Slices."""
        if self.legacy:
            return self.split(x, [size // parts] * parts, axis)
        names = [self.fresh("chunk") for _ in range(parts)]
        self.nodes.append(helper.make_node("Split", [x], names, name=self.fresh("split"), axis=axis, num_outputs=parts))
        return names

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        """Add ``Slice(x, [start], [end], [axis])`` with literal bounds."""
        inputs = [x, self.lit("starts", [start]), self.lit("ends", [end]), self.lit("axes", [axis])]
        return self.node("Slice", inputs, "slice")

    # --- layers -----------------------------------------------------------------------------------------

    def conv_nd(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, rank: int = 2, bias: bool = True) -> str:
        """Add a 1-D or 2-D Conv with padding ``k // 2`` (and a bias, as ``nn.Conv`` has by default)."""
        w = self.weight("w", (c_out, c_in) + (k,) * rank, fan_in=c_in * k**rank)
        inputs = [x, w] + ([self.floats("b", self.rng.uniform(-0.1, 0.1, c_out))] if bias else [])
        return self.node(
            "Conv", inputs, "conv", kernel_shape=[k] * rank, strides=[stride] * rank, pads=[k // 2] * (2 * rank)
        )

    def upsample(self, x: str, mode: str) -> str:
        """Add ``nn.Upsample(scale_factor=2)`` as Resize of ``scales`` (TorchScript's with an empty ``roi`` tensor).

        ``mode`` is ``nearest`` (``asymmetric`` coordinates, ``floor``) or ``bilinear`` (``align_corners=True``).
        """
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"upsample: mode must be 'nearest' or 'bilinear', got {mode!r}")
        roi = self.floats("roi", []) if self.legacy else ""
        scales = self.floats("scales", [1.0, 1.0, 2.0, 2.0])
        nearest = mode == "nearest"
        return self.node(
            "Resize",
            [x, roi, scales],
            "upsample",
            mode="nearest" if nearest else "linear",
            coordinate_transformation_mode="asymmetric" if nearest else "align_corners",
            nearest_mode="floor",
        )

    def silu(self, x: str) -> str:
        """Add ``x * Sigmoid(x)`` (both exporters write ``nn.SiLU`` so at opset 18 and below)."""
        return self.node("Mul", [x, self.node("Sigmoid", [x], "sigmoid")], "silu")

    def transformer_block(self, x: str, dims: tuple[int, int, int], heads: int, layer: int = 0) -> str:
        """Add a pre-LN encoder block on ``x [batch, seq, hidden]``: LN, q/k/v, attention, proj, LN, GELU MLP.

        q, k and v are separate ``nn.Linear`` layers (k without a bias, as Whisper's); the legacy form scales q
        and Kᵀ by ``d^-1/4`` each (OpenAI Whisper), the dynamo form divides the scores by ``sqrt(d)``.
        """
        hidden = dims[2]
        head_dim = hidden // heads
        y = self.layernorm(x, hidden)
        q = self.heads(self.linear(y, hidden, hidden, "q_proj"), dims, heads)
        k = self.heads(self.node("MatMul", [y, self.weight("k_w", (hidden, hidden), hidden)], "k_proj"), dims, heads)
        v = self.heads(self.linear(y, hidden, hidden, "v_proj"), dims, heads)
        k_t = self.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
        context = self.attention(q, k_t, v, head_dim, None, "split" if self.legacy else "div")
        x = self.node("Add", [x, self.linear(self.merge(context, dims), hidden, hidden, "out_proj")], "residual")
        up = self.erf_gelu(self.linear(self.layernorm(x, hidden), hidden, 4 * hidden, "fc1"))
        return self.node("Add", [x, self.linear(up, 4 * hidden, hidden, "fc2")], "residual")

    def heads(self, x: str, dims: tuple[int, int, int], heads: int) -> str:
        """Add ``x.view(b, s, heads, d).transpose(1, 2)`` (batch and sequence from ``x`` in the legacy form)."""
        batch, seq, hidden = dims
        shaped = self.view(x, [batch, seq, heads, hidden // heads], runtime=(0, 1))
        return self.node("Transpose", [shaped], "heads", perm=[0, 2, 1, 3])

    def merge(self, x: str, dims: tuple[int, int, int]) -> str:
        """Add ``x.transpose(1, 2).reshape(b, s, hidden)``: heads back to ``[b, s, hidden]``."""
        moved = self.node("Transpose", [x], "merge_heads", perm=[0, 2, 1, 3])
        return self.view(moved, list(dims), runtime=(0, 1))

    def padding_mask(self, mask: str, fill: float) -> str:
        """Add HF's extended mask ``(1 - mask[:, None, None, :]) * fill`` of an int64 ``attention_mask``."""
        m = self.node("Cast", [self.unsqueeze(self.unsqueeze(mask, [1]), [2])], "mask_f", to=TensorProto.FLOAT)
        inverted = self.node("Sub", [self.floats("mask_one", 1.0), m], "mask_inv")
        return self.node("Mul", [inverted, self.floats("mask_fill", fill)], "mask_add")


def scaled(rng: np.random.Generator, shape: Sequence[int], scale: float) -> np.ndarray:
    """A standard normal float32 array times ``scale``."""
    return rng.standard_normal(tuple(shape)).astype(np.float32) * np.float32(scale)


def grid_anchors(sizes: Sequence[int], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return YOLOv8's anchor points ``[1, 2, A]`` (cell centres, in cells) and strides ``[1, 1, A]``.

    Levels are ``sizes[i] x sizes[i]`` cells of ``strides[i]`` pixels, row-major, as ``make_anchors`` builds.
    """
    points, steps = [], []
    for size, stride in zip(sizes, strides, strict=True):
        ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        steps.append(np.full(size * size, stride))
    return (
        np.concatenate(points, axis=1)[None].astype(np.float32),
        np.concatenate(steps)[None, None].astype(np.float32),
    )

"""The model families people ship, as PyTorch's two exporters write them: small, seeded, built with ``onnx.helper``.

Every builder takes ``style``: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, opset 18: constant shapes,
``LayerNormalization``, ``Split``) or ``"legacy"`` (the TorchScript exporter, opset 14: shapes recomputed
from ``Shape``/``Gather``/``Unsqueeze``/``Concat``, ``Constant`` literals, ``Slice`` per part, the
``Equal``/``Where``/``Expand`` form of ``expand``, LayerNorm written out). The node patterns live in
:mod:`kernelforge.testing._exporter_styles`; the families here describe each network once:

* :func:`vit_tiny`: a ViT (patch-embedding Conv, ``[CLS]`` token, pre-LN blocks, ``[CLS]`` pick, Gemm head);
* :func:`yolo_style`: a YOLOv8 (Conv-BN-SiLU, C2f, SPPF, nearest upsampling neck, DFL box decode);
* :func:`unet_style`: a U-Net (Conv-GroupNorm-SiLU or InstanceNorm; stride-2 Conv and ConvTranspose, or MaxPool
  and bilinear Resize; skip Concats);
* :func:`kws_style` and :func:`whisper_style`: audio (a 1-D conv keyword spotter; Whisper's conv frontend and
  one encoder block);
* :func:`bert` and :func:`gpt2` (:mod:`kernelforge.testing.families_text`): the text families in both styles,
  with :func:`gpt2_kv` (past keys and values in, present ones out).

:data:`FAMILIES` maps a name to a builder; :func:`family_feeds` makes inputs; :func:`fp16` gives the
float16 forms people ship (``kernelforge.testing.quantized.quantize`` the quantized ones) and
:func:`fp16_weights` the float32 model on the same rounded weights (what kernelforge computes of the former).

    from kernelforge.testing.families import FAMILIES, family_feeds
    model = FAMILIES["vit_tiny"]("legacy")
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from kernelforge.testing._exporter_styles import STYLES, _Styled, grid_anchors, scaled
from kernelforge.testing.families_text import bert, gpt2, gpt2_kv

__all__ = [
    "FAMILIES",
    "STYLES",
    "bert",
    "family_feeds",
    "fp16",
    "fp16_weights",
    "gpt2",
    "gpt2_kv",
    "kws_style",
    "unet_style",
    "vit_tiny",
    "whisper_style",
    "yolo_style",
]


def vit_tiny(
    style: str = "dynamo",
    batch: int = 1,
    size: int = 32,
    patch: int = 8,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 2,
    classes: int = 10,
) -> onnx.ModelProto:
    """A ViT: ``pixel_values [batch, 3, size, size]`` -> ``logits [batch, classes]``.

    Patches by a ``patch x patch`` stride-``patch`` Conv, flattened and transposed to tokens; a ``[CLS]`` token
    expanded to the batch and concatenated in front; learned positions; ``layers`` pre-LN blocks whose q/k/v
    come from one ``MatMul`` (dynamo: viewed as ``[b, s, 3, heads, d]``, permuted and ``Split(num_outputs=3)``
    on the leading axis, timm's ``unbind``; legacy: three ``Slice``s of the last axis); the scores scaled on q
    (legacy) or on q and Kᵀ (dynamo, the SDPA decomposition); Erf GELU MLP; final LN; ``[CLS]`` picked by
    ``Gather``; Gemm head.
    """
    b = _Styled("vit_tiny", style, seed=21)
    tokens, head_dim = (size // patch) ** 2 + 1, hidden // heads
    dims = (batch, tokens, hidden)
    w = b.weight("patch_w", (hidden, 3, patch, patch), fan_in=3 * patch * patch)
    bias = b.floats("patch_b", b.rng.uniform(-0.1, 0.1, hidden))
    x = b.node("Conv", ["pixel_values", w, bias], "patch_embed", kernel_shape=[patch, patch], strides=[patch, patch])
    flat = b.view(x, [batch, hidden, tokens - 1] if not b.legacy else [batch, hidden, -1], runtime=(0, 1))
    x = b.node("Transpose", [flat], "patches", perm=[0, 2, 1])
    token = b.floats("cls_token", scaled(b.rng, (1, 1, hidden), 0.5))
    cls = b.expand(token, [batch, 1, hidden], keep=(1, 2), runtime={0: (x, 0)})  # expand(x.shape[0], -1, -1)
    x = b.node("Concat", [cls, x], "with_cls", axis=1)
    h = b.node("Add", [x, b.floats("pos_embed", scaled(b.rng, (1, tokens, hidden), 0.1))], "embedded")
    for _ in range(layers):
        qkv = b.linear(b.layernorm(h, hidden), hidden, 3 * hidden, "qkv")
        if b.legacy:
            q, k, v = (b.heads(part, dims, heads) for part in b.split(qkv, [hidden] * 3, axis=2))
            q = b.node("Mul", [q, b.floats("scale", head_dim**-0.5)], "q_scaled")
            k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
            context = b.attention(q, k_t, v, head_dim, None, "none")
        else:
            shaped = b.view(qkv, [batch, tokens, 3, heads, head_dim])
            stacked = b.node("Transpose", [shaped], "qkv_t", perm=[2, 0, 3, 1, 4])
            q, k, v = (b.squeeze("Squeeze", part, [0]) for part in b.chunk(stacked, 3, 3, axis=0))
            k_t = b.node("Transpose", [k], "key_t", perm=[0, 1, 3, 2])
            context = b.attention(q, k_t, v, head_dim, None, "split")
        h = b.node("Add", [h, b.linear(b.merge(context, dims), hidden, hidden, "proj")], "residual")
        up = b.erf_gelu(b.linear(b.layernorm(h, hidden), hidden, 4 * hidden, "fc1"))
        h = b.node("Add", [h, b.linear(up, 4 * hidden, hidden, "fc2")], "residual")
    cls_out = b.node("Gather", [b.layernorm(h, hidden), b.lit("cls_index", 0)], "cls_pick", axis=1)
    return b.model([("pixel_values", (batch, 3, size, size))], [(b.gemm(cls_out, hidden, classes), "logits")])


class _Yolo(_Styled):
    """YOLOv8's blocks: the dynamo form keeps BatchNormalization, the legacy form folds it into the Conv."""

    def cbs(self, x: str, c_in: int, c_out: int, k: int = 1, stride: int = 1) -> str:
        """Add ultralytics' ``Conv``: Conv-BN-SiLU."""
        if self.legacy:  # TorchScript's eval-mode export folds BN into the conv's weights and bias
            return self.silu(self.conv_nd(x, c_in, c_out, k, stride))
        return self.silu(self.batchnorm(self.conv_nd(x, c_in, c_out, k, stride, bias=False), c_out))

    def c2f(self, x: str, c_in: int, c_out: int, blocks: int = 1, shortcut: bool = True) -> str:
        """Add C2f: a 1x1 conv, ``chunk(2, 1)``, ``blocks`` bottlenecks on the last part, Concat, 1x1 conv."""
        c = c_out // 2
        parts = self.chunk(self.cbs(x, c_in, 2 * c), 2, 2 * c, axis=1)
        for _ in range(blocks):
            y = self.cbs(self.cbs(parts[-1], c, c, 3), c, c, 3)
            parts.append(self.node("Add", [parts[-1], y], "bottleneck") if shortcut else y)
        return self.cbs(self.node("Concat", parts, "c2f_cat", axis=1), len(parts) * c, c_out)

    def sppf(self, x: str, c_in: int, c_out: int) -> str:
        """Add SPPF: a 1x1 conv, three chained 5x5 stride-1 MaxPools, Concat of all four, a 1x1 conv."""
        c = c_in // 2
        pooled = [self.cbs(x, c_in, c)]
        for _ in range(3):
            pooled.append(self.node("MaxPool", [pooled[-1]], "pool", kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
        return self.cbs(self.node("Concat", pooled, "sppf_cat", axis=1), 4 * c, c_out)

    def detect(self, x: str, c_in: int, classes: int, reg_max: int) -> str:
        """Add one level of the detect head: box and class branches, concatenated ``[b, 4 reg_max + nc, h, w]``."""
        c = max(16, c_in // 4)
        box = self.conv_nd(self.cbs(self.cbs(x, c_in, c, 3), c, c, 3), c, 4 * reg_max, 1)
        cls = self.conv_nd(self.cbs(self.cbs(x, c_in, c, 3), c, c, 3), c, classes, 1)
        return self.node("Concat", [box, cls], "level", axis=1)


def yolo_style(
    style: str = "dynamo", batch: int = 1, size: int = 64, width: int = 16, classes: int = 4, reg_max: int = 16
) -> onnx.ModelProto:
    """A YOLOv8: ``images [batch, 3, size, size]`` -> ``output0 [batch, 4 + classes, anchors]``.

    Stem and stride-2 Conv-BN-SiLU stages with C2f blocks to strides 8 and 16, SPPF, a neck (nearest
    upsampling, Concat, C2f; a stride-2 conv back down, Concat, C2f) and the detect head of both levels:
    per anchor ``4 x reg_max`` box bins and ``classes`` scores, the bins decoded by DFL (Reshape, Transpose,
    Softmax over the bins, a fixed 1x1 Conv with weights ``0..reg_max-1``), ``dist2bbox`` against constant
    anchor points (xywh, times the level's stride) and Sigmoid class scores, concatenated.
    """
    if size % 16:
        raise ValueError(f"yolo_style: size={size} is not a multiple of 16 (the deepest stride)")
    b = _Yolo("yolo_style", style, seed=22)
    w1, w2 = width, 2 * width
    h = b.cbs(b.cbs("images", 3, w1 // 2, 3, 2), w1 // 2, w1, 3, 2)
    h = b.c2f(h, w1, w1)
    p3 = b.c2f(b.cbs(h, w1, w2, 3, 2), w2, w2)
    p4 = b.sppf(b.c2f(b.cbs(p3, w2, w2, 3, 2), w2, w2), w2, w2)
    n3 = b.c2f(b.node("Concat", [b.upsample(p4, "nearest"), p3], "neck_cat", axis=1), 2 * w2, w2, shortcut=False)
    n4 = b.c2f(b.node("Concat", [b.cbs(n3, w2, w2, 3, 2), p4], "neck_cat", axis=1), 2 * w2, w2, shortcut=False)
    sizes, anchors = (size // 8, size // 16), sum((size // s) ** 2 for s in (8, 16))
    channels = 4 * reg_max + classes
    levels = [
        b.view(b.detect(n, w2, classes, reg_max), [batch, channels, s * s], runtime=(0, 1))
        for n, s in zip((n3, n4), sizes, strict=True)
    ]
    box, cls = b.split(b.node("Concat", levels, "levels", axis=2), [4 * reg_max, classes], axis=1)
    bins = b.view(box, [batch, 4, reg_max, anchors], runtime=(0,))
    probs = b.node("Softmax", [b.node("Transpose", [bins], "bins_t", perm=[0, 2, 1, 3])], "dfl_softmax", axis=1)
    project = b.floats("dfl_w", np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1))
    dist = b.view(b.node("Conv", [probs, project], "dfl", kernel_shape=[1, 1]), [batch, 4, anchors], runtime=(0,))
    lt, rb = b.chunk(dist, 2, 4, axis=1)
    points, strides = grid_anchors(sizes, (8, 16))
    anchor = b.floats("anchors", points)
    x1y1 = b.node("Sub", [anchor, lt], "x1y1")
    x2y2 = b.node("Add", [anchor, rb], "x2y2")
    centre = b.node("Div", [b.node("Add", [x1y1, x2y2], "sum_xy"), b.floats("two", 2.0)], "c_xy")
    wh = b.node("Sub", [x2y2, x1y1], "wh")
    boxes = b.node("Mul", [b.node("Concat", [centre, wh], "xywh", axis=1), b.floats("strides", strides)], "dbox")
    scores = b.node("Sigmoid", [cls], "scores")
    out = b.node("Concat", [boxes, scores], "detections", axis=1)
    return b.model([("images", (batch, 3, size, size))], [(out, "output0")])


class _UNet(_Styled):
    """U-Net blocks: Conv, then GroupNorm as PyTorch exports it (or InstanceNorm), then SiLU."""

    def group_norm(self, x: str, shape: tuple[int, int, int, int], groups: int) -> str:
        """Add ``nn.GroupNorm``: ``Reshape [n, g, -1]``, InstanceNormalization (ones, zeros), Reshape back, Mul, Add."""
        n, c = shape[:2]
        grouped = self.view(x, [0 if self.legacy else n, groups, -1])  # TorchScript writes [0, g, -1]
        normed = self.node(
            "InstanceNormalization",
            [grouped, self.floats("gn_ones", np.ones(groups)), self.floats("gn_zeros", np.zeros(groups))],
            "gn",
            epsilon=1e-5,
        )
        if self.legacy:  # TorchScript reshapes back to Shape(x)
            back = self.node("Reshape", [normed, self.node("Shape", [x], "shape")], "gn_back")
        else:
            back = self.view(normed, list(shape))
        gamma = self.floats("gn_gamma", self.rng.uniform(0.8, 1.2, (c, 1, 1)))
        beta = self.floats("gn_beta", self.rng.uniform(-0.1, 0.1, (c, 1, 1)))
        return self.node("Add", [self.node("Mul", [back, gamma], "gn_scale"), beta], "gn_out")

    def block(self, x: str, shape: tuple[int, int, int, int], c_in: int, norm: str, groups: int) -> str:
        """Add Conv 3x3 -> GroupNorm or InstanceNorm -> SiLU to ``shape`` (the block's output shape)."""
        c = shape[1]
        y = self.conv_nd(x, c_in, c, 3)
        if norm == "group":
            y = self.group_norm(y, shape, groups)
        else:
            scale, bias = self.rng.uniform(0.8, 1.2, c), self.rng.uniform(-0.1, 0.1, c)
            inputs = [y, self.floats("in_scale", scale), self.floats("in_bias", bias)]
            y = self.node("InstanceNormalization", inputs, "instance_norm", epsilon=1e-5)
        return self.silu(y)

    def up(self, x: str, c_in: int, c_out: int) -> str:
        """Add ``nn.ConvTranspose2d(c_in, c_out, 2, stride=2)``."""
        w = self.weight("up_w", (c_in, c_out, 2, 2), fan_in=c_in)
        bias = self.floats("up_b", self.rng.uniform(-0.1, 0.1, c_out))
        return self.node("ConvTranspose", [x, w, bias], "up", kernel_shape=[2, 2], strides=[2, 2])


def unet_style(
    style: str = "dynamo",
    norm: str = "group",
    sampling: str = "strided",
    batch: int = 1,
    size: int = 32,
    width: int = 8,
    groups: int = 4,
) -> onnx.ModelProto:
    """A two-level U-Net: ``x [batch, 3, size, size]`` -> ``y [batch, 3, size, size]``.

    Encoder blocks at widths ``w, 2w`` each followed by a down-sampling, a ``4w`` middle block, decoder levels
    of up-sampling, Concat with the encoder's skip and a block, and a 1x1 Conv out. ``sampling`` is
    ``strided`` (a stride-2 3x3 Conv down, ConvTranspose 2x2 stride 2 up, as diffusers' UNet2D) or ``pooled``
    (MaxPool 2x2 down, bilinear ``align_corners`` Resize up, as the original U-Net with ``bilinear=True``).
    ``norm`` is ``group`` (``groups`` groups, PyTorch's export through InstanceNormalization) or ``instance``.
    """
    if norm not in ("group", "instance") or sampling not in ("strided", "pooled"):
        raise ValueError(f"unet_style: norm={norm!r} or sampling={sampling!r} is unknown")
    if size % 4 or width % groups:
        raise ValueError(f"unet_style: size={size} must be a multiple of 4 and width={width} of groups={groups}")
    b = _UNet("unet_style", style, seed=23)
    pooled = sampling == "pooled"

    def block(x: str, c_in: int, c: int, s: int) -> str:
        return b.block(x, (batch, c, s, s), c_in, norm, groups)

    def down(x: str, c: int) -> str:
        if pooled:
            return b.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
        return b.conv_nd(x, c, c, 3, 2)

    def up(x: str, c_in: int, skip: str, c_skip: int) -> tuple[str, int]:
        """Return the up-sampled ``x`` concatenated with ``skip``, and its channels."""
        y, c = (b.upsample(x, "bilinear"), c_in) if pooled else (b.up(x, c_in, c_skip), c_skip)
        return b.node("Concat", [y, skip], "skip", axis=1), c + c_skip

    w, half, quarter = width, size // 2, size // 4
    enc1 = block("x", 3, w, size)
    enc2 = block(down(enc1, w), w, 2 * w, half)
    mid = block(down(enc2, 2 * w), 2 * w, 4 * w, quarter)
    dec2 = block(*up(mid, 4 * w, enc2, 2 * w), 2 * w, half)
    dec1 = block(*up(dec2, 2 * w, enc1, w), w, size)
    return b.model([("x", (batch, 3, size, size))], [(b.conv_nd(dec1, w, 3, 1), "y")])


def kws_style(
    style: str = "dynamo", batch: int = 1, mels: int = 16, frames: int = 64, width: int = 16, classes: int = 8
) -> onnx.ModelProto:
    """A keyword spotter: ``features [batch, mels, frames]`` -> ``logits [batch, classes]``.

    Three Conv1d (``kernel_shape=[3]``) + Erf GELU layers, MaxPool1d(2) after the first two, a global average
    over time (dynamo: ``ReduceMean`` of ``x.mean(-1)``; legacy: ``AdaptiveAvgPool1d(1)`` as
    GlobalAveragePool, then Flatten) and a Gemm classifier.
    """
    b = _Styled("kws_style", style, seed=24)
    h = "features"
    for c_in, c_out, pool in ((mels, width, True), (width, 2 * width, True), (2 * width, 2 * width, False)):
        h = b.erf_gelu(b.conv_nd(h, c_in, c_out, 3, rank=1))
        if pool:
            h = b.node("MaxPool", [h], "maxpool1d", kernel_shape=[2], strides=[2])
    if b.legacy:
        pooled = b.node("Flatten", [b.node("GlobalAveragePool", [h], "gap")], "flatten", axis=1)
    else:
        pooled = b.node("ReduceMean", [h, b.ints("axes", [-1])], "mean", keepdims=0)
    return b.model([("features", (batch, mels, frames))], [(b.gemm(pooled, 2 * width, classes), "logits")])


def whisper_style(
    style: str = "dynamo", batch: int = 1, mels: int = 16, frames: int = 32, hidden: int = 64, heads: int = 4
) -> onnx.ModelProto:
    """Whisper's encoder frontend and one block: ``input_features [batch, mels, frames]`` -> ``last_hidden_state``.

    Conv1d k3 + GELU, Conv1d k3 stride 2 + GELU, transposed to ``[batch, frames / 2, hidden]``, plus the
    positions (legacy: ``embed_positions[:n]``, a Slice of a longer table whose end is read from the shape),
    one pre-LN encoder block and a final LayerNorm.
    """
    if frames % 2:
        raise ValueError(f"whisper_style: frames={frames} is not even (the second conv has stride 2)")
    b = _Styled("whisper_style", style, seed=25)
    tokens = frames // 2
    h = b.erf_gelu(b.conv_nd("input_features", mels, hidden, 3, rank=1))
    h = b.node("Transpose", [b.erf_gelu(b.conv_nd(h, hidden, hidden, 3, stride=2, rank=1))], "frames", perm=[0, 2, 1])
    table = scaled(b.rng, (2 * tokens, hidden), 0.1)
    if b.legacy:
        ends = b.dim(h, 1)
        inputs = [b.floats("embed_positions", table), b.lit("starts", [0]), ends, b.lit("axes", [0])]
        positions = b.node("Slice", inputs, "positions")
    else:
        positions = b.floats("embed_positions", table[:tokens])
    h = b.node("Add", [h, positions], "embedded")
    h = b.layernorm(b.transformer_block(h, (batch, tokens, hidden), heads), hidden)
    return b.model([("input_features", (batch, mels, frames))], [(h, "last_hidden_state")])


FAMILIES: dict[str, Callable[..., onnx.ModelProto]] = {
    "vit_tiny": vit_tiny,
    "yolo_style": yolo_style,
    "unet_style": unet_style,
    "unet_pooled": lambda style="dynamo", **kw: unet_style(style, norm="instance", sampling="pooled", **kw),
    "kws_style": kws_style,
    "whisper_style": whisper_style,
    "bert": bert,
    "gpt2": gpt2,
    "gpt2_kv_step": lambda style="dynamo", **kw: gpt2_kv(style, new=1, **kw),
    "gpt2_kv_prefill": lambda style="dynamo", **kw: gpt2_kv(style, new=32, **kw),
}
"""Builder per family; each takes ``style`` (one of :data:`STYLES`) first, then size keywords."""


def family_feeds(model: onnx.ModelProto, seed: int = 0, vocab: int = 100, padding: int = 0) -> dict[str, np.ndarray]:
    """Return feeds for a family's inputs: int64 token ids below ``vocab``, masks of ones, standard normal floats.

    ``padding`` zeroes the ``attention_mask`` on the last tokens (padded batches). Float inputs get the model's
    declared float type (float16 inputs of a converted model stay float16).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        if value.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            if padding:
                mask[..., -padding:] = 0
            feeds[value.name] = mask
        elif dtype.kind == "i":
            feeds[value.name] = rng.integers(0, vocab, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def fp16(model: onnx.ModelProto, keep_io_types: bool) -> onnx.ModelProto:
    """Return ``model`` converted by ``onnxconverter_common.float16`` (float16 weights and compute).

    ``keep_io_types`` keeps float32 graph inputs and outputs (Casts at the edges); without it they become
    float16 too. The converter (1.15 on) retypes the output of a model's own ``Cast(to=FLOAT)`` as float16 but
    leaves the node casting to float32 (onnxconverter-common issue 320); such Casts are set to cast to float16,
    as the converter did before and as its users patch them.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns of every constant it clamps (masks' fills, LayerNorm's epsilon)
        warnings.filterwarnings("ignore", "the float32 number", UserWarning)
        converted: onnx.ModelProto = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    graph = converted.graph
    halves = {v.name for v in (*graph.value_info, *graph.output) if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in halves:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
    onnx.checker.check_model(converted, full_check=True)
    return converted


def fp16_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return float32 ``model`` on the weights :func:`fp16` gives it: clamped as the converter does, then rounded.

    kernelforge computes a float16 model in float32 on its float16 weights, so it computes this model.
    """
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for tensor in rounded.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            data = numpy_helper.to_array(tensor)
            # the converter clamps magnitudes into float16's normal range (1e-7 and 1e4 are its defaults)
            magnitude = np.where(data == 0, 0.0, np.clip(np.abs(data), 1e-7, 1e4))
            half = (np.sign(data) * magnitude).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))
    return rounded

"""numpy-in, numpy-out network ops: GEMM, convolution and pooling (ONNX semantics, NCHW)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kernelforge.api._run import float_array, run_op
from kernelforge.errors import ShapeError
from kernelforge.ops import conv, pool
from kernelforge.ops._attrs import AUTO_PADS, resolve_auto_pad
from kernelforge.ops._epilogue import Activation
from kernelforge.ops.conv import ConvProblem
from kernelforge.ops.gemm import GemmProblem
from kernelforge.ops.pool import PoolProblem


def gemm(
    a: Any,
    b: Any,
    bias: Any = None,
    activation: str | Activation | None = None,
    trans_b: bool = False,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Compute ``act(a @ op(b) + bias)`` on a GPU with the tuned (or default) kernel for this shape.

    Args:
        a: ``(M, K)`` or ``(batch, M, K)``.
        b: ``(K, N)`` (``(N, K)`` with ``trans_b``), optionally with the same leading batch as ``a``.
        bias: Optional ``(N,)`` added to every row.
        activation: ``None``, ``"relu"``, ``"relu6"``, ``"clip(lo,hi)"``, ``"sigmoid"``, ``"tanh"``,
            ``"gelu"``, ``"hardswish"``, ``"silu"`` or ``"leaky_relu(alpha)"``.
        trans_b: Multiply by ``b`` transposed.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array ``(M, N)`` or ``(batch, M, N)``.
    """
    a32, b32 = float_array("gemm", "a", a), float_array("gemm", "b", b)
    if a32.ndim not in (2, 3) or b32.ndim not in (2, 3):
        raise ShapeError(f"gemm: a and b must be 2-D or 3-D, got shapes {a32.shape} and {b32.shape}")
    batch = a32.shape[0] if a32.ndim == 3 else 1
    batch_b = b32.shape[0] if b32.ndim == 3 else 1
    m, k = a32.shape[-2:]
    n, kb = (b32.shape[-2], b32.shape[-1]) if trans_b else (b32.shape[-1], b32.shape[-2])
    if k != kb:
        raise ShapeError(f"gemm: inner dimensions differ: a {a32.shape} and b {b32.shape} (trans_b={trans_b})")
    if a32.ndim == 2 and batch_b > 1:
        raise ShapeError(f"gemm: b is batched {b32.shape} but a {a32.shape} is not")
    inputs = [a32, b32]
    if bias is not None:
        bias32 = float_array("gemm", "bias", bias)
        if bias32.shape != (n,):
            raise ShapeError(f"gemm: bias must have shape ({n},), got {bias32.shape}")
        inputs.append(bias32)
    problem = GemmProblem(
        m=int(m),
        n=int(n),
        k=int(k),
        batch=int(batch),
        batch_b=int(batch_b),
        trans_b=bool(trans_b),
        has_bias=bias is not None,
        activation=Activation.parse(activation),
    )
    out = run_op("gemm", problem, inputs, device, backend)
    return out if a32.ndim == 3 else out.reshape(m, n)


def _conv_ints(name: str, value: Any, size: int, default: tuple[int, ...]) -> tuple[int, ...]:
    if value is None:
        return default
    values = tuple(int(v) for v in np.asarray(value).reshape(-1))
    if len(values) != size:
        raise ShapeError(f"conv2d: {name} must have {size} values, got {list(values)}")
    return values


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
    auto_pad: str = "NOTSET",
    activation: str | Activation | None = None,
    residual: Any = None,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Compute ONNX ``Conv`` on NCHW input with a fused ``act(conv + bias + residual)`` epilogue.

    Args:
        x: Input ``[n, c, h, w]``.
        w: Weights ``[m, c / group, kh, kw]``.
        bias: Optional ``[m]``.
        strides: ``(sy, sx)``, default 1.
        pads: ONNX order ``(top, left, bottom, right)``, default 0.
        dilations: ``(dy, dx)``, default 1.
        group: Groups (``group == c`` is depthwise).
        auto_pad: ONNX ``NOTSET``, ``VALID``, ``SAME_UPPER`` or ``SAME_LOWER`` (overrides ``pads``).
        activation: Applied last (see :func:`kernelforge.ops.gemm`).
        residual: Optional tensor of the output's shape added before the activation.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"``; ``None`` takes the device's.

    Returns:
        float32 ``[n, m, oh, ow]``.
    """
    x32, w32 = float_array("conv2d", "x", x), float_array("conv2d", "w", w)
    if x32.ndim != 4 or w32.ndim != 4:
        raise ShapeError(f"conv2d: x and w must be 4-D (NCHW, OIHW), got shapes {x32.shape} and {w32.shape}")
    if isinstance(group, bool) or int(group) < 1 or x32.shape[1] != w32.shape[1] * int(group):
        raise ShapeError(
            f"conv2d: x has {x32.shape[1]} channels but w {w32.shape} with group={group} expects "
            f"{w32.shape[1] * int(group)}"
        )
    strides_ = _conv_ints("strides", strides, 2, (1, 1))
    dilations_ = _conv_ints("dilations", dilations, 2, (1, 1))
    if auto_pad != "NOTSET":
        same = [
            resolve_auto_pad("conv2d", auto_pad, size, k, st, d)
            for size, k, st, d in zip(x32.shape[2:4], w32.shape[2:4], strides_, dilations_, strict=True)
        ]
        pads_: tuple[int, ...] = tuple(p[0] for p in same if p) + tuple(p[1] for p in same if p)
    else:
        pads_ = _conv_ints("pads", pads, 4, (0, 0, 0, 0))
    inputs = [x32, w32]
    if bias is not None:
        bias32 = float_array("conv2d", "bias", bias)
        if bias32.shape != (w32.shape[0],):
            raise ShapeError(f"conv2d: bias must have shape ({w32.shape[0]},), got {bias32.shape}")
        inputs.append(bias32)
    problem = ConvProblem(
        n=x32.shape[0],
        c=x32.shape[1],
        h=x32.shape[2],
        w=x32.shape[3],
        m=w32.shape[0],
        kh=w32.shape[2],
        kw=w32.shape[3],
        strides=strides_,  # type: ignore[arg-type]
        pads=pads_,  # type: ignore[arg-type]
        dilations=dilations_,  # type: ignore[arg-type]
        group=int(group),
        has_bias=bias is not None,
        has_residual=residual is not None,
        activation=Activation.parse(activation),
    )
    if residual is not None:
        res32 = float_array("conv2d", "residual", residual)
        if res32.shape != conv.SPEC.output_shape(problem):
            raise ShapeError(
                f"conv2d: residual must have the output shape {conv.SPEC.output_shape(problem)}, got {res32.shape}"
            )
        inputs.append(res32)
    return run_op("conv2d", problem, inputs, device, backend)


def _as_input(op: str, x: Any) -> np.ndarray:
    x32 = float_array(op, "x", x)
    if x32.ndim < 3 or 0 in x32.shape:
        raise ShapeError(f"{op}: x must be a non-empty (N, C, ...) array with spatial axes, got shape {x32.shape}")
    return x32


def _windowed(
    op: str,
    mode: str,
    x: Any,
    kernel_shape: Sequence[int],
    strides: Sequence[int] | None,
    pads: Sequence[int] | None,
    dilations: Sequence[int] | None,
    ceil_mode: int,
    count_include_pad: int,
    auto_pad: str,
    device: str | int,
    backend: str | None,
) -> np.ndarray:
    x32 = _as_input(op, x)
    if x32.ndim not in (3, 4):
        raise ShapeError(f"{op}: x must be (N, C, L) or (N, C, H, W), got shape {x32.shape}")
    dims = x32.ndim - 2
    kernel = pool.ints(op, "kernel_shape", kernel_shape, dims, 1)
    stride = pool.ints(op, "strides", (1,) * dims if strides is None else strides, dims, 1)
    dilation = pool.ints(op, "dilations", (1,) * dims if dilations is None else dilations, dims, 1)
    pad = pool.ints(op, "pads", (0,) * 2 * dims if pads is None else pads, 2 * dims, 0)
    if auto_pad not in AUTO_PADS:
        raise ShapeError(f"{op}: auto_pad must be one of {list(AUTO_PADS)}, got {auto_pad!r}")
    if auto_pad != "NOTSET":
        if any(pad):
            raise ShapeError(f"{op}: pads {list(pad)} cannot be combined with auto_pad={auto_pad}")
        # the auto_pad rule fixes the output size: ceil_mode has nothing left to round
        resolved = [
            resolve_auto_pad(op, auto_pad, s, k, st, d)
            for s, k, st, d in zip(x32.shape[2:], kernel, stride, dilation, strict=True)
        ]
        pad = tuple(r[0] for r in resolved if r) + tuple(r[1] for r in resolved if r)
        ceil_mode = 0
    n, c, *spatial = x32.shape
    if dims == 1:  # 1-D pooling is 2-D pooling over H = 1
        h, w, pads4 = 1, spatial[0], (0, pad[0], 0, pad[1])
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    else:
        (h, w), pads4 = spatial, (pad[0], pad[1], pad[2], pad[3])
    try:
        problem = PoolProblem(
            n,
            c,
            h,
            w,
            mode,
            (kernel[0], kernel[1]),
            (stride[0], stride[1]),
            pads4,
            (dilation[0], dilation[1]),
            ceil_mode,
            count_include_pad,
        )
    except ShapeError as exc:
        raise ShapeError(f"{op}: {str(exc).removeprefix('pool2d: ')}") from exc
    out = run_op("pool2d", problem, [x32.reshape(n, c, h, w)], device, backend)
    return out.reshape(n, c, out.shape[-1]) if dims == 1 else out


def max_pool(
    x: Any,
    kernel_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    ceil_mode: int = 0,
    auto_pad: str = "NOTSET",
    *,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """ONNX MaxPool (1-D or 2-D) on a GPU with the tuned (or default) kernel for this shape.

    Args:
        x: ``(N, C, L)`` or ``(N, C, H, W)``.
        kernel_shape: Window size per spatial axis.
        strides: Step per spatial axis (default 1).
        pads: ONNX order: begins then ends (``(top, left, bottom, right)`` in 2-D; default 0).
        dilations: Tap spacing per spatial axis (default 1).
        ceil_mode: 1 rounds output sizes up (a last window must start inside input or begin padding).
        auto_pad: ``NOTSET`` (use ``pads``), ``VALID``, ``SAME_UPPER`` or ``SAME_LOWER``; ceil_mode is then
            ignored, as the rule fixes the output size.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 ``(N, C, OL)`` or ``(N, C, OH, OW)``; a window with no input tap gives 0 (as onnx.reference).

    Raises:
        ShapeError: Naming the argument that does not fit.
    """
    return _windowed(
        "max_pool", "max", x, kernel_shape, strides, pads, dilations, ceil_mode, 0, auto_pad, device, backend
    )


def average_pool(
    x: Any,
    kernel_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    ceil_mode: int = 0,
    count_include_pad: int = 0,
    auto_pad: str = "NOTSET",
    *,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """ONNX AveragePool (opset 19+, dilations included; 1-D or 2-D) on a GPU.

    Args:
        x: ``(N, C, L)`` or ``(N, C, H, W)``.
        kernel_shape: Window size per spatial axis.
        strides: Step per spatial axis (default 1).
        pads: ONNX order: begins then ends (default 0).
        dilations: Tap spacing per spatial axis (default 1).
        ceil_mode: 1 rounds output sizes up.
        count_include_pad: 1 divides by the taps inside input and explicit padding, 0 by the input taps.
        auto_pad: ``NOTSET``, ``VALID``, ``SAME_UPPER`` or ``SAME_LOWER`` (see :func:`max_pool`).
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"``; ``None`` takes the device's.

    Returns:
        float32 ``(N, C, OL)`` or ``(N, C, OH, OW)``; with ``count_include_pad=0`` a window with no input
        tap gives NaN (0 / 0, as onnx.reference).

    Raises:
        ShapeError: Naming the argument that does not fit.
    """
    return _windowed(
        "average_pool",
        "avg",
        x,
        kernel_shape,
        strides,
        pads,
        dilations,
        ceil_mode,
        count_include_pad,
        auto_pad,
        device,
        backend,
    )


def _global(op: str, mode: str, x: Any, device: str | int, backend: str | None) -> np.ndarray:
    x32 = _as_input(op, x)
    n, c, *spatial = x32.shape
    # any spatial rank: the leading spatial axes fold into H
    h, w = math.prod(spatial[:-1]), spatial[-1]
    try:
        problem = PoolProblem(n, c, h, w, mode, global_=True)
    except ShapeError as exc:
        raise ShapeError(f"{op}: {str(exc).removeprefix('pool2d: ')}") from exc
    out = run_op("pool2d", problem, [x32.reshape(n, c, h, w)], device, backend)
    return out.reshape(n, c, *([1] * len(spatial)))


def global_average_pool(x: Any, *, device: str | int = "auto", backend: str | None = None) -> np.ndarray:
    """ONNX GlobalAveragePool: the mean over every spatial axis of ``(N, C, ...)``, kept as size-1 axes.

    Raises:
        ShapeError: When ``x`` is not a non-empty array of rank 3 or more.
    """
    return _global("global_average_pool", "avg", x, device, backend)


def global_max_pool(x: Any, *, device: str | int = "auto", backend: str | None = None) -> np.ndarray:
    """ONNX GlobalMaxPool: the maximum over every spatial axis of ``(N, C, ...)``, kept as size-1 axes.

    Raises:
        ShapeError: When ``x`` is not a non-empty array of rank 3 or more.
    """
    return _global("global_max_pool", "max", x, device, backend)

"""numpy-in, numpy-out tensor ops: elementwise programs, softmax, concat, transpose, pad and resize."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kernelforge.api._run import float_array, run_op
from kernelforge.errors import ShapeError
from kernelforge.ops import _expr, eltwise
from kernelforge.ops import pad as pad_op
from kernelforge.ops import resize as resize_op
from kernelforge.ops import transpose as transpose_op
from kernelforge.ops.concat import ConcatProblem
from kernelforge.ops.eltwise import EltwiseProblem
from kernelforge.ops.pad import PadProblem, full_pads
from kernelforge.ops.resize import ResizeProblem
from kernelforge.ops.shapes import check_axis
from kernelforge.ops.softmax import SoftmaxProblem
from kernelforge.ops.transpose import TransposeProblem


def elementwise(
    expr: str,
    *arrays: Any,
    device: str | int = "auto",
    backend: str | None = None,
    **named_arrays: Any,
) -> np.ndarray:
    """Evaluate a fused elementwise program on a GPU in one kernel, with numpy broadcasting.

    Example: ``elementwise("relu(x*a + b) + y", x, a, b, y)`` or ``elementwise("clip(x, 0, 6)", x=x)``.

    The program uses input names, finite numbers, ``+ - * /``, unary ``-`` and the functions relu, clip(v, lo,
    hi), sigmoid, tanh, gelu, hardswish, hardsigmoid(v, alpha=0.2, beta=0.5), leaky_relu(v, alpha=0.01), exp,
    neg, sqrt, reciprocal, abs, max(a, b), min(a, b) and pow(a, b) with ONNX semantics.

    Args:
        expr: The program.
        *arrays: Inputs bound to the program's names in order of their first appearance in ``expr``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.
        **named_arrays: Inputs bound by name (the names not bound positionally).

    Returns:
        float32 array of the inputs' broadcast shape.

    Raises:
        ShapeError: For a malformed program (naming the token and column), unknown or missing names, a name
            bound twice, non-numeric data, a rank above 6 or shapes that do not broadcast.
    """
    _, names = _expr.parse(expr)
    if len(arrays) > len(names):
        raise ShapeError(f"elementwise: {len(arrays)} positional arrays for the inputs {list(names)} of {expr!r}")

    def convert(name: str, value: Any) -> np.ndarray:
        # NOTE: float_array goes through np.ascontiguousarray, which turns a 0-d scalar into shape (1,)
        return float_array("elementwise", name, value).reshape(np.shape(value))

    bound: dict[str, np.ndarray] = {}
    for name, value in zip(names, arrays, strict=False):
        bound[name] = convert(name, value)
    for name, value in named_arrays.items():
        if name not in names:
            raise ShapeError(f"elementwise: unknown input name {name!r}; {expr!r} uses {list(names)}")
        if name in bound:
            raise ShapeError(f"elementwise: input {name!r} given both positionally and by name")
        bound[name] = convert(name, value)
    missing = [n for n in names if n not in bound]
    if missing:
        raise ShapeError(f"elementwise: no array for input(s) {missing} of {expr!r}")
    for name, value in bound.items():
        if value.ndim > eltwise.MAX_RANK:
            raise ShapeError(f"elementwise: input {name!r} has rank {value.ndim} > {eltwise.MAX_RANK}")
        if value.size == 0:
            raise ShapeError(f"elementwise: input {name!r} is empty {value.shape}")
    problem = EltwiseProblem.from_text(expr, {n: bound[n].shape for n in names})
    return run_op("elementwise", problem, [bound[n] for n in names], device=device, backend=backend)


def softmax(x: Any, axis: int = -1, *, device: str | int = "auto", backend: str | None = None) -> np.ndarray:
    """Compute ONNX Softmax (opset 13) of ``x`` along ``axis`` on a GPU.

    Args:
        x: An array of any rank 1..8 (real numbers; converted to float32).
        axis: The axis normalised over, ``-rank .. rank-1``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array of ``x``'s shape.

    Raises:
        ShapeError: When ``x`` is not numeric, a scalar, or ``axis`` is out of range.
    """
    x32 = float_array("softmax", "x", x)
    if np.ndim(x) == 0:  # float_array returns at least 1-D
        raise ShapeError("softmax: x must have at least one dimension, got a scalar")
    check_axis("softmax", axis, x32.ndim)
    if x32.size == 0:
        return np.empty(x32.shape, np.float32)
    problem = SoftmaxProblem(tuple(x32.shape), axis)
    return run_op("softmax", problem, [x32], device, backend)


def concat(arrays: Sequence[Any], axis: int, *, device: str | int = "auto", backend: str | None = None) -> np.ndarray:
    """Concatenate arrays along ``axis`` on a GPU (ONNX Concat).

    Inputs of size 0 along the axis are dropped, as in ONNX. The WGSL kernel takes at most 7 inputs (8 storage
    buffers per shader stage), the GLSL one 15.

    Args:
        arrays: One or more arrays of the same rank whose dims agree except along ``axis``.
        axis: The axis joined along, ``-rank .. rank-1``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array.

    Raises:
        ShapeError: When the arrays are missing, not numeric, of other ranks or shapes, or the axis is bad.
    """
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence) or not arrays:
        raise ShapeError("concat: arrays must be a non-empty list of arrays")
    xs = [float_array("concat", f"arrays[{k}]", a) for k, a in enumerate(arrays)]
    if np.ndim(arrays[0]) == 0:  # float_array returns at least 1-D
        raise ShapeError("concat: arrays[0] must have at least one dimension, got a scalar")
    rank = xs[0].ndim
    norm = check_axis("concat", axis, rank)
    for k, x in enumerate(xs):
        if x.ndim != rank or x.shape[:norm] != xs[0].shape[:norm] or x.shape[norm + 1 :] != xs[0].shape[norm + 1 :]:
            raise ShapeError(f"concat: arrays[{k}] has shape {x.shape}, incompatible with {xs[0].shape} on axis {axis}")
    kept = [x for x in xs if x.shape[norm]]
    if not kept or kept[0].size == 0:
        return np.concatenate(xs, axis=norm).astype(np.float32)
    problem = ConcatProblem(tuple(tuple(x.shape) for x in kept), norm)
    return run_op("concat", problem, kept, device, backend)


def transpose(
    x: Any, perm: Sequence[int] | None = None, *, device: str | int = "auto", backend: str | None = None
) -> np.ndarray:
    """Permute the axes of ``x`` on a GPU (ONNX Transpose; also NCHW <-> NHWC with perm 0231 / 0312).

    Args:
        x: An array of rank 1..6.
        perm: The input axis of each output axis; ``None`` reverses the axes, as in ONNX.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array of shape ``x.shape[perm[i]]``.

    Raises:
        ShapeError: When ``x`` is not numeric, of rank 0 or above 6, or ``perm`` is not a permutation.
    """
    x32 = float_array("transpose", "x", x)
    if not 1 <= np.ndim(x) <= transpose_op.MAX_RANK:  # np.ndim: float_array returns at least 1-D
        raise ShapeError(f"transpose: x must have rank 1..{transpose_op.MAX_RANK}, got shape {x32.shape}")
    if x32.size == 0:
        # validate perm on a stand-in shape, then let numpy move the empty axes
        axes = TransposeProblem(tuple(1 for _ in x32.shape), None if perm is None else tuple(perm)).axes
        return np.empty(tuple(x32.shape[a] for a in axes), np.float32)
    problem = TransposeProblem(tuple(x32.shape), None if perm is None else tuple(perm))
    return run_op("transpose", problem, [x32], device, backend)


def pad(
    x: np.ndarray,
    pads: Sequence[int],
    mode: str = "constant",
    constant_value: float = 0.0,
    axes: Sequence[int] | None = None,
    *,
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Pad (or crop, with negative pads) a tensor of rank 1..6 on a GPU, as ONNX Pad (opset 19).

    Args:
        x: Input tensor.
        pads: ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` for ``axes`` (default: every axis);
            negative values remove elements.
        mode: ``"constant"``, ``"reflect"``, ``"edge"`` or ``"wrap"``.
        constant_value: Fill value of ``constant`` mode (inf and nan allowed).
        axes: Axes the pads refer to (negative counts from the back); ``None`` means all.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array of the padded shape.

    Raises:
        ShapeError: Naming the argument that does not fit.
    """
    data = float_array("pad", "x", x)
    if not 1 <= data.ndim <= pad_op.MAX_RANK:
        raise ShapeError(f"pad: x must have rank 1..{pad_op.MAX_RANK}, got shape {data.shape}")
    if isinstance(constant_value, (bool, np.bool_)) or not isinstance(constant_value, (int, float, np.number)):
        raise ShapeError(f"pad: constant_value must be a number, got {constant_value!r}")
    shape = tuple(int(d) for d in data.shape)
    if 0 in shape:
        raise ShapeError(f"pad: x must not be empty, got shape {data.shape}")
    problem = PadProblem(shape, full_pads(shape, pads, axes), str(mode), float(constant_value))
    return run_op("pad", problem, [data], device, backend)


def _pair(name: str, value: Any, dims: tuple[int, ...], integer: bool) -> tuple[Any, Any]:
    """Return the H and W entries of ONNX ``scales``/``sizes`` (4 values, N and C unchanged) or of 2 values."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ShapeError(f"resize: {name} must be a sequence of 4 (N, C, H, W) or 2 (H, W) numbers, got {value!r}")
    values = list(np.asarray(value).reshape(-1).tolist())
    if len(values) not in (2, 4):
        raise ShapeError(f"resize: {name} must have 4 (N, C, H, W) or 2 (H, W) entries, got {len(values)}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ShapeError(f"resize: {name} must hold numbers, got {value!r}")
    if integer and any(not float(v).is_integer() for v in values):
        raise ShapeError(f"resize: sizes must be integers, got {value!r}")
    if len(values) == 4:
        keep = dims[:2] if integer else (1, 1)
        if [float(v) for v in values[:2]] != [float(k) for k in keep]:
            what = f"equal the input's N and C {dims[:2]}" if integer else "be 1"
            raise ShapeError(f"resize: {name} for N and C must {what} (only H and W are resized), got {values[:2]}")
        values = values[2:]
    if integer:
        return int(values[0]), int(values[1])
    return resize_op.f32(values[0]), resize_op.f32(values[1])


def _roi(value: Any) -> tuple[float, float, float, float]:
    """Return ``(start_h, start_w, end_h, end_w)`` of ONNX ``roi`` (8 values, N and C whole) or of 4 values."""
    try:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise ValueError
        values = [float(v) for v in np.asarray(value, np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise ShapeError(f"resize: roi must be a sequence of 8 or 4 numbers, got {value!r}") from None
    if len(values) == 8:
        if values[:2] != [0.0, 0.0] or values[4:6] != [1.0, 1.0]:
            raise ShapeError(f"resize: roi must keep N and C whole (0 to 1; only H and W are cropped), got {values}")
        values = [values[2], values[3], values[6], values[7]]
    if len(values) != 4:
        raise ShapeError(f"resize: roi must have 8 (N, C, H, W starts, then ends) or 4 entries, got {len(values)}")
    return (values[0], values[1], values[2], values[3])


def resize(
    x: np.ndarray,
    scales: Sequence[float] | None = None,
    sizes: Sequence[int] | None = None,
    mode: str = "nearest",
    coordinate_transformation_mode: str = "half_pixel",
    nearest_mode: str = "round_prefer_floor",
    *,
    cubic_coeff_a: float = -0.75,
    exclude_outside: bool = False,
    antialias: bool = False,
    roi: Sequence[float] | None = None,
    extrapolation_value: float = 0.0,
    keep_aspect_ratio_policy: str = "stretch",
    device: str | int = "auto",
    backend: str | None = None,
) -> np.ndarray:
    """Resize an NCHW tensor over H and W on a GPU, as ONNX Resize (opset 11-19, ``onnx.reference`` semantics).

    ONNX Upsample (opsets 7-9) is ``resize(x, scales, mode=mode, coordinate_transformation_mode="asymmetric",
    nearest_mode="floor")``: its nearest mode picks ``floor(out / scale)``, its linear mode interpolates with
    asymmetric coordinates.

    Args:
        x: ``(N, C, H, W)`` tensor.
        scales: ``[1, 1, scale_h, scale_w]`` (ONNX) or ``[scale_h, scale_w]``; rounded to float32 as ONNX does.
            Output size is ``floor(input * scale)``.
        sizes: ``[N, C, h_out, w_out]`` (ONNX) or ``[h_out, w_out]``; exactly one of ``scales``/``sizes``.
        mode: ``"nearest"``, ``"linear"`` (bilinear) or ``"cubic"`` (bicubic).
        coordinate_transformation_mode: ``"half_pixel"``, ``"pytorch_half_pixel"``, ``"align_corners"``,
            ``"asymmetric"``, ``"half_pixel_symmetric"`` or ``"tf_crop_and_resize"``.
        nearest_mode: ``"round_prefer_floor"``, ``"round_prefer_ceil"``, ``"floor"`` or ``"ceil"``.
        cubic_coeff_a: The cubic kernel's coefficient (cubic mode).
        exclude_outside: Drop the taps outside the input and renormalise (linear and cubic).
        antialias: Widen the linear or cubic filter by ``1 / scale`` when downsampling.
        roi: ``tf_crop_and_resize``'s region: ONNX's 8 values (N, C, H, W starts, then ends; N and C 0 to 1) or
            ``[start_h, start_w, end_h, end_w]``; default the whole input.
        extrapolation_value: ``tf_crop_and_resize``'s value where the source is outside the input.
        keep_aspect_ratio_policy: With ``sizes``: ``"stretch"``, or ``"not_larger"``/``"not_smaller"`` to
            resize H and W by one scale, the smaller or larger of ``size / input``.
        device: A ``--device`` selector.
        backend: ``"wgsl"`` or ``"glsl"`` to choose the kernel language; ``None`` takes the device's.

    Returns:
        float32 array ``(N, C, h_out, w_out)``.

    Raises:
        ShapeError: Naming the argument that does not fit (N or C resized, both or neither of scales/sizes,
            an unsupported mode).
    """
    data = float_array("resize", "x", x)
    if data.ndim != 4 or 0 in data.shape:
        raise ShapeError(f"resize: x must be a non-empty 4-D NCHW array, got shape {data.shape}")
    if (scales is None) == (sizes is None):
        raise ShapeError("resize: give exactly one of scales and sizes")
    dims = tuple(int(d) for d in data.shape)
    n, c, h, w = dims
    problem = ResizeProblem(
        n,
        c,
        h,
        w,
        scales=_pair("scales", scales, dims, False) if scales is not None else None,
        sizes=_pair("sizes", sizes, dims, True) if sizes is not None else None,
        mode=str(mode),
        coordinate_transformation_mode=str(coordinate_transformation_mode),
        nearest_mode=str(nearest_mode),
        cubic_coeff_a=cubic_coeff_a,
        exclude_outside=exclude_outside,
        antialias=antialias,
        roi=_roi(roi) if roi is not None else (0.0, 0.0, 1.0, 1.0),
        extrapolation_value=extrapolation_value,
        keep_aspect_ratio_policy=str(keep_aspect_ratio_policy),
    )
    return run_op("resize", problem, [data], device, backend)

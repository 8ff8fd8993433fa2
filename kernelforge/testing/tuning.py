"""Hand-made tuning databases and tuning reports for tests of how records reach plans and bundles."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kernelforge.db import new_record
from kernelforge.graph.prepare import model_kernels
from kernelforge.ops import get_op
from kernelforge.ops.conv import DEFAULT_PARAMS
from kernelforge.runtime.backends.browser import device_info
from kernelforge.templates import kernel_hash


def subgroup_db(root: Path, model: Path, lanes: int, subgroup_size: object) -> Path:
    """Write a database of one SwiftShader device whose record for the model's first dense conv shares X loads.

    Args:
        root: Folder to create (the database).
        model: The ONNX model whose conv the record is for.
        lanes: The record's ``sg_share``.
        subgroup_size: The device file's ``subgroup_size`` (any JSON value, to test bad ones).

    Returns:
        ``root``.
    """
    spec = get_op("conv2d")
    problem = next(p for op, p in model_kernels(model) if op == "conv2d" and not p.depthwise and p.mg % 4 == 0)
    params = {**DEFAULT_PARAMS, "wg_x": 1, "wg_y": 8, "wpt_p": 8, "wpt_o": 4, "tile_k": 1, "sg_share": lanes}
    record = new_record(spec, "wgsl", problem, kernel_hash(spec, "wgsl"), params, 1e-3, 2e-3, {}, "")
    device: dict[str, object] = {"fingerprint": "google-swiftshader-vulkan", "name": "SwiftShader", "vendor": "google"}
    device |= {"class": "cpu", "api": "vulkan", "driver": "", "subgroup_size": subgroup_size}
    root.mkdir(parents=True)
    text = json.dumps({"schema_version": 1, "device": device, "records": {record.key: record.to_json()}})
    (root / "google-swiftshader-vulkan.json").write_text(text)
    return root


SWIFTSHADER_ADAPTER: dict[str, Any] = {
    "vendor": "google",
    "architecture": "swiftshader",
    "device": "",
    "description": "SwiftShader Device (Subzero)",
    "desc": "google swiftshader swiftshader device (subzero)",
    "fallback": False,
    "subgroupSize": 4,
    "timestamps": True,
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 "
    "Safari/537.36",
    "limits": {
        "maxComputeInvocationsPerWorkgroup": 256,
        "maxComputeWorkgroupSizeX": 256,
        "maxComputeWorkgroupSizeY": 256,
        "maxComputeWorkgroupSizeZ": 64,
        "maxComputeWorkgroupStorageSize": 16384,
        "maxComputeWorkgroupsPerDimension": 65535,
        "maxStorageBufferBindingSize": 134217728,
    },
}
"""The tuning agent's ``open`` answer in headless Chromium (SwiftShader), as a tuning report carries it."""

REPORT_KERNELS = (("gemm", "64x64x64"), ("conv2d", "1x32x16x16:32x3x3:p1:g32"))


def tuning_report(
    kernels: Sequence[tuple[str, str]] = REPORT_KERNELS, ms: float = 0.5, adapter: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return a valid tuning report (``kernelforge.tuner.reports``) of SwiftShader in headless Chromium.

    Each kernel has three candidates: the default (``2 * ms``), the op's first seed config or the default again
    (``ms``, the winner) and the default once more, failed (no time). Tests change one field to tamper with it.

    Args:
        kernels: ``(op, shape)`` of each kernel.
        ms: The winners' time in milliseconds.
        adapter: The agent's ``open`` answer (default :data:`SWIFTSHADER_ADAPTER`).
    """
    adapter = copy.deepcopy(SWIFTSHADER_ADAPTER if adapter is None else adapter)
    limits = device_info(adapter, -1).limits
    entries = []
    for op, shape in kernels:
        spec = get_op(op)
        problem = spec.parse_problem(shape)
        default = spec.default_params(problem, limits, "wgsl")
        best = (spec.seed_params(problem, limits, "wgsl") or [default])[0]
        candidates = [  # copies: tests tamper with them, and seed configs may be the op module's own
            {"params": dict(default), "from": "default", "ms": 2 * ms},
            {"params": dict(best), "from": "seed", "ms": ms},
            {"params": dict(default), "from": "mesa-llvmpipe-vulkan-22.3", "ms": None, "error": "output differs"},
        ]
        entries.append(
            {
                "op": op,
                "language": "wgsl",
                "shape": spec.problem_key(problem),
                "template": kernel_hash(spec, "wgsl"),
                "steps": 1,
                "candidates": candidates,
                "winner": 1,
            }
        )
    return {
        "format": "kernelforge-tuning-report",
        "version": 1,
        "generator": "kernelforge 0.9.0",
        "manifest": "sha256-" + "0123456789abcdef" * 4,
        "model": "small_cnn",
        "backend": "webgpu",
        "adapter": adapter,
        "target": "mesa-llvmpipe-vulkan-22.3/wgsl",
        "match": "class",
        "clock": "timestamp",
        "spent_ms": 812.5,
        "kernels": entries,
    }

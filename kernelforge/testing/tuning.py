"""Hand-made tuning databases for tests of how records reach plans and bundles."""

from __future__ import annotations

import json
from pathlib import Path

from kernelforge.db import new_record
from kernelforge.graph.prepare import model_kernels
from kernelforge.ops import get_op
from kernelforge.ops.conv import DEFAULT_PARAMS
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

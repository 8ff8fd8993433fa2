"""The ``light_*`` models shipped in the onnx wheel, and copies of them with random weights.

The shipped models fill every weight with one constant (``ConstantOfShape`` 0.02), which makes their
outputs nearly uniform: a kernel bug can hide there. :func:`randomized` swaps each weight for seeded random
values of a sane scale, so the same architectures also check real numerics.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def light_models() -> dict[str, Path]:
    """Return model name (``resnet50``, ...) -> path of every shipped ``light_*.onnx``."""
    paths = sorted(glob.glob(str(LIGHT_DIR / "light_*.onnx")))
    return {Path(p).stem.removeprefix("light_"): Path(p) for p in paths}


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Return a copy whose constant-filled weights are random: He-scaled for 2-D and 4-D, [0.5, 1.5] for 1-D.

    1-D tensors (biases, BN scale/shift/mean/variance) stay positive so that BN variances remain valid.
    """
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    nodes = []
    for node in out.graph.node:
        shape_name = node.input[0] if node.op_type == "ConstantOfShape" and node.input else ""
        if shape_name in shapes:
            dims = tuple(int(d) for d in shapes[shape_name].reshape(-1))
            if len(dims) == 1:
                data = rng.uniform(0.5, 1.5, dims)
            else:
                fan_in = math.prod(dims[1:]) or 1
                data = rng.standard_normal(dims) * math.sqrt(2.0 / fan_in)
            tensor = numpy_helper.from_array(data.astype(np.float32), node.output[0])
            nodes.append(helper.make_node("Constant", [], [node.output[0]], value=tensor))
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out

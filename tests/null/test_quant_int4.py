"""quantize_weights(graph, "int4"): group scales, the dequantized floats as the constant, nodes marked."""

from __future__ import annotations

import numpy as np
import pytest

from kernelforge.graph.onnx_import import import_model
from kernelforge.graph.passes import optimize
from kernelforge.graph.quant_weights import quantize_weights
from kernelforge.ops import _qweight
from kernelforge.testing.models import MODELS


@pytest.mark.parametrize("group", [32, 16])
def test_int4_scales_are_each_groups_peak_over_7_as_halves_and_the_data_their_dequantized_values(group: int) -> None:
    graph = optimize(import_model(MODELS["small_cnn"]()))
    nodes = [n for n in graph.nodes if n.op in ("conv2d", "gemm")]
    before = {n.name: np.array(graph.value(n.inputs[1]).data, np.float32) for n in nodes}
    conv = [n for n in nodes if n.op == "conv2d"][1]  # 72 K values: int4 in both groupings
    zeroed = np.array(graph.value(conv.inputs[1]).data)
    zeroed[1] = 0  # an all-zero output channel: scale 1
    graph.value(conv.inputs[1]).data = zeroed
    before[conv.name][1] = 0
    assert quantize_weights(graph, "int4", group) == len(nodes)
    small = 0
    for node in nodes:
        w, value = before[node.name], graph.value(node.inputs[1])
        axis = 0 if node.op == "conv2d" or node.attrs.get("trans_b") else 1
        kc = np.moveaxis(w, axis, -1).reshape(-1, w.shape[axis])  # [K, channels], K in OIHW order for convs
        if kc.shape[0] < group:  # no whole group: int8 per channel, read by keep_weights_quantized
            assert "weight_quant" not in node.attrs and value.quant is not None and value.quant.axis == axis
            assert value.quant.q.dtype == np.int8 and np.abs(value.quant.q).max() == 127
            small += 1
            continue
        scales = graph.value(node.inputs[4]).data
        assert node.attrs["weight_quant"] == "int4" and node.attrs["weight_group"] == group
        assert scales.shape == (-(-kc.shape[0] // group), kc.shape[1])
        for g in range(scales.shape[0]):
            peak = np.abs(kc[g * group : (g + 1) * group]).max(axis=0)
            exact = np.where(peak > 0, peak / np.float32(7), 1).astype(np.float32)
            # rounded up to the next half (a bundle stores them as halves): never below, at most one half step above
            assert np.array_equal(scales[g].astype(np.float16).astype(np.float32), scales[g])
            assert (scales[g] >= exact).all() and (scales[g] <= exact * (1 + 2**-10)).all()
        wq = _qweight.WeightQuant("int4", kc.shape[1], group)
        q = _qweight.integers(value.data, scales, axis, wq, node.name)  # bit for bit q * scale
        assert np.abs(q).max() <= 7
        full = _qweight.int4_expand(scales, w.shape, axis, group)
        assert (np.abs(value.data - w) <= full / 2 * (1 + 1e-5)).all()  # half a step
    assert small == (2 if group == 32 else 0)  # small_cnn's K: 27 (conv), 72 (conv), 16 (gemm)
    assert (graph.value(conv.inputs[4]).data[:, 1] == 1).all()


def test_unknown_quantization_format_is_refused() -> None:
    graph = optimize(import_model(MODELS["mlp"]()))
    with pytest.raises(ValueError, match="int8, int4 or fp16, not 'int2'"):
        quantize_weights(graph, "int2")

"""Slice on real adapters (WGSL and GLSL) against numpy, and Slice / Split models against ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kernelforge
from kernelforge.db import TuningDB
from kernelforge.db.records import Lookup
from kernelforge.devices import DeviceInfo
from kernelforge.graph.layout import NHWC
from kernelforge.ops import Limits, get_op
from kernelforge.runtime.kernel import prepare
from kernelforge.testing.ops import check_op, check_sampled_configs, quick_tune, valid_configs

from ..null.test_slice_spec import c2f_model, cls_token_model, qkv_split_model, slice_model, split_model

pytestmark = pytest.mark.device
SPEC = get_op("slice")

SHAPES = [
    "1x197x2304:s768:e1536:a2",  # qkv's k: vec4 rows at an offset
    "1x64x20x20:s32:e64:a1",  # a C2f half: one contiguous run
    "1x197x768:s0:e1:a1",  # the [CLS] token
    "9:s-1:e-100:t-1",  # rank 1, reversed
    "4x6:s-1,0:e-100,6:t-1,2",  # rank 2: reversed rows, every other column
    "3x1x9:s-1000,0,2:e1000,1,9:t3,1,1",  # rank 3: starts and ends beyond the bounds
    "2x5x6x7:s1,-2,6:e5,-100,0:a-3,-2,-1:t2,-1,-3",  # rank 4: negative axes, steps > 1 and < 0
    "2x3x4x5x6:s1,-1,0,5:e2,-100,4,0:a0,1,3,4:t1,-1,2,-2",  # rank 5
    "5x8:s0,1:e5,7:t1,1",  # rows of 6: vec4 cannot apply
    "1x1:s0:e1",  # one value
]


@pytest.mark.parametrize("shape", SHAPES)
def test_wgsl_shapes_with_sampled_configs(lavapipe: Any, shape: str) -> None:
    configs = check_sampled_configs(lavapipe, SPEC, SPEC.parse_problem(shape), 5, len(shape), rtol=0.0)
    assert len(configs) >= 2


@pytest.mark.parametrize("shape", SHAPES)
def test_glsl_shapes_with_every_config(gl: Any, shape: str) -> None:
    problem = SPEC.parse_problem(shape)
    configs = valid_configs(SPEC, problem, gl.limits, "glsl")
    assert len(configs) >= 4
    for params in configs:
        check_op(gl, SPEC, problem, params, rtol=0.0)


def test_wgsl_whole_space(lavapipe: Any) -> None:
    # every config on an aligned split (vec4 and scalar) and on a reversed, strided window (scalar only)
    for shape, count in (("6x80:s8:e40:a1", 32), ("5x7x40:s4,-1:e-100,0:a0,2:t-2,-3", 16)):
        problem = SPEC.parse_problem(shape)
        configs = valid_configs(SPEC, problem, lavapipe.limits, "wgsl")
        assert len(configs) == count
        for params in configs:
            check_op(lavapipe, SPEC, problem, params, rtol=0.0)


def test_every_wgsl_device_runs_slice(wgsl_device: Any) -> None:
    for shape in ("1x197x2304:s768:e1536:a2", "2x5x6x7:s1,-2,6:e5,-100,0:a-3,-2,-1:t2,-1,-3"):
        problem = SPEC.parse_problem(shape)
        default = SPEC.default_params(problem, wgsl_device.limits, "wgsl")
        for params in (default, {**default, "vec4": 0, "ept": 1, "wg_size": 256}):
            check_op(wgsl_device, SPEC, problem, params, rtol=0.0)


def test_values_are_copied_bit_exact(lavapipe: Any, gl: Any) -> None:
    # NaN payloads, infinities, -0.0 and subnormals pass through unchanged
    problem = SPEC.parse_problem("4x8:s-1,4:e-100,8:t-1,1")
    bits = np.array([0x7FC00001, 0xFF800000, 0x80000000, 0x00000001, 0x7F7FFFFF, 0x3F800000], np.uint32)
    x = np.resize(bits, 32).view(np.float32).reshape(4, 8)
    want = x[::-1, 4:]
    for backend, configs in (
        (lavapipe, [{"wg_size": 32, "ept": 1, "vec4": 1}, {"wg_size": 64, "ept": 4, "vec4": 0}]),
        (gl, [{"pack": 4, "in_pack": 4, "square": 0}, {"pack": 1, "in_pack": 1, "square": 1}]),
    ):
        for params in configs:
            got = prepare(backend, SPEC, problem, params, [x]).run()
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_tuner_smoke(tmp_path: Any, lavapipe: Any) -> None:
    problem = SPEC.parse_problem("1x197x2304:s768:e1536:a2")
    result = quick_tune(lavapipe, SPEC, problem, tmp_path)
    assert result.record is not None and result.best_time <= result.default_time
    assert SPEC.constraints(problem, result.record.params, lavapipe.limits, "wgsl") is None
    check_op(lavapipe, SPEC, problem, result.record.params, rtol=0.0)


# --- models against ONNX Runtime ---------------------------------------------------------------------------------

RTOL = 1e-4  # of the output's largest magnitude


@pytest.fixture(scope="module", params=["wgsl", "glsl"])
def device(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(device info, language): lavapipe for WGSL, llvmpipe-GL for GLSL."""
    backend = request.getfixturevalue("lavapipe" if request.param == "wgsl" else "gl")
    return backend.info, request.param


def _check_model(model: onnx.ModelProto, device: tuple[Any, str], db: Any = None, seed: int = 0) -> Any:
    info, language = device
    session = kernelforge.load(model, device=info.index, backend=language, db=db)
    rng = np.random.default_rng(seed)
    feeds = {name: rng.uniform(-2, 2, shape).astype(np.float32) for name, shape in session.inputs}
    got = session.run(feeds)
    ort_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in ort_session.get_outputs()], ort_session.run(None, feeds), strict=True))
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=RTOL * scale, err_msg=f"{language} {name}")
    return session


def _slices(session: Any) -> int:
    return [s.call.op for s in session.steps].count("slice")


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_qkv_split_attention_matches_onnxruntime(device: tuple[Any, str], opset: int) -> None:
    model = qkv_split_model(opset)
    for seed in (0, 1):  # a second input flows through the same buffers
        session = _check_model(model, device, seed=seed)
    assert _slices(session) == 3


@pytest.mark.parametrize(("opset", "split"), [(11, "Split"), (13, "Split"), (9, "Slice"), (13, "Slice")])
def test_c2f_block_matches_onnxruntime(device: tuple[Any, str], opset: int, split: str) -> None:
    session = _check_model(c2f_model(opset, split), device)
    assert _slices(session) == 2


def test_cls_token_matches_onnxruntime(device: tuple[Any, str]) -> None:
    session = _check_model(cls_token_model(), device)
    assert _slices(session) == 1


@pytest.mark.parametrize(
    "case,opset",
    [
        (((4, 6, 5), [-1, 1], [-100, 5], [0, -1], [-2, 3]), 13),
        (((2, 3, 4, 5, 6), [5, -1], [0, -1000], [4, 1], [-2, -1]), 10),
        (((3, 7), [-1000, 2], [1000, -1], None, None), 9),
    ],
)
def test_slice_models_match_onnxruntime(device: tuple[Any, str], case: tuple[Any, ...], opset: int) -> None:
    _check_model(slice_model(*case, opset), device)


@pytest.mark.parametrize(("opset", "count", "num_outputs"), [(11, 2, False), (13, 4, False), (18, 3, True)])
def test_split_models_match_onnxruntime(device: tuple[Any, str], opset: int, count: int, num_outputs: bool) -> None:
    session = _check_model(split_model((3, 7, 8), -1 if num_outputs else 2, count, None, opset, num_outputs), device)
    assert _slices(session) == count


class _NhwcConvs(TuningDB):
    """A database that answers NHWC for every conv (the default's layout switched), so WGSL plans NHWC regions."""

    def params_for(self, info: DeviceInfo, op: str, problem: Any, language: str, limits: Limits) -> Lookup:
        found = super().params_for(info, op, problem, language, limits)
        if op != "conv2d":
            return found
        nhwc = {**found.params, "layout": 1}
        assert get_op(op).constraints(problem, nhwc, limits, language) is None
        return Lookup(nhwc, "tuned")


@pytest.mark.parametrize("split", ["Split", "Slice"])
def test_c2f_halves_are_sliced_in_nhwc_without_conversions(lavapipe: Any, tmp_path: Any, split: str) -> None:
    session = _check_model(c2f_model(13, split), (lavapipe.info, "wgsl"), db=_NhwcConvs(tmp_path))
    slices = [s for s in session.steps if s.call.op == "slice"]
    assert len(slices) == 2 and all(session.graph.value(s.node.output).layout == NHWC for s in slices)
    # the channel halves are cut from the NHWC buffer along its last axis
    assert {SPEC.problem_key(s.call.problem) for s in slices} == {"1x10x10x8:s0:e4:a3", "1x10x10x8:s4:e8:a3"}
    # only the model input and output cross the region border
    assert [s.call.op for s in session.steps].count("transpose") == 2

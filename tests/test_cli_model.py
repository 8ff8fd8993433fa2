"""``kernelforge run`` and ``kernelforge tune --model`` on a small saved model, checked against onnxruntime."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from kernelforge.cli import main
from kernelforge.testing.models import mlp, save
from kernelforge.testing.symbolic import seq_attention, seq_feeds


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return save(mlp(opset=13), tmp_path_factory.mktemp("models") / "mlp.onnx")


def _ort(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def _close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))


@pytest.mark.device
@pytest.mark.parametrize(("device", "backend"), [("lavapipe", None), ("auto", "glsl")])
def test_run_given_input_matches_onnxruntime(request, mlp_path, tmp_path, capsys, device, backend):
    request.getfixturevalue("gl" if backend == "glsl" else "lavapipe")  # skips where the device does not exist
    x = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out" / "y.npz"
    argv = ["run", str(mlp_path), "--device", device, "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out)]
    (tmp_path / "db").mkdir()  # an empty database: every kernel on its defaults
    argv += ["--db", str(tmp_path / "db")] + (["--backend", backend] if backend else [])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "output y [1, 10]" in text and "load " in text and "first run" in text and "(random)" not in text
    got = np.load(out)
    assert list(got) == ["y"]
    _close(got["y"], _ort(mlp_path, {"x": x})["y"])


@pytest.mark.device
def test_run_random_inputs_profile_and_bench(lavapipe, mlp_path, tmp_path, capsys):
    out = tmp_path / "y.npz"
    argv = ["run", str(mlp_path), "--device", "lavapipe", "--seed", "3", "--profile", "--bench", "2"]
    (tmp_path / "db").mkdir()
    assert main([*argv, "--output", str(out), "--db", str(tmp_path / "db")]) == 0
    text = capsys.readouterr().out
    assert "input  x [1, 64] (random)" in text
    assert "2 runs: median" in text
    assert "total kernel time" in text and "activation memory planned" in text
    header = next(line for line in text.splitlines() if line.startswith("node"))
    assert header.split() == ["node", "op", "shape", "params", "ms"]
    # the random inputs are seeded standard normal float32: the same draw in onnxruntime gives the same outputs
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    _close(np.load(out)["y"], _ort(mlp_path, {"x": x})["y"])


def test_run_errors_exit_2(mlp_path, tmp_path, capsys):
    good = tmp_path / "x.npy"
    np.save(good, np.zeros((1, 64), np.float32))
    np.save(tmp_path / "wrong.npy", np.zeros((1, 63), np.float32))
    cases = [
        ([str(tmp_path / "nope.onnx")], "no such model file"),
        ([str(mlp_path), "--input", "x"], "expected NAME=FILE.npy"),
        ([str(mlp_path), "--input", f"x{good}"], "expected NAME=FILE.npy"),
        ([str(mlp_path), "--input", f"x={tmp_path / 'missing.npy'}"], "no such file"),
        ([str(mlp_path), "--input", f"image={good}"], "the model has no input 'image'"),
        ([str(mlp_path), "--input", f"x={tmp_path / 'wrong.npy'}"], "shape 1x63 does not fit [1x64]"),
        ([str(mlp_path), "--bench", "0"], "--bench must be >= 1"),
    ]
    for argv, message in cases:
        assert main(["run", *argv, "--device", "lavapipe"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("kernelforge: ") and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


def test_tune_model_argument_errors(mlp_path, tmp_path, capsys):
    db = str(tmp_path / "db")
    assert main(["tune", "--model", str(tmp_path / "nope.onnx"), "--device", "lavapipe", "--db", db]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["tune", "--model", str(mlp_path), "--op", "gemm", "--db", db]) == 2
    assert "--op and --model exclude each other" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--model", str(mlp_path), "--shape", "8x8x8", "--db", db])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--db", db])
    assert exit_info.value.code == 2


@pytest.mark.device
def test_tune_model_stores_every_kernel(lavapipe, mlp_path, tmp_path, capsys, monkeypatch):
    from kernelforge.db import TuningDB
    from kernelforge.graph.prepare import model_kernels
    from kernelforge.ops import get_op

    monkeypatch.setenv("KF_PROGRESS", "0")
    db = tmp_path / "db"
    argv = ["tune", "--model", str(mlp_path), "--device", "lavapipe", "--trials-per-kernel", "2", "--db", str(db)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    kernels = model_kernels(str(mlp_path))
    assert kernels and f"{len(kernels)} of {len(kernels)} kernels stored" in text
    assert "speedup" in text
    wanted = {(op, get_op(op).problem_key(problem)) for op, problem in kernels}
    files = [loaded for _, loaded in TuningDB(db).iter_files()]
    assert len(files) == 1
    stored = {(r.op, r.shape) for r in files[0].records.values()}
    assert stored == wanted
    # the table lists the kernels largest FLOPs first
    flops = {f"{op} {get_op(op).problem_key(p)}": get_op(op).flops(p) for op, p in kernels}
    rows = [line.split("  ")[0] for line in text.splitlines() if line.split("  ")[0] in flops]
    assert len(rows) == len(kernels)
    assert [flops[r] for r in rows] == sorted(flops.values(), reverse=True)


@pytest.mark.device
def test_tune_model_time_budget_stops_starting_kernels(lavapipe, mlp_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KF_PROGRESS", "0")
    argv = ["tune", "--model", str(mlp_path), "--device", "lavapipe", "--trials-per-kernel", "50"]
    assert main([*argv, "--time-budget", "0.05", "--db", str(tmp_path / "db")]) == 0
    text = capsys.readouterr().out
    # the first kernel starts (with the whole, tiny, budget) and its search stops after the first trial; how
    # many more start before the budget is spent depends on the machine, but never all of them
    assert "time budget spent; not tuned:" in text
    stored = re.search(r"(\d+) of (\d+) kernels stored", text)
    assert stored is not None, text
    assert 1 <= int(stored.group(1)) < int(stored.group(2))


# --- symbolic dims: --shape, --dim, --variant -------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq_path(tmp_path_factory):
    return save(seq_attention(), tmp_path_factory.mktemp("models") / "seq.onnx")  # inputs [batch, seq]


@pytest.mark.device
@pytest.mark.parametrize(("device", "backend"), [("lavapipe", None), ("auto", "glsl")])
def test_run_fixes_the_sequence_dim_from_inputs_or_flags(request, seq_path, tmp_path, capsys, device, backend):
    request.getfixturevalue("gl" if backend == "glsl" else "lavapipe")
    feeds = seq_feeds(12)
    for name, array in feeds.items():
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "db").mkdir()
    base = ["run", str(seq_path), "--device", device, "--db", str(tmp_path / "db")] + (
        ["--backend", backend] if backend else []
    )
    # the arrays fix seq; --dim agrees with them
    out = tmp_path / "y.npz"
    argv = [
        *base,
        "--input",
        f"ids={tmp_path / 'ids.npy'}",
        "--input",
        f"mask={tmp_path / 'mask.npy'}",
        "--dim",
        "seq=12",
    ]
    assert main([*argv, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input  ids [1, 12] int64 (declared [batch, seq])" in text and "output y [1, 12, 16]" in text
    _close(np.load(out)["y"], _ort(seq_path, feeds)["y"])
    # a flag alone: random inputs of the fixed shapes, which the profile's summary shows
    assert main([*base, "--dim", "seq=5", "--profile"]) == 0
    text = capsys.readouterr().out
    assert "input  mask [1, 5] (random) (declared [batch, seq])" in text
    assert "inputs (static, as loaded): ids [1, 5] int64, mask [1, 5]" in text
    assert main([*base, "--shape", "ids=1x7"]) == 0  # mask takes seq from ids
    assert "input  mask [1, 7] (random)" in capsys.readouterr().out


def test_export_variants_from_the_command_line(seq_path, tmp_path, capsys):
    import json

    db = str(Path(__file__).resolve().parents[1] / "tuning_db")
    out = tmp_path / "b"
    argv = ["export", str(seq_path), "--out", str(out), "--db", db, "--variant", "seq=8", "--variant", "ids=1x16"]
    assert main([*argv, "--variant", "ids=1x32,mask=1x32"]) == 0
    text = capsys.readouterr().out
    assert "variant 2: ids [1, 16], mask [1, 16]" in text and "variant 3: ids [1, 32], mask [1, 32]" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 4
    assert [v["inputs"][1]["shape"] for v in manifest["variants"]] == [[1, 8], [1, 16], [1, 32]]
    # one shape set: the version-3 layout; --shape and --dim as in run
    for flags in (["--dim", "seq=8"], ["--shape", "mask=1x8"], ["--variant", "seq=8"], ["--dim", "batch=1,seq=8"]):
        assert main(["export", str(seq_path), "--out", str(tmp_path / "one"), "--db", db, *flags]) == 0, flags
        manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
        assert manifest["version"] == 3 and manifest["model"]["inputs"][0]["shape"] == [1, 8], flags
    capsys.readouterr()

"""Bad command lines: each one exits 2 (a usage error) or 1 with one line naming the problem, never a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelforge.cli import main
from kernelforge.testing.models import mlp, save
from kernelforge.testing.symbolic import seq_attention


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = save(mlp(), root / "mlp.onnx")
    save(seq_attention(), root / "seq.onnx")  # inputs [batch, seq]
    (root / "notes.txt").write_text("not a model")
    (root / "a_file").write_text("x")
    (root / "db").mkdir()
    (root / "out_dir").mkdir()
    import numpy as np

    np.save(root / "x.npy", np.zeros((1, 64), np.float32))
    np.save(root / "wrong.npy", np.zeros((2, 3), np.float32))
    (root / "bad.npy").write_text("garbage")
    np.save(root / "ids16.npy", np.zeros((1, 16), np.int64))
    return {"root": root, "model": model}


def cases(root: Path, model: Path) -> list[tuple[list[str], int, str]]:
    m, db, f = str(model), str(root / "db"), str(root / "a_file")
    tune = ["tune", "--device", "lavapipe", "--db", db]
    return [
        ([*tune, "--shape", "8x8"], 2, "not MxNxK"),
        ([*tune, "--shape", "axbxc"], 2, "--shape 'axbxc'"),
        ([*tune, "--shape", "0x8x8"], 2, "--shape '0x8x8'"),
        ([*tune, "--shape", ";"], 2, "names no shape"),
        ([*tune, "--shape", "30000x30000x30000"], 2, "storage binding limit"),
        ([*tune, "--op", "conv2d", "--shape", "1x3x8x8:4x3x3:s0"], 2, "--shape"),
        ([*tune, "--shape", "8x8x8", "--trials", "0"], 2, "--trials must be >= 1"),
        ([*tune, "--shape", "8x8x8", "--trials", "-3"], 2, "--trials must be >= 1"),
        ([*tune, "--shape", "8x8x8", "--time-budget", "0"], 2, "--time-budget"),
        ([*tune, "--shape", "8x8x8", "--time-budget", "-5"], 2, "--time-budget"),
        ([*tune, "--shape", "8x8x8", "--time-budget", "nan"], 2, "--time-budget"),
        ([*tune, "--shape", "8x8x8", "--time-budget", "inf"], 2, "--time-budget"),
        (["tune", "--device", "", "--shape", "8x8x8", "--db", db], 2, "--device is empty"),
        (["tune", "--device", "   ", "--shape", "8x8x8", "--db", db], 2, "--device is empty"),
        (["tune", "--device", "no-such-gpu", "--shape", "8x8x8", "--db", db], 2, "no device matching"),
        (["tune", "--device", "lavapipe", "--shape", "8x8x8", "--db", f], 2, "not a directory"),
        (["tune", "--device", "lavapipe", "--shape", "8x8x8", "--db", f"{f}/sub"], 2, "cannot create"),
        ([*tune, "--shape", "8x8x8", "--storage", "notaurl"], 1, "not a storage URL"),
        ([*tune, "--shape", "8x8x8", "--storage", "postgresql+nosuch://u@127.0.0.1/x"], 1, "not installed"),
        (["tune", "--device", "lavapipe", "--model", str(root / "missing.onnx")], 2, "no such model file"),
        (["tune", "--device", "lavapipe", "--model", m, "--trials", "0", "--db", db], 2, "--trials"),
        (["run", str(root / "missing.onnx")], 2, "no such model file"),
        (["run", str(root / "notes.txt")], 2, "not an ONNX model"),
        (["run", m, "--input", "x"], 2, "expected NAME=FILE.npy"),
        (["run", m, "--input", f"x={root / 'nope.npy'}"], 2, "no such file"),
        (["run", m, "--input", f"x={root / 'bad.npy'}"], 2, "cannot read"),
        (["run", m, "--input", f"nosuch={root / 'x.npy'}"], 2, "has no input"),
        (["run", m, "--input", f"x={root / 'wrong.npy'}"], 2, "does not fit"),
        (["run", m, "--bench", "0"], 2, "--bench must be >= 1"),
        (["run", m, "--output", str(root / "out_dir")], 2, "is a directory"),
        (["run", m, "--db", str(root / "nodb")], 2, "no such directory"),
        (["run", m, "--db", f], 2, "not a directory"),
        (["run", m, "--device", ""], 2, "--device is empty"),
        (["export", m, "--out", f], 2, "is a file"),
        (["export", m, "--out", str(root / "b"), "--db", str(root / "nodb")], 2, "no such directory"),
        (["export", m, "--out", str(root / "b"), "--targets", " , "], 2, "--targets is empty"),
        (["export", m, "--out", str(root / "b"), "--targets", "nosuchgpu", "--db", db], 1, "matched no device"),
        (["export", m, "--out", f"{f}/sub/b"], 1, "cannot write the bundle"),
        (["export", str(root / "notes.txt"), "--out", str(root / "b")], 2, "not an ONNX model"),
        (["db", "show", "--db", str(root / "nodb")], 2, "no such directory"),
        (["db", "show", "--db", f], 2, "not a directory"),
        (["db", "prune", "--db", str(root / "nodb")], 2, "no such directory"),
        (["db", "merge", str(root / "nodb"), "--db", db], 2, "no such directory"),
        (["db", "merge", db, "--db", f], 2, "not a directory"),
        (["db", "sync", "--storage", "notaurl", "--db", db], 1, "not a storage URL"),
        (["db", "import", str(root / "nope.json"), "--db", db], 2, "nope.json: no such report file"),
        (["db", "import", db, "--db", db], 2, "no such report file"),
        (["db", "import", str(root / "notes.txt"), "--db", f], 2, "not a directory"),
        *shape_cases(root),
    ]


def shape_cases(root: Path) -> list[tuple[list[str], int, str]]:
    """--shape, --dim and --variant of run and export, on a model whose inputs are [batch, seq]."""
    seq, m, out = str(root / "seq.onnx"), str(root / "mlp.onnx"), str(root / "b")
    run, export = ["run", seq], ["export", seq, "--out", out]
    return [
        (
            run,
            2,
            "input 'ids' [batch, seq] has symbolic dim 1 ('seq') and only a leading one defaults (to 1): give "
            "--dim seq=N or --shape ids=1xN",
        ),
        ([*run, "--shape", "ids"], 2, "--shape 'ids': expected NAME=VALUE"),
        ([*run, "--shape", "ids=1xq"], 2, "--shape ids=1xq: '1xq' is not a shape like 1x128"),
        ([*run, "--shape", "ids=1x0"], 2, "--shape ids=1x0: sizes must be >= 1"),
        ([*run, "--shape", "tokens=1x8"], 2, "--shape tokens=1x8: the model has no input 'tokens' (inputs: ids [batch"),
        ([*run, "--shape", "ids=8"], 2, "--shape ids=8: 8 does not fit the model's ids [batch, seq]"),
        ([*run, "--shape", "ids=1x8,ids=1x8"], 2, "--shape ids=1x8: ids is given twice"),
        (
            [*run, "--dim", "len=8"],
            2,
            "--dim len=8: the model has no symbolic dim 'len' (its symbolic dims: batch, seq)",
        ),
        ([*run, "--dim", "seq=abc"], 2, "--dim seq=abc: 'abc' is not a size"),
        ([*run, "--dim", "seq=0"], 2, "--dim seq=0: sizes must be >= 1"),
        ([*run, "--dim", "seq=8", "--dim", "seq=9"], 2, "--dim seq=9: seq is given twice"),
        (
            [*run, "--shape", "ids=1x8", "--shape", "mask=1x16"],
            2,
            "--shape mask=1x16 makes seq 16, but --shape ids=1x8 makes it 8",
        ),
        (
            [*run, "--dim", "seq=8", "--input", f"ids={root / 'ids16.npy'}"],
            2,
            "--input ids (shape 1x16) makes seq 16, but --dim seq=8 makes it 8",
        ),
        (["run", m, "--dim", "seq=3"], 2, "the model has no symbolic dim 'seq' (its symbolic dims: none)"),
        (export, 2, "has symbolic dim 1 ('seq')"),
        (
            [*export, "--variant", "seq=8", "--variant", "seq=8"],
            2,
            "--variant 2 (seq=8) gives the shapes of --variant 1",
        ),
        ([*export, "--variant", "seq=8", "--variant", "ids=1x8"], 2, "--variant 2 (ids=1x8) gives the shapes of"),
        (
            [*export, "--variant", "len=8"],
            2,
            "--variant 1 (len=8): 'len' is neither an input (ids, mask) nor a symbolic dim",
        ),
        ([*export, "--variant", ","], 2, "--variant 1 ',': names nothing"),
        (
            [*export, "--variant", "ids=1x8,mask=1x16"],
            2,
            "--variant 1 (mask=1x16) makes seq 16, but --variant 1 (ids=1x8)",
        ),
        ([*export, "--dim", "seq=8", "--variant", "seq=16"], 2, "--variant 1 (seq=16) makes seq 16, but --dim seq=8"),
        ([*export, "--variant", "seq=8", "--variant", "batch=2"], 2, "input 'ids' [batch, seq] has symbolic dim 1"),
        ([*export, "--variant", "ids=8"], 2, "--variant 1 (ids=8): 8 does not fit the model's ids [batch, seq]"),
    ]


def test_every_bad_command_line_is_one_clear_line(files, lavapipe, capsys, monkeypatch):
    monkeypatch.setenv("KF_PROGRESS", "0")
    root = files["root"]
    results = []
    for argv, code, text in cases(root, files["model"]):
        got = main(argv)
        err = capsys.readouterr().err.strip()
        results.append((argv, got, err))
        assert got == code, (argv, got, err)
        one_line = err.startswith("kernelforge: ") and err.count("\n") == 0
        assert one_line or "Available devices" in err, (argv, err)  # a device list follows its one line
        assert text.lower() in err.lower(), (argv, err)
        assert "Traceback" not in err
    assert len(results) >= 45


def test_an_unsupported_model_is_named_by_its_file_with_every_problem(tmp_path, lavapipe, capsys):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Hardmax", ["ids"], ["h"], name="hm"), helper.make_node("Det", ["h"], ["y"], name="det")]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("ids", TensorProto.STRING, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd.onnx")
    for argv in (["run", str(path), "--device", "lavapipe"], ["export", str(path), "--out", str(tmp_path / "b")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{path}: 2 unsupported node(s) and 1 unsupported graph input/output dtype(s)" in err, err
        assert "main_graph" not in err
        assert "graph input 'ids': dtype STRING" in err and "Hardmax node 'hm'" in err and "Det node 'det'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["tune", "--op", "nope", "--shape", "8x8x8"],
        ["run", "m.onnx", "--backend", "cuda"],
        ["export", "m.onnx", "--out", "x", "--weights", "int3"],
        ["export", "m.onnx", "--out", "x", "--variant"],
        ["run", "m.onnx", "--dim"],
        ["tune", "--shape", "8x8x8", "--trials", "many"],
        ["tune", "--shape", "8x8x8", "--time-budget", "soon"],
        ["db"],
        ["db", "import"],
        ["frobnicate"],
    ],
)
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_sigterm_ends_a_tune_like_ctrl_c_and_stores_the_best_so_far(tmp_path, lavapipe):
    db = tmp_path / "db"
    argv = ["tune", "--device", "lavapipe", "--shape", "96x80x72", "--trials", "400", "--db", str(db)]
    code = f"import sys; from kernelforge.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KF_PROGRESS": "0"},
    )
    journal = db / ".studies" / "studies.journal"
    deadline = time.monotonic() + 240
    finished = re.compile(r'"state": ?1\b')  # TrialState.COMPLETE in the journal's JSON lines
    while time.monotonic() < deadline and (not journal.exists() or len(finished.findall(journal.read_text())) < 3):
        time.sleep(0.5)  # until a few trials have finished
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    assert list(db.glob("*.json")), "SIGTERM must still store the best config found so far"

"""Bundle weight formats: weights.bin size and accuracy of fp32, fp16, int8 and int4 weights, side by side.

    python benchmarks/weights.py [--models mobilenet_v2_style,resnet18_style,vit_tiny,minilm] [--size 224]
                                 [--inputs 100] [--calibration 16] [--device lavapipe] [--out FILE]

For each model, five bundles are exported from the repository's ``tuning_db/`` (``--weights fp32 | fp16 | int8 |
int4``, and int4 ``--calibrate``d on ``--calibration`` inputs drawn like the measured ones but from another seed:
row ``int4 gptq``) and their ``weights.bin`` and ``manifest.json`` (shaders, plans, short scale lists) sizes
compared. Accuracy is measured on ``--inputs`` inputs (seed 0:
standard-normal images, an encoder's random token ids) against ONNX Runtime CPU on the float32 model: the share
of inputs whose top-1 class agrees, the largest output difference relative to the reference's largest magnitude,
and the smallest cosine similarity of an output row (an encoder's: a token's hidden state, which
``ENCODER_MIN_COS`` bounds). What each format computes is run where it is exact: fp32, int8 and int4 by a native
session on ``--device`` (``weights="int8"``/``"int4"`` quantizes as the export does and its kernels read the
integers), fp16 by ONNX Runtime on the model with its float initializers rounded to fp16 (what the runtime widens
them back to).

Prints a table and writes ``benchmarks/results/weights.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import SPECS, build
from _common import table, write_json

import kernelforge
from kernelforge.export import export
from kernelforge.testing.models import MODELS
from kernelforge.testing.quantized import cosines

REPO_DB = Path(__file__).resolve().parent.parent / "tuning_db"


def _fp16_rounded(model: onnx.ModelProto) -> onnx.ModelProto:
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for init in rounded.graph.initializer:
        data = numpy_helper.to_array(init)
        if data.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(data.astype(np.float16).astype(np.float32), init.name))
    return rounded


Feeds = dict[str, np.ndarray]


def _ort(model: onnx.ModelProto, inputs: list[Feeds]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, feeds)[0] for feeds in inputs]


def _native(
    model: onnx.ModelProto, inputs: list[Feeds], device: str, weights: str, calibration: list[Feeds] | None = None
) -> list[np.ndarray]:
    session = kernelforge.load(model, device=device, db=REPO_DB, weights=weights, calibration=calibration or ())
    return [next(iter(session.run(feeds).values())) for feeds in inputs]


def _accuracy(got: list[np.ndarray], want: list[np.ndarray], classifier: bool) -> dict[str, Any]:
    """Top-1 agreement, the largest error relative to the largest value, the smallest cosine of an output row.

    A classifier's row is its logits; an encoder's, a token's hidden state (the last axis).
    """
    agree = np.mean([int(np.argmax(g) == np.argmax(w)) for g, w in zip(got, want, strict=True)])
    err = max(float(np.abs(g - w).max()) / float(np.abs(w).max()) for g, w in zip(got, want, strict=True))
    return {"top-1 agreement": float(agree) if classifier else "-", "max rel err": err,
            "min cos": min(float(cosines(g, w).min()) for g, w in zip(got, want, strict=True))}  # fmt: skip


def _model(name: str, size: int, count: int, seed: int = 0) -> tuple[onnx.ModelProto, list[Feeds], bool]:
    """A benchmark model, ``count`` random feeds (from ``seed``) and whether it is a classifier (a CNN of MODELS)."""
    rng = np.random.default_rng(seed)
    if name in MODELS:
        model = MODELS[name](size=size)
        return model, [{"x": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(count)], True
    # a case of benchmarks/_cases.py: an encoder gets random token ids below its vocabulary, ViT random images
    model, first = build(name)
    vocab = SPECS[name].vocab
    inputs = [first] if seed == 0 else []
    while len(inputs) < count:
        feeds = dict(first)
        for k, v in first.items():
            if k == "input_ids":
                feeds[k] = rng.integers(0, vocab, v.shape).astype(v.dtype)
            elif v.dtype.kind == "f":
                feeds[k] = rng.standard_normal(v.shape).astype(v.dtype)
        inputs.append(feeds)
    classifier = len(model.graph.output[0].type.tensor_type.shape.dim) == 2  # one row of logits
    return model, inputs, classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v2_style,resnet18_style,vit_tiny,minilm")
    parser.add_argument("--size", type=int, default=224, help="input height and width (CNNs; ViT-Tiny: its own 224)")
    parser.add_argument("--inputs", type=int, default=100, help="random inputs for the accuracy columns")
    parser.add_argument("--calibration", type=int, default=16, help="inputs (seed 1) the int4 gptq row rounds against")
    parser.add_argument("--device", default="lavapipe", help="where fp32, int8 and int4 weights run natively")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, inputs, classifier = _model(name, args.size, args.inputs)
            calibration = _model(name, args.size, args.calibration, seed=1)[1]
            npz = Path(tmp) / f"{name}-calibration.npz"
            np.savez(npz, **{k: np.stack([f[k] for f in calibration]) for k in calibration[0]})
            want = _ort(model, inputs)
            sizes = {w: export(model, Path(tmp) / f"{name}-{w}", db=REPO_DB, weights=w).weights_bytes for w in
                     ("fp32", "fp16", "int8", "int4")}  # fmt: skip
            sizes["int4 gptq"] = export(
                model, Path(tmp) / f"{name}-int4 gptq", db=REPO_DB, weights="int4", calibrate=npz
            ).weights_bytes
            manifests = {w: (Path(tmp) / f"{name}-{w}" / "manifest.json").stat().st_size for w in sizes}
            runs = {
                "fp32": _native(model, inputs, args.device, "fp32"),
                "fp16": _ort(_fp16_rounded(model), inputs),
                "int8": _native(model, inputs, args.device, "int8"),
                "int4": _native(model, inputs, args.device, "int4"),
                "int4 gptq": _native(model, inputs, args.device, "int4", calibration),
            }
            for weights, got in runs.items():
                row = {"model": name, "weights": weights, "weights.bin KiB": sizes[weights] / 1024}
                row["vs fp32"] = sizes[weights] / sizes["fp32"]
                row["manifest KiB"] = manifests[weights] / 1024
                rows.append({**row, **_accuracy(got, want, classifier)})
                print(rows[-1], flush=True)
    print(f"\n{args.inputs} inputs at {args.size}², against ONNX Runtime CPU on the float32 model; "
          f"fp32, int8 and int4 run on {args.device}, fp16 by ONNX Runtime with fp16-rounded weights; int4 gptq "
          f"rounded against {args.calibration} other inputs (seed 1)\n")  # fmt: skip
    columns = ["model", "weights", "weights.bin KiB", "vs fp32", "manifest KiB", "top-1 agreement", "max rel err"]
    print(table(rows, [*columns, "min cos"]))
    meta = {"size": args.size, "inputs": args.inputs, "calibration": args.calibration, "device": args.device}
    path = write_json("weights", {**meta, "rows": rows}, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

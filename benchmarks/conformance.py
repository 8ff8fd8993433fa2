"""ONNX's node test cases through kernelforge: how many pass, per backend and op type, and what stops the rest.

    python benchmarks/conformance.py [--devices lavapipe,glsl]

The cases are the ones the installed ``onnx`` ships (``onnx.backend.test``, 1,884 for onnx 1.23), run through
:class:`kernelforge.testing.onnx_backend.KernelforgeBackend` with ONNX's own tolerances. A case counts as
supported when kernelforge converts every op type it uses; such a case passes, or fails on a documented
limitation (``LIMITS``), or fails (an error the conformance test would report). Prints the totals, the
limitations hit and the unsupported op types by case count, and writes ``benchmarks/results/conformance.json``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table, write_json

from kernelforge.runtime import open_device
from kernelforge.testing.onnx_backend import LIMITS, cases, op_types, run_case, supported_op_types


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="lavapipe,glsl", help="WGSL device selectors, or glsl (llvmpipe GL)")
    args = parser.parse_args(argv)
    every = cases()
    supported = supported_op_types()
    types = sorted({t for c in every for t in op_types(c.model)})
    runnable = [c for c in every if op_types(c.model) <= supported]
    missing = collections.Counter(t for c in every for t in op_types(c.model) - supported)
    result: dict[str, object] = {
        "cases": len(every),
        "op_types": len(types),
        "supported_op_types": len([t for t in types if t in supported]),
        "cases_of_supported_op_types": len(runnable),
        "unsupported_op_types": dict(missing.most_common()),
        "devices": {},
    }
    rows = []
    for selector in [s.strip() for s in args.devices.split(",") if s.strip()]:
        language = "glsl" if selector == "glsl" else "wgsl"
        device = open_device("auto" if language == "glsl" else selector, language)
        started = time.perf_counter()
        outcomes = {c.name: run_case(c, device.info.index, language) for c in runnable}
        seconds = time.perf_counter() - started
        passed = sorted(n for n, o in outcomes.items() if o.passed)
        limits = collections.Counter(LIMITS[o.limit] for o in outcomes.values() if o.limit)
        errors = {n: o.error for n, o in outcomes.items() if o.error}
        passed_types = {t for c in runnable if c.name in passed for t in op_types(c.model)}
        result["devices"][device.info.slug] = {  # type: ignore[index]
            "language": language,
            "passed": len(passed),
            "op_types_passing": len(passed_types),
            "limits": dict(limits.most_common()),
            "errors": errors,
            "seconds": round(seconds, 1),
            "passed_cases": passed,
        }
        rows.append(
            {
                "device": device.info.slug,
                "lang": language,
                "cases": len(runnable),
                "pass": len(passed),
                "op types passing": len(passed_types),
                "limits": sum(limits.values()),
                "errors": len(errors),
                "s": round(seconds),
            }
        )
    print(
        f"{len(every)} node cases of {len(types)} op types; kernelforge converts {result['supported_op_types']} "
        f"of them, which {len(runnable)} cases use alone"
    )
    print(table(rows, list(rows[0]) if rows else []))
    for slug, info in result["devices"].items():  # type: ignore[attr-defined]
        for reason, n in info["limits"].items():
            print(f"  {slug}: {n:4d} cases hit a limit: {reason}")
        for name, error in info["errors"].items():
            print(f"  {slug}: ERROR {name}: {error[:160]}")
    print("unsupported op types by cases: " + ", ".join(f"{t} {n}" for t, n in missing.most_common(25)) + ", ...")
    write_json("conformance", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

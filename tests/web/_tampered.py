"""The tampered-bundle corpus (``tests/data/tampered_bundles.json``) applied to a freshly exported bundle.

Each mutation gives a class-1 case (the edit alone: the integrity member stays as exported) and, where listed, a
class-2 case (the edit, then ``weights.bytes``, ``weights.sha256`` when the weights were edited, and the integrity
member recomputed, as a buggy or hostile exporter would). The corpus file says what the ops and paths mean.
A mutation with ``"bundle": "variants"`` edits the variants bundle (version 4: a token model in three sequence
lengths) instead of the single-variant one (version 3: a small CNN).

``python -m tests.web._tampered OUT`` (run from the repository root; the Node tests do) exports the corpus models
into ``OUT/original`` and ``OUT/original-variants`` and writes every case to ``OUT/cases/<class>-<name>/`` with
``OUT/cases.json`` listing them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelforge.export import export
from kernelforge.export.bundle import manifest_text
from kernelforge.testing.models import save, small_cnn
from kernelforge.testing.symbolic import seq_attention

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "tampered_bundles.json"
REPO_DB = ROOT / "tuning_db"


@dataclass(frozen=True)
class Case:
    """One tampered bundle and the text its refusal must contain."""

    name: str
    cls: int
    manifest: str
    weights: bytes
    expect: str
    """A regular expression (JS and Python alike) the error message must match."""

    @property
    def dir(self) -> str:
        return f"{self.cls}-{self.name}"


def mutations() -> list[dict[str, Any]]:
    """The corpus's mutations."""
    return list(json.loads(CORPUS.read_text())["mutations"])


SEQS = (8, 16, 32)
"""The sequence lengths of the variants bundle."""


def variants_dir(original: Path) -> Path:
    """Where :func:`export_original` writes the variants bundle beside ``original``."""
    return original.with_name(f"{original.name}-variants")


def export_original(out: Path) -> Path:
    """Export the corpus models into ``out`` and :func:`variants_dir` of it; return ``out``.

    ``out``: a small CNN (convolutions, pooling, GEMM, softmax), version 3. Beside it: a token model with a
    symbolic sequence length in the :data:`SEQS` variants, version 4.
    """
    model = save(small_cnn(), out.parent / f"{out.name}.onnx")
    export(model, out, db=REPO_DB)
    shapes = [{"ids": [1, n], "mask": [1, n]} for n in SEQS]
    export(seq_attention(), variants_dir(out), db=REPO_DB, variants=shapes, name="seq_attention")
    return out


def _segment(doc: Any, seg: str, ref: Any) -> int | str:
    """The key or index ``seg`` of a path names in ``doc`` (see the corpus's selectors)."""
    if seg == "$":
        seg = str(ref)
    if isinstance(doc, dict):
        return seg.replace("~1", "/").replace("~0", "~")
    assert isinstance(doc, list), f"cannot index {type(doc).__name__} with {seg!r}"
    found = re.fullmatch(r"\[([^=\]]+)(?:=([^\]]*))?\]", seg)
    if found:
        key, value = found[1], found[2]
        value = value.replace("~1", "/").replace("~0", "~") if value is not None else None
        for i, item in enumerate(doc):
            if isinstance(item, dict) and key in item and (value is None or item[key] == value):
                return i
        raise KeyError(f"no element matches {seg}")
    index = int(seg)
    return index + len(doc) if index < 0 else index


def _locate(doc: Any, path: str, ref: Any) -> tuple[Any, int | str, str]:
    """Return (container, key, dotted path) of the JSON pointer ``path`` in ``doc``."""
    segs = path.split("/")[1:]
    dotted = ""
    for k, seg in enumerate(segs):
        key = _segment(doc, seg, ref)
        dotted += f"[{key}]" if isinstance(key, int) else (f".{key}" if dotted else str(key))
        if k == len(segs) - 1:
            return doc, key, dotted
        doc = doc[key]
    raise ValueError(f"empty path {path!r}")


def _get(doc: Any, path: str) -> Any:
    container, key, _ = _locate(doc, path, None)
    return container[key]


def apply(mutation: dict[str, Any], manifest: dict[str, Any], weights: bytes) -> tuple[dict[str, Any], bytes, str]:
    """Return the manifest and weights after ``mutation``, and the dotted path of its first manifest op."""
    m = copy.deepcopy(manifest)
    w = bytearray(weights)
    ref = _get(manifest, mutation["ref"]) if "ref" in mutation else None
    first = ""
    for op in mutation["ops"]:
        if "flip" in op:
            at = len(w) // 2 if op["flip"] == "middle" else op["flip"] % len(w)
            w[at] ^= 1 << op["bit"]
            continue
        if "truncate" in op:
            n = op["truncate"]
            w = w[: len(w) // 2] if n == "half" else bytearray() if n == "all" else w[:-n]
            continue
        if "extend" in op:
            w += bytes(op["extend"])
            continue
        verb = next(k for k in ("set", "add", "remove", "swap", "bump") if k in op)
        container, key, dotted = _locate(m, op[verb], ref)
        first = first or dotted
        if verb == "set":
            value = ref if op["value"] == "$" else copy.deepcopy(op["value"])
            if isinstance(container, list) and key == len(container):
                container.append(value)
            else:
                container[key] = value
        elif verb == "add":
            container[key] = container[key] + op["value"]
        elif verb == "remove":
            del container[key]
        elif verb == "swap":
            other, okey, _ = _locate(m, op["with"], ref)
            container[key], other[okey] = other[okey], container[key]
        else:
            text = container[key]
            at = op["at"] % len(text)
            container[key] = text[:at] + chr(ord(text[at]) + 1) + text[at + 1 :]
    return m, bytes(w), first


def as_edited(manifest: dict[str, Any]) -> str:
    """Serialise ``manifest`` as the exporter does, keeping its ``integrity`` member as it is (or without one)."""
    body = json.dumps({k: v for k, v in manifest.items() if k != "integrity"}, separators=(",", ":"))
    if "integrity" not in manifest:
        return body
    return f"{body[:-1]},{json.dumps('integrity')}:{json.dumps(manifest['integrity'])}}}"


def _pattern(text: str) -> str:
    return re.escape(text).replace(r"\*", r"\d+")


def cases(original: Path) -> list[Case]:
    """Every case of the corpus, applied to the bundles in ``original`` and :func:`variants_dir` of it."""
    bundles = {}
    for kind, folder in (("single", original), ("variants", variants_dir(original))):
        text = (folder / "manifest.json").read_text()
        bundles[kind] = (json.loads(text), (folder / "weights.bin").read_bytes())
        assert as_edited(bundles[kind][0]) == text, "the corpus relies on re-serialising the exporter's text exactly"
    out = []
    for mutation in mutations():
        manifest, weights = bundles[mutation.get("bundle", "single")]
        m, w, first = apply(mutation, manifest, weights)
        assert (m, w) != (manifest, weights), f"{mutation['name']} changes nothing"
        for cls in mutation["classes"]:
            if cls == 1:
                expect = _pattern(mutation.get("expect1", "integrity check"))
                out.append(Case(mutation["name"], 1, as_edited(m), w, expect))
                continue
            resealed = copy.deepcopy(m)
            if w != weights:
                resealed["weights"].update(bytes=len(w), sha256=hashlib.sha256(w).hexdigest())
            field = mutation.get("field")
            assert field or first, f"{mutation['name']}: class 2 needs a field or a manifest op"
            expect = _pattern(field) if field else re.escape(first)
            out.append(Case(mutation["name"], 2, manifest_text(resealed), w, expect))
    return out


def write(out: Path, all_cases: list[Case]) -> None:
    """Write each case's bundle under ``out`` (``<class>-<name>/``) and ``out/cases.json``."""
    for case in all_cases:
        d = out / case.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "manifest.json").write_text(case.manifest)
        (d / "weights.bin").write_bytes(case.weights)
    listing = [{"name": c.name, "class": c.cls, "dir": c.dir, "expect": c.expect} for c in all_cases]
    (out / "cases.json").write_text(json.dumps(listing, indent=1))


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    original = export_original(out / "original")
    write(out / "cases", cases(original))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

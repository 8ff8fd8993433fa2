"""The models ``benchmarks/browser.py`` and ``benchmarks/models.py`` run: a name -> an ONNX model and its inputs.

Besides the builders of :mod:`kernelforge.testing.models` (the old defaults), the cases people ship:

- ``minilm``: a MiniLM-L6-shaped encoder, :func:`kernelforge.testing.transformers.bert_style` with 6 layers,
  width 384, 12 heads, 128 tokens and BERT's full 30,522-row token table (47 MB of the model's 90 MB: the
  table is what a page downloads, so it stays); int64 ``input_ids`` below the vocabulary and an int64
  ``attention_mask`` whose last 28 tokens are padding (a 100-token sentence padded to 128);
- ``bert_tiny``: the same encoder at 2 layers, width 128, 64 tokens, 1,000 tokens of vocabulary: a smoke case
  for the int64 inputs that runs in seconds;
- ``mobilenet_v2_style_qdq``: ``mobilenet_v2_style`` quantized by onnxruntime's ``quantize_static`` in the QDQ
  format (uint8 activations, int8 weights, :mod:`kernelforge.testing.quantized`);
- ``vit_tiny`` (ViT-Tiny/16 at 224², 12 layers of width 192, 3 heads, 1,000 classes) and ``yolo_style`` (a
  YOLOv8 at 320², width 32, 80 classes): builders of ``kernelforge.testing.families`` in the form PyTorch's
  dynamo exporter writes (opset 18), looked up by name when a case is built. Where a case's module or builder
  is missing, or a builder does not take one of its sizes, the case is :class:`Unavailable` with a message
  saying which, and the benchmarks report it and go on.

Inputs are seeded by dtype (:func:`seeded_feeds`): floats standard normal from ``default_rng(0)`` in graph-input
order (the old cases' inputs, unchanged), ``input_ids`` below the case's vocabulary, ``attention_mask`` ones
with the case's padding zeroed, other integers and booleans 0/1.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from kernelforge.testing.models import MODELS

FAMILY_MODULE = "kernelforge.testing.families"
MINILM_VOCAB = 30522


class Unavailable(LookupError):
    """A case whose builder is not in this checkout (or does not take the case's sizes)."""


@dataclass(frozen=True)
class CaseSpec:
    """How to build one case: which builder, with which options, fed how."""

    name: str
    module: str
    """Module holding the builder (imported only when the case is built)."""
    builder: str
    """Name in the module's registry (``MODELS``, ``TRANSFORMERS``, ``FAMILIES``) or a function of it."""
    options: Mapping[str, Any] = field(default_factory=dict)
    vocab: int = 2
    """``input_ids`` are drawn below this."""
    padding: int = 0
    """Trailing ``attention_mask`` zeros."""
    quantize: str | None = None
    """A :data:`kernelforge.testing.quantized.KINDS` entry: the built model is quantized so."""


SPECS: dict[str, CaseSpec] = {
    **{name: CaseSpec(name, "kernelforge.testing.models", name) for name in MODELS},
    "minilm": CaseSpec(
        "minilm",
        "kernelforge.testing.transformers",
        "bert_style",
        {"layers": 6, "hidden": 384, "heads": 12, "seq": 128, "vocab": MINILM_VOCAB},
        vocab=MINILM_VOCAB,
        padding=28,
    ),
    "bert_tiny": CaseSpec(
        "bert_tiny",
        "kernelforge.testing.transformers",
        "bert_style",
        {"layers": 2, "hidden": 128, "heads": 2, "seq": 64, "vocab": 1000},
        vocab=1000,
        padding=8,
    ),
    "mobilenet_v2_style_qdq": CaseSpec(
        "mobilenet_v2_style_qdq", "kernelforge.testing.models", "mobilenet_v2_style", quantize="static"
    ),
    "vit_tiny": CaseSpec(
        "vit_tiny",
        FAMILY_MODULE,
        "vit_tiny",
        {"style": "dynamo", "size": 224, "patch": 16, "hidden": 192, "heads": 3, "layers": 12, "classes": 1000},
    ),
    "yolo_style": CaseSpec(
        "yolo_style", FAMILY_MODULE, "yolo_style", {"style": "dynamo", "size": 320, "width": 32, "classes": 80}
    ),
}
"""Every case by name."""

FAMILY = ("minilm", "vit_tiny", "yolo_style", "mobilenet_v2_style_qdq")
"""The ``--family`` preset: the models people ship."""


def builder(spec: CaseSpec) -> Callable[..., onnx.ModelProto]:
    """Return a case's builder, imported now.

    Raises:
        Unavailable: When its module or the builder is missing, or the builder does not take an option.
    """
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not spec.module.startswith(exc.name):
            raise  # a module that exists but fails inside is a bug to see, not a missing case
        raise Unavailable(f"{spec.name}: {spec.module} is not in this checkout (its builders are not merged)") from exc
    registry: Mapping[str, Any] = next(
        (getattr(module, r) for r in ("FAMILIES", "TRANSFORMERS", "MODELS") if hasattr(module, r)), {}
    )
    fn = registry.get(spec.builder) or getattr(module, spec.builder, None)
    if not callable(fn):
        raise Unavailable(f"{spec.name}: {spec.module} has no builder {spec.builder!r}")
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [k for k in spec.options if k not in params and not takes_any]
    if missing:
        raise Unavailable(f"{spec.name}: {spec.module}.{spec.builder} takes no {', '.join(missing)}")
    return fn


def seeded_feeds(model: onnx.ModelProto, vocab: int = 2, padding: int = 0) -> dict[str, np.ndarray]:
    """Return inputs for every graph input that is not an initializer, each of its declared dtype.

    Floats are standard normal from ``default_rng(0)`` in graph-input order, ``input_ids`` integers below
    ``vocab`` from the same rng, ``attention_mask`` ones with the last ``padding`` positions zero, other
    integers and booleans 0/1 (valid indices and positions for any model).
    """
    rng = np.random.default_rng(0)
    constants = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in constants:
            continue
        shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        if dtype.kind == "f":
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif value.name == "attention_mask":
            mask = np.ones(shape, dtype)
            if padding:
                mask[..., -padding:] = 0
            feeds[value.name] = mask
        elif value.name == "input_ids":
            feeds[value.name] = rng.integers(0, vocab, shape).astype(dtype)
        else:
            feeds[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def build(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Return case ``name``'s model and seeded inputs.

    Raises:
        KeyError: For a name not in :data:`SPECS`.
        Unavailable: When its builder is missing here.
    """
    if name not in SPECS:
        raise KeyError(f"unknown case {name!r}; choose from {', '.join(SPECS)}")
    spec = SPECS[name]
    model = builder(spec)(**spec.options)
    if spec.quantize is not None:
        from kernelforge.testing.quantized import quantize

        model = quantize(model, spec.quantize)
    return model, seeded_feeds(model, spec.vocab, spec.padding)

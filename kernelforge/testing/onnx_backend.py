"""An ``onnx.backend.base.Backend`` over kernelforge, so ONNX's own backend test cases drive it.

kernelforge fixes every shape at load, while ONNX's node cases feed shapes, axes, pads, scales and repeats as
graph inputs. So :meth:`KernelforgeBackend.prepare` only checks the model's ops; the first ``run`` loads it with
the shapes of its feeds (``input_shapes``) and binds, as constants, exactly the inputs a load-time value
depends on (:func:`load_time_inputs`: whatever reaches a shape, axes, pads, scales or repeats input, or a node
kernelforge only folds), and empty ones (a dim of 0: no values to feed, so kernelforge takes them as constants,
as every empty tensor); every other input stays a runtime tensor (weights included: a conv whose weights are
a graph input reads them through a relayout kernel). A run with other shapes or other load-time values loads
again. ``prepare(model, device=..., backend="wgsl" | "glsl")`` picks the device as ``kernelforge.load`` does.

:func:`cases` returns the node cases of the installed onnx (1,884 for onnx 1.23), for the conformance test
and ``benchmarks/conformance.py``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep

from kernelforge.errors import KernelforgeError
from kernelforge.graph.onnx_fold import ALWAYS_FOLD, CONST_INPUTS, FOLDERS, LOAD_TIME_INPUTS
from kernelforge.graph.onnx_functions import EXPANDED_OPS
from kernelforge.graph.onnx_ops import CONVERTERS, DIRECT
from kernelforge.runtime.session import Session, load

__all__ = [
    "LIMITS",
    "KernelforgeBackend",
    "Outcome",
    "KernelforgeRep",
    "NodeCase",
    "as_array",
    "cases",
    "load_time_inputs",
    "op_types",
    "run_case",
    "supported_op_types",
]


def supported_op_types() -> set[str]:
    """Return every default-domain ONNX op type kernelforge converts, folds or runs as its function body."""
    return set(CONVERTERS) | set(DIRECT) | set(FOLDERS) | set(EXPANDED_OPS)


def op_types(model: onnx.ModelProto) -> set[str]:
    """Return the op types of a model's nodes (``domain:Op`` outside the default domain)."""
    return {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}" for n in model.graph.node}


def load_time_inputs(model: onnx.ModelProto) -> set[str]:
    """Return the graph inputs whose values kernelforge needs at load.

    A value is needed at load when it feeds a constant-only input slot (``CONST_INPUTS``: shapes, axes, pads,
    scales, repeats) or any input of a node kernelforge can only fold; then so is every input of the node
    that computes it (Shape and Size excepted: they need only a shape).
    """
    producer = {out: node for node in model.graph.node for out in node.output if out}
    needed: set[str] = set()
    todo: list[str] = []
    for node in model.graph.node:
        if node.op_type not in CONVERTERS and node.op_type not in DIRECT:
            todo.extend(i for i in node.input if i)
        else:
            todo.extend(node.input[k] for k in CONST_INPUTS.get(node.op_type, ()) if k < len(node.input))
            # scales and rois given as graph inputs stand for initializers (some forms run only so); one the
            # graph computes stays a runtime value
            preferred = LOAD_TIME_INPUTS.get(node.op_type, ())
            todo.extend(node.input[k] for k in preferred if k < len(node.input) and node.input[k] not in producer)
    while todo:
        name = todo.pop()
        if not name or name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and node.op_type not in ALWAYS_FOLD:
            todo.extend(i for i in node.input if i)
    initializers = {t.name for t in model.graph.initializer}
    return {i.name for i in model.graph.input if i.name in needed and i.name not in initializers}


def as_array(value: Any) -> np.ndarray:
    """Return a feed or an expected output as numpy (ONNX's cases hold some as ``TensorProto``)."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


class KernelforgeRep(BackendRep):
    """A prepared model: loaded on first ``run`` with the feeds' shapes and load-time values (see the module)."""

    def __init__(self, model: onnx.ModelProto, device: str | int, backend: str | None) -> None:
        self.model = model
        self.device = device
        self.backend = backend
        initializers = {t.name for t in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in initializers]
        self.frozen = load_time_inputs(model)
        read = {i for node in model.graph.node for i in node.input} | {o.name for o in model.graph.output}
        self.unread = {name for name in self.inputs if name not in read}
        """Inputs nothing reads (CastLike's empty ``like`` once expanded): left out of the loaded model."""
        self._sessions: dict[Any, Session] = {}

    def bound(self, feeds: Mapping[str, np.ndarray]) -> set[str]:
        """Return the inputs bound at load for these feeds: load-time ones, and empty ones (no values to feed)."""
        return self.frozen | {name for name in self.inputs if feeds[name].size == 0 and name not in self.unread}

    def session(self, feeds: Mapping[str, np.ndarray]) -> Session:
        """Return the session for these feeds' shapes and load-time values (loading it on first use)."""
        bound = self.bound(feeds)
        key = tuple((name, feeds[name].shape, feeds[name].tobytes() if name in bound else b"") for name in self.inputs)
        if key not in self._sessions:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            kept = [i for i in model.graph.input if i.name not in bound | self.unread]
            del model.graph.input[:]
            model.graph.input.extend(kept)
            model.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in sorted(bound))
            shapes = {n: feeds[n].shape for n in self.inputs if n not in bound | self.unread}
            self._sessions[key] = load(model, device=self.device, backend=self.backend, input_shapes=shapes)
        return self._sessions[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run on ``inputs`` (a list in graph-input order, or a name -> array mapping); outputs in graph order."""
        if isinstance(inputs, Mapping):
            feeds = {name: as_array(inputs[name]) for name in self.inputs}
        else:
            feeds = {name: as_array(value) for name, value in zip(self.inputs, inputs, strict=True)}
        session = self.session(feeds)
        skip = self.bound(feeds) | self.unread
        outputs = session.run({n: v for n, v in feeds.items() if n not in skip})
        return tuple(outputs[o.name] for o in self.model.graph.output)


class KernelforgeBackend(Backend):
    """``onnx.backend`` entry points: ``prepare`` a model, ``run_model`` once."""

    @classmethod
    def prepare(
        cls, model: onnx.ModelProto, device: str | int = "auto", backend: str | None = None, **kwargs: Any
    ) -> KernelforgeRep:
        """Return a rep that loads ``model`` on the kernelforge ``device`` at its first run.

        ONNX's runner passes ``device="CPU"`` (its default device name): that means kernelforge's ``auto``.
        """
        onnx.checker.check_model(model)
        return KernelforgeRep(model, "auto" if device in ("CPU", "") else device, backend)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str | int = "auto", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        """Prepare and run once."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Kernelforge runs on its own devices; ONNX's runner asks for ``CPU`` (kernelforge's default device)."""
        return device == "CPU"


@dataclass(frozen=True)
class NodeCase:
    """One of ONNX's node test cases: model, data sets and the tolerances ONNX's runner uses."""

    name: str
    model: onnx.ModelProto
    data_sets: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]
    rtol: float
    atol: float


def cases() -> list[NodeCase]:
    """Return every node case the installed onnx ships (generated by its case modules, no download)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        found: Iterable[Any] = load_model_tests(kind="node")
    return [NodeCase(c.name, c.model, c.data_sets or [], c.rtol, c.atol) for c in found]


LIMITS: dict[str, str] = {
    r"(dtype|casts a runtime tensor to|casting to) (FLOAT6\w*|STRING|COMPLEX\w*|a non-tensor type)\b": (
        "dtypes kernelforge does not carry: float6, strings, complex numbers, sequences and optionals"
    ),
    r"needs a runtime value; only a constant is supported": (
        "a shape, axes, pads, pad value, scales or roi computed at run time (every shape is fixed at load)"
    ),
    r"only 2-D windows|only 1-D and 2-D windows|only 4-D \(2-D spatial\)|only 3-D or 4-D": (
        "convolution other than 1-D and 2-D (3-D pools run as two 2-D pools)"
    ),
    r"training_mode=1 with a ratio > 0": "training-mode Dropout with a ratio > 0 (random numbers)",
    r"Attention node .*(optional output|softmax_precision)": (
        "ONNX Attention's qk output and reduced-precision softmax"
    ),
}
"""Error message pattern -> the documented limitation it is: a case of a supported op type may fail only so."""


@dataclass(frozen=True)
class Outcome:
    """How one case went: ``passed``, or ``limit`` (the :data:`LIMITS` key it hit) / ``error`` (the message)."""

    passed: bool
    limit: str | None = None
    error: str | None = None


def run_case(case: NodeCase, device: str | int, backend: str) -> Outcome:
    """Run every data set of ``case`` and compare as ONNX's runner does (its rtol/atol, exact shapes and dtypes).

    A load error that matches a :data:`LIMITS` pattern is a known limitation; any other error, or a mismatch,
    is reported in ``error``.
    """
    try:
        rep = KernelforgeBackend.prepare(case.model, device, backend=backend)
        for inputs, outputs in case.data_sets:
            got = rep.run(list(inputs))
            for out, value, want in zip(case.model.graph.output, got, outputs, strict=True):
                expected = as_array(want)
                if value.shape != expected.shape or value.dtype != expected.dtype:
                    got_as, want_as = f"{value.dtype}{value.shape}", f"{expected.dtype}{expected.shape}"
                    return Outcome(False, error=f"{out.name}: {got_as}, want {want_as}")
                # ONNX's runner allows two bfloat16 ulps (it compares bfloat16 results as float32 with rtol 2**-6)
                rtol = max(case.rtol, 2**-6) if expected.dtype.name == "bfloat16" else case.rtol
                try:
                    np.testing.assert_allclose(value, expected, rtol=rtol, atol=case.atol)
                except AssertionError as exc:
                    return Outcome(False, error=f"{out.name}: {str(exc).strip()}")
    except KernelforgeError as exc:
        text = str(exc)
        for pattern in LIMITS:
            if re.search(pattern, text):
                return Outcome(False, limit=pattern)
        return Outcome(False, error=f"{type(exc).__name__}: {text}")
    return Outcome(True)

"""Fusable epilogues shared by GEMM and conv: the activation set and its numpy reference.

The shader side of each activation lives in ``templates/common/epilogue.*.j2``; this module owns the names,
their float attributes and the exact numpy semantics (ONNX's, where ONNX defines the op).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kernelforge.errors import InvalidParamsError


@dataclass(frozen=True)
class ActivationKind:
    """One activation: its default attributes and numpy reference ``fn(x, alpha, beta)``."""

    name: str
    defaults: tuple[float, ...]
    fn: Callable[[np.ndarray, float, float], np.ndarray]


def _gelu(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return 0.5 * x * (1.0 + np.asarray(erf(x / math.sqrt(2.0)), dtype=np.float64))


ACTIVATIONS: dict[str, ActivationKind] = {
    "none": ActivationKind("none", (), lambda x, a, b: x),
    "relu": ActivationKind("relu", (), lambda x, a, b: np.maximum(x, 0.0)),
    "relu6": ActivationKind("relu6", (), lambda x, a, b: np.clip(x, 0.0, 6.0)),
    "clip": ActivationKind("clip", (0.0, 6.0), lambda x, a, b: np.minimum(np.maximum(x, a), b)),
    "sigmoid": ActivationKind("sigmoid", (), lambda x, a, b: 1.0 / (1.0 + np.exp(-x))),
    "tanh": ActivationKind("tanh", (), lambda x, a, b: np.tanh(x)),
    "gelu": ActivationKind("gelu", (), _gelu),
    "hardswish": ActivationKind("hardswish", (), lambda x, a, b: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)),
    # SiLU (Swish with beta 1: YOLO's, diffusion U-Nets'); exporters write it as x * Sigmoid(x)
    "silu": ActivationKind("silu", (), lambda x, a, b: x / (1.0 + np.exp(-x))),
    "leaky_relu": ActivationKind("leaky_relu", (0.01,), lambda x, a, b: np.where(x >= 0.0, x, a * x)),
}

_CALL = re.compile(r"^\s*([a-z_0-9]+)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class Activation:
    """A chosen activation with its float attributes (``alpha`` = slope or clip min, ``beta`` = clip max)."""

    kind: str = "none"
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ACTIVATIONS:
            raise InvalidParamsError(f"unknown activation {self.kind!r}; known: {sorted(ACTIVATIONS)}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidParamsError(f"activation {self.kind}: {name}={value!r} must be a finite number")

    @classmethod
    def parse(cls, spec: str | Activation | None) -> Activation:
        """Parse ``None``, ``"relu"``, ``"leaky_relu(0.2)"`` or ``"clip(0,6)"``.

        Raises:
            InvalidParamsError: For an unknown name or a malformed argument list.
        """
        if spec is None:
            return cls()
        if isinstance(spec, Activation):
            return spec
        match = _CALL.match(spec)
        if not match:
            raise InvalidParamsError(f"cannot parse activation {spec!r}")
        name, arg_text = match.group(1), match.group(2)
        kind = ACTIVATIONS.get(name)
        if kind is None:
            raise InvalidParamsError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
        args: list[float] = list(kind.defaults)
        if arg_text is not None and arg_text.strip():
            try:
                given = [float(t) for t in arg_text.split(",")]
            except ValueError:
                raise InvalidParamsError(f"activation {spec!r}: arguments must be numbers") from None
            if len(given) > len(kind.defaults):
                raise InvalidParamsError(f"activation {name} takes {len(kind.defaults)} argument(s), got {spec!r}")
            args[: len(given)] = given
        args += [0.0] * (2 - len(args))
        return cls(name, args[0], args[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Apply the activation in float64 numpy (the reference)."""
        return np.asarray(ACTIVATIONS[self.kind].fn(x.astype(np.float64), self.alpha, self.beta), np.float64)

    def __str__(self) -> str:
        n = len(ACTIVATIONS[self.kind].defaults)
        if n == 0:
            return self.kind
        return f"{self.kind}({', '.join(repr(v) for v in (self.alpha, self.beta)[:n])})"

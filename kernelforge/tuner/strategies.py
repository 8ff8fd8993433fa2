"""Search strategies: one row per name, each an Optuna sampler factory ``(space, seed) -> sampler``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from kernelforge.ops.spec import OpSpec


def _grid(spec: OpSpec[Any], language: str, seed: int | None) -> optuna.samplers.BaseSampler:
    space = {p.name: list(range(len(p.choices))) for p in spec.params(language)}
    return optuna.samplers.GridSampler(space, seed=seed)


STRATEGIES: dict[str, Callable[[OpSpec[Any], str, int | None], optuna.samplers.BaseSampler]] = {
    "tpe": lambda spec, lang, seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
    "random": lambda spec, lang, seed: optuna.samplers.RandomSampler(seed=seed),
    "grid": _grid,
    # params are suggested as integer indices into their ordered choices, so CMA-ES sees a numeric space
    "cmaes": lambda spec, lang, seed: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=4, warn_independent_sampling=False
    ),
}


def make_sampler(name: str, spec: OpSpec[Any], language: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """Return the sampler of a strategy.

    Raises:
        KeyError: Naming the known strategies.
    """
    if name not in STRATEGIES:
        raise KeyError(f"unknown sampler {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](spec, language, seed)

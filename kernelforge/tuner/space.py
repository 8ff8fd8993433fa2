"""The search space as Optuna sees it: each param is an integer index into its ordered choices."""

from __future__ import annotations

from typing import Any

import optuna

from kernelforge.ops.spec import OpSpec, Params


def suggest(trial: optuna.Trial, spec: OpSpec[Any], language: str) -> Params:
    """Ask the trial for one value of every param (as indices, so every sampler sees an ordinal space)."""
    return {p.name: p.choices[trial.suggest_int(p.name, 0, len(p.choices) - 1)] for p in spec.params(language)}


def to_indices(spec: OpSpec[Any], params: Params, language: str) -> dict[str, int]:
    """Return the trial representation of params (for ``enqueue_trial``).

    A tunable added after a table of configs was written (conv's ``precision``) takes its ``absent`` value.
    """
    return {
        p.name: p.choices.index(params[p.name] if p.name in params or p.absent is None else p.absent)
        for p in spec.params(language)
    }


def from_indices(spec: OpSpec[Any], indices: dict[str, Any], language: str) -> Params:
    """Return params from a trial's stored indices."""
    return {p.name: p.choices[int(indices[p.name])] for p in spec.params(language)}

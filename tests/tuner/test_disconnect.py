"""A remote device's page going away mid-trial, as the tuner sees it: ``DeviceDisconnectedError`` from the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import kernelforge.tuner.objective as objective_mod
from kernelforge.errors import DeviceDisconnectedError
from kernelforge.ops import get_op
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.tune import TuneOptions, study_name, tune_problem

pytestmark = pytest.mark.device
SPEC = get_op("gemm")
QUICK = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)


def _flaky(monkeypatch: pytest.MonkeyPatch, name: str, fail_at: set[int]) -> None:
    """Make the ``fail_at``-th calls (counting from 1) of ``objective_mod.<name>`` raise DeviceDisconnectedError."""
    real = getattr(objective_mod, name)
    count = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] in fail_at:
            raise DeviceDisconnectedError("the page went away (close code 1001)")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_mod, name, flaky)


def test_a_disconnected_trial_fails_with_its_reason_and_its_config_is_measured_later(
    tmp_path: Path, lavapipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flaky(monkeypatch, "prepare", {1})  # trial 0, the default, loses its page while compiling
    problem = SPEC.parse_problem("24x32x16")
    options = TuneOptions(trials=5, sampler="random", seed=1, db_dir=tmp_path, measure=QUICK, remeasure=QUICK)
    result = tune_problem(lavapipe, SPEC, problem, options)
    trials = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path)).trials
    first = trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["invalidity"] == "disconnected"
    assert "went away" in first.user_attrs["reason"]  # not a compile error: the kernel was never rejected
    again = [t for t in trials[1:] if t.params == first.params]  # (dicts: equal whatever their order)
    assert [t.state for t in again] == [optuna.trial.TrialState.COMPLETE]
    # the default was measured after all, so a record is stored; the lost trial did not count as one of 5
    assert result.record is not None and result.default_time is not None
    assert result.reasons["disconnected"] == 1 and result.counts["ok"] == 5


def test_a_config_that_loses_its_page_twice_is_not_queued_a_third_time(
    tmp_path: Path, lavapipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flaky(monkeypatch, "prepare", set(range(1, 11)))  # the first ten trials that reach the device
    problem = SPEC.parse_problem("24x32x16")
    options = TuneOptions(trials=2, sampler="random", seed=1, db_dir=tmp_path, measure=QUICK, remeasure=QUICK)
    result = tune_problem(lavapipe, SPEC, problem, options)
    trials = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path)).trials
    lost = [t for t in trials if t.user_attrs.get("invalidity") == "disconnected"]
    configs = [tuple(sorted(t.params.items())) for t in lost]
    assert len(configs) == 10 and max(configs.count(c) for c in configs) == 2  # each queued again once at most
    assert configs.count(configs[0]) == 2  # the default, twice: it never verified, so nothing is stored
    assert result.record is None and result.counts["ok"] == 2


def test_finalists_are_measured_again_when_the_page_goes_during_the_final_round(
    tmp_path: Path, lavapipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = SPEC.parse_problem("24x32x16")
    options = TuneOptions(trials=3, sampler="random", seed=1, db_dir=tmp_path, measure=QUICK, remeasure=QUICK)
    _flaky(monkeypatch, "side_by_side", {1})  # the first final round loses its page
    result = tune_problem(lavapipe, SPEC, problem, options)
    assert result.record is not None and result.best_time is not None and result.best_time <= result.default_time

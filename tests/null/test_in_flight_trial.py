"""The trial a storage outage leaves RUNNING is ended when the storage answers again, its value kept if it had one."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from kernelforge.tuner.tune import _fail_in_flight


@pytest.mark.parametrize("told", [0.25, None])
def test_an_outage_during_tell_keeps_the_value_and_one_during_the_run_fails_it(told):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()  # RUNNING, as Optuna left it when the storage went down
    objective = SimpleNamespace(in_flight=trial.number, told=told)
    _fail_in_flight(storage, "s", objective)  # type: ignore[arg-type]
    (frozen,) = study.get_trials()
    if told is None:
        assert frozen.state == optuna.trial.TrialState.FAIL
        assert frozen.user_attrs["invalidity"] == "storage"
    else:  # it finished before the outage hit Optuna's tell: a finished trial is never lost
        assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == told
    assert objective.in_flight is None


def test_a_storage_still_down_keeps_the_trial_in_flight():
    class Down:
        def get_study_id_from_name(self, name: str) -> int:
            raise ConnectionError("down")

    objective = SimpleNamespace(in_flight=3, told=0.5)
    _fail_in_flight(Down(), "s", objective)  # type: ignore[arg-type]
    assert objective.in_flight == 3  # tried again after the next wait

"""Two workers that pick the same config at once: whatever order their storage calls interleave in, one measures."""

from __future__ import annotations

import threading
import time

import optuna

from kernelforge.tuner.objective import claim

CONFIG = '{"tile": 8}'


def two_trials() -> tuple[optuna.Study, optuna.Trial, optuna.Trial]:
    study = optuna.create_study()
    return study, study.ask(), study.ask()  # numbers 0 (a) and 1 (b)


def test_a_claim_made_before_the_other_looked_is_yielded_to_by_the_later_one():
    _, a, b = two_trials()
    assert claim(a, CONFIG) is None  # b has not claimed yet: a measures
    assert a.user_attrs["measuring"] is True
    assert claim(b, CONFIG) == a.number


def test_a_higher_numbered_claim_that_missed_the_lower_one_keeps_it_and_the_lower_one_yields():
    # b read before a wrote its claim, so b measures; a, reading afterwards, must not measure it too
    _, a, b = two_trials()
    assert claim(b, CONFIG) is None
    assert claim(a, CONFIG) == b.number


def test_when_both_claims_are_written_before_either_is_read_the_lower_number_measures():
    study, a, b = two_trials()
    b.set_user_attr("config", CONFIG)  # b has written its claim but not yet looked at the others

    def b_goes_on() -> None:  # b then looks, sees a's lower claim and yields (pruned)
        time.sleep(0.3)
        assert claim(b, CONFIG) == a.number
        study.tell(b, state=optuna.trial.TrialState.PRUNED)

    later = threading.Thread(target=b_goes_on)
    later.start()
    assert claim(a, CONFIG, wait_s=30) is None  # a waited for b to decide, not for the full 30 s
    later.join()
    assert not b.user_attrs.get("measuring")


def test_a_rival_that_finished_between_two_looks_is_still_seen():
    study, a, b = two_trials()
    b.set_user_attr("config", CONFIG)
    b.set_user_attr("measuring", True)
    study.tell(b, 0.5)
    assert claim(a, CONFIG) == b.number


def test_a_rival_that_never_says_whether_it_measures_is_waited_for_only_so_long():
    _, a, b = two_trials()
    b.set_user_attr("config", CONFIG)  # its worker died after writing the claim
    started = time.monotonic()
    assert claim(a, CONFIG, wait_s=0.3) is None
    assert 0.3 <= time.monotonic() - started < 5


def test_other_configs_are_no_rivals():
    _, a, b = two_trials()
    assert claim(b, '{"tile": 16}') is None
    assert claim(a, CONFIG, wait_s=30) is None

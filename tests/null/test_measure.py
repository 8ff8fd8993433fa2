"""measure(): repetitions one by one, or the rest at once where a backend takes them in one go."""

from __future__ import annotations

import pytest

from kernelforge.tuner import measure as measure_mod
from kernelforge.tuner.measure import MeasureConfig, measure


class Clock:
    """A fake perf_counter that each repetition advances by its own duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(measure_mod.time, "perf_counter", fake)
    return fake


def _runner(clock: Clock, seconds: float, log: list[int]) -> tuple:
    def run() -> float:
        clock.now += seconds
        log.append(1)
        return seconds

    def run_more(n: int) -> list[float]:
        clock.now += n * seconds
        log.append(n)
        return [seconds] * n

    return run, run_more


@pytest.mark.parametrize("seconds", [0.001, 0.3, 0.9, 5.0])
def test_the_rest_at_once_is_as_many_repetitions_as_one_by_one(clock: Clock, seconds: float) -> None:
    config = MeasureConfig(min_reps=3, max_reps=10, max_seconds=2.0)
    one_log: list[int] = []
    run, _ = _runner(clock, seconds, one_log)
    one_by_one = measure(run, config)
    clock.now = 0.0
    batched_log: list[int] = []
    run, run_more = _runner(clock, seconds, batched_log)
    batched = measure(run, config, run_more=run_more)
    assert len(batched.times) == len(one_by_one.times)
    assert batched_log[0] == 1 and len(batched_log) == 2  # the first alone, the rest in one call
    assert min(config.max_reps, max(config.min_reps, 1)) <= len(batched.times) <= config.max_reps


def test_a_first_repetition_far_behind_the_best_asks_for_no_more(clock: Clock) -> None:
    log: list[int] = []
    run, run_more = _runner(clock, 0.1, log)
    result = measure(run, MeasureConfig(give_up_ratio=3.0), best_so_far=0.01, run_more=run_more)
    assert result.times == (0.1,) and log == [1]


@pytest.mark.parametrize("seconds", [0.001, 0.3, 5.0])
def test_side_by_side_rounds_at_once_are_as_many_as_one_by_one(clock: Clock, seconds: float) -> None:
    from kernelforge.tuner.measure import side_by_side

    config = MeasureConfig(min_reps=3, max_reps=9, max_seconds=2.0)
    calls: list[str] = []

    def timer(name: str, value: float):
        def run() -> float:
            clock.now += seconds
            calls.append(name)
            return value

        return run

    runs = {"a": timer("a", 1.0), "b": timer("b", 2.0)}
    alone = side_by_side(runs, config)
    counted = len(calls)
    clock.now, calls[:] = 0.0, []
    asked: list[int] = []

    def rounds(n: int) -> list[dict[str, float]]:
        clock.now += 2 * n * seconds
        asked.append(n)
        return [{"a": 1.0, "b": 2.0}] * n

    together = side_by_side(runs, config, rounds)
    assert together == alone == {"a": 1.0, "b": 2.0}
    assert calls == ["a", "b"] and len(asked) == 1  # the first round alone, the rest in one call
    assert 2 + 2 * asked[0] == counted

"""Timing: warm-ups, repetitions, median; stops early when a config is clearly losing."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MeasureConfig:
    """How hard to measure one config."""

    warmup: int = 0  # the tuner's verification run already warmed the kernel up
    min_reps: int = 3
    max_reps: int = 10
    max_seconds: float = 2.0
    # a config whose first repetition is this many times slower than the best so far is not measured
    # further: its median cannot win, and on slow software GPUs the saved seconds are most of a run
    give_up_ratio: float = 3.0
    # browsers compile every pipeline at load: a config whose compile (render + driver compile + upload) takes
    # longer than this fails, whatever its speed (SwiftShader took 20 s for 8x8-outputs-per-thread convs, which
    # made a 60 ms model take 2 minutes to load in Chromium)
    max_compile_s: float = 5.0
    claim_wait_s: float = 10.0  # how long a worker waits for another one to say whether it measures a config


@dataclass(frozen=True)
class Measurement:
    """Repetition times in seconds and their median."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median of the repetitions."""
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def measure(
    run: Callable[[], float],
    config: MeasureConfig,
    best_so_far: float | None = None,
    run_more: Callable[[int], list[float]] | None = None,
) -> Measurement:
    """Time ``run`` (which returns one repetition's seconds) per ``config``.

    ``run_more(n)``, where given, returns n repetitions at once (a browser page takes them in one round trip):
    after the first repetition it is asked for as many as the loop would have run in ``max_seconds``.
    """
    for _ in range(config.warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < config.max_reps:
        times.append(max(run(), 1e-9))
        if best_so_far is not None and len(times) == 1 and times[0] > config.give_up_ratio * best_so_far:
            break
        elapsed = time.perf_counter() - start
        if len(times) >= config.min_reps and elapsed > config.max_seconds:
            break
        if run_more is not None and len(times) == 1:
            more = _more_reps(config, elapsed)
            times += [max(t, 1e-9) for t in run_more(more)] if more > 0 else []
            break
    return Measurement(tuple(times))


def _more_reps(config: MeasureConfig, first_s: float) -> int:
    """Return how many repetitions a one-at-a-time loop would run after a first one of ``first_s`` seconds.

    That loop stops at the first repetition past ``max_seconds`` once it has ``min_reps``, and at ``max_reps``.
    """
    each = max(first_s, 1e-9)
    fit = math.floor((config.max_seconds - first_s) / each) + 1
    return min(config.max_reps - 1, max(config.min_reps - 1, fit))


def side_by_side(
    runs: Mapping[str, Callable[[], float]],
    config: MeasureConfig,
    rounds: Callable[[int], list[dict[str, float]]] | None = None,
) -> dict[str, float]:
    """Time candidates in alternation (a, b, c, a, b, c, ...) and return each one's median seconds.

    Alternating repetitions give every candidate the same machine conditions (turbo, other processes on a
    shared 2-core machine), which a sequence of separate measurements does not. ``rounds(n)``, where given,
    returns n rounds at once (a browser page alternates them in one call): after the first round it is asked for
    as many as the loop would have run in ``max_seconds``.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    for rep in range(config.max_reps):
        if rounds is not None and rep == 1:
            more = _more_reps(config, time.perf_counter() - start)
            for got in rounds(more) if more > 0 else []:
                for name in runs:
                    times[name].append(got[name])
            break
        for name, run in runs.items():
            times[name].append(run())
        if rep + 1 >= config.min_reps and time.perf_counter() - start > config.max_seconds:
            break
    return {name: statistics.median(t) for name, t in times.items() if t}

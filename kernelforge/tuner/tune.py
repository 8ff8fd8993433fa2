"""A tuning run: one resumable Optuna study per (device, op, shape, dtype, language, template).

Several workers may share a study (``--storage``, on one machine or many): each samples with its own seed,
claims a config before measuring it so no config is measured twice, and stores its winner under the database
lock, where the faster of two records wins. A storage outage is waited out; past ``outage_s`` the worker stops
with the trials it finished, stores the best of those it measured itself, and says why.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from tqdm import tqdm

from kernelforge import _config
from kernelforge.db import Query, Record, Stored, TuningDB, device_meta, new_record
from kernelforge.errors import DeviceDisconnectedError
from kernelforge.ops.spec import OpSpec, Params
from kernelforge.runtime.backends.base import Backend
from kernelforge.templates import kernel_hash
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.objective import Objective, TrialFailedError
from kernelforge.tuner.space import from_indices, to_indices
from kernelforge.tuner.storage import describe, is_outage, open_storage, redact, retry
from kernelforge.tuner.strategies import make_sampler

DTYPE = "f32"


@dataclass(frozen=True)
class TuneOptions:
    """What a tuning run may spend and where it keeps its state."""

    trials: int = 40
    time_budget: float | None = None
    sampler: str = "tpe"
    seed: int | None = None
    """The sampler's seed; None: one of this worker's own (workers sharing a study must not share seeds)."""
    db_dir: Path = field(default_factory=_config.db_dir)
    storage: str | None = None
    replace: bool = False
    """Store this run's winner even over a faster stored record of the same key."""
    outage_s: float = 60.0
    """How long a storage outage is waited out (retries with backoff) before the worker stops."""
    top_k: int = 3
    warm_start: int = 3
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    remeasure: MeasureConfig = field(default_factory=lambda: MeasureConfig(warmup=1, min_reps=5, max_reps=15))
    progress: bool = True


@dataclass(frozen=True)
class TuneResult:
    """The outcome for one shape."""

    shape: str
    flops: float
    default_params: Params
    default_time: float | None
    best_params: Params | None
    best_time: float | None
    counts: dict[str, int]
    reasons: dict[str, int]
    record: Record | None
    interrupted: bool = False
    stored: Stored | None = None
    """What storing the record did (None: no record); when it was not written the stored one is faster."""
    seed: int | None = None
    storage_error: str = ""
    """Why the storage was lost mid-run ("" when it was not)."""

    @property
    def speedup(self) -> float | None:
        """Default time / best time."""
        if self.default_time and self.best_time:
            return self.default_time / self.best_time
        return None

    @property
    def gflops(self) -> float | None:
        """GFLOP/s of the best config."""
        return self.flops / self.best_time / 1e9 if self.best_time else None


# Bumped when trial values change meaning, so a resumed study never ranks old values against new ones.
# 2: wgpu devices time kernels by GPU timestamps (before, a set-up stall switched them to the wall clock,
# which adds ~0.3 ms of submit and read-back to every trial).
MEASURE_VERSION = 2


def study_name(backend: Backend[Any, Any, Any], spec: OpSpec[Any], problem: Any) -> str:
    """Return the study name: device, op, shape, dtype, language, template hash and measurement version."""
    template = kernel_hash(spec, backend.language)[:12]
    key = spec.problem_key(problem)
    return f"{backend.info.slug}/{spec.name}/{key}/{DTYPE}/{backend.language}/{template}/m{MEASURE_VERSION}"


def _summarise(trials: Sequence[optuna.trial.FrozenTrial]) -> tuple[dict[str, int], dict[str, int]]:
    counts = {"ok": 0, "pruned": 0, "failed": 0}
    reasons: collections.Counter[str] = collections.Counter()
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            counts["ok"] += 1
        elif t.state == optuna.trial.TrialState.PRUNED:
            counts["pruned"] += 1
            reasons[str(t.user_attrs.get("invalidity", "pruned"))] += 1
        elif t.state == optuna.trial.TrialState.FAIL:
            counts["failed"] += 1
            reasons[str(t.user_attrs.get("invalidity", "interrupted"))] += 1
    return counts, dict(reasons)


TIE_RELATIVE = 0.02
TIE_SECONDS = 20e-6
"""Finalists this close to the best (2 %, or 20 us for tiny kernels) count as tied; among tied ones the fastest
to compile wins: a bundle compiles every kernel at load."""
COMPILE_HORIZON = 1000
"""Runs over which a config's compile time is charged to it: a config that compiles 0.5 s slower must save
0.5 ms a run to win. On SwiftShader an 8-pixels-per-thread depthwise kernel compiled in 0.53 s against 0.04 s
to run 5 % (36 us) faster, and a big unrolled 1x10 classifier GEMM took 0.5 s to save microseconds."""


def charged_time(time_s: float, compile_s: float) -> float:
    """Return a config's run time plus its compile time spread over ``COMPILE_HORIZON`` runs."""
    return time_s + compile_s / COMPILE_HORIZON


def pick_winner(
    times: dict[Any, float], compile_s: dict[Any, float], default: Any, bound: Callable[[Any], float] | None = None
) -> Any:
    """Return the key of the config with the lowest run time plus compile time per ``COMPILE_HORIZON`` runs.

    Configs within ``TIE_RELATIVE``/``TIE_SECONDS`` of that best cost are tied; among them the most accurate
    (the lowest ``bound``, the op's stated tolerance: an f16 config must win by more than a tie to be kept), then
    the fastest to compile wins. A config slower than ``default`` never wins, so the stored record is never
    slower than the default.
    """
    ceiling = times.get(default, float("inf"))
    cost = {k: charged_time(t, compile_s.get(k, 0.0)) for k, t in times.items() if t <= ceiling}
    best = min(cost.values())
    tied = [k for k, c in cost.items() if c <= best * (1 + TIE_RELATIVE) or c - best <= TIE_SECONDS]
    accuracy = bound or (lambda _: 0.0)
    return min(tied, key=lambda k: (accuracy(k), compile_s.get(k, float("inf")), times[k]))


MAX_PRUNED_PER_TRIAL = 20
"""Sampled configs per asked-for trial at most, pruned ones included (bounds a search in a nearly empty space)."""


def _fail_in_flight(storage: Any, name: str, objective: Objective) -> None:
    """End the trial an outage cut short (it would stay RUNNING); quietly, as the storage may still be down.

    A trial that finished before Optuna could store its end (the outage hit its ``tell``) is stored complete
    with its value; one cut short while it ran is failed.
    """
    number, objective.in_flight = objective.in_flight, None
    if number is None:
        return
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            if objective.told is not None:
                storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [objective.told])
            else:
                storage.set_trial_user_attr(trial_id, "invalidity", "storage")
                storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    except Exception:  # still down: the heartbeat's grace period fails it later, on whichever worker looks first
        objective.in_flight = number


REMEASURE_ATTEMPTS = 3
"""Re-measurements of the finalists a run tries, a remote page going away during each but the last."""


def _remeasure(objective: Objective, candidates: list[Params], config: MeasureConfig) -> dict[int, float]:
    """Re-measure the finalists side by side, again from the start when a remote page goes away meanwhile."""
    for _ in range(REMEASURE_ATTEMPTS - 1):
        with contextlib.suppress(DeviceDisconnectedError):  # each attempt waits for a page to come back
            return objective.remeasure(candidates, config)
    return objective.remeasure(candidates, config)


def worker_seed() -> int:
    """Return a sampler seed of this process's own (host, process and clock), so workers sample apart."""
    return hash((socket.gethostname(), os.getpid(), time.time_ns())) & 0x7FFFFFFF


def _trial_times(
    trials: Sequence[optuna.trial.FrozenTrial], spec: OpSpec[Any], language: str
) -> tuple[dict[tuple[tuple[str, int], ...], float], dict[tuple[tuple[str, int], ...], float]]:
    """Return config -> median seconds and config -> compile seconds of the completed trials."""
    times: dict[tuple[tuple[str, int], ...], float] = {}
    compile_s: dict[tuple[tuple[str, int], ...], float] = {}
    for t in sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None),
        key=lambda t: float(t.value or 0.0),
    ):
        key = tuple(sorted(from_indices(spec, t.params, language).items()))
        times.setdefault(key, float(t.value or 0.0))
        if "compile_s" in t.user_attrs:
            compile_s.setdefault(key, float(t.user_attrs["compile_s"]))
    return times, compile_s


def tune_problem(backend: Backend[Any, Any, Any], spec: OpSpec[Any], problem: Any, options: TuneOptions) -> TuneResult:
    """Tune one problem, store the winner in the database and return the outcome.

    Trial 0 of a new study is the built-in default, and the default is re-measured beside the top
    ``top_k`` configs at the end, so the stored config is never slower than the default as measured; it
    replaces a stored record only when it is faster (or ``options.replace``).

    Raises:
        StorageError: When the study storage cannot be opened (one line naming it).
    """
    # ERROR: Optuna logs every failed trial at WARNING with a traceback; the end-of-run table counts the
    # failures by reason, and each trial keeps its reason in the study
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    language = backend.language
    # the default first: a problem no config can run on this device (its buffers past the binding limit) is a
    # ShapeError naming it, before gigabytes of inputs are allocated
    # filled with the absent values of tunables its table predates (conv's precision), as trials' params are
    default = spec.validate_params(spec.default_params(problem, backend.limits, language), language)
    rng = np.random.default_rng(1234)
    inputs = spec.make_inputs(problem, rng)
    reference = spec.reference(problem, inputs)
    objective = Objective(backend, spec, problem, inputs, reference, options.measure)
    backend.reset_clock()  # each study decides its own clock
    seed = options.seed if options.seed is not None else worker_seed()
    where = redact(options.storage) if options.storage else "the study journal"
    storage = open_storage(options.storage, options.db_dir)
    name = study_name(backend, spec, problem)
    study = retry(
        lambda: optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=make_sampler(options.sampler, spec, language, seed),
            direction="minimize",
            load_if_exists=True,
        ),
        f"study {name} in {where}",
        4,
    )
    names = [p.name for p in spec.params(language)]
    # a running trial of another worker may have some of its params suggested, not all: only whole configs count
    seen = [
        from_indices(spec, t.params, language)
        for t in study.get_trials(deepcopy=False)
        if all(n in t.params for n in names)
    ]
    # trial 0 is the default; then this shape's best record from before a template edit (re-verified and
    # re-timed like any trial: an edit rarely moves the optimum far, so re-tuning after one is cheap), the best
    # known configs of this shape, the nearest shapes and similar devices (warm start: good configs transfer
    # between neighbouring shapes far better than a random start), then the op's own seed configs (diverse
    # known-good shapes, CLBlast-style starting points)
    db = TuningDB(options.db_dir)
    query = Query.make(backend.info, spec.name, problem, language, backend.limits)
    known = db.stale_params(query)[:1] + [k.params for k in db.candidates(query)[: options.warm_start]]
    seeds = [spec.validate_params(s, language) for s in spec.seed_params(problem, backend.limits, language)]
    seeds = [s for s in seeds if s != default]
    for params in (default, *known, *seeds):
        if params not in seen:
            # skip_if_exists: a resumed study still holds the queued trials an earlier run never reached
            study.enqueue_trial(to_indices(spec, params, language), skip_if_exists=True)
            seen.append(params)

    shape = spec.problem_key(problem)
    bar = tqdm(
        total=options.trials,
        desc=f"{spec.name} {shape}",
        # None: tqdm draws only on a terminal, so logs and CI output stay clean
        disable=None if options.progress and _config.show_progress() else True,
        leave=False,
    )

    # --trials counts trials that ran on the device: a pruned trial (constraints) costs nothing, and in a space
    # as constrained as conv's, counting them would leave a fraction of the asked-for measurements; a trial whose
    # page went away measured nothing either, and its config is queued again
    measured = 0

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal measured
        objective.in_flight = None  # Optuna has stored the trial's end
        if trial.state == optuna.trial.TrialState.PRUNED or trial.user_attrs.get("invalidity") == "disconnected":
            return
        measured += 1
        bar.update(1)
        if measured >= options.trials:
            study.stop()
        best = min((t.value for t in study.get_trials(deepcopy=False) if t.value is not None), default=None)
        if best:
            bar.set_postfix_str(f"best {best * 1e3:.2f} ms")

    interrupted = False
    storage_error = ""
    started = time.monotonic()
    outage_since: float | None = None
    wait = 0.5
    try:
        while measured < options.trials:
            timeout = None if options.time_budget is None else options.time_budget - (time.monotonic() - started)
            if timeout is not None and timeout <= 0:
                break
            try:
                study.optimize(
                    objective,
                    n_trials=(options.trials - measured) * MAX_PRUNED_PER_TRIAL,
                    timeout=timeout,
                    catch=(TrialFailedError,),
                    callbacks=[advance],
                    gc_after_trial=False,
                )
                break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # the storage is unreachable: wait it out (the trial in flight is failed by the heartbeat and
                # queued again), up to outage_s, then stop with what this worker finished
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > options.outage_s:
                    storage_error = f"{where} unreachable for {options.outage_s:g} s ({describe(exc)})"
                    break
                time.sleep(wait)
                wait = min(2 * wait, 8.0)
                _fail_in_flight(storage, name, objective)
                continue
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    try:
        trials = study.get_trials(deepcopy=False) if not storage_error else []
    except Exception as exc:
        if not is_outage(exc):
            raise
        storage_error, trials = f"{where} unreachable ({describe(exc)})", []
    counts, reasons = _summarise(trials)
    times, compile_s = _trial_times(trials, spec, language)
    if storage_error:  # only what this worker measured itself is known
        times = {k: t for k, (t, _) in objective.results.items()}
        compile_s = {k: c for k, (_, c) in objective.results.items()}
        counts["ok"] = len(times)
    default_key = tuple(sorted(default.items()))
    nothing = TuneResult(
        shape, spec.flops(problem), default, None, None, None, counts, reasons, None, interrupted,
        seed=seed, storage_error=storage_error,
    )  # fmt: skip
    # the default never passed (or, the storage lost, this worker never ran it); a default whose trials were
    # all killed with an earlier run (failed without a reason: no verdict on it) is timed among the finalists
    tunables = {p.name for p in spec.params(language)}
    mine = [t for t in trials if set(t.params) == tunables and from_indices(spec, t.params, language) == default]
    killed = bool(mine) and all(
        t.state == optuna.trial.TrialState.FAIL and "invalidity" not in t.user_attrs for t in mine
    )
    if default_key not in times and (interrupted or storage_error or not times or not killed):
        return nothing
    if not interrupted:
        # re-measure the leaders and the default side by side: single measurements are noisy (the luckiest
        # of many noisy trials wins the search), and the default must face the winner under the same
        # conditions; the winner is chosen among these finalists only, ranked as pick_winner ranks them
        ranked = sorted(times, key=lambda k: charged_time(times[k], compile_s.get(k, 0.0)))
        finalists = [*[k for k in ranked if k != default_key][: options.top_k], default_key]
        again = _remeasure(objective, [dict(k) for k in finalists], options.remeasure)
        remeasured = {finalists[i]: t for i, t in again.items()}
        if default_key in times:
            remeasured.setdefault(default_key, times[default_key])  # the default verified before; keep its time
        if default_key not in remeasured:
            return nothing  # the default does not verify: there is nothing to beat
        times = remeasured
    best_key = pick_winner(times, compile_s, default_key, lambda k: spec.tolerance(problem, dict(k)))
    best_params, best_time = dict(best_key), times[best_key]
    record = new_record(
        spec,
        backend.language,
        problem,
        kernel_hash(spec, backend.language),
        best_params,
        best_time,
        times[default_key],
        {
            **counts,
            "reasons": reasons,
            "sampler": options.sampler,
            "clock": "gpu" if backend.has_timestamps else "wall",
        },
        backend.info.driver,
        DTYPE,
    )
    meta = device_meta(backend.info, backend.limits.subgroup_size, backend.limits.f16)
    (stored,) = TuningDB(options.db_dir).store(meta, [record], replace=options.replace)
    if not storage_error and options.storage:
        # a shared study also keeps each worker's record, so `db sync` can gather them on any machine
        with contextlib.suppress(Exception):
            study.set_user_attr("kernelforge/device", meta)
            study.set_user_attr(f"kernelforge/record/{socket.gethostname()}/{os.getpid()}", record.to_json())
    return TuneResult(
        shape,
        spec.flops(problem),
        default,
        times[default_key],
        best_params,
        best_time,
        counts,
        reasons,
        record,
        interrupted,
        stored,
        seed,
        storage_error,
    )


def format_results(results: Sequence[TuneResult]) -> str:
    """Return the end-of-run table: default vs best time, speedup, GFLOP/s and trial counts."""
    header = ("shape", "default ms", "best ms", "speedup", "GFLOP/s", "ok/pruned/failed", "failure reasons")
    rows = [header]
    for r in results:
        rows.append(
            (
                r.shape + (" (interrupted)" if r.interrupted else ""),
                f"{r.default_time * 1e3:.2f}" if r.default_time else "-",
                f"{r.best_time * 1e3:.2f}" if r.best_time else "-",
                f"{r.speedup:.2f}x" if r.speedup else "-",
                f"{r.gflops:.2f}" if r.gflops else "-",
                f"{r.counts['ok']}/{r.counts['pruned']}/{r.counts['failed']}",
                ", ".join(f"{k}={v}" for k, v in sorted(r.reasons.items())) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

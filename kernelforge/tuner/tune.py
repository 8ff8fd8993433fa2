"""A tuning run: one resumable Optuna study per (device, op, shape, dtype, language, template)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from tqdm import tqdm

from kernelforge import _config
from kernelforge.db import Query, Record, TuningDB, device_meta, new_record
from kernelforge.ops.spec import OpSpec, Params
from kernelforge.runtime.backends.base import Backend
from kernelforge.templates import kernel_hash
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.objective import Objective, TrialFailedError
from kernelforge.tuner.space import from_indices, to_indices
from kernelforge.tuner.strategies import make_sampler

DTYPE = "f32"


@dataclass(frozen=True)
class TuneOptions:
    """What a tuning run may spend and where it keeps its state."""

    trials: int = 40
    time_budget: float | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    db_dir: Path = field(default_factory=_config.db_dir)
    storage: str | None = None
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


def default_storage(db_dir: Path) -> optuna.storages.BaseStorage:
    """Return the embedded study storage under the database directory (an append-only journal file).

    The journal is written trial by trial, so an interrupted run keeps every finished trial and the next
    run with the same arguments resumes the study.
    """
    folder = Path(db_dir) / ".studies"
    folder.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(folder / "studies.journal"))
    return optuna.storages.JournalStorage(backend)


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


def pick_winner(times: dict[Any, float], compile_s: dict[Any, float], default: Any) -> Any:
    """Return the key of the config with the lowest run time plus compile time per ``COMPILE_HORIZON`` runs.

    Configs within ``TIE_RELATIVE``/``TIE_SECONDS`` of that best cost are tied and the fastest to compile
    among them wins. A config slower than ``default`` never wins, so the stored record is never slower than
    the default.
    """
    ceiling = times.get(default, float("inf"))
    cost = {k: charged_time(t, compile_s.get(k, 0.0)) for k, t in times.items() if t <= ceiling}
    best = min(cost.values())
    tied = [k for k, c in cost.items() if c <= best * (1 + TIE_RELATIVE) or c - best <= TIE_SECONDS]
    return min(tied, key=lambda k: (compile_s.get(k, float("inf")), times[k]))


MAX_PRUNED_PER_TRIAL = 20
"""Sampled configs per asked-for trial at most, pruned ones included (bounds a search in a nearly empty space)."""


def tune_problem(backend: Backend[Any, Any, Any], spec: OpSpec[Any], problem: Any, options: TuneOptions) -> TuneResult:
    """Tune one problem, store the winner in the database and return the outcome.

    Trial 0 of a new study is the built-in default, and the default is re-measured beside the top
    ``top_k`` configs at the end, so the stored config is never slower than the default as measured.
    """
    # ERROR: Optuna logs every failed trial at WARNING with a traceback; the end-of-run table counts the
    # failures by reason, and each trial keeps its reason in the study
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    language = backend.language
    rng = np.random.default_rng(1234)
    inputs = spec.make_inputs(problem, rng)
    reference = spec.reference(problem, inputs)
    objective = Objective(backend, spec, problem, inputs, reference, options.measure)
    storage: Any = options.storage or default_storage(options.db_dir)
    study = optuna.create_study(
        study_name=study_name(backend, spec, problem),
        storage=storage,
        sampler=make_sampler(options.sampler, spec, language, options.seed),
        direction="minimize",
        load_if_exists=True,
    )
    default = spec.default_params(problem, backend.limits, language)
    seen = [from_indices(spec, t.params, language) for t in study.get_trials(deepcopy=False) if t.params]
    # trial 0 is the default; then this shape's best record from before a template edit (re-verified and
    # re-timed like any trial: an edit rarely moves the optimum far, so re-tuning after one is cheap), the best
    # known configs of this shape, the nearest shapes and similar devices (warm start: good configs transfer
    # between neighbouring shapes far better than a random start), then the op's own seed configs (diverse
    # known-good shapes, CLBlast-style starting points)
    db = TuningDB(options.db_dir)
    query = Query.make(backend.info, spec.name, problem, language, backend.limits)
    known = db.stale_params(query)[:1] + [k.params for k in db.candidates(query)[: options.warm_start]]
    seeds = [s for s in spec.seed_params(problem, backend.limits, language) if s != default]
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
    # as constrained as conv's, counting them would leave a fraction of the asked-for measurements
    measured = 0

    def advance(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal measured
        if trial.state == optuna.trial.TrialState.PRUNED:
            return
        measured += 1
        bar.update(1)
        if measured >= options.trials:
            study.stop()
        best = min((t.value for t in study.get_trials(deepcopy=False) if t.value is not None), default=None)
        if best:
            bar.set_postfix_str(f"best {best * 1e3:.2f} ms")

    interrupted = False
    try:
        study.optimize(
            objective,
            n_trials=options.trials * MAX_PRUNED_PER_TRIAL,
            timeout=options.time_budget,
            catch=(TrialFailedError,),
            callbacks=[advance],
            gc_after_trial=False,
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    trials = study.get_trials(deepcopy=False)
    counts, reasons = _summarise(trials)
    complete = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None),
        key=lambda t: float(t.value or 0.0),
    )
    times: dict[tuple[tuple[str, int], ...], float] = {}
    compile_s: dict[tuple[tuple[str, int], ...], float] = {}
    for t in complete:
        key = tuple(sorted(from_indices(spec, t.params, language).items()))
        times.setdefault(key, float(t.value or 0.0))
        if "compile_s" in t.user_attrs:
            compile_s.setdefault(key, float(t.user_attrs["compile_s"]))
    default_key = tuple(sorted(default.items()))
    if default_key not in times:
        return TuneResult(shape, spec.flops(problem), default, None, None, None, counts, reasons, None, interrupted)

    if not interrupted:
        # re-measure the leaders and the default side by side: single measurements are noisy (the luckiest
        # of many noisy trials wins the search), and the default must face the winner under the same
        # conditions; the winner is chosen among these finalists only, ranked as pick_winner ranks them
        ranked = sorted(times, key=lambda k: charged_time(times[k], compile_s.get(k, 0.0)))
        finalists = [*[k for k in ranked if k != default_key][: options.top_k], default_key]
        again = objective.remeasure([dict(k) for k in finalists], options.remeasure)
        remeasured = {finalists[i]: t for i, t in again.items()}
        remeasured.setdefault(default_key, times[default_key])  # the default verified before; keep its time
        times = remeasured
    best_key = pick_winner(times, compile_s, default_key)
    best_params, best_time = dict(best_key), times[best_key]
    record = new_record(
        spec,
        backend.language,
        problem,
        kernel_hash(spec, backend.language),
        best_params,
        best_time,
        times[default_key],
        {**counts, "reasons": reasons, "sampler": options.sampler},
        backend.info.driver,
        DTYPE,
    )
    TuningDB(options.db_dir).update(device_meta(backend.info, backend.limits.subgroup_size), [record])
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

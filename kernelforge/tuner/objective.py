"""One trial: check constraints, render, compile, verify against numpy, time."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from kernelforge.errors import DeviceDisconnectedError, DeviceNotFoundError, KernelCompileError
from kernelforge.ops.spec import OpSpec, Params
from kernelforge.runtime.backends.base import Backend
from kernelforge.runtime.kernel import prepare
from kernelforge.tuner.measure import MeasureConfig, measure, side_by_side
from kernelforge.tuner.space import from_indices, suggest

# Why a trial did not produce a time (Kernel Tuner's "invalidity" vocabulary; "disconnected": a remote device's
# page went away mid-trial).
INVALIDITY = ("constraints", "compile", "runtime", "correctness", "disconnected")


class TrialFailedError(Exception):
    """A config compiled but failed, or could not be compiled; the reason is in the trial's user attrs."""


@dataclass(frozen=True)
class Verdict:
    """Whether a result matches the reference, and by how much it differs."""

    ok: bool
    max_error: float
    tolerance: float


def verify(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> Verdict:
    """Compare against the reference, with the tolerance scaled by the result's largest magnitude."""
    if out.shape != ref.shape:
        return Verdict(False, float("inf"), 0.0)
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    tolerance = rtol * scale
    if not np.all(np.isfinite(out)):
        return Verdict(False, float("inf"), tolerance)
    error = float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
    return Verdict(error <= tolerance, error, tolerance)


def claim(trial: optuna.Trial, config: str, wait_s: float = 10.0) -> int | None:
    """Claim a config for this trial; return the number of another worker's trial measuring it (None: measure it).

    Workers sharing a storage may pick the same config at once. Each writes its claim (``config``), then reads
    the others' running trials: a trial that sees a lower-numbered claim yields to it at once. One that sees only
    higher-numbered claims cannot tell whether their owners read before its own claim was written (and so are
    measuring), so it waits until each has either said so (``measuring``: this trial yields) or yielded itself.
    Since of two claims at least one is written before the other is read, exactly one trial measures the config.
    A claimant that says nothing for ``wait_s`` seconds (a worker that died) is not waited for any longer.
    """
    trial.set_user_attr("config", config)
    deadline = time.monotonic() + wait_s
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)  # a rival may finish between polls
    while True:
        rivals = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and t.user_attrs.get("config") == config
        ]
        lower = [t.number for t in rivals if t.number < trial.number]
        if lower:
            return min(lower)
        measuring = [t.number for t in rivals if t.user_attrs.get("measuring")]
        if measuring:
            return min(measuring)
        if not rivals or time.monotonic() > deadline:
            trial.set_user_attr("measuring", True)
            return None
        time.sleep(0.05)


class Objective:
    """Optuna objective over one (backend, op, problem); minimises kernel seconds."""

    def __init__(
        self,
        backend: Backend[Any, Any, Any],
        spec: OpSpec[Any],
        problem: Any,
        inputs: Sequence[np.ndarray],
        reference: np.ndarray,
        config: MeasureConfig,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.problem = problem
        self.inputs = list(inputs)
        self.reference = reference
        self.config = config
        self.results: dict[tuple[tuple[str, int], ...], tuple[float, float]] = {}
        """Config -> (median seconds, compile seconds) of every trial this worker measured itself: what it can
        still store when the shared storage is lost."""
        self.in_flight: int | None = None
        """The number of the trial being run or told (None once Optuna has stored its end): the one a storage
        outage leaves behind."""
        self.told: float | None = None
        """The value the in-flight trial returned, if it finished: an outage during Optuna's ``tell`` loses it
        unless it is stored again."""
        self.requeued: set[str] = set()
        """Configs queued again after their page went away (once each)."""

    def _fail(self, trial: optuna.Trial, kind: str, reason: str) -> TrialFailedError:
        trial.set_user_attr("invalidity", kind)
        trial.set_user_attr("reason", reason[:2000])
        return TrialFailedError(f"{kind}: {reason}")

    def remeasure(self, candidates: Sequence[Params], config: MeasureConfig) -> dict[int, float]:
        """Time candidates side by side (see :func:`side_by_side`) and return medians by index.

        A candidate that fails to build or verify is left out of the result.
        """
        kernels = {}
        for i, params in enumerate(candidates):
            try:
                kernel = prepare(self.backend, self.spec, self.problem, params, self.inputs)
                if verify(kernel.run(), self.reference, self.spec.tolerance(self.problem, params)).ok:
                    kernels[str(i)] = kernel
            except (DeviceDisconnectedError, DeviceNotFoundError):
                raise  # the finalists are not at fault: measure them all again once the page is back (or stop)
            except Exception:  # a flaky finalist simply drops out
                continue
        names = list(kernels)

        def rounds(count: int) -> list[dict[str, float]]:
            got = self.backend.time_rounds([kernels[n].executable.bound(0) for n in names], count)
            return [dict(zip(names, round_, strict=True)) for round_ in got]

        runs = {n: k.time for n, k in kernels.items()}
        return {int(i): t for i, t in side_by_side(runs, config, rounds).items()}

    def __call__(self, trial: optuna.Trial) -> float:
        """Run one trial."""
        self.in_flight, self.told = trial.number, None
        try:
            value = self._run(trial)
        except DeviceDisconnectedError as exc:
            # nothing is known against the config: queue it again (once, in case it is what takes the page down),
            # so the default and the warm-start configs are measured whatever page they meet
            config = json.dumps(trial.params, sort_keys=True)
            if config not in self.requeued:
                self.requeued.add(config)
                trial.study.enqueue_trial(dict(trial.params))
            raise self._fail(trial, "disconnected", str(exc)) from exc
        # in flight until Optuna has stored it (the tuner's callback clears it): the storage can go down between
        self.told = value
        return value

    def _run(self, trial: optuna.Trial) -> float:
        language = self.backend.language
        params = suggest(trial, self.spec, language)
        trial.set_user_attr("params", params)
        reason = self.spec.constraints(self.problem, params, self.backend.limits, language)
        if reason is not None:
            trial.set_user_attr("invalidity", "constraints")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        config = json.dumps(params, sort_keys=True)
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for previous in done:
            if from_indices(self.spec, previous.params, language) == params and previous.value is not None:
                # samplers do propose configs again; a repeat costs nothing and changes nothing
                trial.set_user_attr("duplicate_of", previous.number)
                return previous.value
        owner = claim(trial, config, self.config.claim_wait_s)
        if owner is not None:
            trial.set_user_attr("invalidity", "duplicate")
            trial.set_user_attr("reason", f"trial {owner} of another worker is measuring it")
            raise optuna.TrialPruned(f"measured by trial {owner}")
        best = min((t.value for t in done if t.value is not None), default=None)
        started = time.perf_counter()
        try:
            kernel = prepare(self.backend, self.spec, self.problem, params, self.inputs)
        except KernelCompileError as exc:
            raise self._fail(trial, "compile", str(exc)) from exc
        compile_s = time.perf_counter() - started
        trial.set_user_attr("compile_s", compile_s)
        if compile_s > self.config.max_compile_s:
            limit = self.config.max_compile_s
            raise self._fail(trial, "compile", f"compile took {compile_s:.1f} s > {limit:g} s (a browser's load time)")
        try:
            out = kernel.run()
        except DeviceDisconnectedError:
            raise
        except Exception as exc:
            raise self._fail(trial, "runtime", f"{type(exc).__name__}: {exc}") from exc
        verdict = verify(out, self.reference, self.spec.tolerance(self.problem, params))  # the op's stated bound
        if not verdict.ok:
            raise self._fail(
                trial, "correctness", f"max error {verdict.max_error:.3g} > tolerance {verdict.tolerance:.3g}"
            )
        result = measure(kernel.time, self.config, best, kernel.time_reps)
        trial.set_user_attr("times", list(result.times))
        self.results[tuple(sorted(params.items()))] = (result.median, compile_s)
        return result.median

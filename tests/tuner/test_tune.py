"""Tuning runs on the software GPU with small budgets."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

import kernelforge.tuner.objective as objective_mod
from kernelforge.db import TuningDB, device_meta, new_record
from kernelforge.ops import get_op
from kernelforge.tuner.measure import MeasureConfig
from kernelforge.tuner.storage import default_storage
from kernelforge.tuner.strategies import STRATEGIES
from kernelforge.tuner.tune import TuneOptions, pick_winner, study_name, tune_problem

pytestmark = pytest.mark.device
SPEC = get_op("gemm")
QUICK = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)


def options(tmp_path, **kw) -> TuneOptions:
    base = dict(trials=8, sampler="random", seed=1, db_dir=tmp_path, measure=QUICK, remeasure=QUICK, progress=False)
    base.update(kw)
    return TuneOptions(**base)


def stored(tmp_path, backend):
    return TuningDB(tmp_path).load(tmp_path / f"{backend.info.slug}.json").records


def test_tune_writes_a_record_no_slower_than_default(tmp_path, lavapipe):
    problem = SPEC.parse_problem("48x40x36")
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path))
    assert result.record is not None
    assert result.best_time <= result.default_time
    assert result.counts["ok"] >= 1
    records = stored(tmp_path, lavapipe)
    assert list(records) == [result.record.key]
    rec = records[result.record.key]
    assert rec.time_s <= rec.default_time_s
    assert SPEC.constraints(problem, rec.params, lavapipe.limits, "wgsl") is None


def test_a_conv_whose_tables_predate_a_tunable_is_tuned_and_stored(tmp_path, lavapipe):
    # conv's default and seed tables have no "precision" (added later, absent=0); the default's time must still be
    # found among the trials', and f16 configs (seeded on lavapipe) are measured within their bound
    conv = get_op("conv2d")
    problem = conv.parse_problem("1x16x14x14:32x3x3:p1")
    assert "precision" not in conv.default_params(problem, lavapipe.limits, "wgsl")
    result = tune_problem(lavapipe, conv, problem, options(tmp_path, trials=12, sampler="tpe"))
    assert result.record is not None and result.record.params["precision"] in (0, 1)
    assert result.best_time <= result.default_time
    study = optuna.load_study(study_name=study_name(lavapipe, conv, problem), storage=default_storage(tmp_path))
    choices = next(p.choices for p in conv.params("wgsl") if p.name == "precision")
    measured = [choices[t.params["precision"]] for t in study.trials if t.value is not None]
    assert 1 in measured and 0 in measured  # the f16 twin of the first seed ran, as f32 configs did


def test_default_is_trial_zero(tmp_path, lavapipe):
    problem = SPEC.parse_problem("16x16x16")
    tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=2))
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    first = study.trials[0]
    assert {p.name: p.choices[first.params[p.name]] for p in SPEC.params("wgsl")} == SPEC.default_params(
        problem, lavapipe.limits, "wgsl"
    )


def test_invalid_and_wrong_configs_are_never_stored(tmp_path, lavapipe, monkeypatch):
    real_prepare = objective_mod.prepare

    class Wrong:
        def __init__(self, kernel):
            self.kernel = kernel

        def run(self):
            return self.kernel.run() + 1.0  # a kernel that computes the wrong thing

        def time(self):
            return self.kernel.time()

    def prepare(backend, spec, problem, params, inputs):
        kernel = real_prepare(backend, spec, problem, params, inputs)
        return kernel if params["staging"] == 1 else Wrong(kernel)

    monkeypatch.setattr(objective_mod, "prepare", prepare)
    problem = SPEC.parse_problem("24x18x20")  # N % 4 != 0: every vec4 config is pruned by constraints
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=16, seed=3))
    assert result.reasons.get("correctness", 0) >= 1
    assert result.reasons.get("constraints", 0) >= 1
    rec = stored(tmp_path, lavapipe)[result.record.key]
    assert rec.params["staging"] == 1 and rec.params["vec_width"] == 1
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert t.user_attrs["invalidity"] == "correctness"
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["invalidity"] == "constraints" and t.user_attrs["reason"]


def test_interrupted_run_keeps_finished_trials_and_resumes(tmp_path, lavapipe, monkeypatch):
    problem = SPEC.parse_problem("20x20x20")
    calls = {"n": 0}
    real_measure = objective_mod.measure

    def flaky_measure(run, config, best=None, run_more=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_measure(run, config, best, run_more)

    monkeypatch.setattr(objective_mod, "measure", flaky_measure)
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=20, sampler="tpe"))
    assert result.interrupted
    storage = default_storage(tmp_path)
    name = study_name(lavapipe, SPEC, problem)
    done = optuna.load_study(study_name=name, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) >= 3
    # the finished trials were enough to store the best of them
    assert result.record is not None and result.best_time <= result.default_time
    monkeypatch.setattr(objective_mod, "measure", real_measure)
    again = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=3, sampler="tpe"))
    resumed = optuna.load_study(study_name=name, storage=default_storage(tmp_path)).trials
    assert not again.interrupted
    assert len(resumed) >= len(done) + 3


def test_a_default_interrupted_in_an_earlier_run_is_timed_when_the_study_resumes(tmp_path, lavapipe, monkeypatch):
    # a process killed while it measured the default leaves that trial failed without a reason; its config is
    # never queued again, so the finalists' re-measurement must time the default, or nothing is ever stored
    problem = SPEC.parse_problem("24x20x28")
    calls = {"n": 0}
    real_measure = objective_mod.measure

    def killed(run, config, best=None, run_more=None):
        calls["n"] += 1
        if calls["n"] == 1:  # the default, trial 0
            raise KeyboardInterrupt
        return real_measure(run, config, best, run_more)

    monkeypatch.setattr(objective_mod, "measure", killed)
    first = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=4))
    assert first.interrupted and first.record is None
    monkeypatch.setattr(objective_mod, "measure", real_measure)
    again = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=3))
    trials = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path)).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the default's own trial stays failed
    assert again.record is not None and again.default_time is not None
    assert again.best_time <= again.default_time


@pytest.mark.parametrize("sampler", sorted(STRATEGIES))
def test_every_sampler_tunes(tmp_path, lavapipe, sampler):
    problem = SPEC.parse_problem("12x16x8")
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=5, sampler=sampler))
    assert result.record is not None
    assert result.counts["ok"] + result.counts["pruned"] + result.counts["failed"] >= 5
    inputs = SPEC.make_inputs(problem, np.random.default_rng(0))
    from kernelforge.runtime.kernel import prepare

    out = prepare(lavapipe, SPEC, problem, result.record.params, inputs).run()
    bound = 1e-5 if not result.record.params["precision"] else SPEC.tolerance(problem, result.record.params)
    np.testing.assert_allclose(out, SPEC.reference(problem, inputs), rtol=bound, atol=bound)


def test_glsl_tuning_keeps_records_apart_from_wgsl(tmp_path, gl):
    from kernelforge.runtime import open_device

    problem = SPEC.parse_problem("20x24x16")
    glsl = tune_problem(gl, SPEC, problem, options(tmp_path, trials=4))
    assert glsl.record is not None and glsl.record.language == "glsl"
    assert set(glsl.record.params) == {p.name for p in SPEC.params("glsl")}
    assert glsl.best_time <= glsl.default_time
    same_device_wgsl = [d for d in _devices_with_slug(gl.info.slug) if d.language == "wgsl"]
    if same_device_wgsl:  # wgpu's GL backend on the same driver writes to the same file
        wgsl = tune_problem(open_device(same_device_wgsl[0]), SPEC, problem, options(tmp_path, trials=3))
        records = stored(tmp_path, gl)
        assert {r.language for r in records.values()} == {"glsl", "wgsl"}
        assert records[glsl.record.key].params == glsl.record.params
        assert records[wgsl.record.key].params == wgsl.record.params


def _devices_with_slug(slug):
    from kernelforge.runtime import list_devices

    return [d for d in list_devices() if d.slug == slug]


def test_warm_start_tries_the_nearest_known_config(tmp_path, lavapipe):
    first = tune_problem(lavapipe, SPEC, SPEC.parse_problem("32x32x32"), options(tmp_path, trials=6, seed=5))
    problem = SPEC.parse_problem("36x36x36")
    tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=2))
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    # trials that ran, in order (queued seeds the budget did not reach wait without params)
    tried = [{p.name: p.choices[t.params[p.name]] for p in SPEC.params("wgsl")} for t in study.trials if t.params]
    assert tried[0] == SPEC.default_params(problem, lavapipe.limits, "wgsl")
    if first.record.params != tried[0]:
        assert tried[1] == first.record.params


def test_retuning_after_a_template_edit_starts_from_the_stale_record(tmp_path, lavapipe):
    problem = SPEC.parse_problem("44x44x44")
    before = {"wg_x": 4, "wg_y": 4, "wpt_m": 2, "wpt_n": 2, "tile_k": 4, "vec_width": 1, "vec_a": 1, "staging": 0}
    assert before != SPEC.default_params(problem, lavapipe.limits, "wgsl")
    stale = new_record(SPEC, "wgsl", problem, "0" * 64, before, 0.001, 0.002, {"ok": 1}, "drv")
    TuningDB(tmp_path).update(device_meta(lavapipe.info), [stale])
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=2))
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    tried = [{p.name: p.choices[t.params[p.name]] for p in SPEC.params("wgsl")} for t in study.trials if t.params]
    # right after the default, re-verified and re-timed like any trial (a record from before `precision`: f32)
    assert tried[1] == {**before, "precision": 0}
    records = TuningDB(tmp_path).load(tmp_path / f"{lavapipe.info.slug}.json").records
    assert sorted(records) == sorted([result.record.key, stale.key])  # the stale one stays until pruned


def test_resuming_a_study_does_not_queue_its_starting_points_twice(tmp_path, lavapipe):
    problem = SPEC.parse_problem("40x40x40")
    for _ in range(2):
        tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=1))
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    fixed = [t.system_attrs["fixed_params"] for t in study.trials if "fixed_params" in t.system_attrs]
    queued = [tuple(sorted(f.items())) for f in fixed]
    assert len(queued) >= 3  # the default and the seeds
    assert len(queued) == len(set(queued))


def test_configs_that_compile_too_slowly_fail_and_are_never_stored(tmp_path, lavapipe):
    # a zero budget makes every compile too slow: each trial fails with the reason, nothing is stored
    slow = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2, max_compile_s=0.0)
    problem = SPEC.parse_problem("20x20x20")
    result = tune_problem(lavapipe, SPEC, problem, options(tmp_path, trials=3, measure=slow))
    assert result.record is None
    study = optuna.load_study(study_name=study_name(lavapipe, SPEC, problem), storage=default_storage(tmp_path))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("compile took" in t.user_attrs["reason"] for t in failed)
    assert all(t.user_attrs["compile_s"] > 0 for t in failed)
    assert not (tmp_path / f"{lavapipe.info.slug}.json").exists()


def test_a_tie_goes_to_the_config_that_compiles_fastest():
    compile_s = {"big": 2.0, "small": 0.1, "tiny": 0.01, "default": 0.05}
    # within 2 %: the quick compile wins; 50 % slower is no tie however quick it compiles
    assert pick_winner({"big": 1.0, "small": 1.01, "tiny": 1.5, "default": 2.0}, compile_s, "default") == "small"
    # a clear winner keeps its place
    assert pick_winner({"big": 1.0, "small": 1.1, "default": 2.0}, compile_s, "default") == "big"
    # compile time is charged over COMPILE_HORIZON runs: 0.5 s more to compile must save 0.5 ms a run
    quick = {"unrolled": 0.53, "plain": 0.04, "default": 0.07}
    assert pick_winner({"unrolled": 648e-6, "plain": 684e-6, "default": 1.09e-3}, quick, "default") == "plain"
    assert pick_winner({"unrolled": 0.1e-3, "plain": 1.0e-3, "default": 1.09e-3}, quick, "default") == "unrolled"
    # microsecond kernels: 20 us apart is noise, not a reason to compile for seconds
    assert pick_winner({"big": 10e-6, "small": 25e-6}, compile_s, "default") == "small"
    # ... and the default, 15 us slower still but 50 ms quicker to compile, costs less over 1000 runs
    assert pick_winner({"big": 10e-6, "small": 25e-6, "default": 40e-6}, compile_s, "default") == "default"
    # never slower than the default, tie or not: "small" compiles fastest but is slower than the default
    assert pick_winner({"big": 10e-6, "small": 25e-6, "default": 20e-6}, compile_s, "default") == "default"
    assert pick_winner({"default": 70e-6, "small": 78e-6}, {"small": 0.01, "default": 1.0}, "default") == "default"
    # a less accurate config (f16 arithmetic) must win by more than a tie: tied, the more accurate one is kept
    bound = {"f16": 1e-2, "f32": 1e-4, "default": 1e-4}.get
    same = {"f16": 0.01, "f32": 0.01, "default": 0.01}
    assert pick_winner({"f16": 0.99e-3, "f32": 1.0e-3, "default": 2e-3}, same, "default", bound) == "f32"
    assert pick_winner({"f16": 0.5e-3, "f32": 1.0e-3, "default": 2e-3}, same, "default", bound) == "f16"
    # no compile time known (an old study): the fastest
    assert pick_winner({"a": 1.0, "b": 1.01, "default": 3.0}, {}, "default") == "a"

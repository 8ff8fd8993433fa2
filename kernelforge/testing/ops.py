"""Helpers the op tests share: enumerating and sampling an op's config space, checking a kernel on a device.

Every op is tested the same way: render and run a few configs of its space on a (software) device and compare
with the op's numpy reference. These helpers keep that recipe in one place; they import no GPU library until
:func:`check_op` runs a kernel, so spec-only tests can use the rest without a device.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelforge.ops.spec import Limits, OpSpec, Params

if TYPE_CHECKING:
    from pathlib import Path

    from kernelforge.runtime.backends.base import Backend
    from kernelforge.tuner.tune import TuneResult


def every_config(spec: OpSpec[Any], language: str) -> list[Params]:
    """Return every point of an op's unconstrained space in one language.

    Args:
        spec: The op.
        language: Kernel language whose space to enumerate (``"wgsl"`` or ``"glsl"``).

    Returns:
        One params dict per combination of choices, in ``itertools.product`` order of :meth:`OpSpec.params`.
    """
    space = spec.params(language)
    names = [p.name for p in space]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(p.choices for p in space))]


def valid_configs(spec: OpSpec[Any], problem: Any, limits: Limits, language: str) -> list[Params]:
    """Return the points of :func:`every_config` that can run ``problem`` on a device with ``limits``.

    Args:
        spec: The op.
        problem: One problem of the op.
        limits: The device's limits.
        language: Kernel language.

    Returns:
        The configs :meth:`OpSpec.constraints` accepts, in :func:`every_config` order.
    """
    return [p for p in every_config(spec, language) if spec.constraints(problem, p, limits, language) is None]


def sampled_configs(
    spec: OpSpec[Any], problem: Any, limits: Limits, language: str, count: int, seed: int
) -> list[Params]:
    """Return the default params, then up to ``count`` distinct valid configs drawn at random.

    Args:
        spec: The op.
        problem: One problem of the op.
        limits: The device's limits.
        language: Kernel language.
        count: How many valid configs to draw (fewer when fewer are valid).
        seed: Seed of the draw, so a test sees the same configs every run.

    Returns:
        ``[default, *picks]``; a pick may equal the default.
    """
    valid = valid_configs(spec, problem, limits, language)
    rng = np.random.default_rng(seed)
    picks = [valid[int(i)] for i in rng.choice(len(valid), min(count, len(valid)), replace=False)]
    return [spec.default_params(problem, limits, language), *picks]


def assert_params_reach_template(spec: OpSpec[Any], language: str) -> None:
    """Assert that the op's template in ``language`` reads every tunable of that language's space.

    Raises:
        AssertionError: Naming the params the template never uses.
    """
    from kernelforge.templates import undeclared_variables

    missing = {p.name for p in spec.params(language)} - undeclared_variables(spec.templates[language])
    assert not missing, f"params never used by the {language} template: {missing}"


def assert_default_fits(spec: OpSpec[Any], problem: Any, limits: Limits, language: str) -> Params:
    """Return the op's default params for ``problem`` after asserting that they satisfy its constraints.

    Raises:
        AssertionError: Naming the problem, the default and the broken constraint.
    """
    params = spec.default_params(problem, limits, language)
    reason = spec.constraints(problem, params, limits, language)
    assert reason is None, f"{spec.problem_key(problem)}: default {params} breaks a {language} constraint: {reason}"
    return params


def check_op(
    backend: Backend[Any, Any, Any],
    spec: OpSpec[Any],
    problem: Any,
    params: Params,
    seed: int = 0,
    rtol: float | None = None,
    inputs: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Run one config of an op on a device and compare it with the op's numpy reference.

    Args:
        backend: An open device.
        spec: The op.
        problem: One problem of the op.
        params: The config to run (checked against the constraints before any compile).
        seed: Seed of :meth:`OpSpec.make_inputs` when ``inputs`` is not given.
        rtol: Tolerance relative to the reference's largest magnitude (see ``kernelforge.tuner.objective.verify``);
            0.0 asks for exact results; None, the op's bound for the config (:meth:`OpSpec.tolerance`).
        inputs: Inputs to use instead of random ones.

    Returns:
        The kernel's output.

    Raises:
        AssertionError: Naming the problem key, the params, the error and the tolerance when the output differs.
    """
    from kernelforge.runtime.kernel import prepare
    from kernelforge.tuner.objective import verify

    if inputs is None:
        inputs = spec.make_inputs(problem, np.random.default_rng(seed))
    out = prepare(backend, spec, problem, params, inputs).run()
    bound = spec.tolerance(problem, params) if rtol is None else rtol
    verdict = verify(out, spec.reference(problem, inputs), rtol=bound)
    assert verdict.ok, f"{spec.problem_key(problem)} {params}: max error {verdict.max_error} > {verdict.tolerance}"
    return out


def check_sampled_configs(
    backend: Backend[Any, Any, Any], spec: OpSpec[Any], problem: Any, count: int, seed: int, rtol: float | None = None
) -> list[Params]:
    """Check the default and ``count`` sampled configs (:func:`sampled_configs`) in the backend's language.

    Args:
        backend: An open device; its language and limits select the space.
        spec: The op.
        problem: One problem of the op.
        count: How many valid configs to draw besides the default.
        seed: Seed of the draw.
        rtol: Tolerance of :func:`check_op` (None: each config's bound).

    Returns:
        The configs that were checked, the default first.

    Raises:
        AssertionError: From :func:`check_op`, for the first config that differs from the reference.
    """
    configs = sampled_configs(spec, problem, backend.limits, backend.language, count, seed)
    for params in configs:
        check_op(backend, spec, problem, params, rtol=rtol)
    return configs


def quick_tune(backend: Backend[Any, Any, Any], spec: OpSpec[Any], problem: Any, db_dir: Path) -> TuneResult:
    """Tune one problem with three random trials and minimal measuring: a smoke test of the tuner on an op.

    Args:
        backend: An open device.
        spec: The op.
        problem: One problem of the op.
        db_dir: Where the tuning database is written (a test's ``tmp_path``).

    Returns:
        The tuner's result; its record (if any) is stored under ``db_dir``.
    """
    from kernelforge.tuner.measure import MeasureConfig
    from kernelforge.tuner.tune import TuneOptions, tune_problem

    quick = MeasureConfig(min_reps=2, max_reps=3, max_seconds=0.2)
    options = TuneOptions(
        trials=3, sampler="random", seed=1, db_dir=db_dir, measure=quick, remeasure=quick, progress=False
    )
    return tune_problem(backend, spec, problem, options)

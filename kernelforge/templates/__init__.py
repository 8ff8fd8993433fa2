"""Shader templates: the Jinja environment, rendering and the template hash.

Syntax follows pygfx's WGSL setup so shader braces never clash with Jinja: blocks are ``{$ ... $}``, line
statements start with ``$$``, values are ``{{ ... }}``. ``StrictUndefined`` turns any missing variable into an
error instead of an empty string in the shader.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from kernelforge.ops.spec import OpSpec, Params

TEMPLATE_DIR = Path(__file__).resolve().parent


def _f32(value: Any) -> str:
    """Format a finite float as a WGSL/GLSL float literal (the only way floats reach shader text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"f32 literal needs a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"f32 literal must be finite, got {number!r}")
    text = repr(number)
    return text if any(c in text for c in ".e") else text + ".0"


@functools.cache
def environment() -> jinja2.Environment:
    """Return the shared Jinja environment (built once)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        block_start_string="{$",
        block_end_string="$}",
        variable_start_string="{{",
        variable_end_string="}}",
        comment_start_string="{#",
        comment_end_string="#}",
        line_statement_prefix="$$",
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["f32"] = _f32
    return env


def _referenced(name: str) -> list[str]:
    env = environment()
    assert env.loader is not None
    source = env.loader.get_source(env, name)[0]
    return sorted(n for n in jinja2.meta.find_referenced_templates(env.parse(source)) if n)


@functools.cache
def template_hash(name: str) -> str:
    """Return a sha256 over a template and everything it includes or imports.

    Tuning records carry this hash, so editing any file a kernel is rendered from invalidates old records
    (the same idea as TVM's code hash).
    """
    digest = hashlib.sha256()
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_referenced(current))
    for current in sorted(seen):
        digest.update(current.encode())
        digest.update((TEMPLATE_DIR / current).read_bytes())
    return digest.hexdigest()


def render_template(name: str, context: dict[str, Any]) -> str:
    """Render one template file with an already validated context."""
    return environment().get_template(name).render(**context)


def undeclared_variables(name: str) -> set[str]:
    """Return the variables a template reads from its context (for tests that every param is used)."""
    env = environment()
    assert env.loader is not None
    source = env.loader.get_source(env, name)[0]
    return set(jinja2.meta.find_undeclared_variables(env.parse(source)))


GLSL_VERSIONS = {"native": "330", "web": "300 es"}
"""The GLSL header per target: moderngl runs GLSL 3.30, browsers WebGL2's GLSL ES 3.00, from the same text."""


def render(spec: OpSpec[Any], language: str, problem: Any, params: Mapping[str, Any], target: str = "native") -> str:
    """Render an op's kernel in ``language`` after validating ``params`` against the op's space.

    Args:
        spec: The op.
        language: ``wgsl`` or ``glsl``.
        problem: The op's problem (shapes and attributes).
        params: Tunables; validated before anything is rendered.
        target: ``native`` or ``web``; selects the GLSL version header (WGSL is the same for both).

    Raises:
        InvalidParamsError: When a parameter is unknown, missing or not one of its choices.
        KeyError: When the op has no template in that language or the target is unknown.
    """
    return render_valid(spec, language, problem, spec.validate_params(params, language), target)


def render_valid(spec: OpSpec[Any], language: str, problem: Any, params: Params, target: str = "native") -> str:
    """Render an op's kernel from params that :meth:`OpSpec.validate_params` returned (see :func:`render`).

    The one place params are validated on the way to a shader is the caller's ``validate_params``; template
    contexts trust what they get.
    """
    if language not in spec.templates:
        raise KeyError(f"op {spec.name} has no {language} template (has {sorted(spec.templates)})")
    context = spec.template_context(problem, params, language)
    context["version"] = GLSL_VERSIONS[target]
    return render_template(spec.templates[language], context)


def kernel_hash(spec: OpSpec[Any], language: str) -> str:
    """Return the template hash of an op's kernel in one language."""
    return template_hash(spec.templates[language])

"""GLSL fragment kernels through moderngl (OpenGL 3.3+, headless EGL): the kernels WebGL2 runs in browsers.

WebGL2 has no compute shaders, so a kernel is a fragment shader over float textures: one full-screen
triangle per kernel, one fragment per output texel, render targets read back. The same template renders
with ``#version 330`` here and ``#version 300 es`` for browsers, so parameters tuned here are the ones the
browser runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernelforge.devices import DeviceInfo, classify, driver_version, fingerprint, vendor_token
from kernelforge.errors import KernelCompileError, KernelforgeError
from kernelforge.graph.program import ProgramStep, Resource, Texture
from kernelforge.ops.spec import Limits
from kernelforge.runtime.backends.base import Backend
from kernelforge.templates import GLSL_VERSIONS, render_template

# Native GL offers more than most WebGL2 devices; tuning within WebGL2's common limits keeps every tuned
# config valid in a browser.
WEBGL2_TEXTURE_SIZE = 4096
WEBGL2_DRAW_BUFFERS = 4


@functools.cache
def _context() -> Any:
    import moderngl

    try:
        return moderngl.create_standalone_context(require=330, backend="egl")  # type: ignore[arg-type]
    except Exception:
        # a desktop session (GLX/WGL/CGL) where EGL is absent
        return moderngl.create_standalone_context(require=330)


def enumerate_devices(start: int) -> list[DeviceInfo]:
    """Return the GL device moderngl's standalone context opens (none when there is no GL driver)."""
    try:
        info = _context().info
    except Exception:
        return []
    renderer = str(info.get("GL_RENDERER", "unknown"))
    vendor = vendor_token(0, str(info.get("GL_VENDOR", "")), renderer)
    version = str(info.get("GL_VERSION", ""))
    limits = Limits(
        max_texture_size=min(int(info.get("GL_MAX_TEXTURE_SIZE", WEBGL2_TEXTURE_SIZE)), WEBGL2_TEXTURE_SIZE),
        max_draw_buffers=min(int(info.get("GL_MAX_DRAW_BUFFERS", WEBGL2_DRAW_BUFFERS)), WEBGL2_DRAW_BUFFERS),
    )
    return [
        DeviceInfo(
            index=start,
            backend="moderngl",
            language="glsl",
            api="gl",
            name=renderer,
            vendor=vendor,
            vendor_id=0,
            device_id=0,
            driver=version,
            adapter_type="unknown",
            device_class=classify("", vendor, renderer),
            slug=fingerprint(vendor, renderer, "gl", driver_version(version)),
            limits=limits,
        )
    ]


@dataclass(frozen=True)
class Draw:
    """A bound GLSL step: its program, input textures (unit k = input k), framebuffer and viewport."""

    program: Any
    textures: tuple[Any, ...]
    framebuffer: Any
    vao: Any
    viewport: tuple[int, int, int, int]


class ModernglBackend(Backend[Any, Any, Draw]):
    """The standalone moderngl context: float textures, fragment-shader programs, full-screen draws."""

    language: ClassVar[str] = "glsl"

    def __init__(self, info: DeviceInfo) -> None:
        super().__init__(info)
        self.ctx = _context()
        self._limits = info.limits
        self._vertex = render_template("glsl/fullscreen.vert.j2", {"version": GLSL_VERSIONS["native"]})

    def current(self) -> Any:
        """Return the context after making it current on this thread.

        Another GL user in the process (wgpu's GL backend) may have made its own EGL context current, so
        every GL call path goes through here first.
        """
        self.ctx.__enter__()
        return self.ctx

    @property
    def limits(self) -> Limits:
        """WebGL2-capped limits of the context."""
        return self._limits

    @property
    def has_timestamps(self) -> bool:
        """False: kernels are timed by the wall clock around glFinish (see :meth:`_time`)."""
        return False

    def _compile(self, source: str, label: str) -> Any:
        import moderngl

        try:
            return self.current().program(vertex_shader=self._vertex, fragment_shader=source)
        except moderngl.Error as exc:
            raise KernelCompileError(f"{label}: GLSL rejected on {self.info.slug}:\n{exc}") from exc

    def _alloc(self, resource: Resource) -> Any:
        import moderngl

        assert isinstance(resource, Texture)
        dtype = {"float32": "f4", "float16": "f2", "int8": "i1", "uint8": "u1"}[resource.dtype]
        texture = self.current().texture((resource.width, resource.height), resource.pack, dtype=dtype)
        texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
        return texture

    def _write(self, handle: Any, data: np.ndarray) -> None:
        self.current()
        handle.write(data.tobytes())

    def _read(self, handle: Any, count: int) -> np.ndarray:
        self.current()
        if handle.dtype == "f2":  # a half-float kernel's render target: its halves, widened
            return np.frombuffer(handle.read(), dtype=np.float16, count=count).astype(np.float32)
        return np.frombuffer(handle.read(), dtype=np.float32, count=count).copy()

    def _bind(self, kernel: Any, step: ProgramStep, inputs: Sequence[Any], outputs: Sequence[Any]) -> Draw:
        import moderngl

        ctx = self.current()
        try:
            framebuffer = ctx.framebuffer(color_attachments=list(outputs))
        except moderngl.Error as exc:
            width, height = step.size
            raise KernelforgeError(
                f"{step.label}: {len(outputs)} float render target(s) of {width}x{height} are not supported on "
                f"{self.info.slug}: {exc}"
            ) from exc
        # sampler units are fixed per kernel: set them once, not on every draw
        for unit, arg in enumerate(step.inputs):
            if arg.sampler in kernel:
                kernel[arg.sampler].value = unit
        vao = ctx.vertex_array(kernel, [])
        return Draw(kernel, tuple(inputs), framebuffer, vao, (0, 0, *step.size))

    def _draw(self, step: Draw) -> None:
        import moderngl

        ctx = self.current()
        step.framebuffer.use()
        ctx.viewport = step.viewport
        ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        for unit, texture in enumerate(step.textures):
            texture.use(location=unit)
        step.vao.render(moderngl.TRIANGLES, vertices=3)

    def _run(self, steps: Sequence[Draw]) -> None:
        for step in steps:
            self._draw(step)
        self.ctx.finish()

    def _time(self, step: Draw) -> float:
        # NOTE: wall clock around draw + glFinish, not GL_TIME_ELAPSED: llvmpipe's timer query ends when the
        # draw is queued, before its rasterizer threads run (it read 0.05 s for a 1.1 s GEMM).
        start = time.perf_counter()
        self._draw(step)
        self.ctx.finish()
        return time.perf_counter() - start

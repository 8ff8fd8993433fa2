"""GLSL fragment kernels through moderngl (OpenGL 3.3+, headless EGL): the kernels WebGL2 runs in browsers.

WebGL2 has no compute shaders, so a kernel is a fragment shader over float textures: one full-screen
triangle per kernel, one fragment per output texel, render targets read back. The same template renders
with ``#version 330`` here and ``#version 300 es`` for browsers, so parameters tuned here are the ones the
browser runs.
"""

from __future__ import annotations

import functools
import time
from typing import Any, ClassVar

import numpy as np

from kernelforge.errors import KernelCompileError, KernelforgeError
from kernelforge.ops._spec import GlLaunch, Limits, OpSpec, Params
from kernelforge.ops._texture import TexLayout, interleave_rows
from kernelforge.runtime.backends._base import Backend, Bound
from kernelforge.runtime.devices import DeviceInfo, classify, driver_version, fingerprint, vendor_token
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


class _GlBound(Bound):
    def __init__(
        self, backend: ModernglBackend, program: Any, textures: list[Any], launch: GlLaunch, label: str
    ) -> None:
        import moderngl

        ctx = backend.current()
        self._backend = backend
        self._program = program
        self._layouts: tuple[TexLayout, ...] = launch.targets
        self._rows = launch.rows
        self._targets = [ctx.texture((t.width, t.height), t.pack, dtype="f4") for t in launch.targets]
        for tex in (*textures, *self._targets):
            tex.filter = (moderngl.NEAREST, moderngl.NEAREST)
        try:
            self._fbo = ctx.framebuffer(color_attachments=self._targets)
        except moderngl.Error as exc:
            raise KernelforgeError(
                f"{label}: {len(self._targets)} float render target(s) of {launch.targets[0].width}x"
                f"{launch.targets[0].height} are not supported on {backend.info.slug}: {exc}"
            ) from exc
        self._vao = ctx.vertex_array(program, [])
        self._viewport = (0, 0, launch.targets[0].width, launch.targets[0].height)
        self._textures = textures
        # sampler units are fixed per kernel: set them once, not on every draw
        for unit, name in enumerate(launch.samplers):
            if name in program:
                program[name].value = unit

    def update(self, index: int, array: np.ndarray, layout: TexLayout) -> None:
        """Overwrite input texture ``index`` with new data of the same layout (graph executors, per run)."""
        self._backend.current()
        data = layout.pack_array(np.asarray(array, np.float32).reshape(layout.rows, layout.cols))
        self._textures[index].write(data.tobytes())

    def _draw(self) -> None:
        import moderngl

        ctx = self._backend.current()
        self._fbo.use()
        ctx.viewport = self._viewport
        ctx.disable(moderngl.BLEND | moderngl.DEPTH_TEST)
        for unit, tex in enumerate(self._textures):
            tex.use(location=unit)
        self._vao.render(moderngl.TRIANGLES, vertices=3)

    def run(self) -> np.ndarray:
        self._draw()  # leaves our context current for the reads
        parts = [
            layout.unpack(np.frombuffer(tex.read(), dtype=np.float32))
            for layout, tex in zip(self._layouts, self._targets, strict=True)
        ]
        return interleave_rows(parts, self._rows)

    def time(self) -> float:
        # NOTE: wall clock around draw + glFinish, not GL_TIME_ELAPSED: llvmpipe's timer query ends when the
        # draw is queued, before its rasterizer threads run (it read 0.05 s for a 1.1 s GEMM).
        start = time.perf_counter()
        self._draw()
        self._backend.ctx.finish()
        return time.perf_counter() - start


class ModernglBackend(Backend):
    """The standalone moderngl context."""

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
        """False: kernels are timed by the wall clock around glFinish (see ``_GlBound.time``)."""
        return False

    def _compile(self, source: str, label: str) -> Any:
        import moderngl

        try:
            return self.current().program(vertex_shader=self._vertex, fragment_shader=source)
        except moderngl.Error as exc:
            raise KernelCompileError(f"{label}: GLSL rejected on {self.info.slug}:\n{exc}") from exc

    def _bind_op(self, kernel: Any, spec: OpSpec[Any], problem: Any, params: Params, inputs: list[np.ndarray]) -> Bound:
        launch = spec.gl_launch(problem, params)
        ctx = self.current()
        if len(launch.inputs) != len(inputs):
            raise KernelforgeError(f"{spec.name}: {len(inputs)} inputs for {len(launch.inputs)} textures")
        textures = []
        for layout, array in zip(launch.inputs, inputs, strict=True):
            data = layout.pack_array(array.reshape(layout.rows, layout.cols))
            textures.append(ctx.texture((layout.width, layout.height), layout.pack, data.tobytes(), dtype="f4"))
        return _GlBound(self, kernel, textures, launch, f"{spec.name}:{spec.problem_key(problem)}")

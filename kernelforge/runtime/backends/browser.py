"""WGSL kernels in a browser page: WebGPU through the browser's own stack (Chrome's Dawn and shader compiler).

``--device browser`` launches a browser (:mod:`kernelforge.runtime.agent`) and runs every kernel through the
page's agent (``export/js/agent.js``): the text a bundle ships (target ``web``) is compiled with
``createComputePipelineAsync``, run and read back for verification, and timed in batches between timestamps.
``--device browser:webgl2`` (:class:`BrowserGlBackend`) runs the GLSL kernels a bundle's WebGL2 plan ships, on the
WebGL2 context kernelforge.js would make (``export/js/agent-webgl2.js``).
The device is never enumerated (listing devices must not start a browser): it exists once a selector asks.
Its identity is the browser's ``GPUAdapterInfo`` and API, so its records live in a tuning database file of
their own and a bundle exported from them matches the same browser exactly. ``--device remote``
(:mod:`kernelforge.runtime.backends.remote`) is this backend over a page that any browser opens.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from kernelforge.devices import DeviceInfo, classify, fingerprint, vendor_token
from kernelforge.errors import DeviceDisconnectedError, DeviceNotFoundError, KernelCompileError, KernelforgeError
from kernelforge.graph.program import Buffer, ProgramStep, Resource, Texture
from kernelforge.ops.spec import SUBGROUP_SIZES, Limits
from kernelforge.runtime.agent import Agent, BrowserOptions, PageAgent
from kernelforge.runtime.backends.base import Backend
from kernelforge.runtime.backends.moderngl import WEBGL2_DRAW_BUFFERS, WEBGL2_TEXTURE_SIZE
from kernelforge.runtime.backends.wgpu import webgpu_default_limits, webgpu_limits
from kernelforge.templates import GLSL_VERSIONS, render_template

BLOB_BUDGET = 256 << 20
"""Bytes of written data a page keeps for reuse (least recently used dropped first): every trial of a study writes
the same inputs, which then cross the bridge (or a phone's Wi-Fi) once."""
BLOB_MIN = 4096
"""Smaller writes are sent every time: their key and bookkeeping would cost about as much."""
MIN_SPAN_MS = {"gpu": 2.0, "wall": 20.0}
"""How long a timed batch of dispatches runs at least, per clock: Chrome quantises timestamps to ~0.1 ms (5 % of
2 ms), and its wall clock waits up to ~2 ms for a poll of the GPU process (10 % of 20 ms)."""

_pages: dict[int, tuple[Agent, Mapping[str, Any]]] = {}
_devices: dict[tuple[str, BrowserOptions], DeviceInfo] = {}
"""Opened devices by ``word:api`` and options: one browser each."""


def register_page(agent: Agent, raw: Mapping[str, Any]) -> int:
    """Keep an opened agent and its ``open`` answer for the backend; return the device index to give it."""
    index = len(_pages)
    _pages[index] = (agent, raw)
    return index


def page_agent(info: DeviceInfo) -> Agent:
    """Return the agent that drives a browser device's page."""
    return _pages[info.index][0]


def _browser_name(user_agent: str, version: str) -> str:
    """Return e.g. ``Chrome 131.0.6778.85 headless`` (what the record's ``driver`` says ran it)."""
    # a remote page may be any browser: the first product token found names it (Chrome's UA also says Safari)
    products = (
        ("Edge", "Edg/"),
        ("Firefox", "Firefox/"),
        ("Chrome", "Chrome/"),
        ("Chrome", "CriOS/"),
        ("Safari", "Version/"),
    )
    name, found = next(((n, m) for n, t in products if (m := re.search(rf"{t}(\S+)", user_agent))), ("Chrome", None))
    if not version:
        version = found.group(1) if found else "?"
    return f"{name} {version}" + (" headless" if "HeadlessChrome" in user_agent else "")


APIS = {"webgpu": "wgsl", "webgl2": "glsl"}
"""The browser APIs a page tunes on, and the kernel language each runs."""


def check_selector(selector: str, language: str | None) -> tuple[str, str]:
    """Return the selector's word (``browser``, ``remote``) and API (``webgpu``, ``webgl2``) if it runs what is asked.

    Raises:
        DeviceNotFoundError: When the selector asks for an API a browser device does not have, or a kernel
            language its API does not run.
    """
    word, _, api = selector.partition(":")
    api = api or "webgpu"
    if api not in APIS:
        raise DeviceNotFoundError(f"--device {selector}: a browser device tunes WGSL on WebGPU (--device {word}) or "
                                  f"GLSL on WebGL2 (--device {word}:webgl2), not {api!r}")  # fmt: skip
    if language not in (None, APIS[api]):
        suffix = "" if api == "webgpu" else f":{api}"
        raise DeviceNotFoundError(
            f"--device {word}{suffix} runs {APIS[api].upper()} kernels on {api}; --backend {language} cannot run there"
        )
    return word, api


def open_args(api: str) -> dict[str, Any]:
    """The agent's ``open`` arguments for an API (WebGL2: the vertex shader a bundle links every kernel with)."""
    if api == "webgl2":
        return {"api": api, "vertex": render_template("glsl/fullscreen.vert.j2", {"version": GLSL_VERSIONS["web"]})}
    return {}


def _angle_device(renderer: str) -> tuple[str, str]:
    """Return the vendor and GPU an ANGLE renderer string names, or ``("", renderer)`` when it is not ANGLE's.

    ``ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 (0x2504) Direct3D11 vs_5_0 ps_5_0, D3D11)`` gives ``NVIDIA`` and
    ``NVIDIA GeForce RTX 3060``.
    """
    inner = re.fullmatch(r"ANGLE \((.*)\)", renderer.strip())
    if not inner:
        return "", renderer.strip()
    parts, depth, start = [], 0, 0
    for i, c in enumerate(inner.group(1)):  # split at the commas outside parentheses: vendor, device, backend
        depth += (c == "(") - (c == ")")
        if c == "," and depth == 0:
            parts.append(inner.group(1)[start:i].strip())
            start = i + 1
    parts.append(inner.group(1)[start:].strip())
    device = parts[1] if len(parts) > 1 else parts[0]
    device = re.sub(r"\s*\(0x[0-9a-fA-F]+\)|Direct3D.*$|ANGLE \w+ Renderer: ", "", device)
    return (parts[0] if len(parts) > 1 else ""), " ".join(device.split()) or renderer.strip()


def _webgl2_info(raw: Mapping[str, Any], index: int, version: str, backend: str) -> DeviceInfo:
    renderer = str(raw.get("renderer") or "unknown")
    angle_vendor, name = _angle_device(renderer)
    vendor = vendor_token(0, angle_vendor or str(raw.get("vendor") or ""), name)
    given = raw.get("limits") or {}

    def capped(key: str, cap: int) -> int:
        value = given.get(key)
        return min(int(value), cap) if isinstance(value, int) and value > 0 else cap

    limits = Limits(
        max_texture_size=capped("maxTextureSize", WEBGL2_TEXTURE_SIZE),
        max_draw_buffers=capped("maxDrawBuffers", WEBGL2_DRAW_BUFFERS),
    )
    return _device(raw, index, version, backend, "webgl2", name, vendor, "unknown", limits)


def _device(
    raw: Mapping[str, Any],
    index: int,
    version: str,
    backend: str,
    api: str,
    name: str,
    vendor: str,
    adapter_type: str,
    limits: Limits,
) -> DeviceInfo:
    return DeviceInfo(
        index=index,
        backend=backend,
        language=APIS[api],
        api=api,
        name=name,
        vendor=vendor,
        vendor_id=0,
        device_id=0,
        driver=_browser_name(str(raw.get("userAgent") or ""), version),
        adapter_type=adapter_type,
        device_class=classify(adapter_type, vendor, name),
        slug=fingerprint(vendor, name, api, ""),
        limits=limits,
        adapter=str(raw.get("desc") or "").lower(),
    )


def device_info(raw: Mapping[str, Any], index: int, version: str = "", backend: str = "browser") -> DeviceInfo:
    """Build the device of a page's ``open`` answer: its ``GPUAdapterInfo``, limits, subgroup size and ``f16``.

    A WebGL2 page's answer gives its unmasked renderer and limits instead.

    The fingerprint is ``vendor-device-webgpu`` (``-webgl2``), without a version: browsers update every few
    weeks, and the users of a bundle run whichever version they have. The browser and its version go into
    ``driver``. ``backend`` is the ``--device`` word; a WebGL2 device's backend is ``<word>-webgl2``.
    """
    if raw.get("api") == "webgl2":
        return _webgl2_info(raw, index, version, f"{backend}-webgl2")
    fields = [str(raw.get(k) or "").strip() for k in ("architecture", "device", "description")]
    name = " ".join(f for f in fields if f) or str(raw.get("vendor") or "") or "unknown"
    vendor = vendor_token(0, str(raw.get("vendor") or ""), name)
    # the page gives the JS names (maxComputeWorkgroupSizeX), wgpu-py the IDL's (max-compute-workgroup-size-x)
    given = raw.get("limits") or {}
    idl = {re.sub(r"(?<!^)(?=[A-Z])", "-", k).lower(): v for k, v in given.items() if isinstance(v, (int, float))}
    subgroup = raw.get("subgroupSize")
    # shader-f16: the page opened its device with the feature (the tuner may then time f16 configs)
    adapter = replace(
        webgpu_limits(idl), subgroup_size=subgroup if subgroup in SUBGROUP_SIZES else 0, f16=raw.get("f16") is True
    )
    adapter_type = "cpu" if raw.get("fallback") else "unknown"  # a fallback adapter is a software one
    return _device(raw, index, version, backend, "webgpu", name, vendor, adapter_type, webgpu_default_limits(adapter))


def request_device(selector: str, language: str | None, options: BrowserOptions | None) -> DeviceInfo:
    """Launch a browser (once per selector and options), open the agent page and return its WebGPU device.

    Raises:
        DeviceNotFoundError: When the selector asks for what this backend does not run, or the browser cannot
            be launched or has no WebGPU.
    """
    options = options or BrowserOptions()
    word, api = check_selector(selector, language)
    key = (f"{word}:{api}", options)
    if key not in _devices:
        agent = PageAgent(options)
        try:
            raw = agent.call("open", open_args(api))
        except KernelforgeError as exc:
            agent.close()
            raise DeviceNotFoundError(f"--device {word}: {options.path}: {exc}") from None
        _devices[key] = device_info(raw, register_page(agent, raw), agent.version)
    return _devices[key]


@dataclass(eq=False)
class PageHandle:
    """A kernel, buffer or bound step held by a page: its id there (buffers and steps freed once dropped)."""

    id: int
    nbytes: int = 0
    page: int = 0
    """The page that holds it (:meth:`Agent.wait_page`): a remote device's page may be replaced by another."""
    label: str = ""
    """A bound step's label: its problem, whose last batch size the next trial's first batch starts from."""


class BrowserBackend(Backend[PageHandle, PageHandle, PageHandle]):
    """A browser page's WebGPU device, driven through the agent's ``call(op, args)``.

    A remote page that goes away takes everything it held with it, and the one that comes back starts empty.
    Rather than re-creating kernels, buffers and bind groups behind the executor's back, every handle names its
    page; a call with the handles of a page that is gone raises :class:`DeviceDisconnectedError`, which fails
    the tuner's trial in flight, and the next trial, which builds its kernel from nothing anyway, runs on the
    new page. Only the compile cache outlives a trial: it is emptied whenever the page changes.
    """

    language: ClassVar[str] = "wgsl"
    target: ClassVar[str] = "web"

    def __init__(self, info: DeviceInfo) -> None:
        super().__init__(info)
        self._agent, raw = _pages[info.index]
        self._has_query = self._timestamps = bool(raw.get("timestamps"))
        self._suspect = 0
        self._page = 0
        self._garbage: list[tuple[int, int]] = []
        """(page, id) of dropped handles, freed in their page by its next call."""
        self._ids = itertools.count(1 << 30)  # the page numbers its kernels from 1: no id is both
        self._deferred: list[tuple[int, str, dict[str, Any]]] = []
        """(page, op, args) of calls that need no answer (alloc, write, bind), sent with the next that does."""
        self._blobs: OrderedDict[str, int] = OrderedDict()
        """Keys and sizes of the data the current page keeps (see :data:`BLOB_BUDGET`), least recent first."""
        self._blobs_page = -1
        self._forget_all = False
        self._batch_sizes: dict[tuple[str, str], int] = {}
        """(step label, clock) -> the batch size the page last settled on: where the next config of the same
        problem starts calibrating (each growth step costs a round trip to the GPU process)."""

    @property
    def limits(self) -> Limits:
        """WebGPU's default limits, lowered where the adapter offers less (a bundle's device has these)."""
        return self.info.limits

    @property
    def has_timestamps(self) -> bool:
        """Whether batches are timed by the pass's GPU timestamps (else by the page's wall clock)."""
        return self._timestamps

    def reset_clock(self) -> None:
        """Believe the GPU timestamps again, where the device has them."""
        self._timestamps, self._suspect = self._has_query, 0

    def _current(self) -> int:
        """Return the page new handles go to (waiting for one to connect); a new page forgets compiled kernels."""
        page = self._agent.wait_page()
        if page != self._page:
            self._kernels.clear()
            self._page = page
        return page

    def compile(self, source: str, label: str) -> PageHandle:
        """Compile a kernel in the current page (cached by source while that page lives)."""
        self._current()
        return super().compile(source, label)

    def _page_of(self, op: str, *held: PageHandle) -> int:
        """Return the page the handles an op uses live in (all in one, or a page went away mid-trial)."""
        pages = {h.page for h in held}
        if len(pages) > 1:
            raise DeviceDisconnectedError(f"{self.info.slug}: {op}: handles of a page that went away")
        return pages.pop() if pages else self._current()

    def _call(self, op: str, args: dict[str, Any], page: int) -> Any:
        """Run an op in page ``page`` and return its answer.

        The deferred calls and the freeing of the page's dropped handles go first, in the same round trip (the
        agent's ``batch``).
        """
        calls: list[list[Any]] = [[o, a] for p, o, a in self._deferred if p == page]
        self._deferred.clear()  # those of a page that is gone went with it
        if self._garbage:
            freed = self._garbage[:]
            del self._garbage[: len(freed)]  # a finalizer may append meanwhile
            mine = [i for p, i in freed if p == page]
            self._garbage += [(p, i) for p, i in freed if p > page]
            if mine:  # after the deferred allocs: a handle dropped before its alloc was sent is still freed
                calls.append(["release", {"ids": mine}])
        if not calls:
            return self._agent.call(op, args, page)
        try:
            return self._agent.call("batch", {"calls": [*calls, [op, args]]}, page)
        except Exception:
            self._forget_all = True  # a write that was never run may have been counted as kept
            raise

    def _defer(self, op: str, args: dict[str, Any], page: int) -> None:
        self._deferred.append((page, op, args))

    def _payload(self, data: np.ndarray, page: int) -> dict[str, Any]:
        """The ``data`` of a write, or the key of the same bytes the page keeps from an earlier one."""
        raw = data.tobytes()
        sent = {"data": base64.b64encode(raw).decode("ascii")}
        if len(raw) < BLOB_MIN or len(raw) > BLOB_BUDGET:
            return sent
        forget: list[str] = []
        if page != self._blobs_page or self._forget_all:
            self._blobs.clear()
            self._blobs_page, self._forget_all = page, False
            forget.append("*")
        key = hashlib.blake2b(raw, digest_size=16).hexdigest()
        if key in self._blobs:
            self._blobs.move_to_end(key)
            return {"blob": key, "forget": forget}
        while self._blobs and sum(self._blobs.values()) + len(raw) > BLOB_BUDGET:
            forget.append(self._blobs.popitem(last=False)[0])
        self._blobs[key] = len(raw)
        return {**sent, "blob": key, "forget": forget}

    def _handle(self, id: int, nbytes: int, page: int, label: str = "") -> PageHandle:
        handle = PageHandle(int(id), nbytes, page, label)
        weakref.finalize(handle, self._garbage.append, (page, handle.id))
        return handle

    def _compile(self, source: str, label: str) -> PageHandle:
        # IDL: Promise<GPUComputePipeline> createComputePipelineAsync(GPUComputePipelineDescriptor descriptor)
        page = self._current()
        result = self._call("compile", {"source": source, "label": label}, page)
        if "error" in result:
            where = f"{self.info.driver} on {self.info.slug}"
            raise KernelCompileError(f"{label}: WGSL rejected by {where}:\n{result['error']}")
        return PageHandle(int(result["kernel"]), 0, page)  # kernels live as long as their page

    def _alloc(self, resource: Resource) -> PageHandle:
        assert isinstance(resource, Buffer)
        page, id = self._current(), next(self._ids)
        self._defer("alloc", {"bytes": resource.nbytes, "id": id}, page)
        return self._handle(id, max(4, (resource.nbytes + 3) // 4 * 4), page)

    def _write(self, handle: PageHandle, data: np.ndarray) -> None:
        # float32 values or int8/uint8 bytes, as Backend.write passes them: their bytes as they are
        self._defer("write", {"buffer": handle.id, **self._payload(data, handle.page)}, handle.page)

    def _read(self, handle: PageHandle, count: int) -> np.ndarray:
        data = base64.b64decode(self._call("read", {"buffer": handle.id, "bytes": 4 * count}, handle.page))
        return np.frombuffer(data, dtype=np.float32, count=count).copy()

    def _bind(
        self, kernel: PageHandle, step: ProgramStep, inputs: Sequence[PageHandle], outputs: Sequence[PageHandle]
    ) -> PageHandle:
        if any(g < 1 for g in step.workgroups):
            raise KernelforgeError(f"{step.label}: workgroup counts must be >= 1, got {step.workgroups}")
        args_of = (*step.inputs, *step.outputs)
        # a prefix: a graph's planned buffer may be larger than the tensor it holds
        bindings = [[b.id, arg.nbytes or b.nbytes] for b, arg in zip((*inputs, *outputs), args_of, strict=True)]
        id = next(self._ids)
        args = {
            "kernel": kernel.id,
            "label": step.label,
            "uniforms": [int(u) for u in step.uniforms],
            "bindings": bindings,
            "workgroups": list(step.workgroups),
            "id": id,
        }
        page = self._page_of("bind", kernel, *inputs, *outputs)
        self._defer("bind", args, page)
        return self._handle(id, 0, page, step.label)

    def _run(self, steps: Sequence[PageHandle]) -> None:
        self._call("run", {"steps": [s.id for s in steps]}, self._page_of("run", *steps))

    def _time(self, step: PageHandle) -> float:
        return self.time_reps(step, 1)[0]

    def time_reps(self, step: PageHandle, count: int) -> list[float]:
        """Time ``count`` batches of the step in one call to the page (see :data:`MIN_SPAN_MS`)."""
        clock = "gpu" if self._timestamps else "wall"
        args = {"step": step.id, "clock": clock, "minMs": MIN_SPAN_MS[clock], "reps": count}
        result = self._call("time", {**args, "start": self._start(step, clock)}, step.page)
        n = int(result["n"])
        self._batch_sizes[(step.label, clock)] = n
        return [self._seconds(float(wall), gpu, n) for wall, gpu in zip(result["wall"], result["gpu"], strict=True)]

    def time_rounds(self, steps: Sequence[PageHandle], count: int) -> list[list[float]]:
        """Time steps side by side in one call to the page (the tuner's finalists: one call, not one per rep)."""
        clock = "gpu" if self._timestamps else "wall"
        starts = [self._start(s, clock) for s in steps]
        args = {"steps": [s.id for s in steps], "starts": starts, "reps": count, "clock": clock}
        result = self._call("alternate", {**args, "minMs": MIN_SPAN_MS[clock]}, self._page_of("time", *steps))
        sizes = [int(n) for n in result["n"]]
        for s, n in zip(steps, sizes, strict=True):
            self._batch_sizes[(s.label, clock)] = n
        return [
            [self._seconds(float(w), g, n) for w, g, n in zip(walls, gpus, sizes, strict=True)]
            for walls, gpus in zip(result["wall"], result["gpu"], strict=True)
        ]

    def _start(self, step: PageHandle, clock: str) -> int:
        """The batch size a new step starts calibrating from (0: from 1): half the last of its problem's.

        A config like the last one then needs one growth step, and one 100x slower runs a batch of ~50 x minMs
        once, not ~100 x.
        """
        return self._batch_sizes.get((step.label, clock), 0) // 2

    def _seconds(self, wall_ms: float, gpu_ms: float | None, n: int) -> float:
        """One dispatch's seconds from a batch of ``n`` (the GPU's, unless its timestamps are not believed)."""
        wall = wall_ms * 1e-3
        if gpu_ms is None or not self._timestamps:
            return wall / n
        gpu = float(gpu_ms) * 1e-3
        # Timestamps far below the wall clock of a long batch are not believed (a driver whose timer stops early);
        # five in a row switch them off until the next study, as on wgpu. The wall clock waits for a poll of the
        # GPU process, hence the wider margin than wgpu's.
        if wall - gpu > 5e-3 and gpu < 0.5 * wall:
            self._suspect += 1
            self._timestamps = self._suspect < 5
            return wall / n
        self._suspect = 0
        return gpu / n


class BrowserGlBackend(BrowserBackend):
    """A browser page's WebGL2 context: GLSL fragment kernels on float textures, as a bundle's WebGL2 plan runs.

    Everything but resources and bindings is :class:`BrowserBackend`'s: compile, run and batched timing (the
    page times draws by ``EXT_disjoint_timer_query_webgl2`` where it has it, else by the wall clock to a
    one-texel read).
    """

    language: ClassVar[str] = "glsl"

    def _alloc(self, resource: Resource) -> PageHandle:
        assert isinstance(resource, Texture)
        page, id = self._current(), next(self._ids)
        size = {"width": resource.width, "height": resource.height, "pack": resource.pack, "dtype": resource.dtype}
        self._defer("alloc", {**size, "id": id}, page)
        return self._handle(id, 0, page)

    def _write(self, handle: PageHandle, data: np.ndarray) -> None:
        # float32 values or int8/uint8 integers (Backend.write), for the texture's first texels
        self._defer("write", {"texture": handle.id, **self._payload(data, handle.page)}, handle.page)

    def _read(self, handle: PageHandle, count: int) -> np.ndarray:
        data = base64.b64decode(self._call("read", {"texture": handle.id, "count": count}, handle.page))
        return np.frombuffer(data, dtype=np.float32, count=count).copy()

    def _bind(
        self, kernel: PageHandle, step: ProgramStep, inputs: Sequence[PageHandle], outputs: Sequence[PageHandle]
    ) -> PageHandle:
        id = next(self._ids)
        args = {
            "kernel": kernel.id,
            "label": step.label,
            "inputs": [[h.id, arg.sampler] for h, arg in zip(inputs, step.inputs, strict=True)],
            "outputs": [h.id for h in outputs],
            "size": list(step.size),
            "id": id,
        }
        page = self._page_of("bind", kernel, *inputs, *outputs)
        self._defer("bind", args, page)
        return self._handle(id, 0, page, step.label)

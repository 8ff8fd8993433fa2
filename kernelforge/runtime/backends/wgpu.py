"""WGSL compute kernels through wgpu-py (Vulkan, Metal, D3D12, GL), the same text WebGPU runs in browsers."""

from __future__ import annotations

import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from kernelforge import _config
from kernelforge.devices import (
    DeviceInfo,
    classify,
    driver_version,
    fingerprint,
    vendor_token,
    wide_tile_compiler,
)
from kernelforge.errors import KernelCompileError, KernelforgeError
from kernelforge.graph.program import Buffer, ProgramStep, Resource
from kernelforge.ops.spec import SUBGROUP_SIZES, Limits
from kernelforge.runtime.backends.base import Backend

_adapters: dict[int, Any] = {}


def _prepare_loader() -> None:
    # Mesa's EGL probes Wayland and prints an error per adapter when XDG_RUNTIME_DIR is unset (headless
    # machines, CI); a private runtime dir silences it without changing which adapters are found.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime_dir = os.path.join(tempfile.gettempdir(), f"kernelforge-runtime-{os.getuid()}")
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = runtime_dir
    # The Vulkan loader reads these when wgpu-native creates its instance, i.e. at the first enumeration.
    # Chromium's SwiftShader is added beside the system drivers so it shows up as a device of its own:
    # it is the software GPU headless Chromium runs WebGPU on, so tuning on it is tuning for that browser.
    icd = _config.swiftshader_icd()
    if icd and "VK_ICD_FILENAMES" not in os.environ and "VK_DRIVER_FILES" not in os.environ:
        extra = os.environ.get("VK_ADD_DRIVER_FILES", "")
        if icd not in extra.split(os.pathsep):
            os.environ["VK_ADD_DRIVER_FILES"] = os.pathsep.join(p for p in (extra, icd) if p)


def webgpu_limits(raw: Any) -> Limits:
    """Return the compute limits of a WebGPU limits mapping (wgpu-py's names: ``max-compute-...``)."""
    defaults = Limits()

    def get(key: str, fallback: int) -> int:
        return int(raw.get(key, fallback)) if hasattr(raw, "get") else fallback

    return Limits(
        max_invocations=get("max-compute-invocations-per-workgroup", defaults.max_invocations),
        max_wg_x=get("max-compute-workgroup-size-x", defaults.max_wg_x),
        max_wg_y=get("max-compute-workgroup-size-y", defaults.max_wg_y),
        max_wg_z=get("max-compute-workgroup-size-z", defaults.max_wg_z),
        max_workgroup_storage=get("max-compute-workgroup-storage-size", defaults.max_workgroup_storage),
        max_workgroups_per_dim=get("max-compute-workgroups-per-dimension", defaults.max_workgroups_per_dim),
        max_storage_binding=get("max-storage-buffer-binding-size", defaults.max_storage_binding),
    )


def webgpu_default_limits(adapter_limits: Limits) -> Limits:
    """Return WebGPU's default limits, lowered where the adapter offers less.

    Devices are opened with the defaults, not the adapter's maxima, so every tuned config also runs on a
    browser's default ``requestDevice()``.
    """
    d = Limits()
    traits = ("wide_tiles", "subgroup_size", "f16")  # traits of the adapter, not WebGPU limits
    lowered = {f: min(getattr(d, f), getattr(adapter_limits, f)) for f in d.__dataclass_fields__ if f not in traits}
    return replace(Limits(**lowered), **{f: getattr(adapter_limits, f) for f in traits})


# Every invocation writes the subgroup size it runs in; one value across two workgroup shapes is a fixed size.
_SUBGROUP_PROBE = """
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size({wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_size) size: u32) {{
    out[gid.x] = size;
}}
"""


def enumerate_devices(start: int) -> list[DeviceInfo]:
    """Return every adapter wgpu-py enumerates, numbered from ``start``."""
    _prepare_loader()
    import wgpu

    devices = []
    for offset, adapter in enumerate(wgpu.gpu.enumerate_adapters_sync()):
        info = adapter.info
        name = str(info.get("device", "") or "unknown")
        vendor_name = str(info.get("vendor", "") or "")
        vendor_id = int(info.get("vendor_id", 0) or 0)
        api = str(info.get("backend_type", "") or "unknown").lower().replace("opengl", "gl")
        description = str(info.get("description", "") or "")
        vendor = vendor_token(vendor_id, vendor_name, name)
        driver = driver_version(description)
        index = start + offset
        _adapters[index] = adapter
        devices.append(
            DeviceInfo(
                index=index,
                backend="wgpu",
                language="wgsl",
                api=api,
                name=name,
                vendor=vendor,
                vendor_id=vendor_id,
                device_id=int(info.get("device_id", 0) or 0),
                driver=description,
                adapter_type=str(info.get("adapter_type", "") or "unknown"),
                device_class=classify(str(info.get("adapter_type", "")), vendor, name),
                slug=fingerprint(vendor, name, api, driver),
                limits=replace(
                    webgpu_default_limits(webgpu_limits(adapter.limits)), wide_tiles=wide_tile_compiler(name)
                ),
            )
        )
    return devices


@dataclass(frozen=True)
class Dispatch:
    """A bound WGSL step: its pipeline, bind group (uniforms at binding 0) and workgroup counts."""

    pipeline: Any
    bind_group: Any
    workgroups: tuple[int, int, int]
    keepalive: tuple[Any, ...]


class WgpuBackend(Backend[Any, Any, Dispatch]):
    """A wgpu-py device opened on one enumerated adapter: storage buffers, compute pipelines, dispatches."""

    language: ClassVar[str] = "wgsl"

    def __init__(self, info: DeviceInfo) -> None:
        super().__init__(info)
        import wgpu

        self._wgpu = wgpu
        adapter = _adapters[info.index]
        features = [f for f in ("timestamp-query", "subgroup", "shader-f16") if f in adapter.features]
        self._device = adapter.request_device_sync(required_features=features, label=f"kernelforge:{info.slug}")
        self._has_query = self._timestamps = "timestamp-query" in features
        self._query_set: Any = None
        self._suspect = 0  # timestamps in a row that the wall clock contradicts
        self._sync: Any = None
        subgroup_size = self._probe_subgroup_size() if "subgroup" in features else 0
        self._limits = replace(
            webgpu_limits(self._device.limits),
            wide_tiles=info.limits.wide_tiles,
            subgroup_size=subgroup_size,
            f16="shader-f16" in features,
        )

    @property
    def limits(self) -> Limits:
        """Limits of the opened device."""
        return self._limits

    def _probe_subgroup_size(self) -> int:
        """Return the one subgroup size compute kernels run with here, or 0 when it varies or cannot be read."""
        sizes: set[int] = set()
        for wg in (64, 256):
            try:
                kernel = self._compile(_SUBGROUP_PROBE.format(wg=wg), "subgroup-probe")
            except KernelCompileError:
                return 0
            out = self._alloc(Buffer(4 * wg))
            entries = [{"binding": 0, "resource": {"buffer": out, "offset": 0, "size": out.size}}]
            group = self._device.create_bind_group(layout=kernel.get_bind_group_layout(0), entries=entries)
            self._run([Dispatch(kernel, group, (1, 1, 1), (out,))])
            sizes |= {int(v) for v in np.frombuffer(self._device.queue.read_buffer(out), dtype=np.uint32)}
        (size,) = sizes if len(sizes) == 1 else (0,)
        return size if size in SUBGROUP_SIZES else 0

    @property
    def has_timestamps(self) -> bool:
        """Whether timestamp queries are used for timing."""
        return self._timestamps

    def reset_clock(self) -> None:
        """Believe the GPU timer again (where the device has one) and forget earlier contradictions.

        Some lavapipe kernels (depthwise convs of many channels) read a GPU time well under their wall clock
        run after run, which once switched the timer off for every later study of a tuning run, small GEMMs
        included, whose wall clock is mostly submit and read-back (0.27 against 0.05 ms).
        """
        self._timestamps, self._suspect = self._has_query, 0

    def _compile(self, source: str, label: str) -> Any:
        wgpu = self._wgpu
        try:
            module = self._device.create_shader_module(code=source, label=label)
            return self._device.create_compute_pipeline(
                layout="auto", compute={"module": module, "entry_point": "main"}, label=label
            )
        except (wgpu.GPUError, RuntimeError, ValueError) as exc:
            raise KernelCompileError(f"{label}: WGSL rejected on {self.info.slug}:\n{exc}") from exc

    def _alloc(self, resource: Resource) -> Any:
        assert isinstance(resource, Buffer)
        usage = self._wgpu.BufferUsage
        nbytes = max(4, (resource.nbytes + 3) // 4 * 4)
        return self._device.create_buffer(size=nbytes, usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST)

    def _write(self, handle: Any, data: np.ndarray) -> None:
        self._device.queue.write_buffer(handle, 0, data)

    def _read(self, handle: Any, count: int) -> np.ndarray:
        raw = self._device.queue.read_buffer(handle, 0, 4 * count)
        return np.frombuffer(raw, dtype=np.float32, count=count).copy()

    def _bind(self, kernel: Any, step: ProgramStep, inputs: Sequence[Any], outputs: Sequence[Any]) -> Dispatch:
        if any(g < 1 for g in step.workgroups):
            raise KernelforgeError(f"{step.label}: workgroup counts must be >= 1, got {step.workgroups}")
        usage = self._wgpu.BufferUsage
        words = list(step.uniforms) + [0] * (-len(step.uniforms) % 4)
        uniform = self._device.create_buffer_with_data(
            data=struct.pack(f"<{len(words)}I", *words), usage=usage.UNIFORM | usage.COPY_DST
        )
        entries = [{"binding": 0, "resource": {"buffer": uniform, "offset": 0, "size": uniform.size}}]
        buffers = [*inputs, *outputs]
        for i, (buffer, arg) in enumerate(zip(buffers, (*step.inputs, *step.outputs), strict=True)):
            # a prefix: a graph's planned buffer may be larger than the tensor it holds
            size = arg.nbytes or buffer.size
            entries.append({"binding": i + 1, "resource": {"buffer": buffer, "offset": 0, "size": size}})
        bind_group = self._device.create_bind_group(layout=kernel.get_bind_group_layout(0), entries=entries)
        return Dispatch(kernel, bind_group, step.workgroups, (uniform, *buffers))

    def _encode(self, dispatches: Sequence[Dispatch], timestamps: Any = None) -> Any:
        encoder = self._device.create_command_encoder()
        kwargs = {"timestamp_writes": timestamps} if timestamps else {}
        compute = encoder.begin_compute_pass(**kwargs)
        for d in dispatches:
            compute.set_pipeline(d.pipeline)
            compute.set_bind_group(0, d.bind_group)
            compute.dispatch_workgroups(*d.workgroups)
        compute.end()
        return encoder

    def _wait(self) -> None:
        # NOTE: queue.on_submitted_work_done_sync() is broken in wgpu-py 0.32 (a cffi callback signature
        # mismatch); reading back 4 bytes waits for all submitted work just the same.
        if self._sync is None:
            self._sync = self._alloc(Buffer(4))
        self._device.queue.read_buffer(self._sync, 0, 4)

    def _run(self, dispatches: Sequence[Dispatch]) -> None:
        self._device.queue.submit([self._encode(dispatches).finish()])
        self._wait()

    def _time(self, dispatch: Dispatch) -> float:
        if not self._timestamps:
            start = time.perf_counter()
            self._run([dispatch])
            return time.perf_counter() - start
        if self._query_set is None:
            wgpu = self._wgpu
            self._query_set = self._device.create_query_set(type=wgpu.QueryType.timestamp, count=2)
            self._resolve = self._device.create_buffer(
                size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC
            )
            # The first timed submission pays the query path's set-up (14-16 ms on lavapipe and SwiftShader
            # for a 0.4 ms kernel); judged by the check below it would switch timestamps off for good.
            self._timed(dispatch)
        wall, gpu = self._timed(dispatch)
        # Some drivers' timestamps stop early (llvmpipe's GL timer ends when the work is queued, before its
        # threads run): a GPU time far below the wall clock of a long kernel is not believed. Five in a row
        # switch timestamps off for good; a few alone are stalls of the host (lavapipe's wall clock of a 0.1 ms
        # kernel reads 2-4 ms about once in 150 runs, a few times in a row on a busy machine).
        if wall - gpu > 2e-3 and gpu < 0.5 * wall:
            self._suspect += 1
            self._timestamps = self._suspect < 5
            return wall
        self._suspect = 0
        return gpu

    def _timed(self, dispatch: Dispatch) -> tuple[float, float]:
        """Run one dispatch between pass timestamps; return (wall clock, GPU time) in seconds."""
        writes = {"query_set": self._query_set, "beginning_of_pass_write_index": 0, "end_of_pass_write_index": 1}
        start = time.perf_counter()
        encoder = self._encode([dispatch], writes)
        encoder.resolve_query_set(self._query_set, 0, 2, self._resolve, 0)
        self._device.queue.submit([encoder.finish()])
        begin, end = struct.unpack("<2Q", self._device.queue.read_buffer(self._resolve))
        return time.perf_counter() - start, max(end - begin, 0) * 1e-9  # WebGPU timestamps are nanoseconds

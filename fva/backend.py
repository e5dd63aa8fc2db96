"""The one module that imports Taichi, owns ``ti.init`` and chooses the backend.

Every other module does ``from fva.backend import ti`` (never ``import taichi``), and calls
:func:`ensure_init` at the start of a stage, never at import time. Moving to a Taichi fork
later touches this file only.

Backends: ``cpu``, ``cuda``, ``vulkan`` or ``auto`` (CUDA, then Vulkan, then CPU, each
fallback logged). ``ti.init`` with the generic GPU arch segfaults on machines without a GPU, so each
arch is probed explicitly in a subprocess-free way via Taichi's own availability checks.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import taichi as ti  # noqa: F401  (re-exported: the project's only taichi import)

log = logging.getLogger("pelletsim.backend")

_ARCHES = {"cpu": "cpu", "cuda": "cuda", "vulkan": "vulkan"}
VALID_BACKENDS = ("cpu", "cuda", "vulkan", "auto")


@dataclass(frozen=True)
class BackendInfo:
    backend: str          # the arch that runs: "cpu", "cuda" or "vulkan"
    requested: str        # what the user asked for
    default_fp: str       # "f64" or "f32"
    device_name: str      # CPU model or GPU name, for benchmark JSON and results.json
    taichi_version: str


_current: BackendInfo | None = None


def _arch_available(name: str) -> bool:
    """True when Taichi was built with ``name`` and a device answers (no init needed)."""
    if name == "cpu":
        return True
    try:
        from taichi._lib import core as _ti_core  # Taichi 1.7 internal, guarded

        if name == "cuda":
            return bool(_ti_core.with_cuda()) and _cuda_device_present()
        if name == "vulkan":
            return bool(_ti_core.with_vulkan()) and _vulkan_device_present()
    except Exception:  # pragma: no cover - depends on the machine
        return False
    return False


def _cuda_device_present() -> bool:
    import ctypes

    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cu = ctypes.CDLL(lib)
        except OSError:
            continue
        if cu.cuInit(0) != 0:
            return False
        n = ctypes.c_int(0)
        return cu.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
    return False


def _vulkan_device_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("vulkan") is not None and os.path.exists("/dev/dri")


def _device_name(arch: str) -> str:
    if arch == "cuda":
        try:
            import subprocess

            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except Exception:
            pass
        return "CUDA device"
    if arch == "vulkan":
        return "Vulkan device"
    name = "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def resolve_backend(requested: str) -> str:
    """Map a requested backend to one that exists here; ``auto`` falls back with a log line.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when an explicitly
    requested GPU backend is not available (explicit requests never fall back silently).
    """
    req = str(requested).lower()
    if req not in VALID_BACKENDS:
        raise ValueError(f"backend must be one of {VALID_BACKENDS}, got {requested!r}")
    if req == "auto":
        for cand in ("cuda", "vulkan"):
            if _arch_available(cand):
                return cand
        log.info("backend 'auto': no CUDA or Vulkan device found, falling back to CPU")
        return "cpu"
    if req != "cpu" and not _arch_available(req):
        raise RuntimeError(f"backend {req!r} requested but no {req} device is available here; "
                           f"use --backend cpu or --backend auto")
    return req


def ensure_init(backend: str = "cpu", default_fp: str = "f64", *, force: bool = False,
                cpu_max_num_threads: int | None = None) -> BackendInfo:
    """Initialise Taichi once per process (re-initialise only if the settings change or ``force``).

    Re-initialising destroys every Taichi field, so stages allocate their fields after calling
    this and never keep them across stages.
    """
    global _current
    arch_name = resolve_backend(backend)
    if default_fp not in ("f64", "f32"):
        raise ValueError(f"default_fp must be 'f64' or 'f32', got {default_fp!r}")
    if (not force and _current is not None and _current.backend == arch_name
            and _current.default_fp == default_fp):
        return _current
    kwargs = dict(arch=getattr(ti, _ARCHES[arch_name]),
                  default_fp=ti.f64 if default_fp == "f64" else ti.f32,
                  default_ip=ti.i32, log_level=ti.WARN, offline_cache=True)
    if arch_name == "cpu" and cpu_max_num_threads:
        kwargs["cpu_max_num_threads"] = int(cpu_max_num_threads)
    if arch_name == "cuda":
        kwargs["device_memory_fraction"] = 0.8
    ti.init(**kwargs)
    _current = BackendInfo(backend=arch_name, requested=str(backend), default_fp=default_fp,
                           device_name=_device_name(arch_name),
                           taichi_version=".".join(map(str, ti.__version__)))
    return _current


def current() -> BackendInfo:
    """The active backend, initialising the CPU/f64 default if nothing was chosen yet."""
    return _current if _current is not None else ensure_init()


def sync() -> None:
    """Wait for all queued kernels (benchmarks time after this)."""
    ti.sync()

"""The one module that imports Taichi, owns ``ti.init`` and chooses the backend.

Every other module does ``from fva.backend import ti`` (never ``import taichi``), and calls
:func:`ensure_init` at the start of a stage, never at import time. Moving to a Taichi fork
later touches this file and the Taichi 1.7 internals in :mod:`fva.launch` and :mod:`dem.graph`.

Backends: ``cpu``, ``cuda``, ``vulkan`` or ``auto`` (CUDA, then Vulkan, then CPU, each
fallback logged; ``auto`` skips a software Vulkan device such as Mesa's lavapipe, which ``vulkan`` accepts).
``ti.init`` with the generic GPU arch segfaults on machines without a GPU, so each arch is probed explicitly:
CUDA through the driver library, Vulkan by a child interpreter that initialises Taichi on it and runs a
float64 kernel (:func:`vulkan_probe`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

import taichi as ti  # noqa: F401  (re-exported: the project's only taichi import)

from fva.vulkan_probe import vulkan_probe  # noqa: F401  (re-exported)

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
    return vulkan_probe() is not None


def spirv_backend() -> bool:
    """True when the running Taichi arch compiles kernels to SPIR-V (Vulkan, Metal, OpenGL): no 64-bit
    ``pow``/``exp``/``log``/trigonometry there (see :mod:`fva.math_kernels`). Called while a kernel compiles."""
    from taichi.lang import impl

    return impl.current_cfg().arch in (ti.vulkan, ti.metal, ti.opengl, ti.gles, ti.dx11)


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
        p = vulkan_probe() or {}
        return f"{p.get('name', 'Vulkan device')} (Vulkan, {p.get('type', 'unknown')})"
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
        if _arch_available("cuda"):
            return "cuda"
        if _arch_available("vulkan"):
            p = vulkan_probe()
            if p["type"] != "cpu" and p["f64"]:
                return "vulkan"
            log.info("backend 'auto': the Vulkan device %s is %s; falling back to CPU", p["name"],
                     "a software renderer on the CPU" if p["type"] == "cpu" else "without float64 support")
        log.info("backend 'auto': no CUDA or Vulkan device found, falling back to CPU")
        return "cpu"
    if req != "cpu" and not _arch_available(req):
        raise RuntimeError(f"backend {req!r} requested but no {req} device is available here; "
                           f"use --backend cpu or --backend auto")
    if req == "vulkan" and not vulkan_probe()["f64"]:
        raise RuntimeError(f"backend 'vulkan': the device {vulkan_probe()['name']} has no float64 support "
                           f"(shaderFloat64), which the DEM engine needs; use --backend cpu")
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
    _install_traffic_hooks()
    _memoize_source_positions()
    _current = BackendInfo(backend=arch_name, requested=str(backend), default_fp=default_fp,
                           device_name=_device_name(arch_name),
                           taichi_version=".".join(map(str, ti.__version__)))
    return _current


class _HostTraffic:
    """Process-wide counts of what the host asks of the device through Taichi (see :func:`host_traffic`)."""

    __slots__ = ("launches", "syncs")

    def __init__(self):
        self.launches = 0
        self.syncs = 0


TRAFFIC = _HostTraffic()
_hooks_installed = False


def host_traffic() -> tuple[int, int]:
    """(kernel launches, host syncs) issued through Taichi in this process so far; take differences.

    launches: every ``@ti.kernel`` call — including the copy and fill kernels Taichi runs for ``to_numpy``,
    ``from_numpy`` and ``fill`` — and every :class:`fva.launch.PreparedKernel` launch.
    syncs: every operation after which the host has waited for the device and exchanged data with it — a
    kernel that returns a value or takes a numpy array (so each ``to_numpy`` and ``from_numpy``), and each
    element read or write of an ndarray (``a[i]``, ``a[i] = v``: Taichi synchronises and copies through a
    staging buffer). On a GPU each launch costs ≈ 5 µs plus Python's argument handling, each sync a round
    trip that drains the queue. Counted by wrapping Taichi 1.7's ``Kernel.launch_kernel`` and ndarray host
    accessors when Taichi is initialised (:func:`ensure_init`); (0, 0) if those internals are missing.
    """
    return TRAFFIC.launches, TRAFFIC.syncs


_POS_INFO: dict = {}


def _memoize_source_positions() -> None:
    """Taichi 1.7.4's AST transformer formats a source excerpt (``textwrap``) for every node it visits, to
    label the IR for error messages, also when the compiled kernel then comes from the offline cache: about
    40 % of the Python-side compile time of the solver's kernels (42 000 calls for one conduction command).
    A ``ti.func`` inlined in many kernels repeats the same positions: the same strings, each formatted once."""
    from taichi.lang.ast import ast_transformer_utils as U

    ctx_cls = U.ASTTransformerContext
    if getattr(ctx_cls.get_pos_info, "_pelletsim", False):
        return
    orig = ctx_cls.get_pos_info

    def get_pos_info(self, node):
        body = getattr(node, "body", None)
        key = (self.file, self.lineno_offset, self.indent, self.func.func.__name__, type(node).__name__,
               node.lineno, getattr(node, "end_lineno", None), node.col_offset,
               getattr(node, "end_col_offset", None), body[0].lineno if isinstance(body, list) and body else None)
        msg = _POS_INFO.get(key)
        if msg is None:
            msg = _POS_INFO[key] = orig(self, node)
        return msg

    get_pos_info._pelletsim = True
    ctx_cls.get_pos_info = get_pos_info


def _install_traffic_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    try:
        from taichi.lang._ndarray import NdarrayHostAccessor
        from taichi.lang.kernel_impl import Kernel
    except ImportError:  # pragma: no cover - a Taichi without these internals: no counts
        log.debug("host traffic counters unavailable in this Taichi")
        return
    launch = Kernel.launch_kernel

    def counted_launch(self, t_kernel, *args):
        TRAFFIC.launches += 1
        if self.return_type is not None or any(isinstance(a, np.ndarray) for a in args):
            TRAFFIC.syncs += 1
        return launch(self, t_kernel, *args)

    init = NdarrayHostAccessor.__init__

    def counted_init(self, ndarray):
        init(self, ndarray)
        get, put = self.getter, self.setter

        def getter(*key):
            TRAFFIC.syncs += 1
            return get(*key)

        def setter(value, *key):
            TRAFFIC.syncs += 1
            return put(value, *key)

        self.getter, self.setter = getter, setter

    Kernel.launch_kernel = counted_launch
    NdarrayHostAccessor.__init__ = counted_init


def current() -> BackendInfo:
    """The active backend, initialising the CPU/f64 default if nothing was chosen yet."""
    return _current if _current is not None else ensure_init()


def sync() -> None:
    """Wait for all queued kernels (benchmarks time after this)."""
    ti.sync()

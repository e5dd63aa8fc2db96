"""Is there a Vulkan device Taichi can run float64 kernels on? :func:`vulkan_probe` asks a child interpreter,
which runs this file as a script (no Taichi import in the parent's part of this module).

``ti.init(arch=ti.vulkan)`` on a machine whose loader or driver is broken can abort the process, and Taichi falls
back to the CPU silently when it finds no device, so the parent asks a fresh interpreter. The child prints one
JSON line:
``{"ok": Taichi runs on Vulkan, "name": device, "type": discrete|integrated|virtual|cpu|other|unknown,
"f64": a float64 kernel gave the right answer}``. The device named is the one Taichi picks (discrete >
integrated > virtual > CPU > other, or ``TI_VISIBLE_DEVICE``), read through the Vulkan loader with ctypes.
"""
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("pelletsim.backend")

_TYPES = {0: "other", 1: "integrated", 2: "discrete", 3: "virtual", 4: "cpu"}
_RANK = {2: 0, 1: 1, 3: 2, 4: 3}


def device() -> tuple[str, str]:
    """(name, type) of the physical device Taichi would pick, from vkGetPhysicalDeviceProperties."""
    vk = ctypes.CDLL(ctypes.util.find_library("vulkan") or "libvulkan.so.1")
    info = (ctypes.c_uint64 * 8)(1)          # VkInstanceCreateInfo: sType = 1, no layers or extensions
    inst = ctypes.c_void_p()
    if vk.vkCreateInstance(info, None, ctypes.byref(inst)) != 0:
        return "Vulkan device", "unknown"
    n = ctypes.c_uint32(0)
    vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), None)
    devs = (ctypes.c_void_p * n.value)()
    vk.vkEnumeratePhysicalDevices(inst, ctypes.byref(n), devs)
    found = []
    for d in devs:
        props = ctypes.create_string_buffer(8192)       # VkPhysicalDeviceProperties (< 1 kB)
        vk.vkGetPhysicalDeviceProperties(ctypes.c_void_p(d), props)
        kind = int.from_bytes(props.raw[16:20], "little")     # after apiVersion, driverVersion, vendorID, deviceID
        found.append((props.raw[20:276].split(b"\0")[0].decode(errors="replace"), kind))
    vk.vkDestroyInstance(inst, None)
    if not found:
        return "Vulkan device", "unknown"
    vis = os.environ.get("TI_VISIBLE_DEVICE", "")
    name, kind = (found[int(vis)] if vis.isdigit() and int(vis) < len(found)
                  else min(found, key=lambda f: _RANK.get(f[1], 4)))
    return name, _TYPES.get(kind, "other")


_PROBE_ENV = "PELLETSIM_VULKAN_PROBE"   # the probe's answer, inherited by child processes (no second probe)


@functools.lru_cache(maxsize=None)
def vulkan_probe() -> dict | None:
    """The Vulkan device Taichi would use — ``{"name", "type", "f64"}`` (``type`` is "discrete", "integrated",
    "virtual", "cpu" (a software rasteriser such as Mesa's lavapipe) or "other"; ``f64`` whether a float64
    kernel ran correctly) — or None when Taichi cannot run a Vulkan kernel here.

    Probed once per process tree (≈ 1–3 s; the answer travels to child processes in the environment variable
    PELLETSIM_VULKAN_PROBE): a Vulkan loader is looked for first, then a child interpreter runs this file,
    initialises Taichi on Vulkan and runs a float64 kernel."""
    cached = os.environ.get(_PROBE_ENV)
    if cached:
        try:
            got = json.loads(cached)
            return got or None
        except ValueError:
            pass
    res = None
    try:
        if ctypes.util.find_library("vulkan") or _has_lib("libvulkan.so.1"):
            env = dict(os.environ, TI_LOG_LEVEL="error")
            out = subprocess.run([sys.executable, str(Path(__file__))], capture_output=True, text=True,
                                 timeout=120, env=env)
            last = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
            got = json.loads(last[0]) if last else {}
            if got.get("ok"):
                res = dict(name=str(got.get("name")), type=str(got.get("type")), f64=bool(got.get("f64")))
            else:
                log.debug("Vulkan probe: no device (exit %s): %s", out.returncode, out.stderr[-300:])
    except Exception as exc:  # pragma: no cover - depends on the machine
        log.debug("Vulkan probe failed: %s", exc)
        res = None
    os.environ[_PROBE_ENV] = json.dumps(res or {})
    return res


def _has_lib(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def main() -> None:
    try:
        name, kind = device()
    except Exception:
        name, kind = "Vulkan device", "unknown"
    import taichi as ti
    from taichi.lang import impl

    ti.init(arch=ti.vulkan, offline_cache=False, log_level=ti.ERROR)
    ok = impl.current_cfg().arch == ti.vulkan
    f64 = False
    if ok:
        try:
            a = ti.ndarray(ti.f64, 4)

            @ti.kernel
            def k(a: ti.types.ndarray()):
                for i in range(4):
                    a[i] = ti.sqrt(ti.cast(i, ti.f64))      # in f32 it would be ≈ 1e-8 off

            k(a)
            f64 = bool(abs(a.to_numpy()[2] - 2.0 ** 0.5) < 1e-15)
        except Exception:
            f64 = False
    print(json.dumps(dict(ok=ok, name=name, type=kind, f64=f64)))


if __name__ == "__main__":
    main()

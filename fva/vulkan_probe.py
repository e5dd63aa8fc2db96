"""Vulkan probe, run by :func:`fva.backend.vulkan_probe` as a script in a child interpreter (never imported).

``ti.init(arch=ti.vulkan)`` on a machine whose loader or driver is broken can abort the process, and Taichi falls
back to the CPU silently when it finds no device, so the parent asks a fresh interpreter. Prints one JSON line:
``{"ok": Taichi runs on Vulkan, "name": device, "type": discrete|integrated|virtual|cpu|other|unknown,
"f64": a float64 kernel gave the right answer}``. The device named is the one Taichi picks (discrete >
integrated > virtual > CPU > other, or ``TI_VISIBLE_DEVICE``), read through the Vulkan loader with ctypes.
"""
import ctypes
import ctypes.util
import json
import os

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

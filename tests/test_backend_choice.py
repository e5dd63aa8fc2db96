"""fva.backend's choice of backend: the Vulkan probe's answer decides (a software Vulkan device such as Mesa's
lavapipe is taken only when asked for by name; a device without float64 is refused with one clear line)."""
import pytest

import fva.backend as B


def _vulkan(monkeypatch, **dev):
    monkeypatch.setattr(B, "_cuda_device_present", lambda: False)
    monkeypatch.setattr(B, "vulkan_probe", lambda: dict(dict(name="Some GPU", type="discrete", f64=True), **dev))


def test_auto_takes_a_real_vulkan_gpu(monkeypatch):
    _vulkan(monkeypatch)
    assert B.resolve_backend("auto") == "vulkan" and B.resolve_backend("vulkan") == "vulkan"


def test_auto_skips_a_software_vulkan_device_but_vulkan_takes_it(monkeypatch):
    _vulkan(monkeypatch, name="llvmpipe", type="cpu")
    assert B.resolve_backend("auto") == "cpu"
    assert B.resolve_backend("vulkan") == "vulkan"


def test_vulkan_without_float64_is_refused(monkeypatch):
    _vulkan(monkeypatch, f64=False)
    assert B.resolve_backend("auto") == "cpu"
    with pytest.raises(RuntimeError, match="float64"):
        B.resolve_backend("vulkan")


def test_no_vulkan_device(monkeypatch):
    monkeypatch.setattr(B, "_cuda_device_present", lambda: False)
    monkeypatch.setattr(B, "vulkan_probe", lambda: None)
    assert B.resolve_backend("auto") == "cpu"
    with pytest.raises(RuntimeError, match="no vulkan device"):
        B.resolve_backend("vulkan")


def test_probe_answer_is_shared_with_child_processes(monkeypatch):
    """The probe runs once per process tree: its answer travels in the environment."""
    B.vulkan_probe.cache_clear()
    monkeypatch.setenv("PELLETSIM_VULKAN_PROBE", '{"name": "X", "type": "integrated", "f64": true}')
    try:
        assert B.vulkan_probe() == {"name": "X", "type": "integrated", "f64": True}
        B.vulkan_probe.cache_clear()
        monkeypatch.setenv("PELLETSIM_VULKAN_PROBE", "{}")
        assert B.vulkan_probe() is None
    finally:
        B.vulkan_probe.cache_clear()

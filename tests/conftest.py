import os

import numpy as np
import pytest

os.environ.setdefault("TI_LOG_LEVEL", "warn")


@pytest.fixture(scope="session")
def taichi_runtime():
    """CPU, float64 Taichi runtime (one per test session: re-init destroys fields and kernels)."""
    from fva.backend import ensure_init

    return ensure_init("cpu", "f64")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _gpu_available() -> bool:
    try:
        from fva.backend import _arch_available

        return _arch_available("cuda") or _arch_available("vulkan")
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA/Vulkan device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

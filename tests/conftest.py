import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TI_LOG_LEVEL", "warn")


@pytest.fixture(scope="session")
def taichi_runtime():
    """CPU, float64 Taichi runtime (one per test session: re-init destroys fields and kernels)."""
    from fva.backend import ensure_init

    return ensure_init("cpu", "f64")


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark("bench_dem") → the module benchmarks/bench_dem.py (the scripts are not a package)."""
    def _load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return _load


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

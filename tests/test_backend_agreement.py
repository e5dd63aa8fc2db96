"""The CPU/GPU agreement checker (benchmarks/backend_agreement.py): its comparison flags what it should.
The run itself needs two backends (a GPU); its CPU-vs-CPU smoke run is bitwise identical (see the script)."""

import json

import numpy as np
import pytest


def _run(shift=0.0, sigma=0.5, stop=None):
    p = np.concatenate([np.linspace(0, 0.5e9, 40), np.linspace(0.5e9, 0, 10)])
    rho = np.concatenate([0.6 + 0.35 * np.linspace(0, 1, 40) ** 0.5, np.linspace(0.95, 0.85, 10)]) + shift
    st = [0] * 10 + [1] * 30 + [2] * 10
    dem = dict(error=stop) if stop else dict(p_Pa=p.tolist(), rho=rho.tolist(), stage=st)
    return dict(dem=dem, fva=dict(sigma_ratio=sigma))


def test_compare_passes_identical_and_flags_differences(load_benchmark):
    m = load_benchmark("backend_agreement")
    ok = m.compare(_run(), _run(), 0.5e9, 0.01, 1e-4)
    assert all(c["ok"] for c in ok.values()) and ok["dem_loading_rho"]["max_abs_diff"] == 0
    bad = m.compare(_run(), _run(shift=0.02, sigma=0.5001), 0.5e9, 0.01, 1e-4)
    assert not bad["dem_loading_rho"]["ok"] and bad["dem_loading_rho"]["max_abs_diff"] == pytest.approx(0.02)
    assert not bad["dem_released_rho"]["ok"]
    assert not bad["fva_sigma"]["ok"] and bad["fva_sigma"]["rel_diff"] == pytest.approx(2e-4, rel=1e-3)
    stopped = m.compare(_run(), _run(stop="NaN in particle state"), 0.5e9, 0.01, 1e-4)
    assert stopped["dem"]["ok"] is False and "NaN" in stopped["dem"]["error"]


def test_fixed_image_is_reproducible_and_dense(load_benchmark):
    m = load_benchmark("backend_agreement")
    a, b = m._fixed_image(20), m._fixed_image(20)
    assert np.array_equal(a, b) and 0.7 <= a.mean() < 0.85


@pytest.mark.gpu
def test_cpu_and_gpu_agree(tmp_path, load_benchmark):
    """On a machine with a GPU: the quick agreement run passes its stated tolerances (skipped without one)."""
    from fva.backend import _arch_available

    gpu = "cuda" if _arch_available("cuda") else "vulkan"
    m = load_benchmark("backend_agreement")
    out = tmp_path / "agree.json"
    assert m.main(["--backends", f"cpu,{gpu}", "--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["all_ok"] and doc["runs"][1]["backend"] == gpu

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


def _has(arch):
    from fva.backend import _arch_available

    return _arch_available(arch)


def _agreement(tmp_path, *args):
    """Run benchmarks/backend_agreement.py as a script (its worker processes import it by name, which a module
    loaded from a file path would not allow); returns (exit status, JSON document, output)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "agree.json"
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "backend_agreement.py"), *args, "--out", str(out)],
                       cwd=root, capture_output=True, text=True, timeout=900)
    return p.returncode, (json.loads(out.read_text()) if out.exists() else None), p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.gpu
def test_cpu_and_cuda_agree(tmp_path):
    """On a machine with a CUDA GPU: the quick agreement run passes its stated tolerances (skipped without one)."""
    if not _has("cuda"):
        pytest.skip("no CUDA device")
    rc, doc, log = _agreement(tmp_path, "--backends", "cpu,cuda", "--quick")
    assert rc == 0 and doc["all_ok"] and doc["runs"][1]["backend"] == "cuda", log


@pytest.mark.gpu
@pytest.mark.parametrize("fp", ["f64", "f32"])
def test_cpu_and_vulkan_agree(tmp_path, fp):
    """Whenever a Vulkan device exists (Mesa's lavapipe on any CPU): the tiny trajectory run (30 particles, 150
    steps of a punch driven into the loose packing: contacts, neighbour rebuilds, volume correction) and a 16³ FV
    solve agree with the CPU within the script's tolerances, with run.default_fp f64 and f32. Each backend runs
    in its own process (one Taichi runtime per process). ≈ 25 s per fp on lavapipe."""
    if not _has("vulkan"):
        pytest.skip("no Vulkan device")
    rc, doc, log = _agreement(tmp_path, "--backends", "cpu,vulkan", "--tiny", "--fp", fp)
    assert rc == 0, log
    assert doc["runs"][1]["backend"] == "vulkan" and doc["runs"][1]["default_fp"] == fp
    t = doc["checks"]["dem_trajectory"]
    assert t["ok"] and t["steps"] == 150 and doc["checks"]["fva_sigma"]["ok"]


def test_trajectory_check_flags_a_diverged_state(load_benchmark):
    m = load_benchmark("backend_agreement")
    a = dict(x=[[1e-6, 2e-6, 3e-6], [9.9e-6, 5e-6, 5e-6]], r=[1e-6, 2e-6], p_top_Pa=1e7, steps=10, box_xy=[1e-5, 1e-5])
    wrapped = dict(a, x=[[1e-6, 2e-6, 3e-6], [-0.1e-6, 5e-6, 5e-6]])        # the same particle across the face
    assert m._trajectory_check(a, wrapped, 1e-4, 1e-3)["ok"]
    moved = dict(a, x=[[1.001e-6, 2e-6, 3e-6], [9.9e-6, 5e-6, 5e-6]])
    c = m._trajectory_check(a, moved, 1e-4, 1e-3)
    assert not c["ok"] and c["max_dx_over_rmin"] == pytest.approx(1e-3)
    assert not m._trajectory_check(a, dict(a, p_top_Pa=1.01e7), 1e-4, 1e-3)["ok"]

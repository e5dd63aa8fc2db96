"""pelletsim sweep: point expansion and validation, failures kept local, a killed worker retried, resume,
and sweep.csv equal to the same points run one by one. The runs use tests/data/tiny.toml lightened
(no microstructure, frames, plots or .vti), two local worker processes with one Taichi thread each."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dem.cli import main
from dem.scenario import ScenarioError
from dem.sweep import load_sweep, point_id
from dem.sweep_run import plan_workers, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
LIGHT = """[sweep.set]
"microstructure.enabled" = false
"run.write_frames" = false
"run.plots" = false
"run.write_vti" = false
"""


def _sweep_file(tmp: Path, body: str, name: str = "s.toml") -> Path:
    p = tmp / name
    p.write_text(f'[sweep]\nbase = "{TINY}"\n{body}\n{LIGHT}')
    return p


def _csv(outdir: Path) -> list[dict]:
    with open(outdir / "sweep.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------- no runs
def test_points_are_grid_times_zip_times_seeds_with_stable_ids(tmp_path):
    f = _sweep_file(tmp_path, 'seeds = [1, 2]\n[sweep.grid]\nmaterial.yield_stress_MPa = [300.0, 500.0]\n'
                              '[sweep.zip]\n"die.base_x_um" = [60.0, 70.0]\n"die.base_y_um" = [60.0, 70.0]\n')
    spec = load_sweep(f)
    assert len(spec.points) == 2 * 2 * 2
    assert spec.varied == ["material.yield_stress_MPa", "die.base_x_um", "die.base_y_um", "run.seed"]
    assert len({p.id for p in spec.points}) == 8
    assert [p.id for p in load_sweep(f).points] == [p.id for p in spec.points]
    assert spec.points[0].params == {"material.yield_stress_MPa": 300.0, "die.base_x_um": 60.0,
                                     "die.base_y_um": 60.0, "run.seed": 1}
    assert point_id({"a.b": 1}) != point_id({"a.b": 2})


def test_zip_lists_of_unequal_length_are_refused(tmp_path):
    f = _sweep_file(tmp_path, '[sweep.zip]\n"die.base_x_um" = [60.0, 70.0]\n"die.base_y_um" = [60.0]\n')
    with pytest.raises(ScenarioError, match="sweep.zip: the lists must have equal lengths"):
        load_sweep(f)


def test_validate_names_each_bad_point_and_exits_2(tmp_path, capsys):
    f = _sweep_file(tmp_path, '[sweep.grid]\nmaterial.yield_stress_MPa = [500.0, -1.0]\nparticles.count = [60, 0]\n')
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "point material.yield_stress_MPa=-1.0, particles.count=60: material.yield_stress_MPa" in err
    assert "point material.yield_stress_MPa=500.0, particles.count=0: particles.count" in err
    assert "point material.yield_stress_MPa=500.0, particles.count=60:" not in err
    assert "3 of 4 point(s) invalid" in err
    good = _sweep_file(tmp_path, '[sweep.grid]\nmaterial.yield_stress_MPa = [400.0, 500.0]\n', "g.toml")
    assert main(["validate", str(good)]) == 0


def test_shipped_sweeps_validate(capsys):
    for f in sorted((ROOT / "scenarios" / "sweeps").glob("*.toml")):
        if "[sweep]" in f.read_text():
            assert main(["validate", str(f)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["validate", str(ROOT / "scenarios" / "sweeps" / "quickstart_yield.toml")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6          # 3 yield stresses × 2 seeds


def test_sweep_refuses_bad_input_before_running(tmp_path, capsys):
    f = _sweep_file(tmp_path, '[sweep.grid]\nmaterial.yield_stress_MPa = [500.0, -1.0]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(f), "-o", str(out)]) == 2
    assert not (out / "points").exists()
    good = _sweep_file(tmp_path, '[sweep.grid]\nmaterial.yield_stress_MPa = [400.0, 500.0]\n', "g.toml")
    assert main(["sweep", str(good), "-o", str(out), "--resume"]) == 2      # nothing there to resume
    assert "holds no sweep" in capsys.readouterr().err
    with pytest.raises(ScenarioError, match="--workers 3 × --threads-per-worker 1 = 3 > 2 cores"):
        plan_workers(3, 1, cores=2)
    assert plan_workers(None, 2, cores=4) == 2


# --------------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Three points on two workers; the third asks for a target pressure the powder cannot carry (valid in
    the schema and the preflight, fails at run time)."""
    tmp = tmp_path_factory.mktemp("sweep")
    f = _sweep_file(tmp, 'name = "t"\n[sweep.zip]\nmaterial.yield_stress_MPa = [400.0, 500.0, 500.0]\n'
                         '"protocol.1.target_pressure_GPa" = [0.3, 0.3, 100.0]\n')
    spec = load_sweep(f)
    out = tmp / "out"
    rows = run_sweep(spec, out, workers=2, threads_per_worker=1, progress=False)
    return spec, out, rows


@pytest.mark.slow
def test_a_failing_point_leaves_the_others_complete(swept):
    spec, out, rows = swept
    assert [r["status"] for r in rows] == ["complete", "complete", "failed"]
    table = _csv(out)
    assert [r["status"] for r in table] == ["complete", "complete", "failed"]
    assert table[2]["exit_status"] == "1" and "cannot be reached" in table[2]["error"]
    assert all(float(r["Py_Pa"]) > 0 and float(r["sigma_eff_S_per_m_load_0.30_GPa"]) > 0 for r in table[:2])
    for f in ("sweep_density.png", "sweep_heckel_Py.png", "sweep_normalised_sigma.png", "sensitivity.csv"):
        assert (out / f).stat().st_size > 0
    assert main(["plot", str(out)]) == 0       # redraws a sweep folder


@pytest.mark.slow
def test_sweep_csv_equals_the_points_run_one_by_one(swept, tmp_path, taichi_runtime):
    from dem.pipeline import run_scenario
    from dem.scenario import load_scenario
    from dem.sweep_report import read_point_record

    spec, out, _ = swept
    table = _csv(out)
    p = spec.points[1]
    run_scenario(load_scenario(TINY, p.overrides(spec.fixed)), tmp_path / "alone", progress=False)
    alone = read_point_record(tmp_path / "alone")
    compared = 0
    for k, v in alone.items():
        if k in ("status", "wall_time_s") or v is None:
            continue
        if k.startswith(("sigma_", "tau_", "normalised_")):
            # the conduction solve's float64 sums are split among the Taichi threads as they come (the point ran on
            # 1 thread in its worker, this one on the session's): equal to the last bits, not always to the last bit
            assert float(table[1][k]) == pytest.approx(v, rel=1e-12, abs=0.0), k
        else:
            assert float(table[1][k]) == v, k   # the DEM is bitwise for any thread count
        compared += 1
    assert compared >= 10


@pytest.mark.slow
def test_resume_runs_only_the_missing_points(swept, tmp_path):
    spec, out0, _ = swept
    out = tmp_path / "out"
    shutil.copytree(out0, out)
    keep = out / "points" / spec.points[0].id / "results.json"
    before = (keep.read_bytes(), keep.stat().st_mtime_ns)
    shutil.rmtree(out / "points" / spec.points[1].id)
    rows = run_sweep(spec, out, workers=1, resume=True, progress=False)
    assert [r["status"] for r in rows] == ["complete", "complete", "failed"]
    assert (keep.read_bytes(), keep.stat().st_mtime_ns) == before            # not run again
    assert json.loads((out / "points" / spec.points[1].id / "results.json").read_text())["status"] == "complete"
    assert [r["status"] for r in _csv(out)] == ["complete", "complete", "failed"]


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_every_point_completes(tmp_path):
    f = _sweep_file(tmp_path, '[sweep.grid]\nmaterial.yield_stress_MPa = [400.0, 500.0]\n')
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dem.cli", "sweep", str(f), "-o", str(out), "--workers", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        marker, t0 = None, time.time()
        while marker is None and time.time() - t0 < 120 and proc.poll() is None:
            found = sorted((out / "points").glob("*/sweep_point.json")) if (out / "points").is_dir() else []
            marker = found[0] if found else None
            time.sleep(0.2)
        assert marker is not None, "no point started"
        pid = json.loads(marker.read_text())["pid"]
        time.sleep(1.0)                                    # mid-point: loading Taichi or compacting
        os.kill(pid, signal.SIGKILL)
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    assert [r["status"] for r in _csv(out)] == ["complete", "complete"]
    assert json.loads(marker.read_text())["pid"] != pid          # the point ran again on a new worker


def test_bench_sweep_builds_a_valid_2x2_sweep(tmp_path, load_benchmark):
    """The benchmark's sweep file (the timed runs themselves are the integration tests above)."""
    mod = load_benchmark("bench_sweep")
    for base, count in ((ROOT / "scenarios" / "quickstart.toml", 120), (TINY, None)):
        f = tmp_path / "b.toml"
        f.write_text(mod._sweep_toml(base, count))
        spec = load_sweep(f)
        assert len(spec.points) == 4 and spec.varied == ["material.yield_stress_MPa", "run.seed"]
        assert main(["validate", str(f)]) == 0

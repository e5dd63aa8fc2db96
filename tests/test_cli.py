"""The ``pelletsim`` command line end to end: the tiny scenario once (module fixture), then the image
subcommands, plot, validate and the error/interrupt paths."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dem.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
HISTORY_REQUIRED = ["step", "time_s", "punch_z_m", "thickness_m", "p_top_Pa", "p_bottom_Pa",
                    "relative_density", "solid_fraction", "coordination", "ke_ratio"]


def _need(*mods):
    for mod in mods:
        pytest.importorskip(mod)


def _fake_engine(monkeypatch, run_compaction, error_cls):
    """Replace dem.simulation for the pipeline with a stand-in whose run_compaction is ``run_compaction``."""
    import sys
    import types

    fake = types.ModuleType("dem.simulation")
    fake.run_compaction = run_compaction
    fake.SimulationError = error_cls
    monkeypatch.setitem(sys.modules, "dem.simulation", fake)


def _need_pipeline():
    _need("dem.simulation", "dem.paraview", "fva.voxelise", "fva.conduction", "fva.io", "fva.activation",
          "fva.microstructure")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    _need_pipeline()
    out = tmp_path_factory.mktemp("tiny") / "run"
    rc = main(["run", str(TINY), "-o", str(out), "-q"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


# ------------------------------------------------------------------------------------------- run
def test_run_writes_every_output(tiny_run):
    out, res = tiny_run
    for name in ("results.json", "history.csv", "particles.pvd", "scenario.resolved.toml",
                 "relative_density.png", "heckel.png", "conductivity.png", "size_distribution.png",
                 "porosity_profile_z.png"):
        assert (out / name).is_file(), name
    assert list((out / "packings").glob("*.npz"))
    assert list((out / "fields").glob("*.vti"))
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


def test_history_csv_columns(tiny_run):
    out, _ = tiny_run
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    head = rows[0]
    for c in HISTORY_REQUIRED:
        assert c in head, c
    assert len(rows) > 5
    data = np.array([[float(v) for v in r] for r in rows[1:]])
    rho = data[:, head.index("relative_density")]
    assert np.all((rho > 0) & (rho < 1))
    p = data[:, head.index("p_top_Pa")]
    assert p.max() >= 0.25e9


def test_results_json_keys_and_sanity(tiny_run):
    _, res = tiny_run
    assert res["status"] == "complete"
    for k in ("scenario", "versions", "backend", "seed", "wall_time_s", "relative_density", "heckel",
              "analysed", "sizes", "elastic_recovery"):
        assert k in res, k
    assert res["versions"]["taichi"] and res["versions"]["pelletsim"]
    assert res["backend"]["backend"] == "cpu" and res["backend"]["device"]
    rd = res["relative_density"]
    assert 0 < rd["final"] < 1 and 0 < rd["max"] < 1 and rd["final"] <= rd["max"] + 1e-9
    for k in ("Py_Pa", "A", "fit_range_Pa"):
        assert k in res["heckel"], k
    an = res["analysed"]
    assert len(an) == 2
    ps = [a["pressure_Pa"] for a in an]
    assert ps == sorted(ps)
    for a in an:
        for k in ("pressure_Pa", "sigma_eff_S_per_m", "sigma_eff_over_bulk", "sigma_bulk_S_per_m", "tau",
                  "eps_total", "eps_percolating", "iterations", "flux_spread", "normalised_sigma",
                  "microstructure", "label"):
            assert k in a, k
        assert 0 < a["eps_total"] < 1
        assert 0 <= a["eps_percolating"] <= a["eps_total"] + 1e-12
        assert 0 <= a["sigma_eff_S_per_m"] <= a["sigma_bulk_S_per_m"] * (1 + 1e-6)
        if a["sigma_eff_S_per_m"] > 0:
            assert a["tau"] >= 1 - 1e-6
        assert "porosity" in a["microstructure"]
    # denser at the higher pressure: the loading branch is monotone-ish
    rhos = [a["relative_density"] for a in an]
    assert rhos[1] >= rhos[0] - 0.01
    # σ_bulk falls with pressure (positive activation volume); normalised at 0.3 GPa → 1 there
    assert an[1]["sigma_bulk_S_per_m"] < an[0]["sigma_bulk_S_per_m"]
    assert an[1]["normalised_sigma"] == pytest.approx(1.0)


def test_packings_npz(tiny_run):
    out, res = tiny_run
    files = sorted((out / "packings").glob("*.npz"))
    names = {f.name for f in files}
    assert "loose.npz" in names and "final.npz" in names
    for f in files:
        with np.load(f) as z:
            for k in ("centers_m", "radii_m", "box_m", "pressure_Pa", "label"):
                assert k in z.files, (f.name, k)
            assert z["centers_m"].shape == (z["radii_m"].size, 3)
            assert np.all(z["radii_m"] > 0)


def test_paraview_files_read_back(tiny_run):
    pv = pytest.importorskip("pyvista")
    out, res = tiny_run
    import xml.etree.ElementTree as ET
    ds = ET.parse(out / "particles.pvd").getroot().findall(".//DataSet")
    assert ds
    first = out / ds[0].get("file")
    mesh = pv.read(first)
    assert mesh.n_points == res["scenario"]["particles"]["count"]
    keys = {k.lower() for k in mesh.point_data.keys()}
    assert any("radius" in k for k in keys), keys
    assert any("veloc" in k for k in keys), keys
    assert any("force" in k for k in keys), keys
    assert any("contact" in k for k in keys), keys
    vti = out / res["analysed"][0]["vti"]
    img = pv.read(vti)
    arrs = {k.lower() for k in list(img.point_data.keys()) + list(img.cell_data.keys())}
    assert any("phase" in k for k in arrs), arrs
    assert any("potential" in k for k in arrs), arrs
    assert any("current" in k for k in arrs), arrs


def test_plot_redraws(tiny_run, tmp_path):
    out, _ = tiny_run
    for png in out.glob("*.png"):
        png.unlink()
    assert main(["plot", str(out)]) == 0
    for name in ("relative_density.png", "heckel.png", "conductivity.png", "size_distribution.png",
                 "porosity_profile_z.png"):
        assert (out / name).stat().st_size > 1000, name


# ------------------------------------------------------------------------------------------- validate
def test_validate_ok(capsys):
    assert main(["validate", str(TINY)]) == 0
    out = capsys.readouterr().out
    assert "[particles]" in out and "count = 60" in out


def test_validate_bad_exit_2(capsys):
    assert main(["validate", str(TINY), "--set", "particles.d_min_um=30"]) == 2
    err = capsys.readouterr().err
    assert "particles.d_min_um" in err and "Traceback" not in err
    assert main(["validate", str(ROOT / "nope.toml")]) == 2


def test_run_bad_override_exit_2(capsys, tmp_path):
    assert main(["run", str(TINY), "-o", str(tmp_path / "x"), "--set", "particles.cuont=3"]) == 2
    assert "particles.cuont" in capsys.readouterr().err


def test_usage_error_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["conductivity", "x.npy", "--axis", "w"]) == 2


def test_unavailable_backend_exit_2(capsys, tmp_path):
    from fva.backend import _arch_available
    if _arch_available("cuda"):
        pytest.skip("a CUDA device is present")
    assert main(["run", str(TINY), "-o", str(tmp_path / "b"), "--backend", "cuda"]) == 2
    assert "cuda" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_simulation_error_exit_1(tmp_path, monkeypatch, capsys):

    class SimulationError(RuntimeError):
        pass

    def fail(*a, **k):
        raise SimulationError("contact overlap too large at step 12 (lower punch_speed_m_per_s)")

    _fake_engine(monkeypatch, fail, SimulationError)
    out = tmp_path / "f"
    assert main(["run", str(TINY), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "contact overlap" in err and "Traceback" not in err
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and "contact overlap" in res["error"]


def test_ctrl_c_leaves_valid_outputs(tmp_path, monkeypatch):

    def boom(*a, **k):
        raise KeyboardInterrupt

    _fake_engine(monkeypatch, boom, RuntimeError)
    out = tmp_path / "int"
    assert main(["run", str(TINY), "-o", str(out), "-q"]) == 130
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "interrupted"
    assert res["sizes"]["n"] == 60
    assert (out / "packings" / "loose.npz").is_file()


def test_sigterm_leaves_valid_outputs_exit_143(tmp_path, monkeypatch, capsys):
    """A batch system's time limit (SIGTERM) is handled like Ctrl-C: finished outputs written, exit 143."""
    import os
    import signal

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)       # delivered to the handler main() installs
        raise AssertionError("SIGTERM did not interrupt the run")

    _fake_engine(monkeypatch, killed, RuntimeError)
    out = tmp_path / "term"
    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", str(TINY), "-o", str(out), "-q"]) == 143
    assert "SIGTERM" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "interrupted" and (out / "packings" / "loose.npz").is_file()
    assert signal.getsignal(signal.SIGTERM) is before      # the handler is removed again


# ------------------------------------------------------------------------------------------- images
def _layered(n=16):
    """[z, y, x] solid block with a pore channel: percolating along z, σ_eff/σ_bulk = solid fraction."""
    im = np.ones((n, n, n), np.uint8)
    im[:, :, : n // 4] = 0
    return im


def test_conductivity_npy(tmp_path, capsys):
    _need("fva.io", "fva.conduction")
    p = tmp_path / "block.npy"
    np.save(p, _layered())
    out = tmp_path / "c"
    assert main(["conductivity", str(p), "--voxel-size", "1e-6", "-o", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    a = res["analysed"][0]
    assert a["pressure_Pa"] is None
    for k in ("sigma_eff_S_per_m", "sigma_eff_over_bulk", "tau", "eps_total", "eps_percolating"):
        assert k in a
    assert a["sigma_eff_over_bulk"] == pytest.approx(0.75, rel=2e-3)
    assert a["tau"] == pytest.approx(1.0, rel=2e-3)
    assert (out / a["vti"]).is_file()


def test_conductivity_tif_all_axes(tmp_path):
    _need("fva.io", "fva.conduction")
    tifffile = pytest.importorskip("tifffile")
    p = tmp_path / "block.tif"
    tifffile.imwrite(p, _layered())
    out = tmp_path / "t"
    assert main(["conductivity", str(p), "--voxel-size", "1e-6", "--axis", "all", "-o", str(out), "--no-vti"]) == 0
    res = json.loads((out / "results.json").read_text())
    by = {a["axis"]: a for a in res["analysed"]}
    assert set(by) == {"x", "y", "z"}
    assert by["z"]["sigma_eff_over_bulk"] == pytest.approx(0.75, rel=2e-3)
    assert by["x"]["sigma_eff_over_bulk"] < by["z"]["sigma_eff_over_bulk"]   # series layers along x


def test_conductivity_missing_image_exit_2(tmp_path, capsys):
    assert main(["conductivity", str(tmp_path / "nope.npy"), "--voxel-size", "1e-6"]) == 2
    assert "not found" in capsys.readouterr().err


def test_analyze_image(tmp_path):
    _need("fva.io", "fva.microstructure")
    p = tmp_path / "block.npy"
    rng = np.random.default_rng(0)
    np.save(p, (rng.random((16, 16, 16)) > 0.25).astype(np.uint8))
    out = tmp_path / "a"
    assert main(["analyze", str(p), "--voxel-size", "1e-6", "--rve-grid", "2", "-o", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    m = res["microstructure"]
    assert 0.15 < m["porosity"] < 0.35
    assert len(m["porosity_profile_z"]) == 16
    assert list(out.glob("*.png"))


def test_analyze_blocked_slab_reports_inf(tmp_path, capsys):
    """A pore layer blocks 16 of the 64 sub-volumes along z: inf with the count, not τ ≈ 1 (issue 15)."""
    p = tmp_path / "slab.npy"
    ph = np.ones((16, 16, 16), np.uint8)
    ph[1] = 0
    np.save(p, ph)
    out = tmp_path / "a"
    assert main(["analyze", str(p), "--voxel-size", "1e-6", "--rve-grid", "4", "-o", str(out)]) == 0
    assert "tau_throughplane = inf (16 of 64 sub-volumes do not conduct along z)" in capsys.readouterr().out
    m = json.loads((out / "results.json").read_text())["microstructure"]
    assert m["tau_throughplane"] is None and m["rve_n_nonpercolating"]["z"] == 16


def test_plot_not_a_run_exit_2(tmp_path):
    assert main(["plot", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------------------- helpers
def test_normalise_exact_and_interpolated():
    from dem.pipeline import normalise
    an = [{"pressure_Pa": 0.3e9, "sigma_eff_S_per_m": 0.1}, {"pressure_Pa": 0.7e9, "sigma_eff_S_per_m": 0.4}]
    assert normalise(an, 0.7e9, "pressure_Pa") == pytest.approx(0.4)
    assert normalise(an, 0.5e9, "pressure_Pa") == pytest.approx(0.2)      # log-linear midpoint
    assert normalise(an, 0.9e9, "pressure_Pa") is None


def test_json_safe_drops_non_finite():
    from fva.report import json_safe
    out = json_safe({"a": float("inf"), "b": np.float32(2), "c": (1, np.nan), "d": np.arange(3)})
    assert out == {"a": None, "b": 2.0, "c": [1, None], "d": [0, 1, 2]}
    json.dumps(out, allow_nan=False)


def test_conductivity_failure_is_recorded_as_failed(tmp_path, monkeypatch):
    import fva.conduction

    img = np.ones((6, 6, 6), np.uint8)
    np.save(tmp_path / "img.npy", img)

    def broken(*a, **k):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(fva.conduction, "solve_conductivity", broken)
    out = tmp_path / "out"
    rc = main(["conductivity", str(tmp_path / "img.npy"), "--voxel-size", "1e-6", "-o", str(out)])
    assert rc != 0
    data = json.loads((out / "results.json").read_text())
    assert data["status"] == "failed" and "solver exploded" in data["error"]


def test_failure_mid_compaction_keeps_the_partial_history(tmp_path, capsys):
    """A stage that stalls (max_steps) fails the run, but the history and captures finished so far are written."""
    out = tmp_path / "partial"
    assert main(["run", str(TINY), "-o", str(out), "-q", "--set", "numerics.max_steps=1500",
                 "--set", "run.history_every=50"]) == 1
    assert "max_steps" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and "max_steps" in res["error"]
    assert res["compaction"]["completed"] is False and "max_steps" in res["compaction"]["stopped"]
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 10
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] > 1000
    assert all(np.isfinite(float(r["thickness_m"])) for r in rows)
    assert not any(p.name.startswith("final") for p in (out / "packings").iterdir())


def test_release_densities_interpolates_the_last_release():
    from dem.pipeline import release_densities
    from dem.types import Stage

    stages = [Stage("load", 1e9, punch_speed_m_per_s=0.01), Stage("unload", 0.0, punch_speed_m_per_s=0.01)]
    p = np.array([0.0, 0.5, 1.0, 0.8, 0.4, 0.1, 0.0]) * 1e9
    rho = np.array([0.6, 0.9, 0.98, 0.97, 0.95, 0.92, 0.90])
    st = np.array([0, 0, 0, 1, 1, 1, 1])
    out = release_densities({"stage": st, "p_top_Pa": p, "relative_density": rho}, stages, [0.01, 0.1, 0.6])
    assert [o["p_Pa"] for o in out] == [0.01e9, 0.1e9, 0.6e9]
    assert out[0]["relative_density"] == pytest.approx(0.90 + 0.02 * 0.1)
    assert out[1]["drop_fraction"] == pytest.approx((0.98 - 0.92) / 0.98)
    assert out[2]["relative_density"] == pytest.approx(0.96)
    assert release_densities({"stage": st[:3], "p_top_Pa": p[:3], "relative_density": rho[:3]}, stages[:1],
                             [0.1]) == []


def test_heckel_window_and_release_densities_in_results(tmp_path):
    """heckel.fit_range_GPa fits that window (the automatic fit kept as heckel_auto); the density drop at the
    stack pressures of the final release is reported."""
    _need_pipeline()
    out = tmp_path / "hw"
    assert main(["run", str(TINY), "-o", str(out), "-q", "--set", "heckel.fit_range_GPa=[0.05, 0.3]",
                 "--set", "conductivity.enabled=false", "--set", "microstructure.enabled=false",
                 "--set", "run.write_frames=false"]) == 0
    res = json.loads((out / "results.json").read_text())
    h = res["heckel"]
    assert h["fit_window"] == "heckel.fit_range_GPa"
    assert h["fit_range_Pa"][0] >= 0.05e9 and h["fit_range_Pa"][1] <= 0.3e9 * 1.05
    assert "Py_Pa" in res["heckel_auto"]
    rel = res["elastic_recovery"]["at_stack_pressures"]
    assert [r["p_Pa"] for r in rel] == [0.01e9, 0.1e9]
    for r in rel:
        assert 0 < r["drop_fraction"] < 0.5 and r["relative_density"] < r["relative_density_at_peak"]


def test_progress_line_shows_the_engines_eta():
    """The ETA printed is the engine's (an upper bound on loading, marked ≤), never extrapolated pressure."""
    from dem.pipeline import _Progress
    from dem.types import Stage

    pr = _Progress(True, [Stage("load", 1.0e9, punch_speed_m_per_s=0.01)], every_s=0.0)
    lines = []
    import dem.pipeline as P
    orig = P._eprint
    P._eprint = lines.append
    try:
        pr({"stage_index": 0, "stage": "load", "p_top_Pa": 1e7, "step": 1, "eta_s": 120.0, "eta_is_bound": True})
        pr({"stage_index": 0, "stage": "load", "p_top_Pa": 2e7, "step": 2})
    finally:
        P._eprint = orig
    assert "stage ETA ≤ 2.0 min" in lines[0] and "stage ETA ?" in lines[1]


def _fail_after_one_capture(monkeypatch):
    """The engine replaced by one that captures the loose fill as 'load 0.10 GPa', then fails (exit 1)."""
    import dataclasses

    from dem.simulation import SimulationError
    from dem.types import HISTORY_COLUMNS, CaptureSpec, CompactionResult

    def fail(loose, *a, **k):
        z = loose.centers_m[:, 2] + loose.radii_m
        pk = dataclasses.replace(loose, box_m=np.array([loose.box_m[0], loose.box_m[1], z.max()]),
                                 pressure_Pa=0.1e9, label="load 0.10 GPa")
        hist = {c: np.array([0.0, 1.0]) for c in HISTORY_COLUMNS}
        hist["p_top_Pa"] = np.array([0.0, 0.1e9])
        hist["relative_density"] = np.array([0.3, 0.5])
        hist["stage"] = np.array([1, 1])
        hist["step"] = np.array([0, 100])
        exc = SimulationError("contact overlap 1.01 × the smaller diameter at step 100")
        exc.partial = CompactionResult(history=hist, packings=[pk], info=dict(n_steps=100, completed=False),
                                       captures=[CaptureSpec(1, "load", 0.1e9, 0.1e9)])
        raise exc

    _fake_engine(monkeypatch, fail, SimulationError)


def test_failed_compaction_still_analyses_its_finished_captures(tmp_path, monkeypatch, capsys):
    """A compaction that fails after a capture (e.g. the overlap check near the last pressure) still writes
    the conductivity of what it captured; the run is reported as failed."""
    _need_pipeline()
    _fail_after_one_capture(monkeypatch)
    out = tmp_path / "fa"
    assert main(["run", str(TINY), "-o", str(out), "-q", "--set", "microstructure.enabled=false"]) == 1
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "failed" and res["conductivity_on_partial_compaction"] is True
    assert len(res["analysed"]) == 1 and res["analysed"][0]["label"] == "load 0.10 GPa"
    assert 0 < res["analysed"][0]["sigma_eff_over_bulk"] < 1


def test_reanalyse_recomputes_from_saved_captures(tiny_run, tmp_path):
    import shutil

    src, res0 = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    res = json.loads((out / "results.json").read_text())
    res["analysed"] = []
    (out / "results.json").write_text(json.dumps(res))
    assert main(["reanalyse", str(out), "-q"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert len(again["analysed"]) == len(res0["analysed"]) == 2
    for a, b in zip(again["analysed"], res0["analysed"]):
        assert a["sigma_eff_S_per_m"] == pytest.approx(b["sigma_eff_S_per_m"], rel=1e-9)
    assert main(["reanalyse", str(tmp_path / "nothing")]) == 2


def test_reanalyse_with_interface_resistance(tiny_run, tmp_path):
    """conductivity.interface_resistance_ohm_m2 reaches the solver: every σ_eff falls, grain-boundary faces are
    counted and the value is recorded."""
    import re
    import shutil

    src, res0 = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    scen = (out / "scenario.resolved.toml").read_text()
    scen, n = re.subn(r"(?m)^interface_resistance_ohm_m2 = .*$", "interface_resistance_ohm_m2 = 1e-05", scen)
    assert n == 1
    (out / "scenario.resolved.toml").write_text(scen)
    assert main(["reanalyse", str(out), "-q"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["conductivity"]["interface_resistance_ohm_m2"] == 1e-5
    for a, b in zip(again["analysed"], res0["analysed"]):
        assert a["interface_faces"] > 0 and b["interface_faces"] == 0
        assert a["sigma_eff_S_per_m"] < 0.99 * b["sigma_eff_S_per_m"]


def test_an_unconverged_solve_is_a_warning_of_the_run(tiny_run, tmp_path, monkeypatch):
    """A conduction solve that stops short is flagged in results.json, never passed off as a result."""
    import shutil

    import fva.conduction as fc

    src, _ = tiny_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    real = fc.solve_conductivity
    monkeypatch.setattr(fc, "solve_conductivity", lambda *a, **kw: real(*a, **{**kw, "max_iter": 1}))
    assert main(["reanalyse", str(out), "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert all(a["converged"] is False and a["residual"] > 1e-6 for a in res["analysed"])
    assert sum("did NOT converge" in w for w in res["warnings"]) == len(res["analysed"])


def test_bench_study_case_is_the_packing_pelletsim_run_makes(tiny_run, load_benchmark):
    """One set-up path: bench_dem's study case on the same scenario and seed ends in the very packing that
    ``pelletsim run`` wrote (bitwise; the benchmark once skipped the spatial renumbering of the loose fill)."""
    from dem.pipeline import read_packing_npz
    from dem.setup import packing_sha256

    out, res = tiny_run
    row = load_benchmark("bench_dem").run_study("cpu", None, [], scenario=TINY)
    assert row["ok"] and row["steps"] == res["compaction"]["n_steps"]
    assert row["final_packing_sha256"] == packing_sha256(read_packing_npz(out / "packings" / "final.npz"))


def test_captures_keep_their_identity_in_results(tiny_run):
    _, res = tiny_run
    caps = res["captures"]
    assert [(c["stage_index"], c["stage_kind"], c["nominal_pressure_Pa"], c["protocol"]) for c in caps] == \
        [(1, "load", 0.1e9, "variable_pressure"), (1, "load", 0.3e9, "variable_pressure")]
    assert [a["nominal_pressure_Pa"] for a in res["analysed"]] == [0.1e9, 0.3e9]


def test_summary_names_release_holds_and_warnings(capsys, tmp_path):
    """The end-of-run summary says where the release went, how the holds ended, and every warning."""
    from dem.cli import _print_summary

    w = "stage 6 'hold 0.1 GPa': p_top did not settle within 5% of the target (0.10 GPa) …"
    data = {"name": "x", "status": "complete", "wall_time_s": 1.0, "backend": {"backend": "cpu"},
            "relative_density": {"max": 0.99, "final": 0.86},
            "heckel": {"Py_Pa": 0.95e9, "Py_stderr_Pa": 0.02e9, "A": 2.7, "fit_range_Pa": [0.5e9, 1.7e9]},
            "elastic_recovery": {"fraction": 0.13, "at_stack_pressures": [
                {"p_Pa": 1e7, "relative_density": 0.92, "drop_fraction": 0.073},
                {"p_Pa": 1e8, "relative_density": 0.96, "drop_fraction": 0.03}]},
            "compaction": {"holds": [{"settled": True, "off_target": 0.01, "extended_s": 1e-4},
                                     {"settled": False, "off_target": -0.08, "extended_s": 8e-4}]},
            "warnings": [w]}
    _print_summary(data, tmp_path)
    out = capsys.readouterr().out
    assert "Py = 0.950 ± 0.020 GPa over 0.50–1.70 GPa" in out
    assert "release: 0.9600 at 0.1 GPa (−3.0 %), 0.9200 at 0.01 GPa (−7.3 %), 0.8600 at contact loss (−13.0 %)" in out
    assert "holds: 1 of 2 settled at their target (largest end offset 8.0%, longest extension 0.0008 s)" in out
    assert f"warning: {w}" in out


def test_histogram_run_folder_is_self_contained(tmp_path, monkeypatch):
    """A run whose sizes come from a histogram CSV beside its scenario is reanalysed, and its resolved
    scenario loaded, from its own folder after the folder has moved and the scenario and CSV are gone (the
    resolved scenario once kept the CSV path relative to the original scenario file, so neither loaded)."""
    import shutil

    from dem.scenario import load_scenario
    from dem.setup import make_sizes

    _need_pipeline()
    src = tmp_path / "scen"
    src.mkdir()
    (src / "sizes.csv").write_text("# a comment\nd_low_um,d_high_um,count\n14,18,1\n18,22,2\n22,26,1\n")
    text = TINY.read_text().replace('distribution = "gamma"', 'distribution = "histogram"\nhistogram_csv = "sizes.csv"')
    (src / "tiny.toml").write_text(text)
    _fail_after_one_capture(monkeypatch)
    run = tmp_path / "run"
    assert main(["run", str(src / "tiny.toml"), "-o", str(run), "-q", "--set", "microstructure.enabled=false",
                 "--set", "run.plots=false"]) == 1
    res0 = json.loads((run / "results.json").read_text())
    shutil.rmtree(src)
    out = tmp_path / "moved"
    shutil.move(run, out)
    scen = load_scenario(out / "scenario.resolved.toml")
    with np.load(out / "packings" / "loose.npz") as z:
        assert np.array_equal(make_sizes(scen), z["diameters_sampled_m"])
    assert main(["reanalyse", str(out), "-q"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert len(again["analysed"]) == len(res0["analysed"]) == 1
    assert again["analysed"][0]["sigma_eff_S_per_m"] == pytest.approx(res0["analysed"][0]["sigma_eff_S_per_m"],
                                                                       rel=1e-9)

"""Runs a user can trust (issue 16): output folders never mixed, inputs refused up front with the
scenario's key names and exit status 2, an unreachable target named as such, small loose fills that
insert, an honest ETA and a history.csv that can be watched while the run goes on."""
from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dem.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
QUICK = ROOT / "scenarios" / "quickstart.toml"


def _fake_engine(monkeypatch, run_compaction):
    from dem.simulation import SimulationError

    fake = types.ModuleType("dem.simulation")
    fake.run_compaction = run_compaction
    fake.SimulationError = SimulationError
    monkeypatch.setitem(sys.modules, "dem.simulation", fake)
    return SimulationError


def _old_run(folder: Path, manifest: bool) -> None:
    """An earlier run's outputs in ``folder`` (with or without the files_written manifest)."""
    (folder / "fields").mkdir(parents=True)
    (folder / "fields" / "07_old.vti").write_text("old")
    (folder / "microstructure" / "00_old").mkdir(parents=True)
    (folder / "microstructure" / "00_old" / "rve_tau.png").write_text("old")
    (folder / "history.csv").write_text("step,p_top_Pa\n0,0\n")
    (folder / "relative_density.png").write_text("old figure")
    data = {"status": "complete", "name": "old", "scenario": {}}
    if manifest:
        data["files_written"] = ["fields/07_old.vti", "microstructure/00_old/rve_tau.png", "history.csv",
                                 "relative_density.png", "results.json"]
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "my_notes.txt").write_text("the user's own file")


# ------------------------------------------------------------------------------------------ output folder
def test_rerun_into_an_earlier_run_is_refused_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    _old_run(out, manifest=True)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["run", str(TINY), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_run_failing_validation_inside_run_leaves_earlier_run_untouched(tmp_path, capsys):
    """A histogram whose contents are wrong used to pass validation, fail in the run and redraw the earlier
    run's figures from its history; now validate refuses it and nothing is written."""
    csv_path = tmp_path / "sizes.csv"
    csv_path.write_text("diameter_um,weight\n10,1\n20,2\n")
    out = tmp_path / "run"
    _old_run(out, manifest=True)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    sets = ["--set", "particles.distribution=\"histogram\"", "--set", f"particles.histogram_csv=\"{csv_path}\"",
            "--set", "particles.shape=1.0"]
    assert main(["validate", str(TINY), *sets]) == 2
    err = capsys.readouterr().err
    assert "particles.histogram_csv" in err and "d_low_um" in err
    assert main(["run", str(TINY), "-o", str(out), "-q", "--overwrite", *sets]) == 2
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("manifest", [True, False])
def test_overwrite_clears_only_pelletsims_files_and_lists_what_it_wrote(tmp_path, monkeypatch, manifest):
    out = tmp_path / "run"
    _old_run(out, manifest=manifest)
    seen = {}

    def fail(packing, material, die, stages, params, *, on_row=None, **kw):
        seen["old_vti_gone"] = not (out / "fields" / "07_old.vti").exists()
        raise SimulationError("stopped on purpose")

    SimulationError = _fake_engine(monkeypatch, fail)
    assert main(["run", str(TINY), "-o", str(out), "-q", "--overwrite"]) == 1
    assert seen["old_vti_gone"]
    assert (out / "my_notes.txt").read_text() == "the user's own file"
    assert not (out / "microstructure").exists() and not (out / "fields").exists()
    res = json.loads((out / "results.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert res["files_written"] == [f for f in on_disk if f != "my_notes.txt"]
    assert "packings/loose.npz" in res["files_written"]


def test_prepare_outdir_file_and_unwritable(tmp_path):
    from dem.outdir import OutdirError, prepare_outdir

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(OutdirError, match="is a file"):
        prepare_outdir(f)
    if Path("/sys").is_dir():
        with pytest.raises(OutdirError, match="writable"):
            prepare_outdir("/sys/pelletsim_test_out")


@pytest.mark.parametrize("where", ["file", "sys"])
def test_bad_outdir_exit_2_one_line(tmp_path, capsys, where):
    if where == "file":
        o = tmp_path / "afile"
        o.write_text("x")
    else:
        if not Path("/sys").is_dir():
            pytest.skip("no /sys")
        o = Path("/sys/pelletsim_test_out")
    assert main(["run", str(TINY), "-o", str(o), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(o) in err[0] and "Error" not in err[0]


# ------------------------------------------------------------------------------------------ scenario checks
@pytest.mark.parametrize("key", ["material.youngs_modulus_GPa", "material.density_kg_m3", "material.friction",
                                 "material.yield_stress_MPa", "particles.d_max_um",
                                 "protocol.1.punch_speed_m_per_s", "conductivity.p_ref_GPa",
                                 "conductivity.temperature_K", "conductivity.sigma_ref_mS_per_cm",
                                 "conductivity.activation_volume_cm3_per_mol"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_every_number_finite(capsys, key, value):
    assert main(["validate", str(TINY), "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    name = key.split(".")[-1]
    assert name in err and "finite" in err


def test_conductivity_overflow_refused_by_validate(capsys):
    assert main(["validate", str(TINY), "--set", "conductivity.activation_volume_cm3_per_mol=-900",
                 "--set", "conductivity.temperature_K=1"]) == 2
    assert "activation_volume_cm3_per_mol" in capsys.readouterr().err


def test_memory_refused_up_front(capsys):
    from dem.preflight import check_resources
    from dem.scenario import ScenarioError, load_scenario

    assert main(["validate", str(TINY), "--set", "particles.count=1000000000000"]) == 2
    err = capsys.readouterr().err
    assert "particles.count" in err and "GiB" in err
    scen = load_scenario(TINY, ["particles.count=1000000"])
    with pytest.raises(ScenarioError, match="particles.count.*available"):
        check_resources(scen, available_bytes=2 ** 30)
    check_resources(load_scenario(TINY), available_bytes=2 ** 30)
    vox = load_scenario(TINY, ["conductivity.voxels_per_dmin=2000"])
    with pytest.raises(ScenarioError, match="conductivity.voxels_per_dmin"):
        check_resources(vox, available_bytes=2 ** 40)
    vox = load_scenario(TINY, ["conductivity.voxels_per_dmin=100", "conductivity.max_voxels=1000000000000"])
    with pytest.raises(ScenarioError, match="conductivity.voxels_per_dmin.*GiB"):
        check_resources(vox, available_bytes=2 ** 30)


def test_run_name_with_path_separator_refused(capsys):
    assert main(["validate", str(TINY), "--set", "run.name=\"../escape\""]) == 2
    assert "run.name" in capsys.readouterr().err


def test_binary_scenario_names_the_file(tmp_path, capsys):
    f = tmp_path / "scen.toml"
    f.write_bytes(bytes(range(256)))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "codec" not in err


def test_histogram_missing_names_the_real_columns(capsys):
    assert main(["validate", str(TINY), "--set", "particles.distribution=\"histogram\""]) == 2
    err = capsys.readouterr().err
    assert "d_low_um" in err and "diameter_um, weight" not in err


def test_fill_height_messages_use_scenario_keys(capsys):
    assert main(["validate", str(TINY), "--set", "die.fill_height_um=60"]) == 2
    err = capsys.readouterr().err
    assert "die.fill_height_um" in err and "column_height_m" not in err and "target_fraction" not in err


def test_insertion_jam_with_given_height_raises_typed_error():
    from dem.loose import LooseInsertionError, insert_loose

    d = np.full(60, 20e-6)
    with pytest.raises(LooseInsertionError) as ei:
        insert_loose(d, 60e-6, 60e-6, column_height_m=60e-6, seed=0)
    assert ei.value.need_height_m > 60e-6 and ei.value.placed < 60


# ------------------------------------------------------------------------------------------ loose fill
@pytest.mark.parametrize("count, seed", [(30, 1), (40, 7), (1, 0), (5, 3)])
def test_quickstart_small_counts_insert_at_default_fraction(count, seed):
    from dem.loose import insert_loose
    from dem.scenario import load_scenario, to_engine
    from dem.sizes import sample_diameters

    scen = load_scenario(QUICK, [f"particles.count={count}", f"run.seed={seed}"])
    sizes, _, die, _, _ = to_engine(scen)
    d = sample_diameters(sizes.n, **sizes.kwargs(), seed=seed)
    pk = insert_loose(d, die.base_x_m, die.base_y_m, target_fraction=scen.die.loose_fraction, seed=seed)
    c, r, (lx, ly, h) = pk.centers_m, pk.radii_m, pk.box_m
    assert np.all(c[:, 2] - r >= -1e-15) and np.all(c[:, 2] + r <= h * (1 + 1e-12))
    dd = c[:, None, :] - c[None, :, :]
    dd[..., 0] -= lx * np.round(dd[..., 0] / lx)
    dd[..., 1] -= ly * np.round(dd[..., 1] / ly)
    gap = np.sqrt((dd ** 2).sum(-1)) - (r[:, None] + r[None, :]) + np.eye(count)
    assert gap.min() > -1e-12 * r.min()
    # never denser than asked; as dense as asked where the insertion did not jam
    frac = (np.pi / 6 * d ** 3).sum() / (lx * ly * h)
    assert frac <= scen.die.loose_fraction * (1 + 1e-9)


def test_default_loose_fill_unchanged_where_it_did_not_jam():
    """The taller-column retry only runs after a jam: a fill that inserted before is bitwise the same."""
    from dem.loose import _rsi, insert_loose

    d = np.random.default_rng(0).uniform(10e-6, 20e-6, 200)
    pk = insert_loose(d, 100e-6, 100e-6, target_fraction=0.3, seed=4)
    H = (np.pi / 6 * d ** 3).sum() / (0.3 * 100e-6 * 100e-6)
    pos, order = _rsi(d, 100e-6, 100e-6, H, np.random.default_rng(np.random.SeedSequence(4)), 200)
    assert pk.box_m[2] == H
    assert np.array_equal(pk.centers_m[order, 2], pos[:, 2])


# ------------------------------------------------------------------------------------------ progress
def test_eta_from_steps_left_and_punch_travel():
    from dem.pipeline import _Progress
    from dem.protocol import _stage_eta
    from dem.types import Stage

    sim = types.SimpleNamespace(punch_z=2e-4, solid_volume=1e-12, area=1e-8, dt=1e-9, step_count=1000)
    load = Stage("load", 1e9, punch_speed_m_per_s=0.01)
    eta, bound = _stage_eta(sim, {"stage": load}, steps_per_s=1000.0)
    # travel to full density 2e-4 - 1e-4 m at 0.01 m/s = 1e-2 s of model time = 1e7 steps = 1e4 s
    assert bound and eta == pytest.approx(1e4)
    hold = Stage("hold", 1e9, hold_time_s=1e-3)
    assert _stage_eta(sim, {"stage": hold, "hold_end_step": 6000}, 1000.0) == (5.0, False)
    assert _stage_eta(sim, {"stage": Stage("unload", 0.0, punch_speed_m_per_s=0.01)}, 1000.0) == (None, False)
    assert _Progress.format_eta({"eta_s": 600.0, "eta_is_bound": True}) == "stage ETA ≤ 10.0 min"
    assert _Progress.format_eta({}) == "stage ETA ?"


def test_history_rows_visible_while_running(tmp_path, monkeypatch):
    """The pipeline hands the engine a row callback that appends complete lines to history.csv."""
    from dem.types import HISTORY_COLUMNS

    out = tmp_path / "run"
    seen = {}

    def engine(packing, material, die, stages, params, *, on_row=None, **kw):
        on_row.every_s = 0.0
        for k in range(3):
            on_row({c: (k if c in ("step", "stage") else 0.5 + k) for c in HISTORY_COLUMNS})
        with open(out / "history.csv", newline="") as fh:
            seen["rows"] = list(csv.reader(fh))
        raise SimulationError("stopped on purpose")

    SimulationError = _fake_engine(monkeypatch, engine)
    assert main(["run", str(TINY), "-o", str(out), "-q"]) == 1
    rows = seen["rows"]
    assert rows[0] == list(HISTORY_COLUMNS) and len(rows) == 4
    assert all(len(r) == len(HISTORY_COLUMNS) for r in rows)
    assert rows[3][0] == "2" and float(rows[3][1]) == 2.5


def test_history_appender_final_file_matches_full_write(tmp_path):
    from dem.pipeline import HistoryAppender, write_history_csv
    from dem.types import HISTORY_COLUMNS

    rows = [{c: (k if c in ("step", "stage") else 1.0 / (k + 3)) for c in HISTORY_COLUMNS} for k in range(5)]
    app = HistoryAppender(tmp_path / "a.csv", every_s=0.0)
    for r in rows:
        app(r)
    write_history_csv(tmp_path / "b.csv", {c: np.array([r[c] for r in rows],
                                                        dtype=np.int64 if c in ("step", "stage") else float)
                                           for c in HISTORY_COLUMNS})
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


# ------------------------------------------------------------------------------------------ unreachable target
def test_unreachable_target_named_and_no_unphysical_rows(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", str(TINY), "-o", str(out), "-q", "--set", "protocol.1.target_pressure_GPa=100",
               "--set", "protocol.1.capture_pressures_GPa=[0.1]", "--set", "conductivity.enabled=false",
               "--set", "microstructure.enabled=false", "--set", "run.write_frames=false",
               "--set", "run.plots=false"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "100.00 GPa cannot be reached" in err and "highest pressure reached" in err
    assert "relative density 0.9" in err
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    rho = np.array([float(r[rows[0].index("relative_density")]) for r in rows[1:]])
    assert rho.size > 5 and np.all((rho > 0) & (rho <= 1))
    assert json.loads((out / "results.json").read_text())["status"] == "failed"


def test_drop_unphysical_rows():
    from dem.protocol import _drop_unphysical_rows

    hist = {"step": [0, 100, 200, 300], "relative_density": [0.5, 0.9, 27.1, -8.6],
            "thickness_m": [1e-4, 9e-5, 1e-6, -1e-6], "p_top_Pa": [0.0, 1e8, 1e9, 1e9]}
    warnings = []
    _drop_unphysical_rows(hist, warnings)
    assert hist["relative_density"] == [0.5, 0.9] and hist["step"] == [0, 100] and len(warnings) == 1


def test_validate_checks_time_step_and_size_window(capsys):
    assert main(["validate", str(TINY), "--set", "numerics.dt_s=1e-3"]) == 2
    assert "numerics.dt_s" in capsys.readouterr().err
    assert main(["validate", str(TINY), "--set", "particles.shape=1.0", "--set", "particles.scale_um=0.01",
                 "--set", "particles.d_min_um=25", "--set", "particles.d_max_um=26"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pelletsim: error: particles:") and "d_min_um" in err and "d_min_m" not in err


def test_image_commands_bad_outdir_exit_2(tmp_path, capsys):
    img = tmp_path / "img.npy"
    np.save(img, np.ones((4, 4, 4), np.uint8))
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["conductivity", str(img), "--voxel-size", "1e-6", "-o", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]


def test_validate_refuses_an_unavailable_backend(capsys):
    from fva.backend import _arch_available

    if _arch_available("cuda"):
        pytest.skip("this machine has CUDA")
    assert main(["validate", str(TINY), "--set", "run.backend=\"cuda\""]) == 2
    assert "run.backend" in capsys.readouterr().err

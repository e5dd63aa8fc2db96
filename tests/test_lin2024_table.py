"""benchmarks/lin2024_table.py on synthetic results.json files (no simulation, no Taichi)."""
import json
from pathlib import Path

import pytest


def _entry(p_MPa, porosity, tau_z, std_z, jmax):
    ms = {
        "porosity": porosity, "rve_grid": [4, 4, 4],
        "rve_tau_mean": {"x": tau_z + 0.1, "y": tau_z + 0.2, "z": tau_z},
        "rve_tau_std": {"x": 0.01, "y": 0.02, "z": std_z},
        "rve_n_nonpercolating": {"x": 0, "y": 0, "z": 0}, "rve_porosity_std": 0.01,
        "tau_inplane": tau_z + 0.15, "tau_throughplane": tau_z, "inplane_rms": 0.1 * porosity,
        "interface_contact_fraction": 0.5, "interface_contact_fraction_requested": 0.9306,
        "interface_applied_A_per_m2": 10.0, "interface_current_mean_A_per_m2": 20.0,
        "interface_current_max_A_per_m2": jmax, "interface_current_max_over_mean": jmax / 20.0,
        "interface_current_cv": 0.2, "pore_size_mean_m": 1.0e-6,
    }
    return {"label": f"load {p_MPa / 1000:.2f} GPa", "stage_kind": "load", "pressure_Pa": p_MPa * 1.001e6,
            "nominal_pressure_Pa": p_MPa * 1e6, "pelletizing_pressure_Pa": p_MPa * 1e6,
            "relative_density": 1 - porosity, "voxel_m": 1e-7, "image_shape": [40, 20, 20],
            "porosity": porosity, "tau": tau_z - 0.05, "axis": "z", "microstructure": ms}


def _write_run(folder: Path, name: str, scale: float) -> Path:
    folder.mkdir()
    analysed = [_entry(100, 0.30 * scale, 1.9 * scale, 0.2, 40.0),
                _entry(300, 0.25 * scale, 1.5 * scale, 0.1, 30.0),
                _entry(500, 0.20 * scale, 1.3 * scale, 0.05, 25.0)]
    res = {"status": "complete", "name": name, "seed": 1, "wall_time_s": 1.0,
           "sizes": {"D50_m": 4e-6 * scale}, "analysed": analysed}
    (folder / "results.json").write_text(json.dumps(res))
    return folder


def test_lin2024_table_rows_and_values(load_benchmark, tmp_path, capsys):
    mod = load_benchmark("lin2024_table")
    fine = _write_run(tmp_path / "fine", "lin2024_fine", 0.9)
    regular = _write_run(tmp_path / "regular", "lin2024_regular", 1.0)
    out = tmp_path / "table.json"
    md = tmp_path / "table.md"
    mod.main([str(regular), str(fine / "results.json"), "--out", str(out), "--md", str(md)])
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [(r["powder"], round(r["pressure_MPa"])) for r in rows] == [
        ("fine", 100), ("fine", 300), ("fine", 500), ("regular", 100), ("regular", 300), ("regular", 500)]
    for key in ("porosity", "rve_tau_mean", "rve_tau_std", "rve_tau_rel_std", "tau_inplane", "tau_throughplane",
                "interface_contact_fraction", "interface_current_max_over_mean",
                "interface_current_max_mA_per_cm2", "pore_size_mean_um", "study"):
        assert key in rows[0]
    r = rows[3]                                                   # regular, 100 MPa
    assert r["rve_n"] == 64
    assert r["rve_tau_rel_std"]["z"] == pytest.approx(0.2 / 1.9)
    assert r["interface_current_max_mA_per_cm2"] == pytest.approx(4.0)    # 40 A/m² at 10 A/m² = 1 mA/cm²
    assert r["pore_size_mean_um"] == pytest.approx(1.0)
    assert r["study"]["porosity"] == [0.139, 0.179] and r["study"]["tau"] == [1.17, 1.30]
    f100 = rows[0]["study"]                                        # the study's fine 100 MPa figures
    assert f100["porosity"] == pytest.approx(0.095) and f100["tau_rel_std"] == [0.04, 0.08]
    assert f100["current_max_mA_per_cm2"] == pytest.approx(2.4)
    assert f100["current_max_over_mean"] == pytest.approx(2.4 / 1.07)
    checks = {(t["check"], t.get("pressure_MPa"), t.get("powder")): t["holds"] for t in data["trends"]}
    assert checks[("finer → denser (lower porosity)", 100, None)] is True
    assert checks[("higher pressure → more uniform (lower RVE τ std, z)", None, "regular")] is True
    assert checks[("finer → lower whole-sample τ", 500, None)] is True       # 0.9 × 1.25 < 1.25
    text = md.read_text()
    assert text.count("\n") == 2 + 6 and "| fine | 1 | 100 | loaded |" in text
    assert "| fine | 1 | 100 | loaded |" in capsys.readouterr().out
    assert not list(tmp_path.glob(".table*"))                     # atomic write: no temp file left


def test_lin2024_table_no_microstructure(load_benchmark, tmp_path):
    mod = load_benchmark("lin2024_table")
    d = tmp_path / "run"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"name": "x", "analysed": [{"label": "a"}]}))
    with pytest.raises(SystemExit):
        mod.main([str(d), "--out", str(tmp_path / "t.json")])

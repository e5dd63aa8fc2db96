"""benchmarks/fig6b_table.py on synthetic results.json files (no simulation, no Taichi)."""
import json

import numpy as np
import pytest


def _results(tmp_path, name, protocol, xs, sig, dv=1.4):
    xk = "pelletizing_pressure_Pa" if protocol == "stack_pressure" else "nominal_pressure_Pa"
    an = [{xk: x * 1e9, "pressure_Pa": x * 1e9, "relative_density": 0.9, "sigma_eff_over_bulk": s,
           "normalised_sigma": s / sig[xs.index(0.5)], "tau": 1.1, "label": f"p{x}"} for x, s in zip(xs, sig)]
    res = {"name": name, "status": "complete", "conductivity": {"protocol": protocol, "x_key": xk},
           "analysed": an, "scenario": {"conductivity": {"activation_volume_cm3_per_mol": dv, "temperature_K": 298.15}},
           "relative_density": {"per_capture": [{"pressure_Pa": 0.5e9, "relative_density": 0.96},
                                                {"pressure_Pa": 1.7e9, "relative_density": 0.99}],
                                "max": 0.99, "final": 0.9},
           "heckel": {"Py_Pa": 0.95e9, "Py_stderr_Pa": 0.05e9, "fit_range_Pa": [0.5e9, 1.7e9]},
           "elastic_recovery": {"fraction": 0.1, "at_stack_pressures": [
               {"p_Pa": 1e7, "relative_density": 0.95, "drop_fraction": 0.04}]},
           "sizes": {"n": 100}, "backend": {"backend": "cpu", "device": "test"}, "wall_time_s": 1.0}
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(res))
    return d


def test_fig6b_shapes_and_summary(tmp_path, capsys, load_benchmark):
    m = load_benchmark("fig6b_table")
    xs = [0.1, 0.3, 0.5, 0.8, 1.2, 1.7]
    k = -1.4e-6 * 1e9 / (8.314462618 * 298.15)            # activation term, GPa⁻¹
    var = [0.6, 0.9, 1.0 * np.exp(k * 0.0), np.exp(k * 0.3), np.exp(k * 0.7), np.exp(k * 1.2)]
    stack = [0.6, 0.85, 0.95, 0.98, 0.99, 0.99]
    dv = _results(tmp_path, "var", "variable_pressure", xs, var)
    ds = _results(tmp_path, "stack", "stack_pressure", xs, stack)
    out = tmp_path / "f.json"
    assert m.main([str(dv), str(ds), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    v, s = doc["runs"]
    assert v["shape"]["p_of_maximum_GPa"] == 0.5
    assert v["shape"]["dln_sigma_dp_above_0p5_per_GPa"] == pytest.approx(k, rel=1e-6)
    assert v["shape"]["activation_term_per_GPa"] == pytest.approx(k, rel=1e-9)
    assert s["shape"]["rising_steps_fraction"] == 1.0 and s["shape"]["last_step_change"] == pytest.approx(0.0)
    assert v["summary"]["Py_in_die_GPa"] == pytest.approx(0.95) and v["summary"]["rho_at_1p7_GPa"] == 0.99
    assert v["summary"]["release"][0]["drop"] == 0.04
    assert "| 1.7 |" in capsys.readouterr().out


def test_fig6b_missing_run_is_a_clear_error(tmp_path, load_benchmark):
    m = load_benchmark("fig6b_table")
    with pytest.raises(SystemExit):
        m.main([str(tmp_path / "nope")])

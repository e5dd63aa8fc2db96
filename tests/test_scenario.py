"""Scenario files: every bad-input path gives a ScenarioError naming the key; shipped scenarios validate."""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from dem.scenario import (ScenarioError, apply_override, expand_protocol, load_scenario, parse_scenario,
                          resolved_dict, to_engine, to_toml)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml")) + [ROOT / "tests" / "data" / "tiny.toml"]
TINY = ROOT / "tests" / "data" / "tiny.toml"


def base() -> dict:
    """The tiny scenario with a plain two-stage protocol (load with captures, unload)."""
    d = tomllib.loads(TINY.read_text())
    d["protocol"] = [
        {"kind": "load", "target_pressure_GPa": 0.3, "punch_speed_m_per_s": 0.2, "capture_pressures_GPa": [0.1, 0.3]},
        {"kind": "unload", "target_pressure_GPa": 0.0, "punch_speed_m_per_s": 0.2},
    ]
    return d


def check_error(data: dict, *fragments: str):
    with pytest.raises(ScenarioError) as ei:
        parse_scenario(data, source_dir=TINY.parent)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_validate(path):
    scen = load_scenario(path)
    sizes, material, die, stages, params = to_engine(scen)
    assert sizes.n == scen.particles.count
    assert die.base_x_m > 0 and die.fill_height_m > 0
    assert stages and all(s.kind in ("load", "hold", "unload") for s in stages)
    assert material.youngs_modulus_Pa > 1e9
    # resolved TOML round-trips to the same scenario
    again = parse_scenario(tomllib.loads(to_toml(resolved_dict(scen))), source_dir=path.parent)
    assert resolved_dict(again) == resolved_dict(scen)


def test_schneider_scenarios_match_the_study():
    ref = tomllib.loads((ROOT.parent / "shared" / "reference" / "schneider2023.toml").read_text()) \
        if (ROOT.parent / "shared" / "reference" / "schneider2023.toml").is_file() else None
    v = load_scenario(ROOT / "scenarios" / "schneider2023_variable_pressure.toml")
    s = load_scenario(ROOT / "scenarios" / "schneider2023_stack_pressure.toml")
    for scen in (v, s):
        assert scen.particles.count == 9591
        assert scen.die.base_x_um == scen.die.base_y_um == 210.0
        assert math.isclose(scen.particles.shape, 1.94431) and math.isclose(scen.particles.scale_um, 7.04802)
        assert scen.conductivity.normalise_at_GPa == 0.5
        assert max(st.target_Pa() for st in scen.protocol) == pytest.approx(1.7e9)
        if ref:
            assert scen.particles.count == ref["dem_domain"]["n_particles"]
    assert v.conductivity.protocol == "variable_pressure"
    # the study's whole powder (fines to 2 µm, mass-scaled below 5 µm) with p_c 1.3 GPa (docs/calibration.md, *The
    # whole powder at full size*); both protocols the same material
    for scen in (v, s):
        assert scen.particles.d_min_um == 2.0 and scen.numerics.pore_collapse_MPa == 1300.0
        assert scen.numerics.mass_scaling_min_diameter_um == 5.0
    assert s.conductivity.protocol == "stack_pressure"
    caps = [c for e in expand_protocol(s) for c in e.captures]
    assert all(c.pressure_Pa == pytest.approx(0.1e9) for c in caps)
    assert 0.5e9 in [pytest.approx(c.pelletizing_Pa) for c in caps]


def test_units_are_converted_to_SI():
    sizes, material, die, stages, params = to_engine(parse_scenario(base()))
    assert sizes.d_min_m == pytest.approx(14e-6) and sizes.scale_m == pytest.approx(2e-6)
    assert material.youngs_modulus_Pa == pytest.approx(20e9)
    assert material.yield_stress_Pa == pytest.approx(base()["material"]["yield_stress_MPa"] * 1e6)
    assert die.base_x_m == pytest.approx(60e-6)
    assert stages[0].target_pressure_Pa == pytest.approx(0.3e9)
    assert stages[0].capture_pressures_Pa == pytest.approx((0.1e9, 0.3e9))
    assert stages[0].punch_speed_m_per_s == pytest.approx(0.2)


def test_mm_per_s_and_MPa_variants():
    d = base()
    d["protocol"][0].pop("target_pressure_GPa")
    d["protocol"][0]["target_pressure_MPa"] = 300.0
    d["protocol"][0].pop("punch_speed_m_per_s")
    d["protocol"][0]["punch_speed_mm_per_s"] = 50.0
    st = to_engine(parse_scenario(d))[3][0]
    assert st.target_pressure_Pa == pytest.approx(3e8) and st.punch_speed_m_per_s == pytest.approx(0.05)


@pytest.mark.parametrize("key", ["d_min_um", "d_max_um", "scale_um", "shape"])
def test_negative_size(key):
    d = base()
    d["particles"][key] = -1.0
    check_error(d, f"particles.{key}", "greater than 0")


def test_d_min_not_below_d_max():
    d = base()
    d["particles"]["d_min_um"] = 60.0
    d["particles"]["d_max_um"] = 50.0
    d["die"]["base_x_um"] = d["die"]["base_y_um"] = 200.0
    check_error(d, "particles.d_min_um", "must be < d_max_um", "60", "50")


def test_die_too_narrow():
    d = base()
    d["die"]["base_y_um"] = 40.0
    check_error(d, "die.base_y_um", "2·d_max", "52")


def test_gamma_needs_shape():
    d = base()
    del d["particles"]["shape"]
    check_error(d, "particles.shape", "gamma")


def test_histogram_file_missing():
    d = base()
    d["particles"]["distribution"] = "histogram"
    d["particles"]["histogram_csv"] = "no_such.csv"
    check_error(d, "particles.histogram_csv", "not found")


def test_protocol_starting_with_unload():
    d = base()
    d["protocol"] = [d["protocol"][1]]
    d["conductivity"]["enabled"] = False
    d["microstructure"]["enabled"] = False
    check_error(d, "protocol[0].target_pressure_GPa", "unload")


def test_hold_needs_time():
    d = base()
    d["protocol"].insert(1, {"kind": "hold", "target_pressure_GPa": 0.3, "hold_time_s": 0.0})
    check_error(d, "protocol[1].hold_time_s")


def test_load_needs_speed():
    d = base()
    del d["protocol"][0]["punch_speed_m_per_s"]
    check_error(d, "protocol[0].punch_speed_mm_per_s", "missing")


def test_empty_protocol():
    d = base()
    d["protocol"] = []
    check_error(d, "protocol")


def test_stack_protocol_needs_released_captures():
    d = base()
    d["conductivity"]["protocol"] = "stack_pressure"
    check_error(d, "conductivity.protocol", "stack_pressure")


def test_conductivity_pressure_not_captured():
    d = base()
    d["conductivity"]["pressures_GPa"] = [0.2]
    check_error(d, "conductivity.pressures_GPa", "0.2")


def test_protocol_cycles_expand():
    d = base()
    d["run"]["protocol_cycles"] = 2
    scen = parse_scenario(d)
    ex = expand_protocol(scen)
    assert [e.kind for e in ex] == ["load", "unload", "load", "unload"]
    assert sum(len(e.captures) for e in ex) == 4


# ------------------------------------------------------------------------------------------ overrides
def test_set_override_applies_and_validates():
    scen = load_scenario(TINY, ["particles.count=80", "run.name=\"x\"", "protocol.1.target_pressure_GPa=0.4",
                                "protocol.1.capture_pressures_GPa=[0.2, 0.4]", "conductivity.normalise_at_GPa=0.4"])
    assert scen.particles.count == 80 and scen.run.name == "x"
    assert scen.protocol[1].target_Pa() == pytest.approx(0.4e9)


def test_set_bare_word_is_a_string():
    scen = load_scenario(TINY, ["run.backend=auto"])
    assert scen.run.backend == "auto"


@pytest.mark.parametrize("ov, frag", [
    ("particles.count=-5", "particles.count"),
    ("particles.count=abc", "particles.count"),
    ("particles.count=[1", "particles.count"),
    ("particles.nope=1", "particles.nope"),
    ("noequals", "key.path=value"),
    ("protocol.9.kind=\"load\"", "protocol.9"),
    ("particles.count.x=1", "particles.count"),
    ("particles.d_min_um=30", "particles.d_min_um"),
])
def test_bad_set_override(ov, frag):
    with pytest.raises(ScenarioError) as ei:
        load_scenario(TINY, [ov])
    assert frag in str(ei.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[run\nname = 1")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(p)


def test_apply_override_creates_section():
    d = {"run": {}}
    apply_override(d, "microstructure.enabled=true")
    assert d["microstructure"]["enabled"] is True


def test_histogram_csv_relative_to_scenario(tmp_path):
    (tmp_path / "psd").mkdir()
    (tmp_path / "psd" / "sizes.csv").write_text("d_low_um,d_high_um,count\n14,18,10\n18,22,30\n22,26,5\n")
    d = base()
    d["particles"] = {"count": 50, "distribution": "histogram", "histogram_csv": "psd/sizes.csv",
                      "d_min_um": 14.0, "d_max_um": 26.0}
    text = to_toml(d)
    (tmp_path / "s.toml").write_text(text)
    scen = load_scenario(tmp_path / "s.toml")
    assert scen.particles.histogram_csv is None
    assert scen.particles.histogram_bins_um == [(14.0, 18.0, 10.0), (18.0, 22.0, 30.0), (22.0, 26.0, 5.0)]
    sizes = to_engine(scen)[0]
    from dem.sizes import sample_diameters
    dd = sample_diameters(sizes.n, **sizes.kwargs(), seed=1)
    assert dd.size == 50 and dd.min() >= 14e-6 and dd.max() <= 26e-6
    # the same draw as from the CSV itself: reading it into the scenario changes no diameter
    kw = {**sizes.kwargs(), "histogram_bins_m": None, "histogram_csv": tmp_path / "psd" / "sizes.csv"}
    assert (sample_diameters(sizes.n, **kw, seed=1) == dd).all()


@pytest.mark.parametrize("unit", ["um", "m"])
def test_resolved_histogram_scenario_loads_without_its_csv(tmp_path, unit):
    """The resolved form of a histogram scenario holds the bins: it loads from another folder after the CSV
    is gone, resolves to itself and draws the same diameters (a run folder needs no copy of the CSV)."""
    import numpy as np

    from dem.setup import make_sizes

    f = 1.0 if unit == "um" else 1e-6
    rows = "".join(f"{a * f!r},{b * f!r},{w}\n" for a, b, w in ((14, 18, 1), (18, 22, 2.5), (22, 26, 1)))
    (tmp_path / "sizes.csv").write_text(f"# comment\nd_low_{unit},d_high_{unit},percent\n{rows}")
    d = base()
    d["particles"] = {"count": 40, "distribution": "histogram", "histogram_csv": "sizes.csv", "weighting": "volume"}
    scen = parse_scenario(d, source_dir=tmp_path)
    text = to_toml(resolved_dict(scen))
    assert "histogram_csv" not in text and "histogram_bins_um = [\n" in text
    (tmp_path / "sizes.csv").unlink()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "scenario.resolved.toml").write_text(text)
    again = load_scenario(tmp_path / "run" / "scenario.resolved.toml")
    assert to_toml(resolved_dict(again)) == text
    assert np.array_equal(make_sizes(again), make_sizes(scen))
    assert again.particles.histogram_bins_um[1][2] == 2.5


@pytest.mark.parametrize("bins, fragment", [
    ([[14, 18, 1], [18, 18, 1]], "histogram_bins_um[1]: needs 0 ≤ d_low_um < d_high_um"),
    ([[14, 18, -1], [18, 22, 2]], "histogram_bins_um[0]: the weight must be ≥ 0"),
    ([[14, 18, 0]], "histogram_bins_um: no bin has weight"),
    ([[1, 2, 1]], "histogram_bins_um: no bin with weight lies inside"),
    ([[14, 18]], "histogram_bins_um[0]"),
])
def test_inline_histogram_bins_are_checked(bins, fragment):
    d = base()
    d["particles"] = {"count": 40, "distribution": "histogram", "histogram_bins_um": bins, "d_min_um": 10.0}
    check_error(d, "particles." + fragment)


def test_histogram_csv_and_bins_together_refused(tmp_path):
    (tmp_path / "sizes.csv").write_text("d_low_um,d_high_um,count\n14,18,1\n")
    d = base()
    d["particles"] = {"count": 40, "distribution": "histogram", "histogram_csv": str(tmp_path / "sizes.csv"),
                      "histogram_bins_um": [[14, 18, 1]]}
    check_error(d, "particles.histogram_csv", "not both")


@pytest.mark.parametrize("rng", [[1.7, 0.5], [0.5], [-0.1, 1.0]])
def test_heckel_fit_range_is_checked(rng):
    d = base()
    d["heckel"] = {"fit_range_GPa": rng}
    check_error(d, "heckel.fit_range_GPa", "p_min < p_max")


def test_heckel_fit_range_accepted():
    d = base()
    d["heckel"] = {"fit_range_GPa": [0.5, 1.7], "stack_pressures_GPa": [0.1, 0.01]}
    s = parse_scenario(d, source_dir=TINY.parent)
    assert s.heckel.fit_range_GPa == [0.5, 1.7] and s.heckel.stack_pressures_GPa == [0.01, 0.1]
    assert "heckel" in tomllib.loads(to_toml(resolved_dict(s)))


def test_pore_collapse_needs_its_pressure():
    d = base()
    d["numerics"]["bulk_model"] = "pore_collapse"
    check_error(d, "numerics.pore_collapse_MPa", "required")
    d["numerics"]["pore_collapse_MPa"] = 1500.0
    _, _, _, _, params = to_engine(parse_scenario(d, source_dir=TINY.parent))
    assert params.pore_collapse_pressure_Pa == pytest.approx(1.5e9)


def test_numerics_defaults_are_the_engine_defaults():
    """An omitted [numerics] key gives the engine's own default (one place of truth, dem.types)."""
    from dem.types import SimParams

    d = base()
    for k in ("max_overlap_fraction", "bulk_stiffness_fraction"):
        d.get("numerics", {}).pop(k, None)
    params = to_engine(parse_scenario(d))[4]
    assert params.max_overlap_fraction == SimParams().max_overlap_fraction == 1.0
    assert params.bulk_stiffness_fraction == SimParams().bulk_stiffness_fraction


def _set(*path_value):
    """An edit that sets d[p0][p1]… = value (the last argument)."""
    *path, value = path_value

    def edit(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _del(*path):
    """An edit that deletes d[p0][p1]…."""
    def edit(d):
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return edit


_BAD_EDITS = {   # id: (edit of the base scenario dict, the key the error must name, fragments it must contain)
    "unknown_key_suggested": (_set("particles", "cuont", 3), "particles.cuont", "unknown key", "count"),
    "unknown_section": (_set("partcles", {}), "partcles", "unknown key"),
    "unknown_key_in_stage": (_set("protocol", 1, "target_pressure_Pa", 0), "protocol[1].target_pressure_Pa",
                             "unknown key"),
    "missing_key": (_del("particles", "count"), "particles.count", "missing"),
    "missing_section": (_del("material"), "material", "missing"),
    "bad_enum": (_set("run", "backend", "opencl"), "run.backend"),
    "thornton_ning_needs_yield_stress": (_del("material", "yield_stress_MPa"), "material.yield_stress_MPa",
                                         "thornton_ning"),
    "both_unit_variants": (_set("protocol", 0, "target_pressure_MPa", 300.0), "protocol[0].target_pressure_MPa",
                           "not both"),
    "unload_above_previous_load": (_set("protocol", 1, "target_pressure_GPa", 0.4),
                                   "protocol[1].target_pressure_GPa", "below the previous target"),
    "load_below_current_pressure": (lambda d: d["protocol"].append(
        {"kind": "load", "target_pressure_GPa": 0.0, "punch_speed_m_per_s": 0.1}),
        "protocol[2].target_pressure_GPa", "above the current pressure"),
    "capture_outside_stage_range": (_set("protocol", 0, "capture_pressures_GPa", [0.1, 0.5]),
                                    "protocol[0].capture_pressures_GPa", "0.5"),
}


@pytest.mark.parametrize("case", list(_BAD_EDITS))
def test_bad_scenario_is_refused_naming_the_key(case):
    edit, key, *fragments = _BAD_EDITS[case]
    d = base()
    edit(d)
    check_error(d, key, *fragments)


@pytest.mark.parametrize("bad,fragment", [(-1e-6, "greater than or equal to 0"), (float("inf"), "finite"),
                                          ("abc", "valid number")])
def test_interface_resistance_key(bad, fragment):
    d = base()
    d.setdefault("conductivity", {})["interface_resistance_ohm_m2"] = bad
    check_error(d, "conductivity.interface_resistance_ohm_m2", fragment)
    d["conductivity"]["interface_resistance_ohm_m2"] = 2e-6
    assert parse_scenario(d, source_dir=TINY.parent).conductivity.interface_resistance_ohm_m2 == 2e-6


def test_volume_correction_every_reaches_the_engine_and_is_at_least_one():
    d = base()
    d.setdefault("numerics", {})["volume_correction_every"] = 5
    assert to_engine(parse_scenario(d))[4].volume_correction_every == 5
    assert to_engine(parse_scenario(base()))[4].volume_correction_every == 10
    d["numerics"]["volume_correction_every"] = 0
    with pytest.raises(ScenarioError, match="numerics.volume_correction_every"):
        parse_scenario(d)

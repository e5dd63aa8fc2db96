"""Cross-field checks of a scenario (:func:`check_scenario`): what one section's validators cannot see, each
problem a :class:`ScenarioError` naming the key path and the fix."""
from __future__ import annotations

import math

from dem.scenario_engine import _mean_d3_um3, d_max_estimate_um, expand_protocol
from dem.scenario_schema import HISTOGRAM_COLUMNS, Scenario, ScenarioError


def _one_of(section: str, obj, a: str, b: str, required: bool = True) -> None:
    va, vb = getattr(obj, a), getattr(obj, b)
    if va is not None and vb is not None:
        raise ScenarioError(f"{section}.{a}: give either {a} or {b}, not both")
    if required and va is None and vb is None:
        raise ScenarioError(f"{section}.{a}: missing; give {a} or {b}")


# expected loose solid fraction above which a given fill height is refused (insertion jams near 0.35–0.4)
LOOSE_JAM_FRACTION = 0.45


def check_scenario(scen: Scenario) -> None:
    """Cross-field checks; raise ScenarioError naming the key path."""
    p = scen.particles
    if p.distribution == "gamma":
        for k in ("shape", "scale_um"):
            if getattr(p, k) is None:
                raise ScenarioError(f"particles.{k}: required for distribution = \"gamma\"")
    elif p.distribution == "histogram":
        if p.histogram_bins_um is None:
            raise ScenarioError("particles.histogram_csv: required for distribution = \"histogram\" "
                                f"(CSV with columns {HISTOGRAM_COLUMNS}; or the bins inline, histogram_bins_um)")
        from dem.preflight import check_histogram
        check_histogram(scen)
    elif p.distribution == "monodisperse":
        if p.diameter_um is None:
            raise ScenarioError("particles.diameter_um: required for distribution = \"monodisperse\"")
    if p.d_min_um is not None and p.d_max_um is not None and not p.d_min_um < p.d_max_um:
        raise ScenarioError(f"particles.d_min_um: must be < d_max_um (got {p.d_min_um:g} ≥ {p.d_max_um:g}); "
                            "lower d_min_um or raise d_max_um")

    m = scen.material
    if m.adhesion_J_per_m2 > 0 and m.contact_model != "thornton_ning":
        raise ScenarioError("material.adhesion_J_per_m2: bonds plastically flattened contacts; set contact_model = "
                            "\"thornton_ning\" or adhesion_J_per_m2 = 0")
    if m.contact_model == "thornton_ning" and m.yield_stress_MPa is None:
        raise ScenarioError("material.yield_stress_MPa: required for contact_model = \"thornton_ning\"")
    n = scen.numerics
    if n.bulk_model == "pore_collapse":
        if not n.volume_correction:
            raise ScenarioError("numerics.bulk_model: \"pore_collapse\" acts on volume-corrected particles; set "
                                "numerics.volume_correction = true or bulk_model = \"elastic\"")
        if n.pore_collapse_MPa is None:
            raise ScenarioError("numerics.pore_collapse_MPa: required for bulk_model = \"pore_collapse\" (calibrated "
                                "1500 with yield_stress_MPa = 420 for the study's powder, docs/calibration.md)")

    d = scen.die
    if d.fill_height_um is not None and d.column_height_um is not None:
        raise ScenarioError("die.fill_height_um: give either fill_height_um or column_height_um, not both")
    dmax = d_max_estimate_um(scen)
    if math.isfinite(dmax):
        for k in ("base_x_um", "base_y_um"):
            v = getattr(d, k)
            if v < 2 * dmax:
                raise ScenarioError(f"die.{k}: must be ≥ 2·d_max = {2 * dmax:g} µm for a periodic die "
                                    f"(got {v:g}); widen the die or set particles.d_max_um smaller")
    h = d.fill_height_um or d.column_height_um
    hkey = "die.fill_height_um" if d.fill_height_um is not None else "die.column_height_um"
    if h is not None and math.isfinite(dmax) and h < 2 * dmax:
        raise ScenarioError(f"{hkey}: must be ≥ 2·d_max = {2 * dmax:g} µm (got {h:g})")
    d3 = _mean_d3_um3(scen)
    if h is not None and d3 is not None:
        frac = p.count * math.pi / 6 * d3 / (d.base_x_um * d.base_y_um * h)
        if frac > LOOSE_JAM_FRACTION:
            need = p.count * math.pi / 6 * d3 / (0.3 * d.base_x_um * d.base_y_um)
            raise ScenarioError(f"{hkey}: {p.count} particles would fill {frac:.2f} of a {h:g} µm column; random "
                                f"insertion jams near 0.35–0.4: give {hkey} ≥ {need:.4g} µm (solid fraction "
                                "0.30), or leave it out and set die.loose_fraction")

    # protocol: stage by stage, tracking the pressure the punch is at
    p_now = 0.0
    for i, st in enumerate(scen.protocol):
        where = f"protocol[{i}]"
        _one_of(where, st, "target_pressure_MPa", "target_pressure_GPa")
        _one_of(where, st, "punch_speed_mm_per_s", "punch_speed_m_per_s", required=st.kind != "hold")
        _one_of(where, st, "capture_pressures_MPa", "capture_pressures_GPa", required=False)
        tgt = st.target_Pa()
        caps = st.captures_Pa()
        unit_key = "target_pressure_GPa" if st.target_pressure_GPa is not None else "target_pressure_MPa"
        cap_key = "capture_pressures_GPa" if st.capture_pressures_GPa is not None else "capture_pressures_MPa"
        if st.kind == "load":
            if not tgt > p_now:
                raise ScenarioError(f"{where}.{unit_key}: a load stage must go above the current pressure "
                                    f"{p_now / 1e9:g} GPa (got {tgt / 1e9:g} GPa); use kind = \"unload\" "
                                    "or a higher target")
            for c in caps:
                if not (p_now < c <= tgt):
                    raise ScenarioError(f"{where}.{cap_key}: capture pressure {c / 1e9:g} GPa is not crossed "
                                        f"while loading from {p_now / 1e9:g} to {tgt / 1e9:g} GPa")
            if caps != sorted(caps):
                raise ScenarioError(f"{where}.{cap_key}: list the capture pressures in increasing order")
        elif st.kind == "unload":
            if i == 0 or not tgt < p_now:
                raise ScenarioError(f"{where}.{unit_key}: an unload target must be below the previous "
                                    f"target {p_now / 1e9:g} GPa (got {tgt / 1e9:g} GPa)")
            for c in caps:
                if not (tgt <= c < p_now):
                    raise ScenarioError(f"{where}.{cap_key}: capture pressure {c / 1e9:g} GPa is not crossed "
                                        f"while unloading from {p_now / 1e9:g} to {tgt / 1e9:g} GPa")
            if caps != sorted(caps, reverse=True):
                raise ScenarioError(f"{where}.{cap_key}: list the capture pressures in decreasing order "
                                    "(the order they are crossed while unloading)")
        else:  # hold
            if i == 0:
                raise ScenarioError(f"{where}.kind: the protocol must start with a load stage")
            if not st.hold_time_s > 0:
                raise ScenarioError(f"{where}.hold_time_s: a hold stage needs hold_time_s > 0")
            for c in caps:
                if not math.isclose(c, tgt, rel_tol=1e-9):
                    raise ScenarioError(f"{where}.{cap_key}: a hold captures at its own target "
                                        f"({tgt / 1e9:g} GPa); use capture = true")
        if st.kind == "load" and st.repeat > 1:
            raise ScenarioError(f"{where}.repeat: a load stage cannot repeat (its second run would start "
                                "at its own target); repeat the load/unload pair with run.protocol_cycles")
        p_now = tgt
    if scen.run.protocol_cycles > 1 and scen.protocol[-1].kind == "load":
        raise ScenarioError("run.protocol_cycles: the protocol must end below its first load target to "
                            "repeat; end with an unload stage")
    if scen.run.protocol_cycles > 1 and scen.protocol[0].target_Pa() <= scen.protocol[-1].target_Pa():
        raise ScenarioError("run.protocol_cycles: the first load target must be above the last stage's "
                            "target for the cycle to repeat")

    c = scen.conductivity
    if c.enabled:
        if c.voxel_um is not None and c.voxels_per_dmin is not None:
            raise ScenarioError("conductivity.voxel_um: give either voxel_um or voxels_per_dmin, not both")
        caps_all = [cp for s in expand_protocol(scen) for cp in s.captures]
        if not caps_all:
            raise ScenarioError("conductivity.enabled: no packing is captured; add capture_pressures_GPa "
                                "to a [[protocol]] stage or set conductivity.enabled = false")
        if c.protocol == "stack_pressure" and not any(cp.kind != "load" for cp in caps_all):
            raise ScenarioError("conductivity.protocol: \"stack_pressure\" analyses packings captured after "
                                "release (unload/hold stages); none is captured")
        if c.protocol == "variable_pressure" and not any(cp.kind == "load" for cp in caps_all):
            raise ScenarioError("conductivity.protocol: \"variable_pressure\" analyses packings captured "
                                "while loading; no load stage has capture pressures")
        if c.pressures_GPa:
            avail = [cp.pressure_Pa / 1e9 for cp in caps_all] + [cp.pelletizing_Pa / 1e9 for cp in caps_all]
            for pg in c.pressures_GPa:
                if not any(math.isclose(pg, a, rel_tol=1e-6, abs_tol=1e-9) for a in avail):
                    raise ScenarioError(f"conductivity.pressures_GPa: {pg:g} GPa is not a capture pressure "
                                        "(nor a pelletizing pressure) of the protocol")
        from dem.preflight import check_conductivity_values
        check_conductivity_values(scen)
    ms = scen.microstructure
    if ms.enabled:
        grid = [ms.rve_grid] * 3 if isinstance(ms.rve_grid, int) else list(ms.rve_grid)
        if len(grid) != 3 or any(g < 1 for g in grid):
            raise ScenarioError(f"microstructure.rve_grid: an integer ≥ 1 or three of them (got {ms.rve_grid})")
        if not c.enabled:
            raise ScenarioError("microstructure.enabled: needs conductivity.enabled = true (it analyses the "
                                "same voxelised packings)")

"""Values derived from a validated scenario: the expanded protocol, the SI engine objects (:func:`to_engine`),
size estimates used by the checks, and the resolved scenario as data and TOML."""
from __future__ import annotations

import math
from dataclasses import dataclass

from dem.scenario_schema import MaterialSection, Scenario, ScenarioError
from dem.types import Die, Material, SimParams, Stage, capture_specs


def d_max_estimate_um(scen: Scenario) -> float:
    """Largest diameter the sampler can draw (µm), for the die-width check and voxel choice."""
    p = scen.particles
    if p.distribution == "monodisperse":
        return float(p.diameter_um)
    if p.d_max_um is not None:
        return float(p.d_max_um)
    if p.distribution == "gamma":
        from scipy.stats import gamma
        return float(gamma.ppf(0.9999, p.shape, scale=p.scale_um))
    hi = [b for _, b, w in p.histogram_bins_um or () if w > 0]     # the largest bin edge with weight
    return float(max(hi)) if hi else float("nan")


def _mean_d3_um3(scen: Scenario) -> float | None:
    """E[d³] in µm³ of the untruncated size model (gamma: a(a+1)(a+2) b³), None for a histogram."""
    p = scen.particles
    if p.distribution == "monodisperse":
        return p.diameter_um ** 3
    if p.distribution == "gamma" and p.shape is not None and p.scale_um is not None:
        return p.shape * (p.shape + 1) * (p.shape + 2) * p.scale_um ** 3
    return None


@dataclass(frozen=True)
class ExpandedStage:
    stage: Stage
    kind: str
    captures: tuple             # CaptureSpec


def expand_protocol(scen: Scenario) -> list[ExpandedStage]:
    """[[protocol]] × repeat × run.protocol_cycles → engine Stages (SI) with their capture specs."""
    stages = []
    for cyc in range(scen.run.protocol_cycles):
        for st in scen.protocol:
            for r in range(st.repeat):
                tgt = st.target_Pa()
                caps = list(st.captures_Pa())
                if st.kind == "hold" and st.capture and not caps:
                    caps = [tgt]
                name = st.name or f"{st.kind} {tgt / 1e9:g} GPa"
                if scen.run.protocol_cycles > 1:
                    name += f" (cycle {cyc + 1})"
                if st.repeat > 1:
                    name += f" #{r + 1}"
                stages.append(Stage(kind=st.kind, target_pressure_Pa=tgt, punch_speed_m_per_s=st.speed_m_per_s(),
                                    hold_time_s=st.hold_time_s, capture_pressures_Pa=tuple(caps), name=name,
                                    cycle=cyc))
    specs = capture_specs(stages)
    return [ExpandedStage(stage, stage.kind, tuple(c for c in specs if c.stage_index == i))
            for i, stage in enumerate(stages)]


@dataclass(frozen=True)
class SizesConfig:
    """Keyword arguments of ``dem.sizes.sample_diameters`` (SI)."""

    n: int
    distribution: str
    shape: float | None
    scale_m: float | None
    d_min_m: float | None
    d_max_m: float | None
    weighting: str
    histogram_bins_m: tuple[tuple[float, float, float], ...] | None     # rows (d_low_m, d_high_m, weight)
    diameter_m: float | None

    def kwargs(self) -> dict:
        return dict(distribution=self.distribution, shape=self.shape, scale_m=self.scale_m,
                    d_min_m=self.d_min_m, d_max_m=self.d_max_m, weighting=self.weighting,
                    histogram_bins_m=self.histogram_bins_m, diameter_m=self.diameter_m)


def _um(x):
    return None if x is None else float(x) * 1e-6


def engine_material(m: MaterialSection) -> Material:
    """A [material] section (GPa, MPa) as the engine's :class:`dem.types.Material` (SI)."""
    try:
        return Material(density_kg_m3=m.density_kg_m3, youngs_modulus_Pa=m.youngs_modulus_GPa * 1e9,
                        poisson_ratio=m.poisson_ratio,
                        yield_stress_Pa=None if m.yield_stress_MPa is None else m.yield_stress_MPa * 1e6,
                        friction=m.friction, wall_friction=m.wall_friction, restitution=m.restitution,
                        rolling_friction=m.rolling_friction, contact_model=m.contact_model,
                        adhesion_J_per_m2=m.adhesion_J_per_m2)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None


def to_engine(scen: Scenario, *, backend: str | None = None):
    """Scenario → (SizesConfig, Material, Die, list[Stage], SimParams), all SI.

    ``Die.fill_height_m`` is the scenario's fill height or, when only a loose fraction is given, an
    estimate from the expected solid volume; the pipeline replaces it with the loose packing's height.
    """
    p = scen.particles
    bins = None if p.histogram_bins_um is None else tuple((_um(a), _um(b), float(w)) for a, b, w in p.histogram_bins_um)
    sizes = SizesConfig(n=p.count, distribution=p.distribution, shape=p.shape, scale_m=_um(p.scale_um),
                        d_min_m=_um(p.d_min_um), d_max_m=_um(p.d_max_um), weighting=p.weighting,
                        histogram_bins_m=bins, diameter_m=_um(p.diameter_um))
    material = engine_material(scen.material)
    d = scen.die
    h_um = d.fill_height_um or d.column_height_um
    if h_um is None:
        # expected solid volume from the mean cube of the diameters (gamma: E[d^3] = a(a+1)(a+2) b^3)
        if p.distribution == "monodisperse":
            d3 = p.diameter_um ** 3
        elif p.distribution == "gamma":
            d3 = p.shape * (p.shape + 1) * (p.shape + 2) * p.scale_um ** 3
        else:
            d3 = (d_max_estimate_um(scen) / 2) ** 3
        v_solid = p.count * math.pi / 6 * d3
        h_um = v_solid / (d.loose_fraction * d.base_x_um * d.base_y_um)
    die = Die(base_x_m=d.base_x_um * 1e-6, base_y_m=d.base_y_um * 1e-6, fill_height_m=h_um * 1e-6)
    stages = [e.stage for e in expand_protocol(scen)]
    n = scen.numerics
    params = SimParams(dt_safety=n.dt_safety, dt_s=n.dt_s, mass_scaling=n.mass_scaling,
                       mass_scaling_min_diameter_m=(None if n.mass_scaling_min_diameter_um is None else
                                                    n.mass_scaling_min_diameter_um * 1e-6), damping=n.damping,
                       skin_fraction=n.skin_fraction, volume_correction=n.volume_correction,
                       volume_correction_every=n.volume_correction_every,
                       max_overlap_fraction=n.max_overlap_fraction, servo_gain=n.servo_gain,
                       servo_integral=n.servo_integral, history_every=scen.run.history_every,
                       frames_every=scen.run.frames_every if scen.run.write_frames else 0,
                       max_steps=n.max_steps, backend=backend or scen.run.backend,
                       bulk_stiffness_fraction=n.bulk_stiffness_fraction,
                       pore_collapse_pressure_Pa=(None if n.bulk_model != "pore_collapse" else
                                                  n.pore_collapse_MPa * 1e6),
                       default_fp=scen.run.default_fp)
    return sizes, material, die, stages, params


def resolved_dict(scen: Scenario) -> dict:
    """The scenario with every default filled in, as plain JSON/TOML-able data."""
    return scen.model_dump(mode="json", exclude={"source_dir"})


def to_toml(data: dict) -> str:
    """Minimal TOML writer for a resolved scenario (tables, arrays of tables, scalars, lists)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, list) and v and all(isinstance(x, list) for x in v):     # a table: one row a line
            return "[\n" + "".join(f"    {val(x)},\n" for x in v) + "]"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = []
    for sec, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{sec}]]")
                lines += [f"{k} = {val(v)}" for k, v in item.items() if v is not None]
                lines.append("")
        elif isinstance(body, dict):
            lines.append(f"[{sec}]")
            lines += [f"{k} = {val(v)}" for k, v in body.items() if v is not None]
            lines.append("")
    return "\n".join(lines)

"""Checks of a scenario against what a run will meet, before anything is written: the histogram's bins,
the conductivity values, the size model as the sampler draws it, the time step, and the memory of this
machine (particles and the conduction solve's voxel grid). ``pelletsim validate`` and ``run`` both call
:func:`preflight`; every problem is a :class:`dem.scenario.ScenarioError` naming the scenario key.
"""
from __future__ import annotations

import math

from fva.conduction import available_memory_bytes

from dem.scenario import Scenario, ScenarioError, _mean_d3_um3, expand_protocol, to_engine

__all__ = ["preflight", "check_resources", "check_time_step", "check_histogram", "check_conductivity_values",
           "BYTES_PER_PARTICLE"]


def check_histogram(scen: Scenario, key: str = "particles.histogram_bins_um") -> None:
    """The histogram bins (``particles.histogram_bins_um``, read from histogram_csv when given): edges
    0 ≤ d_low_um < d_high_um, weights ≥ 0 with a positive sum, and weight inside [d_min_um, d_max_um];
    ``key`` names the scenario key in the messages."""
    p = scen.particles
    bins = p.histogram_bins_um or []
    for k, (lo, hi, w) in enumerate(bins):
        if not 0 <= lo < hi:
            raise ScenarioError(f"{key}[{k}]: needs 0 ≤ d_low_um < d_high_um (got {lo:g}, {hi:g}); rows are "
                                "[d_low_um, d_high_um, weight]")
        if w < 0:
            raise ScenarioError(f"{key}[{k}]: the weight must be ≥ 0 (got {w:g})")
    if not sum(w for *_, w in bins) > 0:
        raise ScenarioError(f"{key}: no bin has weight; give at least one row [d_low_um, d_high_um, weight > 0]")
    lo_w = -math.inf if p.d_min_um is None else p.d_min_um
    hi_w = math.inf if p.d_max_um is None else p.d_max_um
    if not any(w > 0 and min(hi, hi_w) > max(lo, lo_w) for lo, hi, w in bins):
        raise ScenarioError(f"{key}: no bin with weight lies inside [d_min_um, d_max_um] = "
                            f"[{p.d_min_um}, {p.d_max_um}] µm; widen the window or check the CSV's units")


def check_conductivity_values(scen: Scenario) -> None:
    """σ_bulk(p) = σ_ref·exp(−ΔV(p − p_ref)/(RT)) must be a finite, positive conductivity at every capture
    pressure (Schneider et al. 2023, Eq. 3), checked with the scenario's own key names."""
    c = scen.conductivity
    if abs(c.activation_volume_cm3_per_mol) > 1000:
        raise ScenarioError(f"conductivity.activation_volume_cm3_per_mol: {c.activation_volume_cm3_per_mol:g} is "
                            "implausibly large (|ΔV| ≤ 1000 cm³/mol; t-Li7SiPS8: 1.4)")
    r_gas = 8.314462618
    caps = [cp.pressure_Pa for s in expand_protocol(scen) for cp in s.captures]
    for p in caps:
        arg = -c.activation_volume_cm3_per_mol * 1e-6 * (p - c.p_ref_GPa * 1e9) / (r_gas * c.temperature_K)
        s_bulk = c.sigma_ref_mS_per_cm * 0.1 * math.exp(min(arg, 700.0))
        if not (arg < 700.0 and s_bulk > 0 and math.isfinite(s_bulk)):
            raise ScenarioError(f"conductivity.activation_volume_cm3_per_mol: σ_bulk at {p / 1e9:g} GPa "
                                f"(sigma_ref_mS_per_cm·exp(−ΔV(p − p_ref_GPa)/(R·temperature_K))) is "
                                f"{'infinite' if arg >= 700 else 'zero'} in double precision; check "
                                "activation_volume_cm3_per_mol, p_ref_GPa and temperature_K")


# host + device bytes per particle of a run (engine state ≈ 0.5 kB, a 12-pair-per-particle Verlet list with
# its records and contact histories ≈ 2.8 kB, the host copies of frames, captures and the loose insertion):
# a rounded-up estimate, so that a run refused here would certainly not have fitted
BYTES_PER_PARTICLE = 4096


def check_resources(scen: Scenario, available_bytes: int | None = None) -> None:
    """Refuse, before anything is allocated or written, a scenario this machine cannot hold in memory:
    the particles (``particles.count``) and the voxel grid of the conductivity stage (its smallest possible
    size: the die base × the fully dense thickness, voxel from voxel_um or d_min/voxels_per_dmin)."""
    avail = available_memory_bytes() if available_bytes is None else int(available_bytes)
    p = scen.particles
    need = p.count * BYTES_PER_PARTICLE
    gib = 2.0 ** 30
    if avail is not None and need > avail:
        raise ScenarioError(f"particles.count: {p.count:,} particles need about {need / gib:.3g} GiB of memory, "
                            f"this machine has {avail / gib:.3g} GiB available; lower particles.count "
                            f"(≈ {avail // BYTES_PER_PARTICLE:,} at most here)")
    c = scen.conductivity
    if not c.enabled:
        return
    d = scen.die
    d3 = _mean_d3_um3(scen)
    if d3 is not None and p.d_max_um is not None:
        d3 = min(d3, p.d_max_um ** 3)         # a lower bound of the truncated mean
    d_min = p.diameter_um if p.distribution == "monodisperse" else p.d_min_um
    if c.voxel_um is not None:
        vox = c.voxel_um
    elif d_min is not None:
        vox = d_min / (c.voxels_per_dmin or 4.0)
    else:
        return                       # the voxel follows the sampled sizes: checked by the run
    if d3 is None:
        return
    t_dense = p.count * math.pi / 6 * d3 / (d.base_x_um * d.base_y_um)     # µm at relative density 1
    shape = [max(1, math.ceil(t_dense / vox)), math.ceil(d.base_y_um / vox), math.ceil(d.base_x_um / vox)]
    nvox = shape[0] * shape[1] * shape[2]
    key = "conductivity.voxel_um" if c.voxel_um is not None else "conductivity.voxels_per_dmin"
    if nvox > 2 ** 31 - 1:
        raise ScenarioError(f"{key}: the voxel grid of a capture would hold at least {nvox:.3g} voxels, above "
                            "Taichi's 2**31-element array limit; use a larger voxel")
    if nvox > c.max_voxels:
        raise ScenarioError(f"{key}: the voxel grid of a capture would hold at least {nvox:.3g} voxels "
                            f"(voxel {vox:.3g} µm) > conductivity.max_voxels = {c.max_voxels:.3g}; use a larger "
                            "voxel")
    try:
        from fva.conduction import estimate_memory_bytes
        need_v = estimate_memory_bytes(shape, scen.run.default_fp, c.preconditioner if c.preconditioner in
                                       ("mg", "jacobi") else "mg")
    except Exception:
        need_v = 48 * nvox
    if avail is not None and need_v > avail:
        raise ScenarioError(f"{key}: the conduction solve of a capture needs at least {need_v / gib:.3g} GiB "
                            f"(grid {shape[2]}×{shape[1]}×{shape[0]} voxels of {vox:.3g} µm), this machine has "
                            f"{avail / gib:.3g} GiB available; use a larger voxel or fewer particles")


def _check_sizes_and_dt(scen: Scenario) -> None:
    """The size model as the sampler reads it (a draw of up to 256 diameters: truncation window, weighting)
    and an explicit numerics.dt_s against the stability bound 0.5 t_R of the smallest particle drawn,
    t_R = π r √(ρ_s/G)/(0.1631ν + 0.8766) (ρ_s = mass_scaling·ρ; as dem.simulation.time_step)."""
    from dem.sizes import sample_diameters

    sizes = to_engine(scen)[0]
    try:
        d = sample_diameters(min(sizes.n, 256), **sizes.kwargs(), seed=scen.run.seed)
    except ValueError as exc:
        msg = str(exc)
        for a, b in (("d_min_m", "d_min_um"), ("d_max_m", "d_max_um"), ("scale_m", "scale_um"),
                     ("diameter_m", "diameter_um")):
            msg = msg.replace(a, b)
        raise ScenarioError(f"particles: {msg}") from None
    r_min = 0.5 * float(min(d.min(), (scen.particles.d_min_um or float("inf")) * 1e-6))
    d_ms = scen.numerics.mass_scaling_min_diameter_um
    check_time_step(scen, max(r_min, 0.5e-6 * d_ms) if d_ms else r_min)


def check_time_step(scen: Scenario, r_min_m: float) -> None:
    """An explicit numerics.dt_s must be ≤ 0.5 t_R of the smallest particle (radius ``r_min_m``; with
    numerics.mass_scaling_min_diameter_um the caller passes max(r_min, d_ms/2)),
    t_R = π r √(ρ_s/G)/(0.1631ν + 0.8766), ρ_s = mass_scaling·ρ (as dem.simulation.time_step)."""
    n, m = scen.numerics, scen.material
    if n.dt_s is None:
        return
    G = m.youngs_modulus_GPa * 1e9 / (2 * (1 + m.poisson_ratio))
    t_r = math.pi * r_min_m * math.sqrt(m.density_kg_m3 * n.mass_scaling / G) / (0.1631 * m.poisson_ratio + 0.8766)
    if n.dt_s > 0.5 * t_r:
        raise ScenarioError(f"numerics.dt_s: {n.dt_s:.4g} s is above the stability bound {0.5 * t_r:.4g} s "
                            f"(0.5 × the Rayleigh time of a particle of d = {2 * r_min_m * 1e6:.3g} µm); lower "
                            "dt_s or leave it out and use numerics.dt_safety")


def preflight(scen: Scenario, *, backend: str | None = None) -> None:
    """Everything ``run`` checks from the scenario before it starts: the engine objects, the size model and
    time step, and the resources."""
    to_engine(scen, backend=backend)
    _check_sizes_and_dt(scen)
    check_resources(scen)

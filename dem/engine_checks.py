"""Checks and messages of the DEM engine: the set-up (:func:`validate_setup`, :func:`time_step`) and the blow-up
checks after every block (:func:`check_block`). Every error names the likely cause and the fix."""
import enum

import numpy as np

from fva.types import Packing
from dem import block as B
from dem.contact import rayleigh_time
from dem.types import Die, Material, SimParams

DT_BOUND_FRACTION = 0.5   # stability bound: dt ≤ 0.5 t_R(r_min) (Rayleigh time, mass-scaled density)
# blow-up test on the dynamics: no particle may move more than this fraction of its radius in one step (a
# resolved contact lasts tens of steps; quasi-static compaction moves particles ~1e-4 r per step; a small
# particle squeezed out of a closing gap may briefly reach ~0.1 r per step)
MAX_STEP_MOTION = 0.25


class Diag(enum.IntEnum):
    """The block-end diagnostics (:func:`dem.simulation_kernels.diagnostics`), after the block record."""
    NAN_COUNT = 0            # particles with a NaN position or velocity
    PAIR_OVERLAP = 1         # largest pair overlap 2δ / (r_i + r_j) (δ / r for equal spheres; 2: centres meet)
    ESCAPED = 2              # particles outside the die
    SPEED = 3                # largest |v_i| (m/s)
    WALL_OVERLAP = 4         # largest wall overlap / r_i
    WORST_INDEX = 5          # largest index among the NaN / escaped particles (−1: none)
    SPEED_OVER_RADIUS = 6    # largest |v_i| / r_i (1/s)


class SimulationError(RuntimeError):
    """A run that went wrong (blow-up, stalled stage); the message names the likely cause and the step.

    Raised from :func:`run_compaction`, it carries ``partial``: the :class:`CompactionResult` of what was
    finished before the failure (history, captures, frames; ``info["completed"] = False``), or None.
    """

    partial = None


def time_step(material: Material, r_min: float, params: SimParams) -> tuple[float, float]:
    """Return (dt, t_R) for the smallest radius. Raises ValueError when dt exceeds the stability bound."""
    G = material.youngs_modulus_Pa / (2 * (1 + material.poisson_ratio))
    tR = rayleigh_time(r_min, material.density_kg_m3 * params.mass_scaling, G, material.poisson_ratio)
    bound = DT_BOUND_FRACTION * tR
    if params.dt_s is not None:
        dt = float(params.dt_s)
        if not (dt > 0) or dt > bound:
            raise ValueError(f"params.dt_s = {dt:.4g} s is above the stability bound {bound:.4g} s "
                             f"(= {DT_BOUND_FRACTION} × Rayleigh time {tR:.4g} s of the smallest particle, "
                             f"r = {r_min:.4g} m, mass_scaling = {params.mass_scaling:g}); lower dt_s or leave "
                             f"it unset and use dt_safety ≤ {DT_BOUND_FRACTION}")
        return dt, tR
    if not (0 < params.dt_safety <= DT_BOUND_FRACTION):
        raise ValueError(f"params.dt_safety = {params.dt_safety} gives dt = {params.dt_safety * tR:.4g} s, above "
                         f"the stability bound {bound:.4g} s ({DT_BOUND_FRACTION} × Rayleigh time); "
                         f"use 0 < dt_safety ≤ {DT_BOUND_FRACTION} (0.1–0.2 recommended)")
    return params.dt_safety * tR, tR


def validate_setup(packing: Packing, material: Material, die: Die, params: SimParams, top_wall: bool):
    if not isinstance(packing, Packing):
        raise TypeError(f"packing must be a fva.types.Packing, got {type(packing).__name__}")
    if packing.n < 1:
        raise ValueError("packing has no particles")
    if not (packing.periodic[0] and packing.periodic[1]):
        raise ValueError(f"the die is periodic in x and y; packing.periodic must start (True, True), "
                         f"got {packing.periodic}")
    if not (die.base_x_m > 0 and die.base_y_m > 0):
        raise ValueError(f"die.base_x_m and die.base_y_m must be > 0, got {die.base_x_m}, {die.base_y_m}")
    d_max = 2 * float(packing.radii_m.max())
    for name, L in (("die.base_x_m", die.base_x_m), ("die.base_y_m", die.base_y_m)):
        if L < 2 * d_max:
            raise ValueError(f"{name} = {L:.4g} m is narrower than 2·d_max = {2 * d_max:.4g} m: a periodic die "
                             f"must be at least twice the largest particle diameter; widen the die or cap d_max")
    bx, by, H = packing.box_m
    for name, a, b in (("x", bx, die.base_x_m), ("y", by, die.base_y_m)):
        if abs(a - b) > 1e-9 * max(a, b):
            raise ValueError(f"packing.box_m {name}-length {a:.6g} m differs from the die base {b:.6g} m")
    c, r = packing.centers_m, packing.radii_m
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise ValueError("packing has non-finite centres or radii")
    tol = 1e-9 * max(bx, by)
    bad = np.nonzero((c[:, 0] < -tol) | (c[:, 0] > bx + tol) | (c[:, 1] < -tol) | (c[:, 1] > by + tol))[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"particle {k} at {c[k].tolist()} lies outside the periodic box x∈[0,{bx:.4g}), "
                         f"y∈[0,{by:.4g}) ({bad.size} such particles); wrap the centres into the box")
    ztol = 0.5 * r     # a compressed packing may overlap the walls a little (at most half a radius on input)
    bad = np.nonzero((c[:, 2] - r < -ztol) | ((c[:, 2] + r > H + ztol) if top_wall else False))[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"particle {k} (z = {c[k, 2]:.4g} m, r = {r[k]:.4g} m) lies outside the box "
                         f"0 ≤ z − r, z + r ≤ H = {H:.4g} m beyond the allowed wall overlap "
                         f"r/2 ({bad.size} such particles)")
    if not (0 <= params.damping < 1):
        raise ValueError(f"params.damping must be in [0, 1), got {params.damping}")
    if params.mass_scaling <= 0:
        raise ValueError(f"params.mass_scaling must be > 0, got {params.mass_scaling}")
    if params.skin_fraction <= 0:
        raise ValueError(f"params.skin_fraction must be > 0, got {params.skin_fraction}")


def check_block(self, b: np.ndarray, context: str = "") -> np.ndarray:
    """Blow-up checks on a block's record ``b`` of ``self`` (a :class:`dem.simulation.Simulation`): NaN, escapes,
    motion per step, overlaps; each error names the likely cause and the fix. Returns the diagnostics part."""
    d = b[B.N_SLOTS:]
    step = self.step_count

    def where():
        return f" at step {step} (t = {self.time_s:.4g} s{', ' + context if context else ''})"
    if d[Diag.NAN_COUNT] > 0 or int(b[B.Slot.REASON]) & B.Reason.NAN:
        raise SimulationError(f"NaN in particle state{where()} (particle {int(d[Diag.WORST_INDEX])}): the time "
                              f"step is too large for these contacts → lower params.dt_safety (now dt = "
                              f"{self.dt:.3g} s)")
    if d[Diag.ESCAPED] > 0:
        raise SimulationError(f"{int(d[Diag.ESCAPED])} particle(s) escaped the die{where()} (e.g. particle "
                              f"{int(d[Diag.WORST_INDEX])}): "
                              f"punch too fast or time step too large → lower punch_speed_m_per_s or "
                              f"params.dt_safety")
    step_motion = float(max(b[B.Slot.VR_MAX], d[Diag.SPEED_OVER_RADIUS])) * self.dt
    if step_motion > MAX_STEP_MOTION:
        raise SimulationError(f"a particle moved {step_motion:.3g} × its radius in one step{where()} "
                              f"(limit {MAX_STEP_MOTION}): contacts are not resolved in time — the punch "
                              f"is too fast (lower punch_speed_m_per_s; the punch moves "
                              f"{abs(self.punch_v) * self.dt / float(self.r0_np.min()):.3g} × r_min "
                              f"per step) or the time step too large (lower params.dt_safety, now "
                              f"dt = {self.dt:.3g} s)")
    lim = self.params.max_overlap_fraction
    # pairs: δ / (r_i + r_j) (the smaller diameter for equal spheres; 1: the centres meet); walls: δ / diameter
    ov = 0.5 * max(float(d[Diag.PAIR_OVERLAP]), float(d[Diag.WALL_OVERLAP]))
    if ov > lim:
        at = where() + worst_contact(self, 0.5 * d[Diag.PAIR_OVERLAP] > lim)
        raise SimulationError(f"contact overlap {ov:.3g} × the sum of the radii (walls: the diameter) exceeds "
                              f"params.max_overlap_fraction = {lim}{at}: at 1.0 two centres meet (or a sphere "
                              f"lies behind a wall) — punch too fast for the "
                              f"contact stiffness (lower punch_speed_m_per_s) or time step too large "
                              f"(lower params.dt_safety); at high density enable volume_correction")
    return d

def worst_contact(self, pair: bool) -> str:
    """The worst contact of ``self`` for an overlap error message (never raises)."""
    try:
        r = self.r.to_numpy()
        if pair:
            t = self.pair_table(history=False)
            ow, pa = t["owner"], t["partner"]
            # δ / (r_i + r_j) from δ / min(r_i, r_j)
            k = int(np.argmax(t["overlap_fraction"] * np.minimum(r[ow], r[pa]) / (r[ow] + r[pa])))
            i, j = int(ow[k]), int(pa[k])
            return (f"; worst pair {i}–{j} (r = {r[i]:.3g} m, {r[j]:.3g} m, "
                    f"original {self.r0_np[i]:.3g} m, {self.r0_np[j]:.3g} m)")
        x = self.x.to_numpy()
        ow = np.maximum(r - x[:, 2], x[:, 2] + r - self.punch_z) / r
        i = int(np.argmax(ow))
        return f"; worst wall contact: particle {i} (r = {r[i]:.3g} m)"
    except Exception:  # diagnostics must never mask the real error
        return ""

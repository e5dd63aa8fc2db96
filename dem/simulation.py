"""Die-compaction DEM engine: :class:`Simulation` (any packing, any number of steps), its state as named parts
(:meth:`Simulation.state_dict` / :meth:`Simulation.load_state_dict`, the checkpoint format). The protocol of
load / hold / unload stages, :func:`dem.protocol.run_compaction`, drives it (also importable from here).

Geometry: box periodic in x, y (die base Lx × Ly), rigid bottom wall z = 0, rigid punch at z = punch_z.
Integration: velocity Verlet with rotation (I = 2/5 m r²), local (Cundall) damping ``params.damping``
plus viscous contact damping from the restitution coefficient. Time step dt = dt_safety · t_R(r_min),
t_R = π r √(ρ_s/G)/(0.1631ν + 0.8766) with the mass-scaled density ρ_s = mass_scaling · ρ.

Per step three kernel launches (see :mod:`dem.simulation_kernels`); every ``check_every`` steps (≤ 10, fewer
when particles move fast) the host reads a handful of numbers: NaN / escape / overlap checks, Verlet
rebuild test, punch force, and applies the punch control. Volume correction (MDR-like) runs at the same
cadence (two fixed-point updates of the radii every ``params.volume_correction_every`` steps, default 10).

Volume correction (``params.volume_correction``, see :func:`dem.simulation_kernels.volume_correct`):
r_i(t) = max_{t'≤t} min(r_vc,i(t'), 1.25 r0_i), r_vc = (r0³ + 3/(4π) Σ V_cap)^{1/3} — irreversible growth
driven by the largest (plastic) overlaps; beyond the cap the unconserved volume acts as a bulk pressure
K_eff ε_v on the contact areas (K_eff = BULK_RESPONSE · E/(3(1−2ν))), which makes the packing resist
compression past ρ_rel ≈ 0.95 instead of interpenetrating (ρ_rel > 1 with plain Thornton–Ning at p ≳ p_y).

Blow-up checks (every check): NaN; a particle escaping the die; a particle moving more than
MAX_STEP_MOTION of its radius in one step; an overlap beyond ``params.max_overlap_fraction`` of the smaller
diameter (1.0: a sphere entirely inside its partner). Each message names the likely cause.

Release: an unload stage to 0 ends — the punch stops — when p_top ≤ RELEASE_FRACTION × the peak pressure
of the run ("contact loss"; without gravity the top layer would otherwise follow the punch at a vanishing
force). Thickness t = min(punch_z, max_i(z_i + r_i)) (:meth:`Simulation.thickness`) is used for ρ_rel, the
solid fraction and the captured packings' box.
"""
from __future__ import annotations

import math

import numpy as np

from fva.backend import PreparedKernel, ensure_init, ti
from fva.types import Packing
from dem import simulation_kernels as SK
from dem.contact import contact_params, rayleigh_time
from dem.neighbours import NeighbourList
from dem.types import BULK_RESPONSE, Die, Material, ParticleFrame, SimParams

__all__ = ["Simulation", "SimulationError", "time_step", "DT_BOUND_FRACTION"]   # run_compaction: dem.protocol

DT_BOUND_FRACTION = 0.5   # stability bound: dt ≤ 0.5 t_R(r_min) (Rayleigh time, mass-scaled density)
# blow-up test on the dynamics: no particle may move more than this fraction of its radius in one step (a
# resolved contact lasts tens of steps; quasi-static compaction moves particles ~1e-4 r per step; a small
# particle squeezed out of a closing gap may briefly reach ~0.1 r per step)
MAX_STEP_MOTION = 0.25
# volume correction: a particle's radius grows at most to this multiple of its original radius (see
# Simulation.volume_correction: a small particle flattened between large ones would otherwise diverge)
MAX_RADIUS_GROWTH = 1.25
MAX_GROWTH_PER_UPDATE = 0.01
# an unload stage to 0 ends (the punch stops) when p_top falls below this fraction of the peak pressure
RELEASE_FRACTION = 2e-3
# Steps fused into one kernel launch (SK.steps). One launch per step instead of three removes two thirds of
# Taichi's Python-side launch cost (≈ 0.3 ms per launch). More steps per launch cut it further (10 steps: 0.557 →
# 0.172 ms per step at 10k particles on an H100) but the compile time grows about quadratically with the unrolled
# length (CPU, no offline cache, loaded 2-core machine: 1 step 2.4 s, 2: 6.3 s, 4: 20 s, 10: ≈ 170 s), paid on
# every fresh machine — too much for a 2-minute quickstart.
FUSED_STEPS = 1
_CHUNK = 256



def _nd_from(a, dtype=None):
    """A Taichi ndarray holding a copy of the numpy array ``a`` (float64 unless ``dtype``)."""
    a = np.ascontiguousarray(a, dtype=np.float64 if dtype is None else None)
    nd = ti.ndarray(ti.f64 if dtype is None else dtype, a.shape)
    nd.from_numpy(a)
    return nd


def _nd_zeros(shape, dtype=None):
    """A zero-filled Taichi ndarray (float64 unless ``dtype``)."""
    nd = ti.ndarray(ti.f64 if dtype is None else dtype, shape)
    nd.fill(0)
    return nd

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


def _validate(packing: Packing, material: Material, die: Die, params: SimParams, top_wall: bool):
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




class Simulation:
    """A DEM state on the Taichi runtime, advanced by :meth:`advance`.

    Parameters: ``packing`` (centres, radii, box), ``material``, ``die`` (defaults to the packing's box),
    ``params``; ``top_wall=False`` removes the punch (free surface); ``punch_z`` overrides the initial
    punch position (default: min(box height, highest particle top + skin/2)); ``velocities`` (N, 3)
    initial velocities; keyword overrides of ``params.gravity_m_s2`` (default 0: off in the die),
    ``params.check_every``, ``params.volume_correction_every``, ``params.solid_fraction_points``.
    """

    def __init__(self, packing: Packing, material: Material, die: Die | None = None,
                 params: SimParams = SimParams(), *, top_wall: bool = True, punch_z: float | None = None,
                 velocities=None, angular_velocities=None, gravity_m_s2: float | None = None, seed: int = 0,
                 check_every: int | None = None, volume_every: int | None = None,
                 solid_fraction_points: int | None = None):
        if die is None:
            die = Die(float(packing.box_m[0]), float(packing.box_m[1]), float(packing.box_m[2]))
        _validate(packing, material, die, params, top_wall)
        self.backend = ensure_init(params.backend, params.default_fp)
        self.packing0, self.material, self.die, self.params = packing, material, die, params
        self.n = n = packing.n
        self.Lx, self.Ly = float(die.base_x_m), float(die.base_y_m)
        self.area = self.Lx * self.Ly
        self.top_wall = bool(top_wall)
        g = params.gravity_m_s2 if gravity_m_s2 is None else gravity_m_s2
        self.gz = -abs(float(g))
        self.seed = int(seed)
        self.check_every = max(1, int(check_every or params.check_every))
        self.volume_every = max(1, int(volume_every or params.volume_correction_every))
        if solid_fraction_points is None:
            solid_fraction_points = params.solid_fraction_points
        self.cp = contact_params(material)
        self.mu_r = float(material.rolling_friction)   # rolling resistance (constant directional torque)
        self.model = self.cp.model_id
        r0 = packing.radii_m.copy()
        self.r0_np = r0
        self.rho_s = material.density_kg_m3 * params.mass_scaling
        m = 4.0 / 3.0 * math.pi * r0 ** 3 * self.rho_s
        self.m_np = m
        self.I_np = 0.4 * m * r0 ** 2
        self.dt, self.t_rayleigh = time_step(material, float(r0.min()), params)
        self.skin = params.skin_fraction * 2.0 * float(r0.mean())
        top = float((packing.centers_m[:, 2] + r0).max())
        H = float(packing.box_m[2])
        self.punch_z0 = float(punch_z) if punch_z is not None else min(H, top + 0.5 * self.skin)
        f64 = ti.f64
        self.x = _nd_from(packing.centers_m)
        self.v = _nd_from(np.zeros((n, 3)) if velocities is None else velocities)
        self.w = _nd_from(np.zeros((n, 3)) if angular_velocities is None else angular_velocities)
        self.f = _nd_zeros((n, 3))
        self.fc = _nd_zeros((n, 3))
        self.tq = _nd_zeros((n, 3))
        self.r = _nd_from(r0)
        self.r0 = _nd_from(r0)
        self.eps_v = _nd_zeros(n)   # elastic volumetric strain of capped particles (bulk response)
        self.eps_p = _nd_zeros(n)   # plastic (pore-collapse) volumetric strain, irreversible
        self.phi_c = _nd_zeros(n)   # porosity of the compact when the particle first reached the growth cap
        self.m = _nd_from(m)
        self.inv_m = _nd_from(1.0 / m)
        self.inv_I = _nd_from(1.0 / self.I_np)
        self.wall_hist = _nd_zeros((n, 16))
        self.fwall = _nd_zeros((n, 2))
        self.ewall = _nd_zeros(n)
        self.ncont = _nd_zeros(n, ti.i32)
        self.ctrl = ti.ndarray(f64, 8)
        self.ctrl.from_numpy(np.array([self.punch_z0, 0.0, 0.0, 0, 0, 0, 0, 0], dtype=np.float64))
        self._diag = ti.ndarray(f64, 12)
        self._reach = ti.ndarray(f64, n)   # per-particle Verlet reach A_i (diagnostics scratch)
        # the two launches of every step / check, with Taichi's per-call argument handling done once
        self._launch_steps = PreparedKernel(SK.steps)
        self._launch_diagnostics = PreparedKernel(SK.diagnostics)
        # and those of every check (pressures) and volume-correction update
        self._launch_chunk_sums2 = PreparedKernel(SK.chunk_sums2)
        self._launch_pair_caps = PreparedKernel(SK.pair_caps)
        self._launch_volume_correct = PreparedKernel(SK.volume_correct)
        self._chunks2 = ti.ndarray(f64, ((n + _CHUNK - 1) // _CHUNK, 2))
        self._virial = ti.ndarray(f64, (n, 1))
        self._pstress = ti.ndarray(f64, n)
        self._nch = (n + _CHUNK - 1) // _CHUNK
        self._chunks = ti.ndarray(f64, self._nch)
        zmax = max(self.punch_z0, top) + self.skin
        self.nlist = NeighbourList(n, (self.Lx, self.Ly), (-self.skin, zmax), r0, self.skin,
                                   capacity=max(64, 12 * n))
        self._alloc_pair_work(self.nlist.capacity)
        self.step_count = 0
        self.growth_cap = MAX_RADIUS_GROWTH
        self.growth_step = MAX_GROWTH_PER_UPDATE
        # bulk modulus of the solid for the confinement response of capped particles (volume correction only)
        frac = BULK_RESPONSE if params.bulk_stiffness_fraction is None else float(params.bulk_stiffness_fraction)
        self.K_bulk = (frac * material.youngs_modulus_Pa / (3.0 * (1.0 - 2.0 * material.poisson_ratio))
                       if params.volume_correction else 0.0)
        self.p_collapse = params.pore_collapse_pressure_Pa
        self.solid_volume = float(np.sum(4.0 / 3.0 * math.pi * self.r0_np ** 3))
        self.k_cap = None      # optional upper bound on the check interval (set by the protocol driver)
        self._rebuild()
        mc = max(0, int(solid_fraction_points))
        self._mc_unit = np.random.default_rng(np.random.SeedSequence([self.seed, 7])).random((mc, 3))
        self._force_eval()

    # ------------------------------------------------------------------ internals
    def _alloc_pair_work(self, cap):
        f64 = ti.f64
        self.pw = ti.ndarray(f64, (cap, 12))   # per-pair record: force, torques, energy, overlap fraction
        self.cap_i = ti.ndarray(f64, cap)
        self.cap_j = ti.ndarray(f64, cap)
        self._pair_cap = cap

    def _rebuild(self):
        self.nlist.build(self.x, self.r, self.r0)
        if self.nlist.capacity != self._pair_cap:
            self._alloc_pair_work(self.nlist.capacity)

    @property
    def punch_z(self) -> float:
        return float(self.ctrl[0])

    @property
    def time_s(self) -> float:
        return float(self.ctrl[2])

    def set_punch_velocity(self, v: float):
        self.ctrl[1] = float(v)

    def _pair_forces_eval(self):
        nl, cp = self.nlist, self.cp
        SK.pair_forces_eval(self.model, nl.npairs, self.x, self.v, self.w, self.r, self.m, nl.pair_owner,
                            nl.partner, nl.hist, self.pw, self.Lx, self.Ly, cp.E_pp, cp.G_pp, cp.p_y, cp.beta,
                            cp.mu_pp, self.mu_r, self.eps_v, self.K_bulk, cp.adhesion)

    def _force_eval(self):
        """Forces at the current state without moving and without touching the contact histories (dt = 0, no
        history write: re-evaluating a sliding contact would otherwise fold its damping force into the spring
        once more — a rebuild-frequency-dependent perturbation)."""
        nl, cp = self.nlist, self.cp
        self._pair_forces_eval()
        SK.gather_eval(self.model, self.n, self.x, self.v, self.w, self.r, self.m, self.inv_m, self.inv_I,
                       nl.row_start, nl.rev_start, nl.rev_pairs, self.pw,
                       self.wall_hist, self.fwall, self.ewall, self.ncont, self.f, self.tq, self.fc, self.ctrl,
                       cp.E_pw, cp.G_pw, cp.p_y, cp.beta, cp.mu_pw, self.mu_r, float(self.params.damping), self.gz,
                       int(self.top_wall), self.eps_v, self.K_bulk)

    def _steps(self, k):
        """k velocity-Verlet steps in one launch (:func:`SK.steps`, compiled once per k; see FUSED_STEPS)."""
        nl, cp = self.nlist, self.cp
        self._launch_steps(self.model, int(k), self.n, nl.npairs, self.dt, self.x, self.v, self.w, self.r, self.m,
                           self.inv_m, self.inv_I, self.f, self.tq, self.fc, self.ctrl, self.Lx, self.Ly,
                           nl.pair_owner, nl.partner, nl.hist, self.pw, nl.row_start, nl.rev_start, nl.rev_pairs,
                           self.wall_hist, self.fwall, self.ewall, self.ncont, self.eps_v, cp.E_pp, cp.G_pp, cp.E_pw,
                           cp.G_pw, cp.p_y, cp.beta, cp.mu_pp, cp.mu_pw, self.mu_r, float(self.params.damping),
                           self.gz, int(self.top_wall), self.K_bulk, cp.adhesion)

    def _check(self, context: str = ""):
        nl = self.nlist
        k_max = self.check_every if self.k_cap is None else max(1, min(self.check_every, int(self.k_cap)))
        self._launch_diagnostics(self.n, nl.npairs, self.x, self.v, self.r, self.pw, self.ctrl, int(self.top_wall),
                                 nl.x_build, nl.r_build, self.Lx, self.Ly, self.f, self.inv_m, float(self.dt),
                                 float(nl.skin), int(k_max), self._reach, self._diag)
        d = self._diag.to_numpy()
        step = self.step_count

        def where():   # built only for an error: reading the time is a device read
            return f" at step {step} (t = {self.time_s:.4g} s{', ' + context if context else ''})"
        if d[0] > 0:
            raise SimulationError(f"NaN in particle state{where()} (particle {int(d[5])}): the time step is too "
                                  f"large for these contacts → lower params.dt_safety (now dt = {self.dt:.3g} s)")
        if d[2] > 0:
            raise SimulationError(f"{int(d[2])} particle(s) escaped the die{where()} (e.g. particle {int(d[5])}): "
                                  f"punch too fast or time step too large → lower punch_speed_m_per_s or "
                                  f"params.dt_safety")
        step_motion = float(d[7]) * self.dt
        if step_motion > MAX_STEP_MOTION:
            raise SimulationError(f"a particle moved {step_motion:.3g} × its radius in one step{where()} "
                                  f"(limit {MAX_STEP_MOTION}): contacts are not resolved in time — the punch "
                                  f"is too fast (lower punch_speed_m_per_s; the punch moves "
                                  f"{abs(float(self.ctrl[1])) * self.dt / float(self.r0_np.min()):.3g} × r_min "
                                  f"per step) or the time step too large (lower params.dt_safety, now "
                                  f"dt = {self.dt:.3g} s)")
        lim = self.params.max_overlap_fraction
        ov = 0.5 * max(float(d[1]), float(d[4]))      # δ / smaller current diameter (pairs) or diameter (walls)
        if ov > lim:
            at = where() + self._worst_contact(0.5 * d[1] > lim)
            raise SimulationError(f"contact overlap {ov:.3g} × the smaller (current) diameter exceeds "
                                  f"params.max_overlap_fraction = {lim}{at}: at 1.0 the smaller sphere lies "
                                  f"entirely inside its partner (or behind a wall) — punch too fast for the "
                                  f"contact stiffness (lower punch_speed_m_per_s) or time step too large "
                                  f"(lower params.dt_safety); at high density enable volume_correction")
        return d

    def _worst_contact(self, pair: bool) -> str:
        try:
            r = self.r.to_numpy()
            if pair:
                t = self.pair_table(history=False)
                k = int(np.argmax(t["overlap_fraction"]))
                i, j = int(t["owner"][k]), int(t["partner"][k])
                msg = (f"; worst pair {i}–{j} (r = {r[i]:.3g} m, {r[j]:.3g} m, "
                       f"original {self.r0_np[i]:.3g} m, {self.r0_np[j]:.3g} m)")
                ratio = max(r[i], r[j]) / min(r[i], r[j])
                if ratio > 3.0:
                    msg += (f"; a small particle was pushed through one {ratio:.1f}× larger (wide size "
                            f"distribution, low p_y): keep volume_correction on, check that the run is "
                            f"quasi-static (inertial_number ≤ 1e-3) and lower dt_safety, else raise d_min")
                return msg
            x = self.x.to_numpy()
            ow = np.maximum(r - x[:, 2], x[:, 2] + r - self.punch_z) / r
            i = int(np.argmax(ow))
            return f"; worst wall contact: particle {i} (r = {r[i]:.3g} m)"
        except Exception:  # diagnostics must never mask the real error
            return ""

    def _maintenance(self, context=""):
        d = self._check(context)
        # next check interval: no particle moves more than 0.1 skin between checks (k_next, ≤ check_every)
        self._k = int(d[8])
        # Verlet criterion (SK.diagnostics): rebuild if the two largest reaches A_1 + A_2 (closure of a gap since
        # the build plus the motion bound until the next check) could exceed the skin. Earlier criteria, twice
        # the largest displacement plus check_every · v_max · dt and then plus 2 k_next v_max dt, rebuilt at
        # every check whenever one particle moved ≳ 0.25 skin per step (a fast particle on release: the late
        # stages of the full-size stack run rebuilt at every step, 10–30 steps/s).
        a1 = float(d[9])
        a2 = a1 if d[11] >= 2 else float(d[10])
        if a1 + a2 > self.nlist.skin:
            self._rebuild()
            # refresh the per-pair arrays (forces, energies, overlaps) in the new layout for diagnostics;
            # evaluation only: the contact histories are not touched
            self._pair_forces_eval()

    def volume_correction(self, iterations: int = 2):
        """Fixed-point radius update conserving each particle's solid volume (see SK.volume_correct)."""
        nl = self.nlist
        pc_over_K = 0.0
        phi = 1.0
        if self.p_collapse and self.K_bulk > 0:
            pc_over_K = float(self.p_collapse) / self.K_bulk
            # mass-based porosity of the compact under the punch (mean field)
            phi = 1.0 - self.solid_volume / (self.area * max(self.punch_z, 1e-300)) if self.top_wall else 1.0
        for _ in range(iterations):
            self._launch_pair_caps(nl.npairs, self.x, self.r, nl.pair_owner, nl.partner, self.cap_i, self.cap_j,
                                   self.Lx, self.Ly)
            self._launch_volume_correct(self.n, self.x, self.r, self.r0, nl.row_start, nl.rev_start,
                                        nl.rev_pairs, self.cap_i, self.cap_j, self.ctrl, int(self.top_wall),
                                        float(self.growth_cap), float(self.growth_step), self.eps_v, self.eps_p,
                                        self.phi_c, float(phi), float(pc_over_K))

    @property
    def growth(self) -> float:
        """Largest radius growth max_i r_i/r0_i so far (the volume correction never shrinks a radius, so the
        current maximum is the maximum over the run; read from the device on demand)."""
        return max(1.0, float(np.max(self.r.to_numpy() / self.r0_np)))

    def advance(self, nsteps: int, context: str = "", on_check=None):
        """Advance ``nsteps`` steps; checks every ≤ check_every steps. ``on_check(sim)`` may return True to
        stop early (returns the number of steps done)."""
        done = 0
        self._k = getattr(self, "_k", 1)   # first check after one step: nothing bounds the motion yet
        vc = self.params.volume_correction
        while done < nsteps:
            k = min(self._k, nsteps - done)
            if self.k_cap is not None:
                k = max(1, min(k, int(self.k_cap)))
            for _ in range(k // FUSED_STEPS):
                self._steps(FUSED_STEPS)
            for _ in range(k % FUSED_STEPS):
                self._steps(1)
            done += k
            prev = self.step_count
            self.step_count += k
            if vc and (self.step_count // self.volume_every) != (prev // self.volume_every):
                self.volume_correction()
            self._maintenance(context)
            if on_check is not None and on_check(self):
                break
        return done

    # ------------------------------------------------------------------ measurements
    def _sum_col(self, arr, col) -> float:
        SK.chunk_sums(self.n, _CHUNK, arr, col, self._chunks)
        return float(np.sum(self._chunks.to_numpy()))

    def pressures(self) -> tuple[float, float]:
        """(p_top, p_bottom) in Pa: wall forces over the die area (deterministic chunked sums)."""
        self._launch_chunk_sums2(self.n, _CHUNK, self.fwall, self._chunks2)
        s = self._chunks2.to_numpy().sum(axis=0)
        return float(s[1]) / self.area, float(s[0]) / self.area

    def state(self) -> dict:
        return dict(x=self.x.to_numpy(), v=self.v.to_numpy(), w=self.w.to_numpy(), r=self.r.to_numpy(),
                    f=self.fc.to_numpy(), ncont=self.ncont.to_numpy(), punch_z=self.punch_z, time=self.time_s,
                    step=self.step_count)

    # ------------------------------------------------------------------ state (checkpoints)
    STATE_FORMAT = 1
    # named parts of the engine state: per-particle arrays, per-pair contact records, scalars
    _PARTICLE_ARRAYS = ("x", "v", "w", "r", "f", "fc", "tq", "eps_v", "eps_p", "phi_c", "wall_hist", "fwall",
                        "ewall", "ncont")
    _PAIR_ARRAYS = ("partner", "pair_owner", "hist", "rev_pairs")
    _ROW_ARRAYS = ("row_start", "rev_start", "x_build", "r_build")

    def state_dict(self) -> dict:
        """The whole dynamic state, as named parts of host (numpy) data: ``particles`` (positions, velocities,
        spins, radii and their growth, forces of the last step, wall-contact histories), ``contacts`` (the
        Verlet list with each pair's contact history, its build snapshot and counters; the per-pair force
        records are derived, recomputed on load), ``control``
        (punch position/velocity/time, step, check interval, capture cap). With :meth:`load_state_dict` on a
        Simulation built from the same packing, material, die and params, the run continues bitwise (CPU).
        Everything else (masses, contact parameters, the time step, the solid-fraction points) follows from
        the constructor's inputs; the engine draws no random numbers while it runs."""
        nl = self.nlist
        m = nl.npairs
        return {
            "format": self.STATE_FORMAT,
            "particles": {k: getattr(self, k).to_numpy() for k in self._PARTICLE_ARRAYS},
            "contacts": {**{k: getattr(nl, k).to_numpy()[:m] for k in self._PAIR_ARRAYS},
                         **{k: getattr(nl, k).to_numpy() for k in self._ROW_ARRAYS},
                         "npairs": int(m), "capacity": int(nl.capacity), "builds": int(nl.builds),
                         "grow_events": int(nl.grow_events)},
            "control": {"ctrl": self.ctrl.to_numpy(), "step_count": int(self.step_count),
                        "check_interval": int(getattr(self, "_k", 1)),
                        "k_cap": None if self.k_cap is None else int(self.k_cap)},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (see there); raises ValueError when it belongs to another system."""
        if int(state.get("format", -1)) != self.STATE_FORMAT:
            raise ValueError(f"engine state format {state.get('format')} is not {self.STATE_FORMAT}")
        P, C, K = state["particles"], state["contacts"], state["control"]
        if P["x"].shape != (self.n, 3):
            raise ValueError(f"engine state holds {P['x'].shape[0]} particles, this simulation {self.n}")
        for k in self._PARTICLE_ARRAYS:
            getattr(self, k).from_numpy(np.ascontiguousarray(P[k]))
        nl = self.nlist
        cap, m = int(C["capacity"]), int(C["npairs"])
        if cap != nl.capacity:
            nl._alloc_pairs(cap)
        if cap != self._pair_cap:
            self._alloc_pair_work(cap)
        for k in self._PAIR_ARRAYS:
            a = getattr(nl, k).to_numpy()
            a[:m] = C[k]
            getattr(nl, k).from_numpy(a)
        for k in self._ROW_ARRAYS:
            getattr(nl, k).from_numpy(np.ascontiguousarray(C[k]))
        nl.npairs, nl.builds, nl.grow_events, nl._has_old = m, int(C["builds"]), int(C["grow_events"]), 1
        self._pair_forces_eval()    # the per-pair force records (derived data: every step rewrites them first)
        self.ctrl.from_numpy(np.ascontiguousarray(K["ctrl"]))
        self.step_count = int(K["step_count"])
        self._k = int(K["check_interval"])
        self.k_cap = None if K["k_cap"] is None else int(K["k_cap"])

    def pair_table(self, history: bool = True) -> dict:
        """Host copy of the pair list: owner, partner, force on owner, overlap fraction, energy, history
        (columns ξx, ξy, ξz, δ_max, δ_p, R_p*)."""
        m = self.nlist.npairs
        pw = self.pw.to_numpy()[:m]
        t = dict(owner=self.nlist.pair_owner.to_numpy()[:m], partner=self.nlist.partner.to_numpy()[:m],
                 force=pw[:, 0:3].copy(), overlap_fraction=pw[:, 10].copy(), energy=pw[:, 9].copy())
        if history:
            t["hist"] = self.nlist.hist.to_numpy()[:m]
        return t

    def energies(self) -> dict:
        """Kinetic (translational, rotational) and recoverable elastic energy (pairs + walls), J."""
        v, w = self.v.to_numpy(), self.w.to_numpy()
        ke_t = 0.5 * float(np.sum(self.m_np * np.sum(v * v, 1)))
        ke_r = 0.5 * float(np.sum(self.I_np * np.sum(w * w, 1)))
        el = float(np.sum(self.pw.to_numpy()[: self.nlist.npairs, 9])) + float(np.sum(self.ewall.to_numpy()))
        return dict(kinetic=ke_t + ke_r, translational=ke_t, rotational=ke_r, elastic=el,
                    total=ke_t + ke_r + el)

    def momentum(self) -> np.ndarray:
        return (self.m_np[:, None] * self.v.to_numpy()).sum(0)

    def stress_zz(self) -> float:
        """σ_zz = (1/V) [Σ_pairs f_z l_z + Σ_walls f_z (x_c − x)_z], V = A × punch_z (compression < 0)."""
        nl = self.nlist
        SK.zz_virial(self.n, self.x, self.r, nl.row_start, nl.partner, self.pw, self.fwall, self.ctrl,
                     int(self.top_wall), self._virial)
        return self._sum_col(self._virial, 0) / (self.area * self.punch_z)

    def thickness(self) -> float:
        """Pellet thickness t = min(punch_z, max_i(z_i + r_i)) in m (current, volume-corrected radii).

        Under load the punch rests on the pellet (its contacts overlap the punch plane), so t = punch_z. After
        release the punch may stand above the pellet (it keeps moving until the check that sees the contact
        lost, and the pellet may relax further); the pellet's own top, the highest particle surface — what a
        micrometer would measure — is then the thickness. Relative density, solid fraction and the captured
        packings' box all use t, so a released pellet is never diluted by the gap under the punch."""
        H = self.punch_z
        if not self.top_wall:
            return float((self.x.to_numpy()[:, 2] + self.r.to_numpy()).max())
        top = float((self.x.to_numpy()[:, 2] + self.r.to_numpy()).max())
        return min(H, top) if top > 0 else H

    def relative_density(self, thickness: float | None = None) -> float:
        """Mass-based: Σ (4/3)π r0³ / (A · t), t = :meth:`thickness`."""
        t = self.thickness() if thickness is None else thickness
        return float(np.sum(4.0 / 3.0 * math.pi * self.r0_np ** 3)) / (self.area * t)

    def solid_fraction(self, thickness: float | None = None) -> float:
        """Geometric union-of-spheres solid fraction of the box A × t, t = :meth:`thickness` (Monte-Carlo,
        fixed points)."""
        if self._mc_unit.shape[0] == 0:
            return float("nan")
        from scipy.spatial import cKDTree

        x = self.x.to_numpy()
        r = self.r.to_numpy()
        H = self.thickness() if thickness is None else thickness
        pts = self._mc_unit * np.array([self.Lx, self.Ly, H])
        zbox = 4.0 * (H + 4.0 * float(r.max())) + 1e-12
        pts[:, 0] = np.minimum(pts[:, 0], np.nextafter(self.Lx, 0))
        pts[:, 1] = np.minimum(pts[:, 1], np.nextafter(self.Ly, 0))
        pts[:, 2] += zbox / 4
        c = x.copy()
        c[:, 0] %= self.Lx
        c[:, 1] %= self.Ly
        c[:, 0] = np.minimum(c[:, 0], np.nextafter(self.Lx, 0))
        c[:, 1] = np.minimum(c[:, 1], np.nextafter(self.Ly, 0))
        c[:, 2] = np.clip(c[:, 2] + zbox / 4, 0.0, np.nextafter(zbox, 0))
        tree = cKDTree(pts, boxsize=np.array([self.Lx, self.Ly, zbox]))
        hits = tree.query_ball_point(c, r, return_sorted=False)
        inside = np.zeros(pts.shape[0], bool)
        if len(hits):
            flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
            inside[flat] = True
        return float(np.mean(inside))

    def packing(self, pressure_Pa: float = float("nan"), label: str = "") -> Packing:
        x = self.x.to_numpy()
        x[:, 0] %= self.Lx
        x[:, 1] %= self.Ly
        return Packing(centers_m=x, radii_m=self.r.to_numpy(), box_m=np.array([self.Lx, self.Ly, self.thickness()]),
                       periodic=(True, True, False), pressure_Pa=float(pressure_Pa), label=label)

    def particle_stress(self) -> np.ndarray:
        """(N,) mean stress of each particle −tr(σ_i)/3 in Pa (compression positive), from its contacts."""
        nl = self.nlist
        SK.particle_mean_stress(self.n, self.x, self.r, self.r0, nl.row_start, nl.partner, nl.rev_start,
                                nl.rev_pairs, nl.pair_owner, self.pw, self.fwall, self.ctrl, self.Lx, self.Ly,
                                int(self.top_wall), self._pstress)
        return self._pstress.to_numpy()

    def frame(self) -> ParticleFrame:
        return ParticleFrame(time_s=self.time_s, step=self.step_count, centers_m=self.x.to_numpy(),
                             radii_m=self.r.to_numpy(), velocities_m_per_s=self.v.to_numpy(),
                             forces_N=self.fc.to_numpy(), contact_count=self.ncont.to_numpy(),
                             stress_Pa=self.particle_stress(), box_m=np.array([self.Lx, self.Ly, self.punch_z]))

    def history_row(self, stage_index: int = -1) -> dict:
        p_top, p_bot = self.pressures()
        e = self.energies()
        # Σ_i (contacts of i) = 2 × pairs in contact (the gather's count of pairs with a positive overlap)
        coord = float(np.sum(self.ncont.to_numpy(), dtype=np.int64)) / self.n
        H = self.punch_z
        t = self.thickness()
        ke_ratio = e["kinetic"] / e["elastic"] if e["elastic"] > 0 else float("nan")
        vp = abs(float(self.ctrl[1]))
        d_mean = 2.0 * float(self.r0_np.mean())
        inertial = (vp / H) * d_mean * math.sqrt(self.rho_s / p_top) if p_top > 0 else float("nan")
        return dict(step=self.step_count, time_s=self.time_s, punch_z_m=H, thickness_m=t, p_top_Pa=p_top,
                    p_bottom_Pa=p_bot, p_stress_tensor_Pa=-self.stress_zz(),
                    relative_density=self.relative_density(t), solid_fraction=self.solid_fraction(t),
                    coordination=coord, ke_ratio=ke_ratio, inertial_number=inertial, stage=stage_index)


def __getattr__(name):
    """The protocol driver lives in :mod:`dem.protocol`; ``dem.simulation.run_compaction`` keeps working."""
    if name in ("run_compaction", "punch_stiffness_estimate"):
        from dem import protocol
        return getattr(protocol, name)
    raise AttributeError(f"module 'dem.simulation' has no attribute {name!r}")

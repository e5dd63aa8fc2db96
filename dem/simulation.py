"""Die-compaction DEM engine: :class:`Simulation` (any packing, any number of steps), its state as named parts
(:meth:`Simulation.state_dict` / :meth:`Simulation.load_state_dict`, the checkpoint format). The protocol of
load / hold / unload stages, :func:`dem.protocol.run_compaction`, drives it (also importable from here).

Geometry: box periodic in x, y (die base Lx × Ly), rigid bottom wall z = 0, rigid punch at z = punch_z.
Integration: velocity Verlet with rotation (I = 2/5 m r²), local (Cundall) damping ``params.damping``
plus viscous contact damping from the restitution coefficient. Time step dt = dt_safety · t_R(r_dt),
t_R = π r √(ρ_s/G)/(0.1631ν + 0.8766) with the mass-scaled density ρ_s = mass_scaling · ρ and r_dt = r_min, or
with size-dependent mass scaling (``params.mass_scaling_min_diameter_m`` = d_ms: ρ_i = ρ_s (d_ms/d_i)² below
d_ms) r_dt = max(r_min, d_ms/2).

The host advances the engine by blocks of up to ``params.block_steps`` steps (:mod:`dem.block`): one call and
one read of a small record per block; the Verlet rebuild test, the punch pressure and the thresholds the
protocol set (captures, stage targets) are evaluated on the device after every step, and a block ends early
when the host is needed. Volume correction (MDR-like): two fixed-point updates of the radii at every step that
is a multiple of ``params.volume_correction_every`` (default 10), inside the block.

Volume correction (``params.volume_correction``, see :func:`dem.volume_kernels.volume_correct_pass`):
r_i(t) = max_{t'≤t} min(r_vc,i(t'), 1.25 r0_i), r_vc = (r0³ + 3/(4π) Σ V_cap)^{1/3} — irreversible growth
driven by the largest (plastic) overlaps; beyond the cap the unconserved volume acts as a bulk pressure
K_eff ε_v on the contact areas (K_eff = BULK_RESPONSE · E/(3(1−2ν))), which makes the packing resist
compression past ρ_rel ≈ 0.95 instead of interpenetrating (ρ_rel > 1 with plain Thornton–Ning at p ≳ p_y).

Blow-up checks (every block): NaN; a particle escaping the die; a particle moving more than
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

from fva.backend import ensure_init, ti
from fva.types import Packing
from dem import block as B
from dem import simulation_kernels as SK
from dem.punch import N_SERVO, Ctrl, Servo
from dem.contact import contact_params
from dem.engine_checks import (DT_BOUND_FRACTION, MAX_STEP_MOTION, SimulationError, check_block, time_step,
                               validate_setup)
from dem.engine_state import EngineState
from dem.graph import KernelGraph
from dem.neighbours import NeighbourList
from dem.observables import Observables
from dem.particle_setup import density_factors, mass_properties, nd_from, nd_zeros, time_step_radius
from dem.types import BULK_RESPONSE, Die, Material, SimParams

__all__ = ["Simulation", "SimulationError", "time_step", "DT_BOUND_FRACTION", "MAX_STEP_MOTION"]
# (run_compaction: dem.protocol; the set-up checks and blow-up messages: dem.engine_checks; measurements:
# dem.observables; the checkpoint state: dem.engine_state; blocks of steps: dem.block; masses, time-step radius
# and the state's ndarrays: dem.particle_setup)

# volume correction: a particle's radius grows at most to this multiple of its original radius (see
# Simulation.volume_correction: a small particle flattened between large ones would otherwise diverge)
MAX_RADIUS_GROWTH = 1.25
MAX_GROWTH_PER_UPDATE = 0.01
# an unload stage to 0 ends (the punch stops) when p_top falls below this fraction of the peak pressure
RELEASE_FRACTION = 2e-3


class Simulation(Observables, EngineState):
    """A DEM state on the Taichi runtime, advanced by :meth:`advance`.

    Parameters: ``packing`` (centres, radii, box), ``material``, ``die`` (defaults to the packing's box),
    ``params``; ``top_wall=False`` removes the punch (free surface); ``punch_z`` overrides the initial
    punch position (default: min(box height, highest particle top + skin/2)); ``velocities`` (N, 3)
    initial velocities; keyword overrides of ``params.gravity_m_s2`` (default 0: off in the die),
    ``params.volume_correction_every``, ``params.solid_fraction_points``.
    """

    def __init__(self, packing: Packing, material: Material, die: Die | None = None,
                 params: SimParams = SimParams(), *, top_wall: bool = True, punch_z: float | None = None,
                 velocities=None, angular_velocities=None, gravity_m_s2: float | None = None, seed: int = 0,
                 volume_every: int | None = None,
                 solid_fraction_points: int | None = None):
        if die is None:
            die = Die(float(packing.box_m[0]), float(packing.box_m[1]), float(packing.box_m[2]))
        validate_setup(packing, material, die, params, top_wall)
        self.backend = ensure_init(params.backend, params.default_fp)
        self.packing0, self.material, self.die, self.params = packing, material, die, params
        self.n = n = packing.n
        self.Lx, self.Ly = float(die.base_x_m), float(die.base_y_m)
        self.area = self.Lx * self.Ly
        self.top_wall = bool(top_wall)
        g = params.gravity_m_s2 if gravity_m_s2 is None else gravity_m_s2
        self.gz = -abs(float(g))
        self.seed = int(seed)
        self.volume_every = max(1, int(volume_every or params.volume_correction_every))
        if solid_fraction_points is None:
            solid_fraction_points = params.solid_fraction_points
        self.cp = contact_params(material)
        self.mu_r = float(material.rolling_friction)   # rolling resistance (constant directional torque)
        self.model = self.cp.model_id
        r0 = packing.radii_m.copy()
        self.r0_np = r0
        self.rho_s = material.density_kg_m3 * params.mass_scaling
        # size-dependent mass scaling: ρ_i = ρ_s max(1, (d_ms/d_i)²) (SimParams.mass_scaling_min_diameter_m)
        self.density_factor = density_factors(r0, params.mass_scaling_min_diameter_m)
        self.m_np, self.I_np, self.rho_mean, self.d_inertial = mass_properties(r0, self.rho_s, self.density_factor)
        self.dt, self.t_rayleigh = time_step(material, time_step_radius(r0, params), params)
        self.skin = params.skin_fraction * 2.0 * float(r0.mean())
        top = float((packing.centers_m[:, 2] + r0).max())
        H = float(packing.box_m[2])
        self.punch_z0 = float(punch_z) if punch_z is not None else min(H, top + 0.5 * self.skin)
        f64 = ti.f64
        self.x = nd_from(packing.centers_m)
        self.v = nd_from(np.zeros((n, 3)) if velocities is None else velocities)
        self.w = nd_from(np.zeros((n, 3)) if angular_velocities is None else angular_velocities)
        self.f = nd_zeros((n, 3))
        self.fc = nd_zeros((n, 3))
        self.tq = nd_zeros((n, 3))
        self.r = nd_from(r0)
        self.r0 = nd_from(r0)
        self.eps_v = nd_zeros(n)   # elastic volumetric strain of capped particles (bulk response)
        self.eps_p = nd_zeros(n)   # plastic (pore-collapse) volumetric strain, irreversible
        self.phi_c = nd_zeros(n)   # porosity of the compact when the particle first reached the growth cap
        self.m = nd_from(self.m_np)
        self.inv_m = nd_from(1.0 / self.m_np)
        self.inv_I = nd_from(1.0 / self.I_np)
        self.wall_hist = nd_zeros((n, 16))
        self.fwall = nd_zeros((n, 2))
        self.ewall = nd_zeros(n)
        self.ncont = nd_zeros(n, ti.i32)
        self.ctrl = ti.ndarray(f64, 8)
        c = np.zeros(8, np.float64)
        c[int(Ctrl.PUNCH_Z)], c[int(Ctrl.PHI_MIN)] = self.punch_z0, 1.0   # velocity and time 0
        self.ctrl.from_numpy(c)
        # the block record (dem.block.Slot) followed by the block-end diagnostics (SK.diagnostics)
        self.blk = ti.ndarray(f64, B.N_SLOTS + SK.N_DIAG)
        self._blk_go = ti.ndarray(f64, B.N_SLOTS)        # an open record for single volume-correction updates
        self.servo = nd_zeros(N_SERVO)                # the hold servo's device state (dem.punch.Servo), off
        self.servo_on = False
        self._reach = ti.ndarray(f64, n)   # per-particle Verlet reach A_i (diagnostics scratch)
        self._watch_chunk = B.watch_chunk(n, self.backend.backend)
        self._part = ti.ndarray(f64, ((n + self._watch_chunk - 1) // self._watch_chunk, B.N_PART))
        self._graph = KernelGraph()
        self._step_kernel = B.step_kernel(self.cp.model_id)
        self.block_steps = max(1, int(getattr(params, "block_steps", 64)))
        self.last_block_steps = 0
        self.last_reason = B.Reason(0)   # why the last block stopped (dem.block.Reason)
        self.blocks = 0
        self._rates: dict = {}       # reach and pressure rates of the last block (block-length prediction only)
        self._fresh_list = True
        # host copies of what the last block reported: punch position, time, pressures
        self._vp = 0.0
        self._host = dict(punch_z=self.punch_z0, punch_v=0.0, time=0.0, p_top=float("nan"), p_bottom=float("nan"))
        self._measured = False
        # protocol hooks: a block stops at the first step with p_top ≥ stop_above_Pa or ≤ stop_below_Pa, and is at
        # most k_cap steps long; block_align: periods (steps) at whose multiples blocks end (history rows, frames)
        self.stop_above_Pa = math.inf
        self.stop_below_Pa = -math.inf
        self.block_align: tuple = ()
        self._pstress = ti.ndarray(f64, n)
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
        self.k_cap = None      # optional upper bound on the block length (set by the protocol driver)
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
        return float(self._host["punch_z"])

    @property
    def punch_v(self) -> float:
        """Punch velocity (m/s, negative = down) of the next step: the host's setting, or in a hold the device
        servo's as the last block left it."""
        return float(self._host["punch_v"]) if self.servo_on else self._vp

    @property
    def time_s(self) -> float:
        return float(self._host["time"])

    def set_punch_velocity(self, v: float):
        """The punch velocity (m/s, negative = down) from the next block on (written by the block's first kernel)."""
        self._vp = float(v)

    def start_servo(self, *, target_Pa: float, compliance_m_per_Pa: float, tau_s: float, kp: float, ki: float,
                    v_cap_m_per_s: float, band_Pa: float, tol_Pa: float, hold_steps: int, window_steps: int):
        """Hand the punch to the device's hold servo (:func:`dem.punch.servo_step`, every step) from the next
        step on, which starts from rest: the PI law v = −(A/k)(K_p e + K_i ∫e dt/τ)/τ (``compliance_m_per_Pa``
        = A/k), conditional integration within ``band_Pa``, settled after ``hold_steps`` once |e| ≤ ``tol_Pa``
        held for ``window_steps`` consecutive steps (a block then stops with ``Reason.SETTLED``)."""
        S = Servo
        a = np.zeros(N_SERVO)
        for slot, val in ((S.ON, 1.0), (S.TARGET_PA, target_Pa), (S.COMPLIANCE_M_PER_PA, compliance_m_per_Pa),
                          (S.TAU_S, tau_s), (S.KP, kp), (S.KI, ki), (S.V_CAP_M_PER_S, v_cap_m_per_s),
                          (S.BAND_PA, band_Pa), (S.TOL_PA, tol_Pa), (S.HOLD_STEPS, hold_steps),
                          (S.WINDOW_STEPS, max(1, int(window_steps))), (S.P_MAX_PA, -math.inf)):
            a[int(slot)] = float(val)
        self.servo.from_numpy(a)
        self.servo_on = True
        self._vp = 0.0

    def stop_servo(self) -> dict:
        """Take the punch back from the hold servo (at rest); returns its final state by :class:`dem.punch.Servo`
        name (one device read)."""
        a = self.servo.to_numpy()
        self.servo.fill(0.0)
        self.servo_on = False
        self._vp = 0.0
        return {slot.name: float(a[int(slot)]) for slot in Servo}

    def _values(self) -> dict:
        """Every kernel argument of a block by name (the one argument builder of :mod:`dem.block`'s kernels and
        SK.diagnostics): the named parts of the state, the contact parameters and this block's thresholds."""
        nl, cp = self.nlist, self.cp
        return dict(
            n=self.n, npairs=nl.npairs, dt=self.dt, x=self.x, v=self.v, w=self.w, r=self.r, r0=self.r0, m=self.m,
            inv_m=self.inv_m, inv_I=self.inv_I, f=self.f, tq=self.tq, fc=self.fc, ctrl=self.ctrl, Lx=self.Lx,
            Ly=self.Ly, pair_owner=nl.pair_owner, partner=nl.partner, hist=nl.hist, pw=self.pw,
            row_start=nl.row_start, rev_start=nl.rev_start, rev_pairs=nl.rev_pairs, wall_hist=self.wall_hist,
            fwall=self.fwall, ewall=self.ewall, ncont=self.ncont, eps_v=self.eps_v, eps_p=self.eps_p,
            phi_c=self.phi_c, E=cp.E_pp, G=cp.G_pp, Ew=cp.E_pw, Gw=cp.G_pw, py=cp.p_y, beta=cp.beta, mu=cp.mu_pp,
            mu_w=cp.mu_pw, mu_r=self.mu_r, damping=float(self.params.damping), gz=self.gz,
            top_wall=int(self.top_wall), Kb=self.K_bulk, gam=cp.adhesion, blk=self.blk, vp=self._vp,
            chunk=self._watch_chunk, part=self._part, x_build=nl.x_build, r_build=nl.r_build,
            skin=float(nl.skin), area=self.area, p_above=float(self.stop_above_Pa),
            p_below=float(self.stop_below_Pa), cap_i=self.cap_i, cap_j=self.cap_j,
            growth_cap=float(self.growth_cap), growth_step=float(self.growth_step), vol_solid=self.solid_volume,
            pc_over_K=self._pc_over_K(), reach=self._reach, off=B.N_SLOTS, servo=self.servo)

    def _pc_over_K(self) -> float:
        return float(self.p_collapse) / self.K_bulk if (self.p_collapse and self.K_bulk > 0) else 0.0

    @staticmethod
    def _names(kernel) -> tuple:
        return tuple(a.name for a in kernel._primal.arguments)

    def _dispatches(self, k: int, vc_offset: int) -> list:
        """A block of k steps: begin, k × (step, volume correction at multiples of volume_every), checks, row."""
        step, names = self._step_kernel, self._names
        seq = [(B.begin, names(B.begin))]
        for j in range(1, k + 1):
            seq.append((step, names(step)))
            if vc_offset >= 0 and (vc_offset + j) % self.volume_every == 0:
                seq += [(B.volume_step, names(B.volume_step))] * 2
        seq += [(SK.diagnostics, names(SK.diagnostics)), (B.row_sums, names(B.row_sums))]
        return seq

    def _measure(self):
        """Fill the block record from the current state without stepping (pressures, punch, time)."""
        key = ("measure",)
        seq = [(B.begin, self._names(B.begin)), (B.watch, self._names(B.watch)),
               (SK.diagnostics, self._names(SK.diagnostics)), (B.row_sums, self._names(B.row_sums))]
        vals = self._values()
        vals.update(p_above=math.inf, p_below=-math.inf)
        self._graph.run(key, lambda: seq, vals)
        self._measured = True
        return self._read_block()

    def _read_block(self) -> np.ndarray:
        b = self.blk.to_numpy()
        S = B.Slot
        self._host.update(punch_z=float(b[S.PUNCH_Z]), punch_v=float(b[S.PUNCH_V]), time=float(b[S.TIME]),
                          p_top=float(b[S.P_TOP]),
                          p_bottom=float(b[S.P_BOTTOM]), row=b[S.KE_TRANS:S.GROWTH + 1].copy())
        return b

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
        self._measure()

    def _block(self, k: int, context: str = "") -> int:
        """Run one block of at most k steps (:mod:`dem.block`); checks; rebuilds the neighbour list when the block
        asked for it. Returns the steps done."""
        vc_offset = self.step_count % self.volume_every if self.params.volume_correction else -1
        key = (int(k), vc_offset)
        self._graph.run(key, lambda: self._dispatches(int(k), vc_offset), self._values())
        p0 = self._host["p_top"]
        b = self._read_block()
        done = int(b[B.Slot.STEPS])
        self.step_count += done
        self.last_block_steps = done
        self.last_reason = B.Reason(int(b[B.Slot.REASON]))
        self.blocks += 1
        check_block(self, b, context)
        a = float(b[B.Slot.A_MAX] + b[B.Slot.A_SECOND])
        rebuilt = bool(int(b[B.Slot.REASON]) & B.Reason.REBUILD)
        if done > 0:
            prev = self._rates or dict(a=0.0, a_rate=0.0)
            a_rate = (a - (0.0 if self._fresh_list else prev["a"])) / done
            self._rates = dict(a=0.0 if rebuilt else a, a_rate=max(a_rate, 0.0),
                               p=self._host["p_top"], p_rate=(self._host["p_top"] - p0) / done
                               if math.isfinite(p0) else 0.0)
        self._fresh_list = rebuilt
        if rebuilt:
            self._rebuild()
            # refresh the per-pair arrays (forces, energies, overlaps) in the new layout for diagnostics;
            # evaluation only: the contact histories are not touched
            self._pair_forces_eval()
        return done

    def _predicted_stop(self) -> int:
        """Steps until the device will likely stop the next block (a rebuild, a pressure threshold), from the
        rates of the Verlet reach and of p_top over the last block; a longer block would replay its remaining
        steps as no-ops, which cost a step's fixed launch work each on the CPU. Only the cost depends on it:
        where a block stops is decided on the device."""
        est = self._rates
        if not est:
            return self.block_steps
        k = self.block_steps
        if est["a_rate"] > 0:    # the rebuild test: A_1 + A_2 > skin
            k = min(k, int((self.nlist.skin - est["a"]) / est["a_rate"]) + 1)
        if est["p_rate"] > 0 and math.isfinite(self.stop_above_Pa):
            k = min(k, int((self.stop_above_Pa - est["p"]) / est["p_rate"]) + 1)
        if est["p_rate"] < 0 and math.isfinite(self.stop_below_Pa):
            k = min(k, int((self.stop_below_Pa - est["p"]) / est["p_rate"]) + 1)
        return max(1, k)

    def _check(self, b: np.ndarray | None = None, context: str = "") -> np.ndarray:
        """Blow-up checks (:func:`dem.engine_checks.check_block`) on a block's record, default the current state."""
        return check_block(self, self._measure() if b is None else b, context)

    def volume_correction(self, iterations: int = 2):
        """Fixed-point radius updates conserving each particle's solid volume (:func:`dem.block.volume_step`);
        the blocks run two at every multiple of ``volume_every`` steps. This direct call is for tests and tools."""
        vals = self._values()
        vals["blk"] = self._blk_go
        self._blk_go.fill(0.0)
        self._blk_go[int(B.Slot.RAN)] = 1.0         # a record whose last step "ran": the updates apply
        for _ in range(iterations):
            B.volume_step(*[vals[nm] for nm in self._names(B.volume_step)])
        self._measure()

    def advance(self, nsteps: int, context: str = "", on_check=None):
        """Advance ``nsteps`` steps in blocks (:meth:`_block`). ``on_check(sim)`` runs after every block and may
        return True to stop early (returns the number of steps done). A block is at most ``block_steps``
        (``k_cap`` if set) long and ends at the multiples of each period in ``block_align``."""
        done = 0
        while done < nsteps:
            k = min(self.block_steps if self.k_cap is None else max(1, int(self.k_cap)), nsteps - done,
                    self._predicted_stop())
            for period in self.block_align:
                if period and period > 0:
                    k = min(k, int(period) - self.step_count % int(period))
            k = k if self.k_cap is not None else 1 << (int(k).bit_length() - 1)   # few distinct graphs
            done += self._block(k, context)
            if on_check is not None and on_check(self):
                break
        return done


def __getattr__(name):
    """The protocol driver lives in :mod:`dem.protocol`; ``dem.simulation.run_compaction`` keeps working."""
    if name in ("run_compaction", "punch_stiffness_estimate"):
        from dem import protocol
        return getattr(protocol, name)
    raise AttributeError(f"module 'dem.simulation' has no attribute {name!r}")

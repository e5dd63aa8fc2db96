"""Die-compaction protocol driver: :func:`run_compaction` runs load / hold / unload stages on a
:class:`dem.simulation.Simulation` — punch ramps, the hold servo, captures, history rows, progress and
checkpoints (the driver's state of a stage is plain data, saved beside the engine's ``state_dict``).

Load and unload stages move the punch at the stage's speed and end at the target pressure (a release to 0
at contact loss, p_top ≤ RELEASE_FRACTION × the peak pressure); captures are taken when p_top crosses each
capture pressure (approached one step at a time). A hold servos the punch stress with a PI controller,
v = −(A/k)(K_p e + K_i ∫e dt/τ)/τ, on the device at every step (:func:`dem.punch.servo_step`; k and τ from the
preceding ramp, :func:`punch_stiffness_estimate`), and ends once settled (:mod:`dem.hold`), also decided on the
device: the host runs a hold in long blocks, the same run for any block length.
"""
from __future__ import annotations

import math
import time

import numpy as np

from fva.backend import host_traffic
from fva.types import Packing
from dem.block import Reason
from dem.protocol_state import _driver_tree, _restore_driver, result_from_tree, result_tree
from dem.hold import SERVO_INTEGRAL_BAND, SERVO_TAU_MIN_STEPS, SERVO_TAU_TRANSITS, hold_max_extension, report_hold
from dem.simulation import RELEASE_FRACTION, Simulation, SimulationError
from dem.types import (HISTORY_COLUMNS, CompactionResult, Die, Material, SimParams, Stage,
                        capture_specs)

__all__ = ["run_compaction", "punch_stiffness_estimate", "result_tree", "result_from_tree"]


def _validate_protocol(protocol):
    if not protocol:
        raise ValueError("protocol is empty: give at least one Stage")
    for k, s in enumerate(protocol):
        if s.kind not in ("load", "hold", "unload"):
            raise ValueError(f"protocol[{k}].kind must be 'load', 'hold' or 'unload', got {s.kind!r}")
        if s.kind in ("load", "unload") and not (s.punch_speed_m_per_s > 0):
            raise ValueError(f"protocol[{k}] ({s.kind}): punch_speed_m_per_s must be > 0")
        if s.kind == "hold" and not (s.hold_time_s > 0):
            raise ValueError(f"protocol[{k}] (hold): hold_time_s must be > 0")
        if s.target_pressure_Pa < 0 or (s.kind != "unload" and s.target_pressure_Pa <= 0):
            raise ValueError(f"protocol[{k}] ({s.kind}): target_pressure_Pa must be > 0 (≥ 0 for unload)")


def punch_stiffness_estimate(track, area_m2: float, floor_N_per_m: float) -> float:
    """Punch stiffness k (N/m) for the hold servo from the (punch_z, p_top) checks of the preceding ramp.

    k = A · max(2 |dp/dz|_tail, |Δp/Δz|_ramp), at least ``floor_N_per_m``: the tail slope is a least-squares fit
    over the last 10 % of the checks (≥ 4), doubled because the elastic response to a hold correction is stiffer
    than a plastic loading tangent; the secant over the whole ramp bounds it from below. On a slow elastic unload
    the tail is as flat as the stress-wave noise of the readings (a 0.5 µm tail of a 1.4 mm pellet, ±5 MPa of
    waves), so its fit alone can come out near zero — the servo gain ∝ 1/k then ran 400× too high on the floor,
    and a full-size stack hold drove the punch off the pellet (p_top −2 MPa, end of hold 27 % off target)."""
    k = 0.0
    if len(track) >= 2:
        zz, pp = np.asarray(track, dtype=np.float64).T
        if len(track) >= 4:
            tail = max(4, len(track) // 10)
            zt, pt = zz[-tail:], pp[-tail:]
            if np.ptp(zt) > 0:
                k = 2.0 * abs(float(np.polyfit(zt - zt.mean(), pt, 1)[0]))
        dz = float(zz[-1] - zz[0])
        if dz != 0.0:
            k = max(k, abs(float(pp[-1] - pp[0]) / dz))
    return max(k * float(area_m2), float(floor_N_per_m))


def _fmt_p(p):
    return f"{p / 1e9:.2f} GPa" if p >= 1e8 else f"{p / 1e6:.1f} MPa"


def run_compaction(packing: Packing, material: Material, die: Die, protocol: list[Stage],
                   params: SimParams = SimParams(), *, progress=None, seed: int = 0, on_row=None,
                   checkpoint=None, resume: dict | None = None, **sim_kwargs) -> CompactionResult:
    """Compact ``packing`` in ``die`` following ``protocol`` (load / hold / unload stages).

    Returns a :class:`CompactionResult`: history (HISTORY_COLUMNS, every ``params.history_every`` steps and at
    captures), packings captured when p_top crosses each ``stage.capture_pressures_Pa`` (rising on load,
    falling on unload, at the end of a hold) with the :class:`CaptureSpec` of each (``captures``), particle
    frames, ``final`` packing and ``info`` (dt_s, rayleigh_time_s, mass_scaling, n_steps, wall_s, backend,
    neighbour rebuilds, ...).
    ``checkpoint`` (a :class:`dem.checkpoint.Checkpointer`) is asked between blocks of steps whether to save
    the whole state (engine :meth:`Simulation.state_dict` + driver); ``resume`` is such a saved tree (same
    packing, material, die, protocol and params): the run continues from it and, on the CPU, ends bitwise
    where the uninterrupted run would have.
    ``on_row(row)`` is called with every history row as it is recorded (e.g. to append it to a file), and
    ``progress(info)`` about twice a second with the stage, step, pressure, steps/s and ``eta_s``: the hold
    time left, or on a load stage an upper bound from the punch travel left to full density
    (``eta_is_bound``); none on unloading, whose end depends on the elastic recovery.
    Raises ValueError for bad input, :class:`SimulationError` for a blow-up, a stage exceeding max_steps or a
    load target that cannot be reached (the pellet would pass full density, or it blew up on the way: the
    message names the target, the highest pressure and the relative density reached).
    """
    _validate_protocol(protocol)
    t0 = time.perf_counter()
    traffic0 = host_traffic()   # kernel launches and host syncs of this run (set-up, steps, checks, outputs)
    sim = Simulation(packing, material, die, params, seed=seed, **sim_kwargs)
    hist = {c: [] for c in HISTORY_COLUMNS}
    packings, captures, frames, warnings = [], [], [], []
    spec_of = {(c.stage_index, c.pressure_Pa): c for c in capture_specs(protocol)}
    state = dict(last_hist=-1, last_frame=-1, last_progress=time.perf_counter(), last_step=0, p_peak=0.0)
    he, fe = max(1, int(params.history_every)), int(params.frames_every)
    sim.block_align = (he, fe)       # blocks end where a history row or a frame is due
    v_cap = params.servo_max_speed_m_per_s or max([s.punch_speed_m_per_s for s in protocol] + [0.0]) or 0.1
    load_track = []   # (punch_z, p_top) at checks of the latest ramp: stiffness estimate for the servo

    def record(si, periodic_row=False):
        if sim.step_count == state["last_hist"]:
            return
        # the Monte-Carlo solid fraction (host work on two array copies) on the periodic rows at multiples of
        # SOLID_FRACTION_EVERY × history_every steps and on every capture / stage-end row; NaN on the others
        sf = not periodic_row or (sim.step_count // he) % SOLID_FRACTION_EVERY == 0
        row = sim.history_row(si, solid_fraction=sf)
        for c in HISTORY_COLUMNS:
            hist[c].append(row[c])
        state["last_hist"] = sim.step_count
        if on_row is not None:
            on_row(row)

    def add_frame():
        if sim.step_count != state["last_frame"]:
            frames.append(sim.frame())
            state["last_frame"] = sim.step_count

    def capture(si, p, label, nominal=None):
        # the request's identity travels with the packing: (stage, nominal pressure; a hold's is its target)
        packings.append(sim.packing(p, label))
        captures.append(spec_of[(si, float(protocol[si].target_pressure_Pa if nominal is None else nominal))])
        record(si)
        add_frame()

    def periodic(si, stage_name, p):
        # blocks end at every multiple of he and fe (sim.block_align): a row / frame exactly there
        if sim.step_count % he == 0:
            record(si, periodic_row=True)
        if fe > 0 and sim.step_count % fe == 0:
            add_frame()
        if progress is not None:
            now = time.perf_counter()
            if now - state["last_progress"] >= 0.5:
                sps = (sim.step_count - state["last_step"]) / (now - state["last_progress"])
                # a rate over a few steps (the first report includes the kernels' compilation) says nothing
                eta, bound = (None, False)
                if sim.step_count - state["last_step"] >= 100:
                    eta, bound = _stage_eta(sim, state, sps)
                progress(dict(stage_index=si, stage=stage_name, step=sim.step_count, p_top_Pa=p,
                              punch_z_m=sim.punch_z, steps_per_s=sps,
                              particle_steps_per_s=sps * sim.n, eta_s=eta, eta_is_bound=bound))
                state["last_progress"], state["last_step"] = now, sim.step_count

    def result(completed: bool, stopped: str | None = None) -> CompactionResult:
        history = {c: np.asarray(hist[c], dtype=np.int64 if c in ("step", "stage") else np.float64)
                   for c in HISTORY_COLUMNS}
        final = sim.packing(sim.pressures()[0], "final") if completed else None
        growth = sim.growth   # a device read: before the traffic is summed
        wall = time.perf_counter() - t0
        launches, syncs = (b - a for a, b in zip(traffic0, host_traffic()))
        steps_here = max(sim.step_count - state.get("step0", 0), 1)   # steps advanced by this process
        info = dict(dt_s=sim.dt, rayleigh_time_s=sim.t_rayleigh, mass_scaling=params.mass_scaling,
                    mass_scaling_min_diameter_m=params.mass_scaling_min_diameter_m,
                    max_density_factor=float(sim.density_factor.max()), mean_density_kg_m3=sim.rho_mean,
                    n_steps=sim.step_count, wall_s=wall, backend=sim.backend.backend,
                    device=sim.backend.device_name, default_fp=params.default_fp, n_particles=sim.n,
                    skin_m=sim.skin, neighbour_builds=sim.nlist.builds, pair_capacity_grows=sim.nlist.grow_events,
                    particle_steps_per_s=sim.n * sim.step_count / max(wall, 1e-9), max_radius_growth=growth,
                    contact_model=material.contact_model, seed=seed, punch_start_m=sim.punch_z0,
                    host_launches=launches, host_syncs=syncs, host_launches_per_step=launches / steps_here,
                    host_syncs_per_step=syncs / steps_here, holds=list(state.get("holds", [])),
                    warnings=warnings, completed=completed, stopped=stopped)
        return CompactionResult(history=history, packings=packings, frames=frames, info=info, final=final,
                                captures=captures)

    try:
        resume_stage = None
        if resume is not None:
            resume_stage = _restore_driver(sim, resume, state, hist, packings, captures, frames, warnings, load_track)
            state["step0"] = sim.step_count

        def between_blocks(ds):
            if checkpoint.due():
                checkpoint.write(_driver_tree(sim, ds, state, hist, packings, captures, frames, warnings, load_track))
                checkpoint.after_write()

        _run_stages(sim, protocol, params, material, state, hist, packings, warnings, load_track, v_cap,
                    record, capture, periodic, resume_stage=resume_stage,
                    between_blocks=None if checkpoint is None else between_blocks)
    except (SimulationError, KeyboardInterrupt) as exc:
        # keep what was finished: the history up to the last check, the captures and frames so far
        # (no new history row: after a blow-up the current state is not a valid point of the curve)
        st = state.get("stage")
        if isinstance(exc, SimulationError) and st is not None and st.kind == "load" \
                and not getattr(exc, "unreachable", False):
            exc.args = (f"{_not_reached(sim, state)}; then the packing failed: {exc}",)
        _drop_unphysical_rows(hist, warnings)
        try:
            exc.partial = result(False, f"{type(exc).__name__}: {exc}")
        except Exception:  # the partial result must never mask the real error
            exc.partial = None
        raise
    record(len(protocol) - 1) if sim.step_count != state["last_hist"] else None
    add_frame()
    return result(True)


def _stage_eta(sim, state, steps_per_s):
    """(seconds left in the current stage or None, whether it is an upper bound). Hold: the steps left;
    load: the punch travel left to full density (t = Σ V_solid / A) at the stage's punch speed — an upper
    bound, as the target is reached before full density; unload: None (the release length depends on the
    elastic recovery)."""
    st = state.get("stage")
    if st is None or not steps_per_s > 0:
        return None, False
    if st.kind == "hold":
        return max(0, state.get("hold_end_step", sim.step_count) - sim.step_count) / steps_per_s, False
    if st.kind == "load" and st.punch_speed_m_per_s > 0:
        travel = sim.punch_z - sim.solid_volume / sim.area
        return max(0.0, travel) / (st.punch_speed_m_per_s * sim.dt) / steps_per_s, True
    return None, False


def _not_reached(sim, state) -> str:
    st = state["stage"]
    rho = state.get("rho_at_peak")
    return (f"{state.get('ctx', 'load stage')}: target {_fmt_p(st.target_pressure_Pa)} cannot be reached — the "
            f"highest pressure reached was {_fmt_p(state['p_peak'])} at relative density "
            f"{'?' if rho is None else f'{rho:.4f}'} (step {sim.step_count}); lower target_pressure_GPa")


def _drop_unphysical_rows(hist: dict, warnings: list) -> None:
    """Cut the history at its first row that is no point of a pellet (relative density outside (0, 1],
    thickness ≤ 0, non-finite pressure): after a blow-up such rows are artefacts, never results."""
    rho = np.asarray(hist["relative_density"], float)
    t = np.asarray(hist["thickness_m"], float)
    p = np.asarray(hist["p_top_Pa"], float)
    bad = ~((rho > 0) & (rho <= 1.0) & (t > 0) & np.isfinite(p) & np.isfinite(rho))
    if bad.any():
        k = int(np.argmax(bad))
        warnings.append(f"{len(rho) - k} history row(s) from step {int(hist['step'][k])} on dropped: relative "
                        f"density {rho[k]:.4g} is no state of a pellet (the run had failed)")
        for c in hist:
            del hist[c][k:]


def _start_stage(sim, st, si, material, load_track, v_cap, state, after_unload=False) -> dict:
    """The driver's state of stage ``si`` at its start (plain data: saved in checkpoints as it is)."""
    caps = sorted(float(c) for c in st.capture_pressures_Pa)
    ds = dict(si=si, start_step=sim.step_count, caps=caps)
    p_prev = sim.pressures()[0]
    if st.kind == "hold":
        n_hold = max(1, int(math.ceil(st.hold_time_s / sim.dt)))
        ds["target"] = float(st.target_pressure_Pa)
        ds["k_est"] = punch_stiffness_estimate(load_track, sim.area,
                                               1e-3 * material.youngs_modulus_Pa * sim.area / sim.punch_z)
        c_wave = math.sqrt(material.youngs_modulus_Pa / sim.rho_mean)
        # settle window: one period 2H/c of the pellet's fundamental compression mode (punch and bottom wall
        # both held), with the packing's own wave speed c = √(M/ρ_bulk), M = k H/A its constrained modulus from
        # the punch stiffness estimate (at most the solid's: a loose packing rings several times slower)
        rho_bulk = sim.solid_volume / (sim.area * sim.punch_z) * sim.rho_mean
        c_pack = min(c_wave, math.sqrt(ds["k_est"] * sim.punch_z / sim.area / rho_bulk))
        ds["window_steps"] = max(10, int(math.ceil(2.0 * sim.punch_z / c_pack / sim.dt)))
        # the servo: a damper on the punch, v = −K_p e/(ρ_bulk c) (dem.types.SimParams.servo_gain), c the wave
        # speed of the pellet's response to a correction. After an unload the ramp's tail slope is that elastic
        # response (c_pack); after a load it is a plastic tangent, far softer than the elastic unload/reload of
        # the contacts a correction makes, so the solid's wave speed bounds it instead (a servo tuned to the
        # tangent drove the punch up and down by its speed cap at every step: per-step loop gain > 2)
        c_servo = c_pack if after_unload else c_wave
        ds["tau"] = max(SERVO_TAU_TRANSITS * sim.punch_z / c_servo, SERVO_TAU_MIN_STEPS * sim.dt)
        ds["hold_end_step"] = sim.step_count + n_hold
        ds["max_extra_steps"] = int(math.ceil(hold_max_extension(sim) * max(n_hold, ds["window_steps"])))
        ds["settled"] = False
        tol = float(getattr(sim.params, "hold_tolerance", 0.05))
        comp = sim.punch_z / (rho_bulk * c_servo ** 2)      # A/k with k = A ρ_bulk c²/H
        sim.start_servo(target_Pa=ds["target"], compliance_m_per_Pa=comp, tau_s=ds["tau"],
                        kp=float(sim.params.servo_gain), ki=float(sim.params.servo_integral), v_cap_m_per_s=v_cap,
                        band_Pa=SERVO_INTEGRAL_BAND * ds["target"], tol_Pa=tol * ds["target"], hold_steps=n_hold,
                        window_steps=ds["window_steps"])
        return ds
    if st.kind == "load":
        sim.set_punch_velocity(-st.punch_speed_m_per_s)
        ds["pending"] = list(caps)
    else:
        sim.set_punch_velocity(+st.punch_speed_m_per_s)
        ds["pending"] = sorted(caps, reverse=True)
    # release to 0 ends at contact loss, p_top ≤ RELEASE_FRACTION × the peak pressure so far: without
    # gravity, the top layer would otherwise drift after the punch at a vanishing contact force
    ds["release_p"] = RELEASE_FRACTION * state["p_peak"] if st.kind == "unload" and st.target_pressure_Pa <= 0 \
        else 0.0
    ds["done"], ds["p_prev"] = False, p_prev
    load_track.clear()     # stiffness for a following hold: from this ramp (loading or elastic unloading)
    ds["z_start"] = sim.punch_z
    return ds


SOLID_FRACTION_EVERY = 10   # periodic history rows per Monte-Carlo solid fraction


def _stop_at_next(sim, st, pending, target, release_p):
    """The device stops a block at the first step whose punch pressure reaches the next capture or the stage's
    end (load: p ≥ the next; unload: p ≤ the next, or the release pressure), so each is taken at that very step."""
    if st.kind == "load":
        sim.stop_above_Pa, sim.stop_below_Pa = min(pending[:1] + [target]), -math.inf
    else:
        sim.stop_above_Pa, sim.stop_below_Pa = math.inf, max(pending[:1] + [target, release_p])


def _run_stages(sim, protocol, params, material, state, hist, packings, warnings, load_track, v_cap,
                record, capture, periodic, resume_stage=None, between_blocks=None):
    """The stage loop of :func:`run_compaction` (see there). Each stage's driver state is one dict of plain
    data (``ds``); ``between_blocks(ds)`` runs after every block of steps, where the engine and the driver
    are consistent (a checkpoint taken there resumes bitwise: pass it back as ``resume_stage``)."""
    if resume_stage is None:
        record(-1)
    first = 0 if resume_stage is None else int(resume_stage["si"])
    for si in range(first, len(protocol)):
        st = protocol[si]
        name = st.name or f"{st.kind} {_fmt_p(st.target_pressure_Pa)}"
        state["stage"] = st
        ctx = state["ctx"] = f"stage {si} '{name}'"
        if resume_stage is not None and int(resume_stage["si"]) == si:
            ds = resume_stage
        else:
            ramps = [stg.kind for stg in protocol[:si] if stg.kind != "hold"]
            ds = _start_stage(sim, st, si, material, load_track, v_cap, state,
                              after_unload=bool(ramps) and ramps[-1] == "unload")
        caps = ds["caps"]
        if st.kind == "hold":
            # the device servos the punch at every step (dem.punch.servo_step, started by _start_stage) and
            # stops a block once the hold has settled; the host only runs blocks up to the extension bound
            state["hold_end_step"] = ds["hold_end_step"]
            holds = state.setdefault("holds", [])
            tol = float(getattr(params, "hold_tolerance", 0.05))

            def ctl(s, si=si, name=name, ds=ds):
                periodic(si, name, s.pressures()[0])
                if s.last_reason & Reason.SETTLED:
                    ds["settled"] = True
                return ds["settled"]

            end_bound = ds["hold_end_step"] + ds["max_extra_steps"]
            while not ds["settled"] and sim.step_count < end_bound:
                if sim.step_count - ds["start_step"] > params.max_steps:
                    raise SimulationError(f"{ctx}: exceeded params.max_steps = {params.max_steps}")
                sim.advance(min(end_bound - sim.step_count, 1000), ctx, on_check=ctl)
                if between_blocks is not None and not ds["settled"] and sim.step_count < end_bound:
                    between_blocks(ds)
            servo = sim.stop_servo()
            state["p_peak"] = max(state["p_peak"], servo["P_MAX_PA"])
            p_end = sim.pressures()[0]
            if caps:
                capture(si, p_end, f"hold {_fmt_p(st.target_pressure_Pa)}")
            report_hold(sim, st, ds, servo, ctx, p_end, tol, holds, warnings)
            continue

        target = st.target_pressure_Pa
        release_p = ds["release_p"]
        pending = ds["pending"]

        def ctl(s, st=st, si=si, name=name, ds=ds, pending=pending, target=target, release_p=release_p):
            p, _ = s.pressures()
            rho_punch = s.solid_volume / (s.area * s.punch_z) if s.punch_z > 0 else float("inf")
            if p > state["p_peak"] and rho_punch <= 1.0:      # past full density is no state of a pellet
                state["p_peak"], state["rho_at_peak"] = p, rho_punch
            load_track.append((s.punch_z, p))
            if st.kind == "load" and rho_punch > 1.0:
                # the punch has passed the fully dense thickness Σ V_solid / A: no pellet state lies beyond
                err = SimulationError(f"{_not_reached(s, state)} (the punch passed the thickness of the fully "
                                      "dense pellet before it)")
                err.unreachable = True
                raise err
            if st.kind == "load":
                while pending and p >= pending[0]:
                    c = pending.pop(0)
                    capture(si, p, f"load {_fmt_p(c)}", c)
                if p >= target:
                    ds["done"] = True
            else:
                while pending and p <= pending[0]:
                    c = pending.pop(0)
                    capture(si, p, f"unload {_fmt_p(c)}", c)
                if p <= max(target, release_p):
                    ds["done"] = True          # contact lost (release) or target reached: the punch stops
                elif s.punch_z > max(ds["z_start"], sim.punch_z0) + 2 * s.skin and p <= 0:
                    ds["done"] = True
            _stop_at_next(s, st, pending, target, release_p)
            ds["p_prev"] = p
            periodic(si, name, p)
            return ds["done"]

        _stop_at_next(sim, st, pending, target, release_p)
        while not ds["done"]:
            if sim.step_count - ds["start_step"] > params.max_steps:
                raise SimulationError(f"{ctx}: did not reach {_fmt_p(target)} within params.max_steps = "
                                      f"{params.max_steps} steps (p_top = {ds['p_prev']:.4g} Pa, punch at "
                                      f"{sim.punch_z:.4g} m); raise max_steps or punch_speed_m_per_s")
            if st.kind == "load" and sim.punch_z <= 0.0:
                raise SimulationError(f"{ctx}: punch reached the bottom wall without reaching "
                                      f"{_fmt_p(target)}")
            sim.advance(1000, ctx, on_check=ctl)
            if between_blocks is not None and not ds["done"]:
                between_blocks(ds)
        sim.set_punch_velocity(0.0)
        sim.stop_above_Pa, sim.stop_below_Pa = math.inf, -math.inf
        record(si)
        for c in pending:
            if st.kind == "unload" and c <= 0 and ds["p_prev"] <= release_p:
                capture(si, ds["p_prev"], f"unload {_fmt_p(c)}", c)

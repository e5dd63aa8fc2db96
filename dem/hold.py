"""Hold stages of the protocol driver (:mod:`dem.protocol`): the servo's constants, when a hold has settled,
and its record.

The servo (:func:`dem.punch.servo_step`, every step on the device) is a damper on the punch,
v = −K_p e/(ρ_bulk c) plus a slow integral term, with time scale τ = H/c (``SERVO_TAU_TRANSITS`` transits of the
pellet's compression wave): with K_p = 1 the punch is the non-reflecting boundary of the 1-D wave equation
(impedance ρ_bulk c; Lysmer & Kuhlemeyer 1969), so a pellet pressed back against the stopped punch, or ringing,
is absorbed within about one period instead of being sampled. Per step it is stable while the loop gain
K_p c dt/d (d a particle diameter: the top layer's stiffness) stays ≪ 2, which the time step's Rayleigh bound
ensures. c is the unload tail's wave speed after an unload and the solid's after a load (see
:func:`dem.protocol._start_stage`).

A hold ends when its time is over and p_top has stayed within ``params.hold_tolerance`` of the target for one
period 2H/c of the pellet's fundamental compression mode (punch and bottom wall held; c = √(M/ρ_bulk) from the
servo's punch stiffness estimate), counted at every step on the device. A pellet still ringing from the
preceding ramp extends the hold, by at most ``params.hold_max_extension`` × max(hold time, period); each hold
is recorded (``info["holds"]``) and one that did not settle is a warning that names its cause (ringing, or the
servo's offset).
"""
from __future__ import annotations


SERVO_TAU_TRANSITS = 1.0     # servo time scale τ in transits H/c of the packing's compression wave (see above)
SERVO_TAU_MIN_STEPS = 20     # … and at least this many steps
SERVO_INTEGRAL_BAND = 0.05   # the servo's integral runs only while |e| < this fraction of the target


def _fmt_p(p):
    return f"{p / 1e9:.2f} GPa" if p >= 1e8 else f"{p / 1e6:.1f} MPa"


def hold_max_extension(sim) -> float:
    return float(getattr(sim.params, "hold_max_extension", 4.0))


def report_hold(sim, st, ds, servo, ctx, p_end, tol, holds, warnings) -> None:
    """One record of a finished hold in ``holds`` (and a warning if it did not settle within ``tol``); ``servo``:
    the device servo's final state by :class:`dem.punch.Servo` name."""
    target = st.target_pressure_Pa
    extra = max(0, sim.step_count - ds["hold_end_step"])
    # ringing: half the range of p_top over the last complete settle window (the current one if none)
    amp = servo["AMP_PA"] if servo["STEPS"] >= ds["window_steps"] else \
        0.5 * (servo["WIN_MAX_PA"] - servo["WIN_MIN_PA"])
    ds["settled"] = bool(servo["SETTLED"])
    rel = (p_end - target) / target
    holds.append(dict(stage=int(ds["si"]), target_Pa=float(target), p_end_Pa=float(p_end), off_target=float(rel),
                      hold_time_s=float(st.hold_time_s), extended_s=float(extra * sim.dt),
                      window_s=float(ds["window_steps"] * sim.dt), ringing_amplitude_Pa=float(amp),
                      settled=bool(ds["settled"])))
    if not ds["settled"] or abs(rel) > tol:
        if amp > 0.5 * tol * target:
            why = (f"the pellet still rings from the preceding ramp (±{_fmt_p(amp)} over the last window): slow "
                   "the last approach to the target, or lengthen hold_time_s")
        else:
            why = (f"the ringing has decayed (±{_fmt_p(amp)}) but the servo had not yet brought p_top to the "
                   "target: end the preceding ramp closer to it, or lengthen hold_time_s")
        warnings.append(
            f"{ctx}: p_top did not settle within {tol:.0%} of the target ({_fmt_p(target)}) after extending "
            f"the hold by {extra * sim.dt:.3g} s (the bound, {hold_max_extension(sim):g} × max(hold time, "
            f"settle window {ds['window_steps'] * sim.dt:.3g} s)); it ends at {_fmt_p(p_end)} ({rel:+.1%}): {why}")

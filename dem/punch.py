"""The punch's device control: the named entries of ``ctrl`` (:class:`Ctrl`) and the hold servo, its state
``servo`` (:class:`Servo`, named slots) and its per-step law (:func:`servo_step`, called by the step kernel of
:mod:`dem.block` after the step's watch). The driver's side (gains, time scale, settle window) is in
:mod:`dem.hold` and :func:`dem.protocol._start_stage`."""

import enum

from fva.backend import ti


class Ctrl(enum.IntEnum):
    """Named entries of the punch control ``ctrl`` (f64, length 8; the rest unused)."""
    PUNCH_Z = 0       # punch position (m)
    PUNCH_V = 1       # punch velocity of the next step (m/s, negative = down)
    TIME = 2          # simulated time (s)
    PHI_MIN = 3       # the lowest porosity of the compact under the punch so far: the pore-collapse hardening
                      # variable (1 before any; :func:`dem.volume_kernels.volume_correct_pass`)


class Servo(enum.IntEnum):
    """Named slots of the hold servo's device state ``servo`` (f64): its set-up (written by the host when a hold
    starts, :meth:`dem.simulation.Simulation.start_servo`) and its running state (advanced by
    :func:`servo_step` at every step; saved in checkpoints)."""
    ON = 0              # 1 while a hold servos the punch: the punch velocity is then the device's, not the host's
    TARGET_PA = 1       # p_target
    COMPLIANCE_M_PER_PA = 2   # A/k = H/(ρ_bulk c²), k the pellet's stiffness under the punch (N/m)
    TAU_S = 3           # servo time scale τ
    KP = 4              # proportional gain K_p
    KI = 5              # integral gain K_i
    V_CAP_M_PER_S = 6   # |v_punch| bound
    BAND_PA = 7         # the integral runs only while |e| < BAND (conditional integration: no wind-up)
    TOL_PA = 8          # settle tolerance on |e|
    HOLD_STEPS = 9      # the hold's nominal length
    WINDOW_STEPS = 10   # settle window: steps p_top must stay within TOL (one period of the pellet's mode)
    INTEGRAL_PA_S = 11  # ∫ e dt (conditional)
    STEPS = 12          # steps since the hold began
    IN_TOL_STEPS = 13   # consecutive steps with |e| ≤ TOL, up to the last one
    SETTLED = 14        # 1 once STEPS ≥ HOLD_STEPS and IN_TOL_STEPS ≥ WINDOW_STEPS
    WIN_MIN_PA = 15     # p_top range over the current settle window (windows of WINDOW_STEPS from the start)
    WIN_MAX_PA = 16
    AMP_PA = 17         # half range of p_top over the last complete window (ringing amplitude)
    P_MAX_PA = 18       # highest p_top of the hold


N_SERVO = len(Servo)


def servo_drives(servo) -> bool:
    """Whether the punch velocity is the device servo's (a hold past its first step), not the host's: the one
    rule of :func:`dem.block.begin` and of the checkpoint (``servo``: the :class:`Servo` slots, any indexable)."""
    return bool(servo[int(Servo.ON)] != 0.0 and servo[int(Servo.STEPS)] > 0.0)


@ti.func
def servo_step(dt: float, p: float, ctrl: ti.template(), servo: ti.template()) -> ti.i32:
    """Serial, after a step's watch in a hold (``servo[ON]``): the PI law on the punch stress from the p_top
    ``p`` this step computed, e = p_target − p,

        v_punch = clip(−(A/k)(K_p e + K_i ∫e dt/τ)/τ, ±v_cap),   ∫e dt advanced only while |e| < BAND,

    the velocity of the next step (conditional integration: Åström & Murray, *Feedback Systems*, 2008, §10.4);
    the settle bookkeeping (consecutive steps within TOL, the ringing amplitude per window, the peak). Returns 1
    once the hold's time is over and p has stayed within TOL for one settle window (the block then stops). Per
    step, so the same for any block length."""
    settled = 0
    if servo[int(Servo.ON)] != 0.0:
        e = servo[int(Servo.TARGET_PA)] - p
        if ti.abs(e) < servo[int(Servo.BAND_PA)]:
            servo[int(Servo.INTEGRAL_PA_S)] += e * dt
        tau = servo[int(Servo.TAU_S)]
        integ = servo[int(Servo.INTEGRAL_PA_S)]
        v = -servo[int(Servo.COMPLIANCE_M_PER_PA)] * (servo[int(Servo.KP)] * e
                                                      + servo[int(Servo.KI)] * integ / tau) / tau
        vcap = servo[int(Servo.V_CAP_M_PER_S)]
        ctrl[int(Ctrl.PUNCH_V)] = ti.min(vcap, ti.max(-vcap, v))
        k = servo[int(Servo.STEPS)] + 1.0
        servo[int(Servo.STEPS)] = k
        if ti.abs(e) <= servo[int(Servo.TOL_PA)]:
            servo[int(Servo.IN_TOL_STEPS)] += 1.0
        else:
            servo[int(Servo.IN_TOL_STEPS)] = 0.0
        servo[int(Servo.P_MAX_PA)] = ti.max(servo[int(Servo.P_MAX_PA)], p)
        win = servo[int(Servo.WINDOW_STEPS)]
        if k == 1.0:
            servo[int(Servo.WIN_MIN_PA)] = p
            servo[int(Servo.WIN_MAX_PA)] = p
        servo[int(Servo.WIN_MIN_PA)] = ti.min(servo[int(Servo.WIN_MIN_PA)], p)
        servo[int(Servo.WIN_MAX_PA)] = ti.max(servo[int(Servo.WIN_MAX_PA)], p)
        if k - win * ti.floor(k / win) == 0.0:        # a window complete: its half range, a new window
            servo[int(Servo.AMP_PA)] = 0.5 * (servo[int(Servo.WIN_MAX_PA)] - servo[int(Servo.WIN_MIN_PA)])
            servo[int(Servo.WIN_MIN_PA)] = p
            servo[int(Servo.WIN_MAX_PA)] = p
        if servo[int(Servo.SETTLED)] == 0.0 and k >= servo[int(Servo.HOLD_STEPS)] \
                and servo[int(Servo.IN_TOL_STEPS)] >= win:
            servo[int(Servo.SETTLED)] = 1.0
        if servo[int(Servo.SETTLED)] != 0.0:
            settled = 1
    return settled

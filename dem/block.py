"""Blocks of steps on the device: the host advances the engine by up to K steps with ONE call and reads ONE
small array back; every per-step decision is taken on the device.

A block is a Taichi graph (``ti.graph``: the dispatches are recorded once and replayed from C++, so a block
costs one Python call whatever K is) of

    begin  →  K × [ step  →  (volume correction, at steps that are multiples of ``volume_every``) ]
           →  checks  →  row sums

* :func:`step_kernel` — one velocity-Verlet step (kick–drift, pair forces, gather–kick: three parallel loops,
  the fixed cost of a step on the CPU) and its watch: the gather loop accumulates chunk partials of the wall
  forces and the Verlet reaches, and a serial :func:`decide` turns them into p_top, p_bottom and the stop
  decision (``Slot.STOP``) — the neighbour list must be rebuilt before the next step, the punch pressure
  crossed a threshold the host set for this block (a capture or the stage's target), or a NaN appeared; then,
  in a hold, :func:`dem.punch.servo_step` sets the punch velocity of the next step from the p_top just computed and
  stops the block once the hold has settled (state: the named slots :class:`Servo` of ``servo``). A no-op
  once the block has stopped;
* checks — :func:`dem.simulation_kernels.diagnostics` (overlaps, escapes, speeds) once per block;
* :func:`row_sums` — the history row's sums at the block's end (energies, contacts, thickness, virial).

The block's outcome is the packed array ``blk`` (:class:`Slot`), read by the host once per block. Steps after
the stop are no-ops, so where a block ends depends only on the state, never on K: a run is bitwise the same
for any block length (and a checkpoint taken between blocks resumes bitwise).

Verlet test (exact for the next step). e_i = |x_i − x_i(build)| + (r_i − r_i(build))⁺ is how far particle i may
have closed a gap since the build; u_i = dt |v_i + ½ dt f_i/m_i| is its motion in the next step (the next kick
uses the stored forces). A pair absent from the list (gap ≥ skin at the build) can touch during the next step
only if A_i + A_j > skin, A = e + u; the block stops for a rebuild when the two largest A exceed the skin (the
sum over one pair, instead of twice the largest: one fast particle may use the whole skin while its
neighbours rest).
"""

import enum

from fva.backend import ti
from dem import simulation_kernels as SK
from dem import volume_kernels as VK
from dem.neighbours_kernels import min_image, vec3
from dem.punch import Ctrl, Servo, servo_step


class Slot(enum.IntEnum):
    """Named slots of the block record ``blk`` (f64)."""
    STOP = 0          # 1 once the block has stopped (later steps are no-ops)
    STEPS = 1         # steps done in this block
    REASON = 2        # why it stopped: a sum of Reason flags
    P_TOP = 3         # punch pressure after the last step done (Pa)
    P_BOTTOM = 4      # bottom-wall pressure (Pa)
    PUNCH_Z = 5       # punch position (m)
    TIME = 6          # simulated time (s)
    A_MAX = 7         # largest Verlet reach A_i after the last step (m)
    DR_MAX = 8        # largest radius growth of the last volume-correction pass (m)
    VR_MAX = 9        # largest |v_i|/r_i over the block's steps (1/s)
    # the history row at the block's end (:func:`row_sums`)
    KE_TRANS = 10     # ½ Σ m v² (J)
    KE_ROT = 11       # ½ Σ I ω² (J)
    ELASTIC = 12      # recoverable elastic energy, pairs + walls (J)
    CONTACTS = 13     # Σ_i contacts of i (= 2 × pairs in contact, + wall contacts not counted)
    TOP = 14          # max_i (z_i + r_i) (m)
    VIRIAL_ZZ = 15    # Σ_i V σ_zz share (N·m; compression negative)
    GROWTH = 16       # max_i r_i / r0_i
    RAN = 17          # 1 if the last step kernel ran (the volume correction after it runs only then)
    A_SECOND = 18     # second largest Verlet reach (m; = A_MAX when 2 A_MAX ≤ skin: not needed then)
    PUNCH_V = 19      # punch velocity of the next step (m/s; the hold servo's in a hold)


N_SLOTS = len(Slot)


class Reason(enum.IntFlag):
    NAN = 1           # a NaN in a position or velocity
    REBUILD = 2       # the neighbour list must be rebuilt before the next step
    ABOVE = 4         # p_top ≥ the block's upper threshold
    BELOW = 8         # p_top ≤ the block's lower threshold
    SETTLED = 16      # the hold's time is over and p_top has stayed within its tolerance for one settle window


def watch_chunk(n: int, backend: str = "cpu") -> int:
    """Particles per chunk of the watch's two-level sums. On the CPU the gather loop's block size
    (``SK.WATCH_CHUNK``): each chunk is summed by one thread in index order, so the sums are bitwise the same
    for any thread count. On a GPU (atomics in any order) larger chunks, so that at most ≈ 2048 chunk partials
    are left for the one-thread final sum."""
    if backend == "cpu":
        return SK.WATCH_CHUNK
    return SK.WATCH_CHUNK * max(1, -(-n // (2048 * SK.WATCH_CHUNK)))


@ti.kernel
def begin(blk: ti.types.ndarray(), ctrl: ti.types.ndarray(), servo: ti.types.ndarray(), vp: float):
    """Open a block: clear the record, set the punch velocity the host chose for it — unless the hold servo
    drives the punch (:func:`dem.punch.servo_drives`: its velocity carries over from the block before)."""
    for k in ti.static(range(N_SLOTS)):
        blk[k] = 0.0
    blk[int(Slot.PUNCH_Z)] = ctrl[int(Ctrl.PUNCH_Z)]
    blk[int(Slot.TIME)] = ctrl[int(Ctrl.TIME)]
    if servo[int(Servo.ON)] == 0.0 or servo[int(Servo.STEPS)] == 0.0:
        ctrl[int(Ctrl.PUNCH_V)] = vp
    blk[int(Slot.PUNCH_V)] = ctrl[int(Ctrl.PUNCH_V)]


@ti.func
def decide(n: ti.i32, chunk: ti.i32, part: ti.template(), reach: ti.template(), blk: ti.template(),
           ctrl: ti.template(), skin: float, area: float, p_above: float, p_below: float):
    """Serial end of a step's watch: the chunk partials in order → p_top, p_bottom (Pa), the largest Verlet
    reach A_1, the largest |v|/r of the block, NaN; stop the block (:class:`Reason`) when the neighbour list
    must be rebuilt before the next step (A_1 + A_2 > skin for the two largest reaches: a pair absent from the
    list, gap ≥ skin at the build, can touch only if A_i + A_j > skin), a pressure threshold is crossed or a
    NaN appeared. A_2 is needed only when 2 A_1 > skin; it is then the larger of the other chunks' maxima and
    the second largest reach inside A_1's chunk (one chunk scanned: O(chunks + chunk))."""
    nch = (n + chunk - 1) // chunk
    sb = 0.0
    st = 0.0
    a1 = 0.0
    vr = blk[int(Slot.VR_MAX)]
    bad = 0.0
    for c in range(nch):
        sb += part[c, 0]
        st += part[c, 1]
        a1 = ti.max(a1, part[c, 2])
        vr = ti.max(vr, part[c, 3])
        bad = ti.max(bad, part[c, 4])
    a2 = a1
    if 2.0 * a1 > skin:
        cs = -1
        a2 = 0.0
        for c in range(nch):
            if cs < 0 and part[c, 2] == a1:
                cs = c
            else:
                a2 = ti.max(a2, part[c, 2])
        seen = 0
        for i in range(cs * chunk, ti.min(n, (cs + 1) * chunk)):
            if seen == 0 and reach[i] == a1:
                seen = 1
            else:
                a2 = ti.max(a2, reach[i])
    p_top = st / area
    blk[int(Slot.STEPS)] += 1.0
    blk[int(Slot.P_TOP)] = p_top
    blk[int(Slot.P_BOTTOM)] = sb / area
    blk[int(Slot.PUNCH_Z)] = ctrl[int(Ctrl.PUNCH_Z)]
    blk[int(Slot.TIME)] = ctrl[int(Ctrl.TIME)]
    blk[int(Slot.A_MAX)] = a1
    blk[int(Slot.A_SECOND)] = a2
    blk[int(Slot.VR_MAX)] = vr
    why = 0
    if bad > 0.0:
        why |= int(Reason.NAN)
    if a1 + a2 > skin:
        why |= int(Reason.REBUILD)
    if p_top >= p_above:
        why |= int(Reason.ABOVE)
    if p_top <= p_below:
        why |= int(Reason.BELOW)
    if why != 0:
        blk[int(Slot.STOP)] = 1.0
        blk[int(Slot.REASON)] = ti.cast(why, ti.f64)


@ti.func
def clear_partials(nch, part: ti.template()):
    for c in range(nch):
        for k in ti.static(range(5)):
            part[c, k] = 0.0


_STEP_KERNELS: dict = {}


def step_kernel(model: int):
    """The one-step kernel for contact model ``model`` (a compile-time constant: graphs take no template
    arguments, so each model gets its own kernel object, built once): kick–drift, pair forces, gather–kick with
    the watch's chunk partials (:func:`SK.gather_kick`), then :func:`decide` and :func:`dem.punch.servo_step`. Three
    parallel loops."""
    if model in _STEP_KERNELS:
        return _STEP_KERNELS[model]

    @ti.kernel
    def step(n: ti.i32, npairs: ti.i32, dt: float, x: ti.types.ndarray(), v: ti.types.ndarray(),
             w: ti.types.ndarray(), r: ti.types.ndarray(), m: ti.types.ndarray(), inv_m: ti.types.ndarray(),
             inv_I: ti.types.ndarray(), f: ti.types.ndarray(), tq: ti.types.ndarray(), fc: ti.types.ndarray(),
             ctrl: ti.types.ndarray(), Lx: float, Ly: float, pair_owner: ti.types.ndarray(),
             partner: ti.types.ndarray(), hist: ti.types.ndarray(), pw: ti.types.ndarray(),
             row_start: ti.types.ndarray(), rev_start: ti.types.ndarray(), rev_pairs: ti.types.ndarray(),
             wall_hist: ti.types.ndarray(), fwall: ti.types.ndarray(), ewall: ti.types.ndarray(),
             ncont: ti.types.ndarray(), eps_v: ti.types.ndarray(), E: float, G: float, Ew: float, Gw: float,
             py: float, beta: float, mu: float, mu_w: float, mu_r: float, damping: float, gz: float,
             top_wall: ti.i32, Kb: float, gam: float, blk: ti.types.ndarray(), chunk: ti.i32,
             part: ti.types.ndarray(), x_build: ti.types.ndarray(), r_build: ti.types.ndarray(), skin: float,
             area: float, p_above: float, p_below: float, reach: ti.types.ndarray(), servo: ti.types.ndarray()):
        go = 1 - ti.cast(blk[int(Slot.STOP)], ti.i32)
        nn = n * go
        blk[int(Slot.RAN)] = ti.cast(go, ti.f64)
        if go:
            SK.advance_punch(dt, ctrl)
            clear_partials((n + chunk - 1) // chunk, part)      # not top-level: serial, a few entries
        SK.kick_drift(nn, dt, x, v, w, f, tq, inv_m, inv_I, Lx, Ly)
        SK.pair_forces(model, npairs * go, dt, x, v, w, r, m, pair_owner, partner, hist, pw, Lx, Ly, E, G, py,
                       beta, mu, mu_r, eps_v, Kb, gam, True)
        SK.gather_kick(model, nn, dt, x, v, w, r, m, inv_m, inv_I, row_start, rev_start, rev_pairs, pw,
                       wall_hist, fwall, ewall, ncont, f, tq, fc, ctrl, Ew, Gw, py, beta, mu_w, mu_r, damping, gz,
                       top_wall, eps_v, Kb, True, True, x_build, r_build, part, reach, Lx, Ly)
        if go:
            decide(n, chunk, part, reach, blk, ctrl, skin, area, p_above, p_below)
            if servo_step(dt, blk[int(Slot.P_TOP)], ctrl, servo):
                blk[int(Slot.STOP)] = 1.0
                why = ti.cast(blk[int(Slot.REASON)], ti.i32) | int(Reason.SETTLED)
                blk[int(Slot.REASON)] = ti.cast(why, ti.f64)
            blk[int(Slot.PUNCH_V)] = ctrl[int(Ctrl.PUNCH_V)]

    _STEP_KERNELS[model] = step
    return step


@ti.kernel
def watch(n: ti.i32, chunk: ti.i32, x: ti.types.ndarray(), v: ti.types.ndarray(), r: ti.types.ndarray(),
          f: ti.types.ndarray(), inv_m: ti.types.ndarray(), fwall: ti.types.ndarray(),
          x_build: ti.types.ndarray(), r_build: ti.types.ndarray(), ctrl: ti.types.ndarray(),
          part: ti.types.ndarray(), blk: ti.types.ndarray(), Lx: float, Ly: float, dt: float, skin: float,
          area: float, p_above: float, p_below: float, reach: ti.types.ndarray()):
    """The watch of a step (:func:`decide`) at the current state without stepping — what the step kernel
    accumulates in its gather loop, here from the stored forces, chunk by chunk in index order (the same sums
    on the CPU, bitwise)."""
    nch = (n + chunk - 1) // chunk
    for c in range(nch):
        sb = 0.0
        st = 0.0
        a1 = 0.0
        vr = 0.0
        bad = 0.0
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            sb += fwall[i, 0]
            st += fwall[i, 1]
            vi = vec3(v, i)
            e = min_image(vec3(x, i) - vec3(x_build, i), Lx, Ly).norm() + ti.max(r[i] - r_build[i], 0.0)
            a = e + dt * (vi + 0.5 * dt * inv_m[i] * vec3(f, i)).norm()
            reach[i] = a
            if not ti.math.isnan(a):
                a1 = ti.max(a1, a)
            else:
                bad = 1.0
            vr = ti.max(vr, vi.norm() / r[i])
        part[c, 0] = sb
        part[c, 1] = st
        part[c, 2] = a1
        part[c, 3] = vr
        part[c, 4] = bad
    if n >= 0:                        # inside an if: the serial decision, not a parallel loop
        decide(n, chunk, part, reach, blk, ctrl, skin, area, p_above, p_below)


@ti.kernel
def volume_step(npairs: ti.i32, n: ti.i32, x: ti.types.ndarray(), r: ti.types.ndarray(), r0: ti.types.ndarray(),
                pair_owner: ti.types.ndarray(), partner: ti.types.ndarray(), row_start: ti.types.ndarray(),
                rev_start: ti.types.ndarray(), rev_pairs: ti.types.ndarray(), cap_i: ti.types.ndarray(),
                cap_j: ti.types.ndarray(), ctrl: ti.types.ndarray(), top_wall: ti.i32, growth_cap: float,
                growth_step: float, eps_v: ti.types.ndarray(), eps_p: ti.types.ndarray(),
                phi_c: ti.types.ndarray(), vol_solid: float, area: float, pc_over_K: float, Lx: float, Ly: float,
                blk: ti.types.ndarray(), skin: float):
    """One fixed-point update of the volume correction (:func:`SK.pair_caps` then :func:`SK.volume_correct`)
    in one launch, a no-op once the block has stopped; the compact's porosity φ = 1 − V_solid/(A·z_punch) is
    read on the device."""
    go = ti.cast(blk[int(Slot.RAN)], ti.i32)          # after a step that ran (its stop request included)
    if go:
        blk[int(Slot.DR_MAX)] = 0.0
    VK.lens_caps_pass(npairs * go, x, r, pair_owner, partner, cap_i, cap_j, Lx, Ly)
    VK.volume_correct_pass(n * go, x, r, r0, row_start, rev_start, rev_pairs, cap_i, cap_j, ctrl, top_wall,
                           growth_cap, growth_step, eps_v, eps_p, phi_c, vol_solid, area, pc_over_K, blk,
                           int(Slot.DR_MAX))
    if go:
        # the grown radii close gaps too: the step's Verlet test again with each reach + the largest growth
        dr = blk[int(Slot.DR_MAX)]
        blk[int(Slot.A_MAX)] += dr
        blk[int(Slot.A_SECOND)] += dr
        if blk[int(Slot.A_MAX)] + blk[int(Slot.A_SECOND)] > skin:
            blk[int(Slot.STOP)] = 1.0
            blk[int(Slot.REASON)] = ti.cast(ti.cast(blk[int(Slot.REASON)], ti.i32) | int(Reason.REBUILD), ti.f64)


N_PART = SK.DIAG_COL + SK.N_DIAG   # columns of the chunk partials: watch 0–4, row sums 6–12, diagnostics 13–19


@ti.kernel
def row_sums(n: ti.i32, chunk: ti.i32, x: ti.types.ndarray(), v: ti.types.ndarray(), w: ti.types.ndarray(),
             r: ti.types.ndarray(), r0: ti.types.ndarray(), m: ti.types.ndarray(), inv_I: ti.types.ndarray(),
             row_start: ti.types.ndarray(), partner: ti.types.ndarray(), pw: ti.types.ndarray(),
             ewall: ti.types.ndarray(), ncont: ti.types.ndarray(), fwall: ti.types.ndarray(),
             ctrl: ti.types.ndarray(), top_wall: ti.i32, part: ti.types.ndarray(), blk: ti.types.ndarray()):
    """The sums of a history row, as fixed two-level sums (bitwise reproducible): kinetic energies
    ½ Σ m v², ½ Σ I ω²; elastic energy Σ_pairs e_p + Σ_walls e; Σ contacts; max (z + r); the zz virial
    Σ_i [Σ_owned f_z (z_j − z_i) + wall terms f_z (z_wall − z_i)] = V σ_zz; max r/r0."""
    nch = (n + chunk - 1) // chunk
    pz = ctrl[int(Ctrl.PUNCH_Z)]
    for c in range(nch):
        kt = 0.0
        kr = 0.0
        el = 0.0
        nc = 0.0
        top = -1e300
        vir = 0.0
        g = 1.0
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            vi = vec3(v, i)
            wi = vec3(w, i)
            kt += 0.5 * m[i] * vi.dot(vi)
            kr += 0.5 * wi.dot(wi) / inv_I[i]
            zi = x[i, 2]
            ri = r[i]
            s = 0.0
            e = ewall[i]
            for p in range(row_start[i], row_start[i + 1]):
                e += pw[p, 9]
                s += pw[p, 2] * (x[partner[p], 2] - zi)
            if ri - zi > 0.0:
                s += fwall[i, 0] * (0.0 - zi)
            if top_wall != 0:
                if zi + ri - pz > 0.0:
                    s += -fwall[i, 1] * (pz - zi)
            el += e
            nc += ti.cast(ncont[i], ti.f64)
            top = ti.max(top, zi + ri)
            vir += s
            g = ti.max(g, ri / r0[i])
        part[c, 6] = kt
        part[c, 7] = kr
        part[c, 8] = el
        part[c, 9] = nc
        part[c, 10] = top
        part[c, 11] = vir
        part[c, 12] = g
    kt = 0.0
    kr = 0.0
    el = 0.0
    nc = 0.0
    top = -1e300
    vir = 0.0
    g = 1.0
    if nch > 0:
        for c in range(nch):          # inside an if, not top-level: one thread, in order
            kt += part[c, 6]
            kr += part[c, 7]
            el += part[c, 8]
            nc += part[c, 9]
            top = ti.max(top, part[c, 10])
            vir += part[c, 11]
            g = ti.max(g, part[c, 12])
    blk[int(Slot.KE_TRANS)] = kt
    blk[int(Slot.KE_ROT)] = kr
    blk[int(Slot.ELASTIC)] = el
    blk[int(Slot.CONTACTS)] = nc
    blk[int(Slot.TOP)] = top
    blk[int(Slot.VIRIAL_ZZ)] = vir
    blk[int(Slot.GROWTH)] = g

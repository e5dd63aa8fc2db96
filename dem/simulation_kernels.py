"""Taichi kernels of one DEM step (orchestrated by :mod:`dem.simulation`). Ndarray arguments only.

A step is three stages (three parallel loops), run by :func:`dem.block.step_kernel` inside a block of steps:
  0. :func:`advance_punch` punch z += dt v_punch, t += dt;
  1. :func:`kick_drift`   v += ½dt F/m, ω += ½dt T/I, x += dt v (x, y wrapped);
  2. :func:`pair_forces`  one pass over the owned Verlet pairs: contact law, damping, tangential history;
                           the force on the owner is stored per pair (no atomics);
  3. :func:`gather_kick`  each particle sums its owned rows (+f) and reverse rows (−f) in a fixed order,
                           adds the bottom-wall and punch contacts, local (Cundall) damping, v += ½dt F/m.
:func:`pair_forces_eval` and :func:`gather_eval` evaluate stages 2–3 at the current state (dt = 0) without
writing any contact history.
Sums are therefore bitwise reproducible on the CPU for a given thread count and input.

ctrl (f64 ndarray, slots named by :class:`dem.punch.Ctrl`): punch z (m), punch velocity (m/s, negative = down),
time (s), the lowest porosity reached (pore-collapse hardening).
Particle–wall contacts: the walls are rigid planes (R* = r, m* = m, E*, G* of particle vs rigid body).
The volume correction and the particle mean stress are in :mod:`dem.volume_kernels`.
"""
from fva.backend import ti
from dem.contact_kernels import HERTZ, bonded_normal, damping_coefficient, normal_law, tangential_force
from dem.neighbours_kernels import min_image, vec3
from dem.punch import Ctrl

PI = 3.141592653589793
# particles per chunk of the per-step watch (dem.block): the gather loop's block size, so that on the CPU each chunk's
# sums are formed by one thread in index order (bitwise reproducible for any thread count)
WATCH_CHUNK = 64


@ti.func
def _lens_caps(d, ri, rj):
    """Volumes of the spherical caps two overlapping spheres (centre distance d) lose beyond the plane of their
    intersection circle (radical plane): V = π h² (3r − h)/3, h_i = r_i − (d² + r_i² − r_j²)/(2d); 0 when apart."""
    ci = 0.0
    cj = 0.0
    if d < ri + rj and d > 0.0:
        xp = (d * d + ri * ri - rj * rj) / (2.0 * d)
        hi = ti.min(ti.max(ri - xp, 0.0), 2.0 * ri)
        hj = ti.min(ti.max(rj - (d - xp), 0.0), 2.0 * rj)
        ci = PI * hi * hi * (3.0 * ri - hi) / 3.0
        cj = PI * hj * hj * (3.0 * rj - hj) / 3.0
    return ci, cj


@ti.func
def _set3(a: ti.template(), i, v):
    for c in ti.static(range(3)):
        a[i, c] = v[c]


@ti.func
def advance_punch(dt: float, ctrl: ti.template()):
    """Punch z += dt v_punch, time += dt (serial)."""
    ctrl[int(Ctrl.PUNCH_Z)] += dt * ctrl[int(Ctrl.PUNCH_V)]
    ctrl[int(Ctrl.TIME)] += dt


@ti.func
def kick_drift(n: ti.i32, dt: float, x: ti.template(), v: ti.template(), w: ti.template(),
               f: ti.template(), tq: ti.template(), inv_m: ti.template(),
               inv_I: ti.template(), Lx: float, Ly: float):
    """First half kick and drift of particles 0..n−1 (x, y wrapped into the die)."""
    for i in range(n):
        vi = vec3(v, i) + 0.5 * dt * inv_m[i] * vec3(f, i)
        wi = vec3(w, i) + 0.5 * dt * inv_I[i] * vec3(tq, i)
        xi = vec3(x, i) + dt * vi
        xi[0] -= Lx * ti.floor(xi[0] / Lx)
        xi[1] -= Ly * ti.floor(xi[1] / Ly)
        _set3(v, i, vi)
        _set3(w, i, wi)
        _set3(x, i, xi)


@ti.func
def pair_forces(model: ti.template(), npairs: ti.i32, dt: float, x: ti.template(), v: ti.template(),
                 w: ti.template(), r: ti.template(), m: ti.template(),
                 pair_owner: ti.template(), partner: ti.template(), hist: ti.template(),
                 pw: ti.template(), Lx: float, Ly: float, E: float, G: float,
                 py: float, beta: float, mu: float, mu_r: float, eps_v: ti.template(), Kb: float, gam: float,
                 update: ti.template()):
    """Particle–particle contacts, one 12-double record per pair (one cache-friendly write):
    pw[p, 0:3] force on the owner i; pw[p, 3:6] / pw[p, 6:9] torques on i / j; pw[p, 9] recoverable elastic
    energy (normal + tangential spring); pw[p, 10] = δ / min(r_i, r_j) (≤ 0 when apart).

    Bulk (confinement) response of the volume correction, MDR-like (Zunker & Kamrin 2024): a particle whose
    radius growth is capped cannot conserve its solid volume any more; its volumetric strain
    ε_v,i = max(0, 1 − V_i/V0_i) (V_i = sphere minus caps, from :func:`volume_correct`) is carried by its
    contacts as a pressure K ε_v on the contact area, F_b = K · ε̄_v · π min(2R*δ, r_min²)
    (2R*δ ≈ the intersection circle's radius² at small δ; saturating at the smaller particle's cross-section so
    that a small sphere pressed into a large one meets a growing, not a vanishing, resistance),
    K = BULK_RESPONSE · E/(3(1 − 2ν)). The pair's strain is weighted by the cap volumes the overlap cuts from
    each particle (split at the radical plane, as in :func:`volume_correct`),

        ε̄_v = (V_cap,i ε_v,i + V_cap,j ε_v,j) / (V_cap,i + V_cap,j),

    i.e. the overlap is resisted by the pressure of the particle that loses the lens' volume: ½(ε_v,i + ε_v,j)
    for equal spheres, ≈ ε_v,small for a small sphere pushed into a large one (the plain mean halved that
    resistance and let such a sphere be swallowed near 1.6 GPa in the study's full-size run)."""
    for p in range(npairs):
        i = pair_owner[p]
        j = partner[p]
        d = min_image(vec3(x, j) - vec3(x, i), Lx, Ly)
        dist = d.norm()
        ri = r[i]
        rj = r[j]
        delta = ri + rj - dist
        fi = ti.Vector([0.0, 0.0, 0.0])
        ti_ = ti.Vector([0.0, 0.0, 0.0])
        tj_ = ti.Vector([0.0, 0.0, 0.0])
        en = 0.0
        if delta > 0.0 and dist > 0.0:
            nrm = d / dist
            R = ri * rj / (ri + rj)
            meff = m[i] * m[j] / (m[i] + m[j])
            res = normal_law(model, delta, R, E, py, hist[p, 3], hist[p, 4], hist[p, 5])
            if ti.static(update and model != HERTZ):   # Hertz has no plastic state: its columns stay 0
                hist[p, 3] = res[2]
                hist[p, 4] = res[3]
                hist[p, 5] = res[4]
            ai = (ri - 0.5 * delta) * nrm
            aj = -(rj - 0.5 * delta) * nrm
            vc = vec3(v, i) + vec3(w, i).cross(ai) - vec3(v, j) - vec3(w, j).cross(aj)
            vn = vc.dot(nrm)
            Fel = res[0]
            Sel = res[1]
            Fc_b = 0.0
            if ti.static(model != HERTZ):
                # a flattened contact opened past δ_p stays bonded up to its pull-off force (bonded_normal)
                b = bonded_normal(delta, E, gam, res[2], res[3], res[4])
                if b[1] > 0.0:
                    Fel = b[0]
                    Sel = b[1]
                Fc_b = b[2]
            Fn = Fel + damping_coefficient(beta, Sel, meff) * vn
            eb = 0.0
            if eps_v[i] > 0.0 or eps_v[j] > 0.0:
                ci, cj = _lens_caps(dist, ri, rj)
                if ci + cj > 0.0:
                    eb = (ci * eps_v[i] + cj * eps_v[j]) / (ci + cj)
            if eb > 0.0:
                rm = ti.min(ri, rj)
                Fn += Kb * eb * PI * ti.min(2.0 * R * delta, rm * rm)
            kt = 8.0 * G * res[6]
            gt = damping_coefficient(beta, kt, meff)
            vt = vc - vn * nrm
            xi = ti.Vector([hist[p, 0], hist[p, 1], hist[p, 2]])
            Ft, xi_n = tangential_force(xi, nrm, vt, dt, kt, gt, mu, Fn + Fc_b)
            if ti.static(update):
                for c in ti.static(range(3)):
                    hist[p, c] = xi_n[c]
            fi = -Fn * nrm + Ft
            ti_ = ai.cross(Ft)
            tj_ = aj.cross(-Ft)
            if mu_r > 0.0:
                # constant directional rolling resistance (Ai et al. 2011, model A): M = −μ_r R* F_n ω̂_rel
                wr = vec3(w, i) - vec3(w, j)
                wn = wr.norm()
                if wn > 0.0:
                    Mr = -mu_r * R * ti.max(Fn, 0.0) * wr / wn
                    ti_ += Mr
                    tj_ -= Mr
            en = res[5] + 0.5 * kt * xi_n.norm_sqr()
        elif ti.static(update):
            for c in ti.static(range(3 if model == HERTZ else 6)):
                hist[p, c] = 0.0
        for c in ti.static(range(3)):
            pw[p, c] = fi[c]
            pw[p, 3 + c] = ti_[c]
            pw[p, 6 + c] = tj_[c]
        pw[p, 9] = en
        pw[p, 10] = delta / ti.min(ri, rj)


@ti.kernel
def pair_forces_eval(model: ti.template(), npairs: ti.i32, x: ti.types.ndarray(), v: ti.types.ndarray(),
                     w: ti.types.ndarray(), r: ti.types.ndarray(), m: ti.types.ndarray(),
                     pair_owner: ti.types.ndarray(), partner: ti.types.ndarray(), hist: ti.types.ndarray(),
                     pw: ti.types.ndarray(), Lx: float, Ly: float, E: float, G: float,
                     py: float, beta: float, mu: float, mu_r: float, eps_v: ti.types.ndarray(), Kb: float,
                     gam: float):
    """:func:`pair_forces` at the current state (dt = 0), contact histories left untouched."""
    pair_forces(model, npairs, 0.0, x, v, w, r, m, pair_owner, partner, hist, pw, Lx, Ly, E, G, py, beta, mu, mu_r,
                 eps_v, Kb, gam, False)


@ti.func
def wall_contact(model: ti.template(), delta, nrm, r, mi, vi, wi, vwall, wh: ti.template(), i, off, dt, E, G, py,
                 beta, mu, mu_r, pb, update: ti.template()):
    """Sphere against a rigid plane; ``nrm`` points from the particle centre to the wall. Returns
    (force on particle, torque, elastic energy); updates the history row wh[i, off:off+6]."""
    F = ti.Vector([0.0, 0.0, 0.0])
    T = ti.Vector([0.0, 0.0, 0.0])
    en = 0.0
    if delta > 0.0:
        res = normal_law(model, delta, r, E, py, wh[i, off + 3], wh[i, off + 4], wh[i, off + 5])
        if ti.static(update):
            wh[i, off + 3] = res[2]
            wh[i, off + 4] = res[3]
            wh[i, off + 5] = res[4]
        a = (r - delta) * nrm          # contact point on the (rigid) wall plane
        vc = vi + wi.cross(a) - vwall
        vn = vc.dot(nrm)
        Fn = res[0] + damping_coefficient(beta, res[1], mi) * vn
        if pb > 0.0:   # bulk response on the flat: p_b π min(2rδ, r²)
            Fn += pb * PI * ti.min(2.0 * r * delta, r * r)
        kt = 8.0 * G * res[6]
        gt = damping_coefficient(beta, kt, mi)
        vt = vc - vn * nrm
        xi = ti.Vector([wh[i, off], wh[i, off + 1], wh[i, off + 2]])
        Ft, xi_n = tangential_force(xi, nrm, vt, dt, kt, gt, mu, Fn)
        if ti.static(update):
            for c in ti.static(range(3)):
                wh[i, off + c] = xi_n[c]
        F = -Fn * nrm + Ft
        T = a.cross(Ft)
        if mu_r > 0.0:
            wn = wi.norm()
            if wn > 0.0:
                T += -mu_r * r * ti.max(Fn, 0.0) * wi / wn
        en = res[5] + 0.5 * kt * xi_n.norm_sqr()
    elif ti.static(update):
        for c in ti.static(range(6)):
            wh[i, off + c] = 0.0
    return F, T, en


@ti.func
def gather_kick(model: ti.template(), n: ti.i32, dt: float, x: ti.template(), v: ti.template(),
                 w: ti.template(), r: ti.template(), m: ti.template(), inv_m: ti.template(),
                 inv_I: ti.template(), row_start: ti.template(), rev_start: ti.template(),
                 rev_pairs: ti.template(), pw: ti.template(), wall_hist: ti.template(),
                 fwall: ti.template(), ewall: ti.template(), ncont: ti.template(),
                 f: ti.template(), tq: ti.template(), fc: ti.template(), ctrl: ti.template(),
                 Ew: float, Gw: float, py: float, beta: float, mu_w: float, mu_r: float, damping: float,
                 gz: float, top_wall: ti.i32, eps_v: ti.template(), Kb: float, update: ti.template(),
                 watch: ti.template(), x_build: ti.template(), r_build: ti.template(), part: ti.template(),
                 reach: ti.template(), Lx: float, Ly: float):
    """Sum contact forces per particle, add walls, gravity and local damping, second half kick.
    fwall[i, 0] = z-force of the bottom wall on i; fwall[i, 1] = z-force of i on the punch (+ = pushes up).

    ``watch``: also accumulate the block's per-step watch into the chunk partials ``part`` (chunk = i //
    WATCH_CHUNK; see :mod:`dem.block`): Σ fwall (bottom, top), max Verlet reach A_i = e_i + u_i, max |v_i|/r_i,
    NaN. The loop runs in blocks of WATCH_CHUNK consecutive particles, so on the CPU each chunk is summed by one
    thread in index order — the same bits as a sequential sum, whatever the thread count."""
    pz = ctrl[int(Ctrl.PUNCH_Z)]
    vp = ctrl[int(Ctrl.PUNCH_V)]
    ti.loop_config(block_dim=WATCH_CHUNK)
    for i in range(n):
        F = ti.Vector([0.0, 0.0, 0.0])
        T = ti.Vector([0.0, 0.0, 0.0])
        nc = 0
        for p in range(row_start[i], row_start[i + 1]):
            F += ti.Vector([pw[p, 0], pw[p, 1], pw[p, 2]])
            T += ti.Vector([pw[p, 3], pw[p, 4], pw[p, 5]])
            if pw[p, 10] > 0.0:
                nc += 1
        for k in range(rev_start[i], rev_start[i + 1]):
            p = rev_pairs[k]
            F -= ti.Vector([pw[p, 0], pw[p, 1], pw[p, 2]])
            T += ti.Vector([pw[p, 6], pw[p, 7], pw[p, 8]])
            if pw[p, 10] > 0.0:
                nc += 1
        xi = vec3(x, i)
        vi = vec3(v, i)
        wi = vec3(w, i)
        ri = r[i]
        mi = m[i]
        # bottom wall z = 0 (normal from the particle to the wall: −z)
        Fb, Tb, eb = wall_contact(model, ri - xi[2], ti.Vector([0.0, 0.0, -1.0]), ri, mi, vi, wi,
                                  ti.Vector([0.0, 0.0, 0.0]), wall_hist, i, 0, dt, Ew, Gw, py, beta, mu_w, mu_r,
                                  Kb * eps_v[i], update)
        Ft = ti.Vector([0.0, 0.0, 0.0])
        Tt = ti.Vector([0.0, 0.0, 0.0])
        et = 0.0
        if top_wall != 0:
            Ft, Tt, et = wall_contact(model, xi[2] + ri - pz, ti.Vector([0.0, 0.0, 1.0]), ri, mi, vi, wi,
                                      ti.Vector([0.0, 0.0, vp]), wall_hist, i, 8, dt, Ew, Gw, py, beta, mu_w, mu_r,
                                      Kb * eps_v[i], update)
        F += Fb + Ft
        T += Tb + Tt
        fwall[i, 0] = Fb[2]
        fwall[i, 1] = -Ft[2]
        ewall[i] = eb + et
        ncont[i] = nc
        _set3(fc, i, F)
        F[2] += mi * gz
        # local (Cundall) damping: F_k − α |F_k| sign(v_k)
        for c in ti.static(range(3)):
            F[c] -= damping * ti.abs(F[c]) * ti.math.sign(vi[c])
            T[c] -= damping * ti.abs(T[c]) * ti.math.sign(wi[c])
        _set3(f, i, F)
        _set3(tq, i, T)
        vn = vi + 0.5 * dt * inv_m[i] * F
        _set3(v, i, vn)
        _set3(w, i, wi + 0.5 * dt * inv_I[i] * T)
        if ti.static(watch):
            # Verlet reach: closure since the build e_i plus the exact motion of the next drift u_i
            e = min_image(xi - vec3(x_build, i), Lx, Ly).norm() + ti.max(ri - r_build[i], 0.0)
            a = e + dt * (vn + 0.5 * dt * inv_m[i] * F).norm()
            c = i // WATCH_CHUNK
            reach[i] = a
            ti.atomic_add(part[c, 0], Fb[2])
            ti.atomic_add(part[c, 1], -Ft[2])
            if not ti.math.isnan(a):
                ti.atomic_max(part[c, 2], a)
            else:
                ti.atomic_max(part[c, 4], 1.0)
            ti.atomic_max(part[c, 3], vn.norm() / ri)


@ti.kernel
def gather_eval(model: ti.template(), n: ti.i32, x: ti.types.ndarray(), v: ti.types.ndarray(),
                w: ti.types.ndarray(), r: ti.types.ndarray(), m: ti.types.ndarray(), inv_m: ti.types.ndarray(),
                inv_I: ti.types.ndarray(), row_start: ti.types.ndarray(), rev_start: ti.types.ndarray(),
                rev_pairs: ti.types.ndarray(), pw: ti.types.ndarray(), wall_hist: ti.types.ndarray(),
                fwall: ti.types.ndarray(), ewall: ti.types.ndarray(), ncont: ti.types.ndarray(),
                f: ti.types.ndarray(), tq: ti.types.ndarray(), fc: ti.types.ndarray(), ctrl: ti.types.ndarray(),
                Ew: float, Gw: float, py: float, beta: float, mu_w: float, mu_r: float, damping: float,
                gz: float, top_wall: ti.i32, eps_v: ti.types.ndarray(), Kb: float):
    """:func:`gather_kick` at the current state (dt = 0: no kick), wall histories left untouched."""
    gather_kick(model, n, 0.0, x, v, w, r, m, inv_m, inv_I, row_start, rev_start, rev_pairs, pw, wall_hist, fwall,
                 ewall, ncont, f, tq, fc, ctrl, Ew, Gw, py, beta, mu_w, mu_r, damping, gz, top_wall, eps_v, Kb, False,
                 False, x, r, f, r, 0.0, 0.0)


N_DIAG = 7   # numbers written by diagnostics (dem.engine_checks.Diag)
# a particle whose pore-collapse plastic strain exceeds this (most of its volume flowed into the pores) and that
# touches another particle is a film when it lies behind a wall plane (diagnostics), not an escaped particle
FILM_PLASTIC_STRAIN = 0.5
DIAG_COL = 13   # first column of the diagnostics' chunk partials in the block's partials ``part`` (dem.block.N_PART)


@ti.kernel
def diagnostics(n: ti.i32, x: ti.types.ndarray(), v: ti.types.ndarray(), r: ti.types.ndarray(),
                pw: ti.types.ndarray(), ctrl: ti.types.ndarray(), top_wall: ti.i32, blk: ti.types.ndarray(),
                off: ti.i32, row_start: ti.types.ndarray(), partner: ti.types.ndarray(), Lx: float, Ly: float,
                chunk: ti.i32, part: ti.types.ndarray(), ncont: ti.types.ndarray(),
                eps_p: ti.types.ndarray()):
    """blk[off:off + N_DIAG] = [NaN count, max pair overlap 2δ/(r_i + r_j), escaped count, max speed, max wall
    overlap fraction, largest escaped/NaN index, max |v_i|/r_i (1/s; × dt = the largest motion per step in units of
    the particle's radius)] — the blow-up checks at a block's end (the Verlet test runs in every step,
    :mod:`dem.block`). The pair measure is δ/r for equal spheres and reaches 2 when two centres meet, whatever
    the sizes (a small sphere flattened to a film between large ones lies inside their lens, δ ≥ its diameter,
    a physical state: :func:`dem.engine_checks.check_block`); each pair is visited in its owner's row.

    Walls: a particle beyond a wall plane by more than its diameter (z < −r, z > z_punch + r) has escaped —
    unless it is a film: most of its solid volume has flowed into the pores (pore-collapse plastic strain
    ε_p > ``FILM_PLASTIC_STRAIN``) and it is in contact with another particle (``ncont`` > 0, from the step's
    gather). Such a particle is a fine flattened between a grain and the punch face, which in the sphere picture
    lies inside the lens the grain's own wall contact cuts (the wall analogue of the pair film; its wall overlap
    counts as at most its diameter). A sphere driven through a wall by a too fast punch has not flowed (ε_p ≈ 0).

    Two-level, without contended atomics: one thread per chunk of ``chunk`` particles (their pairs included)
    writes the chunk's counts and maxima to part[c, DIAG_COL + k], one thread combines the chunk partials. Only
    max and sums of integers (as floats, exact): the same bits as a serial pass on any backend."""
    nch = (n + chunk - 1) // chunk
    pz = ctrl[int(Ctrl.PUNCH_Z)]
    for c in range(nch):
        acc = ti.Vector([0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0])    # the N_DIAG numbers of this chunk
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            xi = vec3(x, i)
            vi = vec3(v, i)
            ri = r[i]
            bad = 0
            for k in ti.static(range(3)):
                # by the bits: under fast math (Taichi's default) ``x != x`` is folded to False
                if ti.math.isnan(xi[k]) or ti.math.isnan(vi[k]):
                    bad = 1
            esc = 0
            if xi[2] < -ri:
                esc = 1
            if top_wall != 0 and xi[2] > pz + ri:
                esc = 1
            film = ncont[i] > 0 and eps_p[i] > FILM_PLASTIC_STRAIN   # flowed, in contact: a film in a wall lens
            if film:
                esc = 0
            acc[0] += ti.cast(bad, ti.f64)
            acc[2] += ti.cast(esc, ti.f64)
            if bad + esc > 0:
                acc[5] = ti.max(acc[5], ti.cast(i, ti.f64))
            acc[3] = ti.max(acc[3], vi.norm())
            acc[6] = ti.max(acc[6], vi.norm() / ri)
            ow = (ri - xi[2]) / ri
            if top_wall != 0:
                ow = ti.max(ow, (xi[2] + ri - pz) / ri)
            if film:
                ow = ti.min(ow, 2.0)
            acc[4] = ti.max(acc[4], ow)
            for p in range(row_start[i], row_start[i + 1]):
                if pw[p, 10] > 0.0:
                    j = partner[p]
                    dist = min_image(vec3(x, j) - xi, Lx, Ly).norm()
                    acc[1] = ti.max(acc[1], 2.0 * (ri + r[j] - dist) / (ri + r[j]))
        for k in ti.static(range(N_DIAG)):
            part[c, DIAG_COL + k] = acc[k]
    if n >= 0:                        # inside an if: one thread, over the chunk partials
        tot = ti.Vector([0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0])
        for c in range(nch):
            for k in ti.static((0, 2)):
                tot[k] += part[c, DIAG_COL + k]
            for k in ti.static((1, 3, 4, 5, 6)):
                tot[k] = ti.max(tot[k], part[c, DIAG_COL + k])
        for k in ti.static(range(N_DIAG)):
            blk[off + k] = tot[k]

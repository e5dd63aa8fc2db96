"""Taichi kernels of the volume correction (growth of a particle's radius by the lens caps it loses to its
contacts) and of the particle mean stress, apart from the step's kernels (:mod:`dem.simulation_kernels`).
The volume correction runs inside a block of steps (:func:`dem.block.volume_step`)."""
from fva import math_kernels as FM
from fva.backend import ti
from dem.neighbours_kernels import min_image, vec3
from dem.punch import Ctrl
from dem.simulation_kernels import PI, _lens_caps


@ti.func
def lens_caps_pass(npairs: ti.i32, x: ti.template(), r: ti.template(), pair_owner: ti.template(),
                   partner: ti.template(), cap_i: ti.template(), cap_j: ti.template(), Lx: float, Ly: float):
    """Per pair, the cap volumes each sphere loses (:func:`_lens_caps`)."""
    for p in range(npairs):
        i = pair_owner[p]
        j = partner[p]
        d = min_image(vec3(x, j) - vec3(x, i), Lx, Ly).norm()
        ci, cj = _lens_caps(d, r[i], r[j])
        cap_i[p] = ci
        cap_j[p] = cj


@ti.func
def volume_correct_pass(n: ti.i32, x: ti.template(), r: ti.template(), r0: ti.template(),
                        row_start: ti.template(), rev_start: ti.template(), rev_pairs: ti.template(),
                        cap_i: ti.template(), cap_j: ti.template(), ctrl: ti.template(),
                        top_wall: ti.i32, growth_cap: float, growth_step: float, eps_v: ti.template(),
                        eps_p: ti.template(), phi_c: ti.template(), vol_solid: float, area: float,
                        pc_over_K: float, growth_out: ti.template(), growth_slot: ti.template()):
    """MDR-like volume conservation (cf. Zunker & Kamrin 2024), irreversible: one fixed-point update

        r_vc = min( (r0³ + 3/(4π) Σ_c V_cap,c(r))^{1/3},  g_max r0,  r + Δg r0 ),   r ← max(r, r_vc),

    V_cap = π h² (3r − h)/3 the caps cut off by the particle and wall contacts, so that on loading the
    particle's solid volume (sphere minus caps) stays (4/3)π r0³. The ratchet r ← max(r, r_vc) makes the
    growth a function of the largest (plastic) overlaps reached, r(t) = max_{t' ≤ t} r_vc(t'): volume that
    was displaced plastically to the free surface does not flow back when the contacts unload (as in MDR,
    where the free-surface displacement follows the plastic overlap). On release only the Thornton–Ning
    elastic part of each overlap recovers; the solid volume then exceeds (4/3)π r0³ by the elastically
    recovered cap volume (≪ 1 % for p_y/E* ≲ 0.1). Radii never drop below r0 nor below their current value.

    g_max (``growth_cap``, 1.25): a particle whose free surface is used up (a small one flattened between
    large ones, or any particle at ρ_rel → 1) would need r_vc → ∞ (sphere minus caps → a thin disc);
    growth stops at g_max r0 — about the circumradius of a Voronoi cell of a dense random packing, so the cap
    is reached near ρ_rel ≈ 0.9, the onset of Heckel regime III — and the volume it can no longer conserve
    becomes the volumetric strain ε_v,i = min(1, max(0, 1 − (r³ − 3/(4π) Σ caps)/r0³)) that
    :func:`pair_forces` turns into a bulk contact pressure K ε_v (MDR's bulk response). Δg
    (``growth_step``) limits the growth per update so that radii never jump.

    Pore collapse (optional, ``pc_over_K`` = p_c/K_eff > 0): the volume a particle at the cap cannot keep flows
    plastically into the pores once its bulk pressure reaches the flow pressure p_f = p_c ln(φ_c,i/φ), φ the
    compact's porosity now and φ_c,i its porosity when particle i first reached the cap — Heckel's law
    ln(1/φ) = p/p_c + ln(1/φ_c) from the end of the sphere stage on (Carroll & Holt 1972 pore collapse with
    Py = p_c; Heckel 1961). ε_p,i ← max(ε_p,i, ε_i − p_f/K_eff) is irreversible and the bulk response carries
    only the elastic part ε_v,i = max(0, ε_i − ε_p,i), which alone recovers on release. No flow once φ ≤ 0
    (the mass-based density can then exceed 1 only by the elastic compression of the solid). φ = min over the run
    of 1 − V_solid / (A z_punch), the lowest mass-based porosity of the compact under the punch so far
    (``Ctrl.PHI_MIN``; 1 without a punch or pore collapse): the flow pressure hardens with the densification
    reached and does not soften when the pellet springs back, so a re-load is elastic up to the pressure of the
    earlier peak and then follows the first loading curve (the hardening variable of cap plasticity is the
    plastic volumetric strain, e.g. DiMaggio & Sandler 1971; with the current φ each unload–reload cycle flowed
    again at a lower pressure and ratcheted the density up).

    Growth lag (pore collapse only): below the cap, ε > 0 is the lag of the rate-limited growth, not elastic
    strain of a confined particle — it still has free surface to flow into. Its bulk pressure is bounded by the
    flow pressure at the onset of pore collapse, ε_v,i ≤ p_c/K_eff: a fine rammed into a grain faster than its
    radius grows (δ per step ≫ Δg r0) otherwise carried ε_v → 1, K ε_v ≈ 10 GPa on its cross-section, and was
    shot out of the contact (the full-size run with the fines that stopped at 10.9 MPa, docs/calibration.md)."""
    pz = ctrl[int(Ctrl.PUNCH_Z)]
    phi = 1.0
    if pc_over_K > 0.0 and top_wall != 0:
        phi = ti.min(ctrl[int(Ctrl.PHI_MIN)], 1.0 - vol_solid / (area * ti.max(pz, 1e-300)))
        ctrl[int(Ctrl.PHI_MIN)] = phi
    for i in range(n):
        s = 0.0
        for p in range(row_start[i], row_start[i + 1]):
            s += cap_i[p]
        for k in range(rev_start[i], rev_start[i + 1]):
            s += cap_j[rev_pairs[k]]
        ri = r[i]
        hb = ti.min(ti.max(ri - x[i, 2], 0.0), 2.0 * ri)
        s += PI * hb * hb * (3.0 * ri - hb) / 3.0
        if top_wall != 0:
            ht = ti.min(ti.max(x[i, 2] + ri - pz, 0.0), 2.0 * ri)
            s += PI * ht * ht * (3.0 * ri - ht) / 3.0
        rvc = ti.min(FM.cbrt(r0[i] ** 3 + 0.75 / PI * s), growth_cap * r0[i], ri + growth_step * r0[i])
        rn = ti.max(ti.max(r0[i], ri), rvc)
        r[i] = rn
        ti.atomic_max(growth_out[growth_slot], rn - ri)   # the largest growth of this pass (Verlet bookkeeping)
        # volumetric strain left when the growth is capped: ε_v = 1 − (r³ − 3/(4π) Σ caps)/r0³ (caps at r_i;
        # the ≤ growth_step change of r within this pass is neglected), at most 1: a particle cannot lose more than
        # its own volume (a small one flattened between two large ones — a film — has caps that overlap one
        # another: the excess is its partners' own overlap through it, counted twice)
        ev = ti.min(1.0, ti.max(0.0, 1.0 - (ri ** 3 - 0.75 / PI * s) / r0[i] ** 3))
        # plastic flow only at the growth cap: below it, ε > 0 is the lag of the (rate-limited) radius growth,
        # which the next updates take up — it must not be latched as plastic strain
        at_cap = ri >= growth_cap * r0[i] * (1.0 - 1e-12)
        if pc_over_K > 0.0 and ev > 0.0 and phi > 0.0 and at_cap:
            if phi_c[i] <= 0.0:
                phi_c[i] = phi
            if phi < phi_c[i]:
                eps_p[i] = ti.max(eps_p[i], ev - pc_over_K * FM.log(phi_c[i] / phi))
            else:
                eps_p[i] = ti.max(eps_p[i], ev)
        e_el = ti.max(0.0, ev - eps_p[i])
        if pc_over_K > 0.0 and not at_cap:
            # growth lag (below the cap the particle still has free surface to flow into): its pressure is
            # bounded by the flow pressure at the onset of pore collapse, K ε_v ≤ p_c
            e_el = ti.min(e_el, pc_over_K)
        eps_v[i] = e_el


@ti.kernel
def particle_mean_stress(n: ti.i32, x: ti.types.ndarray(), r: ti.types.ndarray(), r0: ti.types.ndarray(),
                         row_start: ti.types.ndarray(), partner: ti.types.ndarray(),
                         rev_start: ti.types.ndarray(), rev_pairs: ti.types.ndarray(),
                         pair_owner: ti.types.ndarray(), pw: ti.types.ndarray(), fwall: ti.types.ndarray(),
                         ctrl: ti.types.ndarray(), Lx: float, Ly: float, top_wall: ti.i32,
                         out: ti.types.ndarray()):
    """Mean stress of each particle, p_i = −tr(σ_i)/3 with σ_i = (1/V_i) Σ_c f_c ⊗ (x_c − x_i) (Pa, compression
    positive), V_i the original solid volume; contact points at the pair's mid-overlap / on the wall planes."""
    pz = ctrl[int(Ctrl.PUNCH_Z)]
    for i in range(n):
        s = 0.0
        xi = vec3(x, i)
        for p in range(row_start[i], row_start[i + 1]):
            if pw[p, 10] > 0.0:
                j = partner[p]
                d = min_image(vec3(x, j) - xi, Lx, Ly)
                dist = d.norm()
                delta = r[i] + r[j] - dist
                f = ti.Vector([pw[p, 0], pw[p, 1], pw[p, 2]])
                s += (r[i] - 0.5 * delta) * f.dot(d / dist)
        for k in range(rev_start[i], rev_start[i + 1]):
            p = rev_pairs[k]
            if pw[p, 10] > 0.0:
                o = pair_owner[p]
                d = min_image(xi - vec3(x, o), Lx, Ly)
                dist = d.norm()
                delta = r[i] + r[o] - dist
                f = ti.Vector([pw[p, 0], pw[p, 1], pw[p, 2]])   # force on the owner; on i it is −f
                s += (r[i] - 0.5 * delta) * f.dot(d / dist)
        if r[i] - xi[2] > 0.0:
            s += fwall[i, 0] * (0.0 - xi[2])
        if top_wall != 0:
            if xi[2] + r[i] - pz > 0.0:
                s += -fwall[i, 1] * (pz - xi[2])
        out[i] = -s / (3.0 * (4.0 / 3.0 * PI * r0[i] ** 3))

"""Contact laws as ``@ti.func`` (no fields, no ``ti.init`` here): one interface for every law.

Every normal law has the signature::

    normal_law(model, delta, R, E, py, dmax, dp, rp) -> ti.Vector([F, S, dmax', dp', rp', U, a])

``model`` (compile-time int): ``HERTZ = 0`` or ``THORNTON_NING = 1``;
``delta`` overlap (m, > 0 in contact); ``R`` effective radius R* = r1 r2/(r1+r2) (wall: R* = r);
``E`` effective modulus E*; ``py`` limiting contact pressure (TN only);
``dmax, dp, rp`` the per-pair plastic state (max overlap reached, plastic overlap, unloading curvature R_p*);
returns the elastic(-plastic) normal force F (N, repulsive > 0), the tangent stiffness S = dF/dδ (N/m, used
for damping), the updated state, the recoverable elastic energy U (J) and the contact radius a (m) that sets the
tangential stiffness k_t = 8 G* a (a = √(R* δ) on loading, √(R_p* (δ − δ_p)) on elastic unloading).

The tangential law (:func:`tangential_force`) and the viscous damping follow the Hertz–Mindlin "no-slip"
model in the form used by LIGGGHTS (Tsuji et al. 1992, Powder Technol. 71, 239; Di Renzo & Di Maio 2004,
Chem. Eng. Sci. 59, 525; LIGGGHTS ``model hertz`` / ``tangential history``).
"""

from fva.backend import ti

HERTZ = 0
THORNTON_NING = 1
MODEL_IDS = {"hertz_mindlin": HERTZ, "thornton_ning": THORNTON_NING}

SQRT_5_6 = 0.9128709291752769  # sqrt(5/6)
PI = 3.141592653589793


@ti.func
def hertz_normal(delta, R, E):
    """Hertz (1882): F = 4/3 E* √R* δ^{3/2};  S = dF/dδ = 2 E* √(R* δ);  U = 8/15 E* √R* δ^{5/2}; also returns the
    contact radius a = √(R* δ)."""
    sq = ti.sqrt(R * delta)
    F = 4.0 / 3.0 * E * sq * delta
    S = 2.0 * E * sq
    U = 0.4 * F * delta
    return F, S, U, sq


@ti.func
def normal_law(model: ti.template(), delta, R, E, py, dmax, dp, rp):
    """Normal contact force with its plastic state (see the module docstring for the interface).

    HERTZ (elastic, Hertz 1882):  F = 4/3 E* √R* δ^{3/2}, state untouched.

    THORNTON_NING (Thornton & Ning 1998, Powder Technol. 99, 154–162), limiting contact pressure p_y:
      * yield overlap δ_y = (π p_y / (2 E*))² R*,  F_y = 4/3 E* √R* δ_y^{3/2};
      * loading (δ ≥ δ_max): δ ≤ δ_y Hertz; δ > δ_y  F = F_y + π p_y R* (δ − δ_y);
      * at a plastic maximum F_p: contact radius a_p² = (2F_p + F_y)/(2π p_y), enlarged curvature
        R_p* = 4 E* a_p³ / (3 F_p), plastic overlap δ_p = δ_max − a_p²/R_p*;
      * unloading and re-loading below δ_max (elastic): F = 4/3 E* √R_p* (δ − δ_p)^{3/2} for δ > δ_p, else 0;
        re-loading past δ_max continues on the plastic line.
      U is the recoverable elastic energy 8/15 E* √R_p* (δ − δ_p)^{5/2}.
    The state resets when geometric contact is lost (δ ≤ 0).
    """
    F = 0.0
    S = 0.0
    U = 0.0
    a = 0.0
    dmax_n = dmax
    dp_n = dp
    rp_n = rp
    if delta <= 0.0:
        dmax_n = 0.0
        dp_n = 0.0
        rp_n = 0.0
    else:
        if ti.static(model == HERTZ):
            F, S, U, a = hertz_normal(delta, R, E)
        else:
            q = PI * py / (2.0 * E)
            dy = q * q * R
            if delta >= dmax:
                dmax_n = delta
                if delta <= dy:
                    F, S, U, a = hertz_normal(delta, R, E)
                    dp_n = 0.0
                    rp_n = R
                else:
                    Fy = 4.0 / 3.0 * E * q * R * dy        # 4/3 E* √(R* δ_y) δ_y with √(R* δ_y) = q R*
                    F = Fy + PI * py * R * (delta - dy)
                    S = PI * py * R
                    a2 = (2.0 * F + Fy) / (2.0 * PI * py)
                    a = ti.sqrt(a2)
                    rp_n = 4.0 * E * a2 * a / (3.0 * F)
                    dp_n = delta - 3.0 * F / (4.0 * E * a)  # δ_max − a_p²/R_p*
                    U = 0.4 * F * (delta - dp_n)
            else:
                rr = rp
                if rr <= 0.0:
                    rr = R
                if delta > dp:
                    F, S, U, a = hertz_normal(delta - dp, rr, E)
    return ti.Vector([F, S, dmax_n, dp_n, rp_n, U, a])


@ti.func
def bonded_normal(delta, E, gam, dmax, dp, rp):
    """Bond of a plastically flattened Thornton–Ning contact (work of adhesion ``gam`` = Δγ, J/m²).

    Unloaded past its plastic overlap δ_p, a flattened contact does not simply open: its contact face of
    radius a_p = √(R_p* (δ_max − δ_p)) is a bonded interface (cold-welded grain boundary). In the limit of large
    plastic flattening the adhesive unloading of an elastic–plastic sphere becomes that of a flat punch
    (Mesarovic & Johnson 2000, J. Mech. Phys. Solids 48, 2009): tension F = −2 E* a_p (δ_p − δ) up to Kendall's
    (1971) pull-off force F_c = √(8π E* Δγ a_p³), beyond which the bond is broken (F = 0, an opening of
    F_c / (2 E* a_p) = √(2π Δγ a_p / E*), tens of nm). A bonded contact's Coulomb limit is μ (F_n + F_c)
    (cohesion, as in Luding 2008, Granular Matter 10, 235). Returns (F ≤ 0, its stiffness S, F_c while bonded);
    all 0 for δ ≥ δ_p (the Thornton–Ning force acts), for an unflattened contact or Δγ = 0."""
    F = 0.0
    S = 0.0
    Fc_b = 0.0
    if gam > 0.0 and dp > 0.0:
        ap = ti.sqrt(ti.max(rp * (dmax - dp), 0.0))
        kb = 2.0 * E * ap
        Fc = ti.sqrt(8.0 * PI * E * gam * ap * ap * ap)
        sep = dp - delta
        if kb * sep <= Fc:
            Fc_b = Fc
            if sep > 0.0:
                F = -kb * sep
                S = kb
    return ti.Vector([F, S, Fc_b])


@ti.func
def damping_coefficient(beta, S, m_eff):
    """Viscous normal/tangential damping coefficient (Tsuji 1992 / LIGGGHTS form).

    γ = −2 √(5/6) β √(S m*), β = ln e / √(ln² e + π²) (≤ 0, so γ ≥ 0), S the tangent stiffness
    (S_n = 2E*√(R*δ), S_t = 8G*√(R*δ) for Hertz). With this form and no force clamping the restitution of
    a Hertz impact equals e independently of the impact speed (checked in tests/test_dem_contact.py).
    """
    return -2.0 * SQRT_5_6 * beta * ti.sqrt(S * m_eff)


@ti.func
def tangential_force(xi, n, vt, dt, kt, gt, mu, Fn):
    """Mindlin no-slip tangential spring with incremental history and a Coulomb cap.

    ξ ← ξ rotated onto the current tangent plane (magnitude kept), ξ ← ξ + v_t dt;
    F_t = −k_t ξ − γ_t v_t with k_t = 8 G* √(R* δ);  if |F_t| > μ max(F_n, 0): F_t ← μ F_n F_t/|F_t| and the
    spring is reset to ξ = −F_t / k_t (sliding). Returns (F_t, ξ').
    """
    m0 = xi.norm_sqr()
    xr = xi - xi.dot(n) * n
    mr = xr.norm_sqr()                # one square root for the rescale √(|ξ|²/|ξ_r|²) instead of two
    if mr > 0.0:
        xr = xr * ti.sqrt(m0 / mr)
    xr = xr + vt * dt
    Ft = -kt * xr - gt * vt
    fmax = mu * ti.max(Fn, 0.0)
    f2 = Ft.norm_sqr()
    if f2 > fmax * fmax:              # sliding: the magnitude (a square root) only here
        fmag = ti.sqrt(f2)
        if fmag > 0.0:
            Ft = Ft * (fmax / fmag)
        else:
            Ft = ti.Vector([0.0, 0.0, 0.0])
        if kt > 0.0:
            xr = -Ft / kt
        else:
            xr = ti.Vector([0.0, 0.0, 0.0])
    return Ft, xr


@ti.kernel
def evaluate_normal_law_kernel(model: ti.template(), deltas: ti.types.ndarray(), R: float, E: float,
                               py: float, gam: float, out: ti.types.ndarray()):
    """Drive one contact through the overlap path ``deltas`` (serially, with state) and record
    out[k, :] = (F, S, dmax, dp, rp, U, F_c): with ``gam`` > 0 a flattened contact bonds (:func:`bonded_normal`:
    F and S of the bond while it holds, F_c its cohesion). Used by tests and :func:`dem.contact.normal_force_curve`."""
    ti.loop_config(serialize=True)
    for _ in range(1):
        dmax = 0.0
        dp = 0.0
        rp = 0.0
        for k in range(deltas.shape[0]):
            res = normal_law(model, deltas[k], R, E, py, dmax, dp, rp)
            dmax = res[2]
            dp = res[3]
            rp = res[4]
            for c in ti.static(range(6)):
                out[k, c] = res[c]
            out[k, 6] = 0.0
            if gam > 0.0:
                bnd = bonded_normal(deltas[k], E, gam, dmax, dp, rp)
                if bnd[1] > 0.0:
                    out[k, 0] = bnd[0]
                    out[k, 1] = bnd[1]
                out[k, 6] = bnd[2]

"""Matrix-free preconditioned conjugate gradients for the conduction operator (host orchestration).

Storage (device): a u8 phase id (or face mask, :mod:`fva.face_mask`) per voxel, the potential ``x`` in
float64, and three work vectors (r, p and one array shared by z = M r and A p — z is consumed by the p update
before A p is formed) in the storage ``dtype``; reductions are float64 whatever the dtype. With ``dtype="f32"`` that is
1 + 8 + 3·4 = 21 B/voxel plus ~4 B/voxel of multigrid levels. Keeping x in float64 lets the true
residual fall below the float32 round-off floor of x (≈ 1e-6 relative at 500³), so the stopping
rule's residual tolerance is reachable at any size; the recurrence residual r is replaced by
b − A x every ``REPLACE_EVERY`` iterations in float32 (van der Vorst & Ye 2000, SIAM J. Sci.
Comput. 22:1716).
"""
from __future__ import annotations

import collections
import gc
import math

import numpy as np

from fva.backend import ti
from fva.fine_kernels import NTAB

HS_DELAY = 4               # iterations in the Hestenes–Stiefel estimate of ‖x* − x‖²_A
STAGNATION_ITERS = 200     # no halving of the true residual over this many iterations: give up
EXACT_RESIDUAL = 1e-13     # a relative residual this small is a direct solve (no error estimate needed)
REPLACE_EVERY = 50         # float32: recompute r = b − A x this often
MAX_RESTARTS = 20          # CG restarts from the true residual after a breakdown (float32 past its digits)


def sigma_table(sig_of_id: np.ndarray) -> np.ndarray:
    """Float64 table of the fine kernels: σ per id (NTAB entries), then the harmonic means 2σaσb/(σa+σb)."""
    from fva.reference import harmonic

    vals = np.asarray(sig_of_id, np.float64)
    T = np.zeros(NTAB + NTAB * NTAB)
    T[:vals.size] = vals
    H = np.zeros((NTAB, NTAB))
    H[:vals.size, :vals.size] = harmonic(vals[:, None], vals[None, :])
    T[NTAB:] = H.ravel()
    return T


def bytes_per_voxel(dtype: str, preconditioner: str = "mg") -> int:
    """Fine-level device bytes per voxel: id, x (f64), r, p, z/Ap (+ 1/diag for Jacobi)."""
    item = 8 if dtype == "f64" else 4
    return 1 + 8 + (3 if preconditioner == "mg" else 4) * item


class _Fine:
    """Device arrays of one solve (fine level, flat: :mod:`fva.fine_kernels`, one sentinel row at the end)."""

    def __init__(self, ids, sig_of_id, em, dtype, p1, p2, c, r_over_d=None, sigma1=None, seg=False):
        """``sigma1``: the one σ of every conducting id (:func:`fva.face_mask.single_sigma`): face masks, not ids;
        ``seg``: the kernels visit the runs of conducting cells (:func:`fva.face_mask.row_segments`)."""
        from fva.face_mask import face_mask, mask_table, row_segments
        from fva.interface import face_table

        tdt = ti.f64 if dtype == "f64" else ti.f32
        n0, n1, n2 = self.shape = ids.shape
        size = ids.size + n2
        self.G = ti.Vector([n0, n1, n2, int(p1), int(p2)], dt=ti.i32)
        self.C = ti.Vector([float(v) for v in c], dt=ti.f64)
        if sigma1 is not None:
            T = mask_table(sigma1, c)
            self.sigma_of_byte = np.zeros(NTAB)
            self.sigma_of_byte[:len(sig_of_id)] = sig_of_id
            cells = face_mask(ids, sig_of_id, em, p1, p2).reshape(-1)
            rs = row_segments(cells.reshape(ids.shape)) if seg else np.zeros(1, np.int32)
        else:
            T = sigma_table(sig_of_id) if r_over_d is None else face_table(sig_of_id, r_over_d)
            self.sigma_of_byte = T[:NTAB].copy()  # σ of every id byte (interface bits included)
            cells = ids.reshape(-1)
            rs = np.zeros(1, np.int32)
        self.sig = ti.ndarray(ti.u8, size)
        self.sig.from_numpy(np.concatenate([cells, np.zeros(n2, np.uint8)]))
        del cells
        self.rs = ti.ndarray(ti.i32, rs.shape)  # runs of conducting cells per row (a dummy without ``seg``)
        self.rs.from_numpy(rs)
        del rs
        self.T = ti.ndarray(ti.f64, T.shape)
        self.T.from_numpy(T)
        self.Ts = self.T  # the smoother's table, in the storage type
        if dtype != "f64":
            self.Ts = ti.ndarray(ti.f32, T.shape)
            self.Ts.from_numpy(T.astype(np.float32))
        self.em = ti.ndarray(ti.i32, em.shape)
        self.em.from_numpy(np.ascontiguousarray(em, dtype=np.int32))
        self.x = ti.ndarray(ti.f64, size)
        self.r, self.p, self.ap = (ti.ndarray(tdt, size) for _ in range(3))
        self.z = self.ap  # z = M r lives where A p is formed next: z is consumed by the p update first
        self.flux = ti.ndarray(ti.f64, (n0 + 1, n1))


def pcg_solve(ids, sig_of_id, em, c, p1, p2, *, preconditioner, flux_tol, rtol, sigma_tol, max_iter, dtype,
              check_every=None, progress=None, fields: str = "", areas=(1.0, 1.0, 1.0), r_over_d=None):
    """Preconditioned CG with a stopping rule that cannot be fooled by a symmetric initial guess.

    Converged only when, at the same iterate x, all of these hold:

    * relative true residual ‖b − A x‖/‖b‖ ≤ ``rtol`` (recomputed from x, never the recurrence);
    * plane currents (the two electrode faces included) spread ≤ ``flux_tol`` — inlet = outlet;
    * the current error bound ≤ ``sigma_tol``: with e = x* − x and r = b − A x, the inlet current of x
      differs from the exact one by I_in(x) − I* = xᵀr + ‖e‖²_A (since b = A x*, I(x) = c − bᵀx);
      |xᵀr| is computed, and ‖e‖²_A is estimated by the Hestenes–Stiefel sum Σ α_j r_jᵀz_j over the
      last ``HS_DELAY`` iterations (Strakoš & Tichý 2002, ETNA 13:56–80), both relative to I.

    A flux spread alone is necessary, not sufficient: a linear initial guess in a channel that winds
    sideways between z levels has equal plane currents (spread 1e-15) and a σ 10x too large.

    ``fields``: "" (none), "outlet" (the outlet current density map) or "all" (also the potential and the
    cell current density, float32, computed on the device); ``areas``: the face areas (m²) normal to the
    three array axes; ``r_over_d``: R_i/Δ per array axis (Ω·m) when ``ids`` carries interface bits
    (``fva.interface``), else None. Returns (dict of field arrays in the permuted [n0, n1, n2] layout, info dict).
    """
    from fva.conduction_kernels import get_kernels
    from fva.multigrid import Multigrid

    from fva.face_mask import single_sigma

    sigma1 = single_sigma(sig_of_id) if r_over_d is None else None  # one conducting σ: face masks
    K = get_kernels(dtype, mask=sigma1 is not None)
    F = _Fine(ids, sig_of_id, em, dtype, p1, p2, c, r_over_d, sigma1, seg=K.seg)
    args = (F.C, F.G)
    for a in (F.r, F.p, F.ap):
        K.fill1(a, 0.0)  # the sentinel row stays 0
    K.init_linear(F.sig, F.x, F.G)  # the linear profile of a uniform block (exact for one)
    face = F.sigma_of_byte[ids[0]]
    bnorm = math.sqrt(float(np.sum((2.0 * c[0] * face) ** 2)))

    mg = Multigrid(K, F) if preconditioner == "mg" else None
    dinv = None
    if mg is None:  # Jacobi: 1/diag once, then one fused streaming pass per iteration
        dinv = ti.ndarray(K.dtype, F.x.shape)
        K.fill1(dinv, 0.0)
        K.f_diag_inv(F.sig, F.T, F.em, dinv, *args)
    if check_every is None:
        check_every = 8 if mg is not None else 20  # progress and stagnation; convergence is checked once
        # the recurrence residual reaches rtol (a state check costs about one matvec)
    replace_every = REPLACE_EVERY if dtype == "f32" else 0

    def precond():
        if mg is not None:
            mg.apply(F.r, F.z, None)
            return K.dot(F.r, F.z)
        return K.f_jacobi_dot(F.sig, F.T, F.em, F.r, F.z, *args)

    def flux_check():
        """(spread of the plane currents, inlet/outlet imbalance, mean current) of the current x."""
        K.plane_flux(F.sig, F.T, F.em, F.x, F.flux, c[0], F.G)
        planes = F.flux.to_numpy().sum(axis=1)
        mean = float(np.mean(planes))
        if not (mean > 0) or not np.all(np.isfinite(planes)):
            return float("inf"), float("inf"), mean
        return (float((planes.max() - planes.min()) / mean), float(abs(planes[0] - planes[-1]) / mean), mean)

    hs = collections.deque(maxlen=HS_DELAY)  # α_j r_jᵀz_j: decrements of ‖e‖²_A

    def state():
        """Every stopping quantity at the current x (uses the z/Ap array as scratch: call after p update)."""
        spread, imbalance, mean_I = flux_check()
        v = K.f_resid_xr(F.sig, F.T, F.em, F.rs, F.x, F.ap, *args)
        res = (math.sqrt(float(v[0])) / bnorm) if bnorm > 0 else 0.0
        xr = float(v[1])
        if res <= EXACT_RESIDUAL:
            hs_est = 0.0  # x solves the system to round-off
        elif len(hs) < HS_DELAY:
            hs_est = float("inf")  # too few iterations to estimate the error
        else:
            hs_est = float(sum(hs))
        err = (abs(xr) + hs_est) / mean_I if mean_I > 0 else float("inf")
        ok = spread <= flux_tol and res <= rtol and err <= sigma_tol
        return dict(spread=spread, imbalance=imbalance, mean_I=mean_I, residual=res, sigma_error=err,
                    converged=bool(ok))

    def restart():
        """r = b − A x from x itself, z = M r, p = z (a CG restart: also the float32 way past breakdown)."""
        K.f_resid_xr(F.sig, F.T, F.em, F.rs, F.x, F.r, *args)
        rz0 = precond()
        K.copy(F.z, F.p)
        return rz0

    rz = restart()
    it = restarts = 0
    st = state()
    best, since_best = st["residual"], 0
    while not st["converged"] and it < max_iter:
        pap = K.f_matvec_dot(F.sig, F.T, F.em, F.rs, F.p, F.ap, *args)
        if not (pap > 0 and math.isfinite(pap)) or not (rz > 0):
            # breakdown: exact solution, or the float32 recurrence has run out of digits
            st = state()
            if st["converged"] or restarts >= MAX_RESTARTS or not math.isfinite(pap):
                break
            restarts += 1
            rz = restart()
            continue
        alpha = rz / pap
        hs.append(alpha * rz)
        if dinv is not None:
            v = K.cg_update_jacobi(F.x, F.r, F.p, F.ap, dinv, F.z, alpha)
            rr, rz_new = float(v[0]), float(v[1])
        else:
            rr = K.cg_update(F.x, F.r, F.p, F.ap, alpha)
            rz_new = precond()
        it += 1
        if replace_every and it % replace_every == 0:
            # residual replacement: the float32 recurrence r drifts from b − A x and CG then stalls
            rr = float(K.f_resid_xr(F.sig, F.T, F.em, F.rs, F.x, F.r, *args)[0])
            rz_new = precond()
        if not math.isfinite(rz_new):
            break
        K.p_update(F.p, F.z, rz_new / rz if rz_new != 0.0 else 0.0)
        rz = rz_new
        rec = math.sqrt(rr) / bnorm if bnorm > 0 else 0.0  # recurrence residual: cheap, only a hint
        if it % check_every == 0 or rr == 0.0 or it == max_iter or rec <= rtol:
            st = state()
            if progress is not None:
                progress(it, st)
            if st["converged"]:
                break
            if st["residual"] < 0.5 * best:
                best, since_best = st["residual"], 0
            else:
                since_best += check_every
                if since_best >= STAGNATION_ITERS:  # a round-off floor: restart from b − A x, then give up
                    if restarts >= MAX_RESTARTS:
                        break
                    restarts += 1
                    since_best = 0
                    rz = restart()
    if it > 0 and not st["converged"]:
        st = state()
    out = {}
    if fields:
        jout = ti.ndarray(ti.f64, ids.shape[1:])
        K.outlet_current(F.sig, F.T, F.em, F.x, jout, c[0], areas[0], F.G)
        out["outlet"] = jout.to_numpy()
    if fields == "all":
        pot = ti.ndarray(ti.f32, ids.shape)
        jd = ti.ndarray(ti.f32, ids.shape + (3,))
        K.fields(F.sig, F.T, F.em, F.x, pot, jd, F.C, ti.Vector([float(a) for a in areas], dt=ti.f64), F.G)
        out["potential"] = pot.to_numpy()
        out["current"] = jd.to_numpy()
    info = dict(iterations=it, spread=st["spread"], imbalance=st["imbalance"], residual=st["residual"],
                sigma_error=st["sigma_error"], converged=st["converged"], current_A=st["mean_I"],
                bytes_per_voxel=bytes_per_voxel(dtype, preconditioner))
    # Release this solve's device arrays now: Taichi 1.7.4's launches with vector arguments leave reference cycles
    # (its nested argument setters) that keep them alive until a garbage collection, so the next solve (the next
    # axis of --axis all) would allocate beside them: 53 instead of 28.5 B/voxel for TauFactor's 500³ volume.
    F = mg = dinv = None  # noqa: F841
    gc.collect()
    return out, info

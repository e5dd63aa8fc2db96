"""Steady conduction ∇·(σ∇φ) = 0 on a voxel image: effective conductivity and tortuosity factor.

Quick start::

    from fva.conduction import solve_conductivity
    res = solve_conductivity(image, axis="z", sigma_bulk_S_per_m=1e-3)
    res.sigma_eff_S_per_m, res.tau

Conventions (see ``shared/DESIGN.md``, "Conduction solve conventions"):

* Image arrays are indexed ``[z, y, x]``; axis ``"z"`` is array axis 0, ``"y"`` axis 1, ``"x"`` axis 2.
* 7-point finite-volume operator; face conductance = harmonic mean 2σᵢσⱼ/(σᵢ+σⱼ) × face area /
  centre distance (anisotropic voxels allowed).
* Potential: φ = 1 V on the outer face of the first slab (index 0 along the axis) and φ = 0 V on the
  outer face of the last slab (high index), half a voxel from the centres (boundary conductance
  2σ·area/Δ). Current flows towards +index; a uniform block gives σ_eff = σ_bulk and τ = 1 exactly.
* ``electrode_mask``: only True voxels of the high-index face touch the 0 V electrode; the rest of
  that face is insulating.
* Sides (the two other axes) are periodic or zero-flux (default: ``image.periodic``).
* Voxels not 6-connected to both electrodes are removed first; a non-percolating sample returns
  σ_eff = 0, τ = inf, ``percolating=False`` at once.
* Matrix-free preconditioned CG (Jacobi or geometric multigrid V-cycle) in Taichi; reductions in
  float64; stops when the spread (max − min)/mean of the current through every plane normal to the
  axis (the two electrode faces included) is ≤ ``flux_tol``; the true residual is recomputed at the end.
  A solve that stops short (``max_iter``, stagnation, breakdown) returns ``converged=False`` and warns.
* Storage: a u8 phase id per voxel (conductivities and harmonic means come from a small table),
  five CG vectors in ``dtype``; multigrid levels add ~4 B/voxel in f32: about 25 B/voxel (f32) or
  49 B/voxel (f64). In f32 the residual is replaced by b − A x every 50 iterations.
* Kernels take ``ti.types.ndarray`` arguments: a new image shape never recompiles them.
"""
from __future__ import annotations

import collections
import logging
import math
import time
import warnings

import numpy as np

from fva.backend import current, ensure_init, ti
from fva.connectivity import percolating_mask
from fva.types import ConductivityResult, VoxelImage

log = logging.getLogger("pelletsim.fva.conduction")

AXES = {"z": 0, "y": 1, "x": 2}
TAICHI_MAX_ELEMENTS = 2 ** 31 - 1
PRECONDITIONERS = ("mg", "jacobi")
DEFAULT_RTOL = 1e-6        # relative true residual ‖b − A x‖/‖b‖ (calibrated: see the tests' winding family)
DEFAULT_SIGMA_TOL = 1e-5   # bound on the relative current error from the energy (xᵀr + HS estimate)
HS_DELAY = 4               # iterations in the Hestenes–Stiefel estimate of ‖x* − x‖²_A
STAGNATION_ITERS = 200     # no halving of the true residual over this many iterations: give up
EXACT_RESIDUAL = 1e-13     # a relative residual this small is a direct solve (no error estimate needed)


# --------------------------------------------------------------------------------------- sizes
def estimate_memory_bytes(shape, dtype: str = "f64", preconditioner: str = "mg") -> int:
    """Device bytes the solve allocates for an image of ``shape`` (nz, ny, nx), any solve axis.

    Fine level: a u8 phase id per voxel plus the five CG vectors (x, r, z, p, Ap) in the storage dtype
    (Jacobi adds 1/diag); the multigrid
    hierarchy adds about 7/8 of one more vector per coarse cell set (gA, gB, gC, 1/diag, x, b, r).
    """
    from fva.multigrid import coarse_bytes

    itemsize = _itemsize(dtype)
    shape = tuple(int(n) for n in shape)
    n = int(np.prod(shape, dtype=np.int64))
    face = max(shape[1] * shape[2], shape[0] * shape[2], shape[0] * shape[1])
    tot = (1 + (5 if preconditioner == "mg" else 6) * itemsize) * n + 4 * face + 8 * (max(shape) + 1) * max(shape)
    if preconditioner == "mg":
        tot += max(coarse_bytes(_perm_shape(shape, a), itemsize) for a in range(3))
    return int(tot)


def check_tolerance(name: str, value) -> float:
    """A solver tolerance must be a finite number with 0 < value < 1 (``ValueError`` naming it)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number with 0 < {name} < 1, got {value!r}") from None
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} must satisfy 0 < {name} < 1, got {value!r}")
    return v


def _itemsize(dtype: str) -> int:
    if dtype not in ("f64", "f32"):
        raise ValueError(f"dtype must be 'f64' or 'f32', got {dtype!r}")
    return 8 if dtype == "f64" else 4


def _perm(axis: int) -> tuple:
    return (axis,) + tuple(a for a in range(3) if a != axis)


def _perm_shape(shape, axis):
    return tuple(shape[a] for a in _perm(axis))


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_size(shape, dtype: str = "f64", preconditioner: str = "mg") -> int:
    """Raise ``ValueError`` before allocating when the image cannot be solved in one piece."""
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if n > TAICHI_MAX_ELEMENTS:
        raise ValueError(
            f"image of shape {tuple(shape)} has {n} voxels, above Taichi's 2**31-element array limit "
            f"({TAICHI_MAX_ELEMENTS}, about 1290**3); crop or coarsen it, or solve sub-volumes "
            "(a distributed/tiled path is not implemented)")
    need = estimate_memory_bytes(shape, dtype, preconditioner)
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise ValueError(f"the solve needs about {need / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB "
                         f"is available (shape {tuple(shape)}, dtype {dtype}, {preconditioner})")
    return need


# --------------------------------------------------------------------------------------- inputs
def conductivity_map(image: VoxelImage, sigma_bulk_S_per_m: float = 1.0, sigma_pore_S_per_m: float = 0.0,
                     phase_conductivities: dict | None = None) -> tuple[np.ndarray, float]:
    """σ per voxel (float64, [z, y, x]) and the bulk conductivity used for τ.

    Without ``phase_conductivities``: voxels labelled ``image.conducting_phase`` get σ_bulk and every
    other label σ_pore (so ``--phase 85`` works on any label image; a sub-volume without the conducting
    label is simply non-percolating). With it ({label: S/m}), every label present must have an entry and
    every entry must be present (errors name the labels present). ``fva.io.load_image`` refuses a
    conducting label that the image does not contain.
    """
    phase = image.phase
    values = np.unique(phase)
    present = [int(v) for v in values]
    if phase_conductivities:
        pc = {int(k): float(v) for k, v in phase_conductivities.items()}
        missing = [v for v in present if v not in pc]
        if missing:
            raise ValueError(f"phase_conductivities has no entry for phase value(s) {missing} "
                             f"(labels present: {labels_text(present)})")
        absent = [k for k in pc if k not in present]
        if absent:
            raise ValueError(f"phase_conductivities names label(s) {absent} that the image does not contain "
                             f"(labels present: {labels_text(present)})")
        if any(not math.isfinite(v) or v < 0 for v in pc.values()):
            raise ValueError(f"phase conductivities must be finite and >= 0, got {pc}")
        if not any(v > 0 for v in pc.values()):
            raise ValueError(f"at least one phase must conduct (σ > 0), got {pc}")
        lut_keys = np.array(sorted(pc))
        lut_vals = np.array([pc[k] for k in lut_keys])
        sig = lut_vals[np.searchsorted(lut_keys, phase)]
        bulk = pc.get(int(image.conducting_phase), 0.0)
        if not bulk > 0:
            bulk = max(pc.values())
        return sig.astype(np.float64), float(bulk)
    if not (math.isfinite(sigma_bulk_S_per_m) and sigma_bulk_S_per_m > 0):
        raise ValueError(f"sigma_bulk_S_per_m must be finite and > 0, got {sigma_bulk_S_per_m}")
    if not (math.isfinite(sigma_pore_S_per_m) and sigma_pore_S_per_m >= 0):
        raise ValueError(f"sigma_pore_S_per_m must be finite and >= 0, got {sigma_pore_S_per_m}")
    sig = np.where(phase == image.conducting_phase, float(sigma_bulk_S_per_m), float(sigma_pore_S_per_m))
    return sig.astype(np.float64), float(sigma_bulk_S_per_m)


def labels_text(labels: list, limit: int = 12) -> str:
    head = ", ".join(str(v) for v in labels[:limit])
    return head + (f", … ({len(labels)} labels)" if len(labels) > limit else "")


def _side_periodicity(image: VoxelImage, axis: int, periodic_sides) -> tuple[bool, bool]:
    """Periodicity of array axes 1 and 2 of the permuted image."""
    if periodic_sides is None:
        per_arr = (image.periodic[2], image.periodic[1], image.periodic[0])  # (pz, py, px)
    elif isinstance(periodic_sides, (bool, np.bool_)):
        per_arr = (bool(periodic_sides),) * 3
    else:
        ps = tuple(bool(p) for p in periodic_sides)
        if len(ps) != 3:
            raise ValueError("periodic_sides must be None, a bool or a (px, py, pz) triple")
        per_arr = (ps[2], ps[1], ps[0])
    sides = [a for a in range(3) if a != axis]
    return bool(per_arr[sides[0]]), bool(per_arr[sides[1]])


# --------------------------------------------------------------------------------------- solve
def solve_conductivity(image: VoxelImage, axis: str = "z", *, sigma_bulk_S_per_m: float = 1.0,
                       sigma_pore_S_per_m: float = 0.0, phase_conductivities: dict | None = None,
                       preconditioner: str = "mg", flux_tol: float = 1e-4, max_iter: int = 20000,
                       dtype: str = "f64", periodic_sides=None, return_fields: bool = False,
                       electrode_mask: np.ndarray | None = None, rtol: float | None = None,
                       sigma_tol: float | None = None, check_every: int | None = None,
                       backend: str | None = None, progress=None) -> ConductivityResult:
    """Effective conductivity of ``image`` along ``axis`` ("x", "y" or "z").

    Parameters
    ----------
    image : VoxelImage, phase [z, y, x], voxel_m (dz, dy, dx) in metres.
    sigma_bulk_S_per_m : conductivity of ``image.conducting_phase`` (S/m).
    sigma_pore_S_per_m : conductivity of every other voxel (S/m, default 0 = insulating).
    phase_conductivities : {phase value: S/m} for labelled images (overrides the two above).
    preconditioner : "mg" (geometric multigrid V-cycle, default) or "jacobi".
    flux_tol : (max − min)/mean of the plane currents, electrode faces included (0 < flux_tol < 1).
    rtol : relative true residual ‖b − Ax‖/‖b‖ (default ``DEFAULT_RTOL``; 0 < rtol < 1).
    sigma_tol : bound on the relative error of the current from the energy identity (default
        ``DEFAULT_SIGMA_TOL``; 0 < sigma_tol < 1). All three must hold to stop (see ``_pcg``).
    progress : optional callable ``(iteration, state_dict)`` called at every convergence check.
    dtype : storage precision "f64" or "f32" (reductions are always float64).
    periodic_sides : None (use image.periodic), a bool, or a (px, py, pz) triple.
    return_fields : also return potential (V), current density (A/m², [z, y, x, 3] as (jz, jy, jx))
        and the high-face electrode current map.
    electrode_mask : 2-D bool over the high-index face of ``axis`` (shape of the image with that
        axis removed, e.g. (ny, nx) for z); False voxels of the face are insulating.

    Returns
    -------
    ConductivityResult (σ_eff = I·L/(A·ΔV); τ = ε_total·σ_bulk/σ_eff).
    """
    t0 = time.perf_counter()
    if not isinstance(image, VoxelImage):
        raise ValueError(f"image must be a fva.types.VoxelImage, got {type(image).__name__}")
    if axis not in AXES:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
    rtol = DEFAULT_RTOL if rtol is None else rtol
    sigma_tol = DEFAULT_SIGMA_TOL if sigma_tol is None else sigma_tol
    for name, v in (("flux_tol", flux_tol), ("rtol", rtol), ("sigma_tol", sigma_tol)):
        check_tolerance(name, v)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    _itemsize(dtype)
    ax = AXES[axis]
    check_size(image.shape, dtype, preconditioner)

    sig_full, sigma_bulk = conductivity_map(image, sigma_bulk_S_per_m, sigma_pore_S_per_m,
                                            phase_conductivities)
    face_shape = tuple(n for a, n in enumerate(image.shape) if a != ax)
    if electrode_mask is not None:
        em_face = np.asarray(electrode_mask)
        if em_face.shape != face_shape:
            raise ValueError(f"electrode_mask must have the shape of the high {axis} face {face_shape}, "
                             f"got {em_face.shape}")
        em_face = em_face.astype(bool)
    else:
        em_face = np.ones(face_shape, dtype=bool)
    p1, p2 = _side_periodicity(image, ax, periodic_sides)

    perm = _perm(ax)
    sig = np.ascontiguousarray(np.transpose(sig_full, perm))
    d = tuple(image.voxel_m[a] for a in perm)
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    perc = percolating_mask(sig > 0, 0, (False, p1, p2), electrode_mask_high=em_face)
    solid_t = np.transpose(image.solid, perm)
    eps_total = float(np.mean(image.solid))
    eps_perc = float(np.mean(solid_t & perc))
    sig = np.where(perc, sig, 0.0)
    n0, n1, n2 = sig.shape
    length = n0 * d[0]
    area = n1 * d[1] * n2 * d[2]

    common = dict(sigma_bulk_S_per_m=sigma_bulk, eps_total=eps_total, eps_percolating=eps_perc,
                  axis=axis, preconditioner=preconditioner)
    if not perc.any():
        msg = (f"no 6-connected path of conducting voxels joins the two {axis} electrodes: "
               f"sigma_eff = 0 (eps_total = {eps_total:.4f})")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        fields = {}
        if return_fields or electrode_mask is not None:
            fields["electrode_current_A_per_m2"] = np.zeros(face_shape)
        if return_fields:
            fields["potential_V"] = np.full(image.shape, np.nan)
            fields["current_density_A_per_m2"] = np.zeros(image.shape + (3,))
        return ConductivityResult(sigma_eff_S_per_m=0.0, tau=float("inf"), flux_spread=0.0, iterations=0,
                                  residual=0.0, current_imbalance=0.0, sigma_error=0.0, converged=True, percolating=False,
                                  wall_s=time.perf_counter() - t0, **common, **fields)

    if backend is not None:
        ensure_init(backend, "f64")
    else:
        current()
    phi, info = _pcg(sig, em_face.astype(np.int32), c, p1, p2, preconditioner=preconditioner,
                     flux_tol=flux_tol, rtol=rtol, sigma_tol=sigma_tol, max_iter=max_iter, dtype=dtype,
                     check_every=check_every, progress=progress)
    current_A = info["current_A"]
    sigma_eff = current_A * length / area  # ΔV = 1 V
    if sigma_eff <= 0 or not math.isfinite(sigma_eff):
        info["converged"] = False
    tau = eps_total * sigma_bulk / sigma_eff if sigma_eff > 0 else float("inf")
    if not info["converged"]:
        msg = (f"conduction solve along {axis} did NOT converge after {info['iterations']} iterations: "
               f"residual {info['residual']:.3g} (rtol {rtol:g}), flux spread {info['spread']:.3g} "
               f"(flux_tol {flux_tol:g}), current error bound {info['sigma_error']:.3g} (sigma_tol "
               f"{sigma_tol:g}); the sigma_eff returned is not reliable")
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)

    fields = {}
    if return_fields or electrode_mask is not None:
        from fva.reference import face_conductances, face_currents

        gA, gB, gC = face_conductances(sig, em_face, c, p1, p2)
        IA, IB, IC = face_currents(phi, gA, gB, gC)
        fields["electrode_current_A_per_m2"] = IA[n0] / (d[1] * d[2])
        if return_fields:
            inv = np.argsort(perm)
            jA = 0.5 * (IA[:-1] + IA[1:]) / (d[1] * d[2])
            jB = 0.5 * (IB + np.roll(IB, 1, axis=1)) / (d[0] * d[2])
            jC = 0.5 * (IC + np.roll(IC, 1, axis=2)) / (d[0] * d[1])
            jt = np.stack([jA, jB, jC], axis=-1)  # components in permuted-axis order
            jt = np.transpose(jt, tuple(inv) + (3,))[..., inv]
            pot = np.where(perc, phi, np.nan)
            fields["potential_V"] = np.transpose(pot, inv)
            fields["current_density_A_per_m2"] = np.ascontiguousarray(jt)
    return ConductivityResult(sigma_eff_S_per_m=float(sigma_eff), tau=float(tau), flux_spread=info["spread"],
                              iterations=info["iterations"], residual=info["residual"],
                              current_imbalance=info["imbalance"], sigma_error=info["sigma_error"],
                              converged=bool(info["converged"]), percolating=True,
                              wall_s=time.perf_counter() - t0, **common, **fields)


def solve_all_axes(image: VoxelImage, axes=("x", "y", "z"), **kw) -> dict:
    """``{axis: ConductivityResult}`` for every requested axis (same keyword arguments)."""
    return {a: solve_conductivity(image, a, **kw) for a in axes}


# --------------------------------------------------------------------------------------- PCG
def phase_table(sig: np.ndarray):
    """(u8 id image, table) for the fine-level kernels: id 0 = σ 0; table = σ per id, then harmonic means."""
    from fva.conduction_kernels import NTAB
    from fva.reference import harmonic

    vals = np.unique(sig)
    if vals[0] != 0.0:
        vals = np.concatenate([[0.0], vals])
    if vals.size > NTAB:
        raise ValueError(f"at most {NTAB - 1} distinct non-zero conductivities are supported, got {vals.size - 1}")
    ids = np.searchsorted(vals, sig).astype(np.uint8)
    T = np.zeros(NTAB + NTAB * NTAB)
    T[:vals.size] = vals
    H = np.zeros((NTAB, NTAB))
    H[:vals.size, :vals.size] = harmonic(vals[:, None], vals[None, :])
    T[NTAB:] = H.ravel()
    return ids, T


class _Fine:
    """Device arrays of one solve (fine level)."""

    def __init__(self, sig, em, dtype):
        self.npdt = np.float64 if dtype == "f64" else np.float32
        tdt = ti.f64 if dtype == "f64" else ti.f32
        shape = sig.shape
        ids, T = phase_table(sig)
        self.sig = ti.ndarray(ti.u8, shape)
        self.sig.from_numpy(ids)
        self.T = ti.ndarray(ti.f64, T.shape)
        self.T.from_numpy(T)
        self.em = ti.ndarray(ti.i32, em.shape)
        self.em.from_numpy(np.ascontiguousarray(em, dtype=np.int32))
        self.x, self.r, self.z, self.p, self.ap = (ti.ndarray(tdt, shape) for _ in range(5))
        self.flux = ti.ndarray(ti.f64, (shape[0] + 1, shape[1]))

    def bytes_per_voxel(self, preconditioner="mg"):
        return 1 + (5 if preconditioner == "mg" else 6) * np.dtype(self.npdt).itemsize


def _pcg(sig, em, c, p1, p2, *, preconditioner, flux_tol, rtol, sigma_tol, max_iter, dtype, check_every,
         progress=None):
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
    """
    from fva.conduction_kernels import get_kernels
    from fva.multigrid import Multigrid

    K = get_kernels(dtype)
    n0 = sig.shape[0]
    F = _Fine(sig, em, dtype)
    args = (c[0], c[1], c[2], int(p1), int(p2))
    # initial guess: the linear profile of a uniform block (exact for one)
    prof = (1.0 - (np.arange(n0) + 0.5) / n0)[:, None, None]
    F.x.from_numpy(np.where(sig > 0, prof, 0.0).astype(F.npdt))
    bnorm = math.sqrt(float(np.sum((2.0 * c[0] * sig[0]) ** 2)))

    mg = Multigrid(K, F.sig, F.T, F.em, c, p1, p2, F.npdt) if preconditioner == "mg" else None
    dinv = None
    if mg is None:  # Jacobi: 1/diag once, then one fused streaming pass per iteration
        dinv = ti.ndarray(K.dtype, sig.shape)
        K.f_diag_inv(F.sig, F.T, F.em, dinv, *args)
    if check_every is None:
        check_every = 2 if mg is not None else 10
    replace_every = 50 if dtype == "f32" else 0

    def precond():
        if mg is not None:
            mg.apply(F.r, F.z, F.ap)
            return K.dot(F.r, F.z)
        return K.f_jacobi_dot(F.sig, F.T, F.em, F.r, F.z, *args)

    def flux_check():
        """(spread of the plane currents, inlet/outlet imbalance, mean current) of the current x."""
        K.plane_flux(F.sig, F.T, F.em, F.x, F.flux, c[0])
        planes = F.flux.to_numpy().sum(axis=1)
        mean = float(np.mean(planes))
        if not (mean > 0) or not np.all(np.isfinite(planes)):
            return float("inf"), float("inf"), mean
        return (float((planes.max() - planes.min()) / mean), float(abs(planes[0] - planes[-1]) / mean), mean)

    def true_residual():
        """(‖b − A x‖/‖b‖, xᵀ(b − A x)) from x itself (Ap is the scratch array)."""
        rr = K.f_resid(F.sig, F.T, F.em, F.x, F.ap, F.ap, 0, 1, *args)
        xr = K.dot(F.x, F.ap)
        return (math.sqrt(rr) / bnorm if bnorm > 0 else 0.0), xr

    hs = collections.deque(maxlen=HS_DELAY)  # α_j r_jᵀz_j: decrements of ‖e‖²_A

    def state():
        spread, imbalance, mean_I = flux_check()
        res, xr = true_residual()
        if res <= EXACT_RESIDUAL:
            hs_est = 0.0  # x solves the system to round-off
        elif len(hs) < HS_DELAY:
            hs_est = float("inf")  # too few iterations to estimate the error
        else:
            hs_est = float(sum(hs))
        err = (abs(xr) + hs_est) / mean_I if mean_I > 0 else float("inf")
        ok = (spread <= flux_tol and res <= rtol and err <= sigma_tol)
        return dict(spread=spread, imbalance=imbalance, mean_I=mean_I, residual=res, sigma_error=err,
                    converged=bool(ok))

    K.f_resid(F.sig, F.T, F.em, F.x, F.r, F.r, 0, 1, *args)  # r = b - A x
    rz = precond()
    K.copy(F.z, F.p)
    it = 0
    st = state()
    best, since_best = st["residual"], 0
    while not st["converged"] and it < max_iter:
        pap = K.f_matvec_dot(F.sig, F.T, F.em, F.p, F.ap, *args)
        if not (pap > 0 and math.isfinite(pap)):
            break
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
            # residual replacement (van der Vorst & Ye 2000): the recurrence r drifts from b − A x in
            # float32 and CG then stalls; recompute it from x every so often
            rr = K.f_resid(F.sig, F.T, F.em, F.x, F.r, F.r, 0, 1, *args)
            rz_new = precond()
        if not math.isfinite(rz_new):
            break
        rec = math.sqrt(rr) / bnorm if bnorm > 0 else 0.0  # recurrence residual: cheap, only a hint
        if it % check_every == 0 or rr == 0.0 or it == max_iter or rec <= rtol:
            st = state()
            if progress is not None:
                progress(it, st)
            if st["converged"] or rr == 0.0:
                break
            if st["residual"] < 0.5 * best:
                best, since_best = st["residual"], 0
            else:
                since_best += check_every
                if since_best >= STAGNATION_ITERS:  # e.g. the float32 round-off floor
                    break
        if rz_new == 0.0:
            break
        beta = rz_new / rz
        rz = rz_new
        K.p_update(F.p, F.z, beta)
    st = state() if not st["converged"] else st
    phi = F.x.to_numpy().astype(np.float64)
    return phi, dict(iterations=it, spread=st["spread"], imbalance=st["imbalance"], residual=st["residual"],
                     sigma_error=st["sigma_error"], converged=st["converged"], current_A=st["mean_I"],
                     bytes_per_voxel=F.bytes_per_voxel(preconditioner))

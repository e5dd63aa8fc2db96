"""Steady conduction ∇·(σ∇φ) = 0 on a voxel image: effective conductivity and tortuosity factor.

Quick start::

    from fva.conduction import solve_conductivity
    res = solve_conductivity(image, axis="z", sigma_bulk_S_per_m=1e-3)
    res.sigma_eff_S_per_m, res.tau

Conventions (the discretisation of TauFactor, Cooper et al., SoftwareX 5 (2016) 203, with Dirichlet
electrodes half a voxel outside the first and last slab; ``docs/references.md``):

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
* Matrix-free preconditioned CG (multigrid V-cycle or Jacobi) in Taichi, ``fva.pcg``: it stops only
  when the relative true residual, the spread of the plane currents (inlet = outlet) and an energy
  bound on the current error all meet their tolerances; a solve that stops short (``max_iter``,
  stagnation, breakdown) returns ``converged=False`` and warns.
* Storage: a u8 phase id per voxel (conductivities and harmonic means come from a small table), the
  potential in float64 and three work vectors in ``dtype`` (default float32): 21 B/voxel plus
  ≈ 4 B/voxel of multigrid levels. The host side builds the ids straight from the labels (no float map).
* Kernels take ``ti.types.ndarray`` arguments: a new image shape never recompiles them.
"""
from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np

from fva.backend import current, ensure_init
from fva.connectivity import percolating_mask
from fva.types import ConductivityResult, VoxelImage

log = logging.getLogger("pelletsim.fva.conduction")

AXES = {"z": 0, "y": 1, "x": 2}
TAICHI_MAX_ELEMENTS = 2 ** 31 - 1
PRECONDITIONERS = ("mg", "jacobi")
DEFAULT_RTOL = 1e-6        # relative true residual ‖b − A x‖/‖b‖ (calibrated: see the tests' winding family)
DEFAULT_SIGMA_TOL = 1e-5   # bound on the relative current error from the energy (xᵀr + HS estimate)
DEFAULT_DTYPE = "f32"      # work vectors; the potential is float64 in every case (fva.pcg)
HOST_BYTES_PER_VOXEL = 2   # the image and its id copy on the host while the device arrays live
RUN_BYTES_PER_VOXEL = 1    # bound on the runs of conducting cells of the face-mask kernels (fva.face_mask)


# --------------------------------------------------------------------------------------- sizes
def estimate_memory_bytes(shape, dtype: str = DEFAULT_DTYPE, preconditioner: str = "mg") -> int:
    """Bytes a solve of an image of ``shape`` (nz, ny, nx) needs at its peak, any solve axis.

    Fine level (``fva.pcg.bytes_per_voxel``): a u8 id, x in float64 and three work vectors in
    ``dtype`` (Jacobi adds 1/diag); the multigrid hierarchy adds the coarse levels
    (``fva.multigrid.coarse_bytes``, ≈ 4 B/voxel in f32), the runs of conducting cells (≤ 1 B/voxel); plus
    the image and its id copy on the host.
    """
    from fva.multigrid import coarse_bytes
    from fva.pcg import bytes_per_voxel

    itemsize = _itemsize(dtype)
    shape = tuple(int(n) for n in shape)
    n = int(np.prod(shape, dtype=np.int64))
    face = max(shape[1] * shape[2], shape[0] * shape[2], shape[0] * shape[1])
    tot = (bytes_per_voxel(dtype, preconditioner) + HOST_BYTES_PER_VOXEL + RUN_BYTES_PER_VOXEL) * n + 4 * face \
        + 8 * (max(shape) + 1) * max(shape)
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


def check_size(shape, dtype: str = DEFAULT_DTYPE, preconditioner: str = "mg") -> int:
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
def label_conductivities(image: VoxelImage, sigma_bulk_S_per_m: float = 1.0, sigma_pore_S_per_m: float = 0.0,
                         phase_conductivities: dict | None = None) -> tuple[dict, float]:
    """({label present: σ in S/m}, σ_bulk used for τ) for ``image``.

    Without ``phase_conductivities``: voxels labelled ``image.conducting_phase`` get σ_bulk and every
    other label σ_pore (so ``--phase 85`` works on any label image; a sub-volume without the conducting
    label is simply non-percolating). With it ({label: S/m}), every label present must have an entry and
    every entry must be present (errors name the labels present). ``fva.io.load_image`` refuses a
    conducting label that the image does not contain.
    """
    present = present_labels(image.phase)
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
        bulk = pc.get(int(image.conducting_phase), 0.0)
        return pc, float(bulk if bulk > 0 else max(pc.values()))
    if not (math.isfinite(sigma_bulk_S_per_m) and sigma_bulk_S_per_m > 0):
        raise ValueError(f"sigma_bulk_S_per_m must be finite and > 0, got {sigma_bulk_S_per_m}")
    if not (math.isfinite(sigma_pore_S_per_m) and sigma_pore_S_per_m >= 0):
        raise ValueError(f"sigma_pore_S_per_m must be finite and >= 0, got {sigma_pore_S_per_m}")
    table = {v: float(sigma_bulk_S_per_m if v == int(image.conducting_phase) else sigma_pore_S_per_m)
             for v in present}
    return table, float(sigma_bulk_S_per_m)


def present_labels(phase: np.ndarray) -> list[int]:
    """Sorted labels present in an integer image (a histogram for 8-bit images: no sort, no copy)."""
    if phase.dtype in (np.uint8, np.int8, np.bool_):
        flat = phase.view(np.uint8).reshape(-1)
        counts = np.zeros(256, np.int64)
        for s in range(0, flat.size, 1 << 22):   # bincount casts to int64: 32 MB chunks, not 8 B per voxel at once
            counts += np.bincount(flat[s:s + (1 << 22)], minlength=256)
        vals = np.flatnonzero(counts)
        return [int(v) - 256 if phase.dtype == np.int8 and v > 127 else int(v) for v in vals]
    return [int(v) for v in np.unique(phase)]


def phase_ids(image: VoxelImage, table: dict) -> tuple[np.ndarray, np.ndarray]:
    """(u8 id per voxel [z, y, x], σ per id): id 0 is σ = 0, ids 1.. the distinct positive conductivities.

    One byte per voxel; 8-bit images go through a 256-entry lookup table (no float map, no sort).
    """
    from fva.fine_kernels import NTAB

    sigmas = sorted({v for v in table.values() if v > 0})
    if len(sigmas) > NTAB - 1:
        raise ValueError(f"at most {NTAB - 1} distinct non-zero conductivities are supported, got {len(sigmas)}")
    id_of_sigma = {s: i + 1 for i, s in enumerate(sigmas)}
    ph = image.phase
    if ph.dtype in (np.uint8, np.int8, np.bool_):
        lut = np.zeros(256, np.uint8)
        for lab, s in table.items():
            lut[lab & 0xFF] = id_of_sigma.get(s, 0)
        ids = lut[ph.view(np.uint8)]
    else:
        labs = np.array(sorted(table), dtype=np.int64)
        vals = np.array([id_of_sigma.get(table[int(k)], 0) for k in labs], np.uint8)
        ids = vals[np.searchsorted(labs, ph)]
    return ids, np.array([0.0] + sigmas)


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
                       dtype: str = DEFAULT_DTYPE, periodic_sides=None, return_fields: bool = False,
                       electrode_mask: np.ndarray | None = None, rtol: float | None = None,
                       sigma_tol: float | None = None, check_every: int | None = None,
                       backend: str | None = None, progress=None,
                       interface_resistance_ohm_m2: float = 0.0) -> ConductivityResult:
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
    dtype : storage precision of the work vectors, "f32" (default) or "f64"; the potential and every
        reduction are float64.
    periodic_sides : None (use image.periodic), a bool, or a (px, py, pz) triple.
    return_fields : also return potential (V), current density (A/m², [z, y, x, 3] as (jz, jy, jx))
        and the high-face electrode current map.
    electrode_mask : 2-D bool over the high-index face of ``axis`` (shape of the image with that
        axis removed, e.g. (ny, nx) for z); False voxels of the face are insulating.
    interface_resistance_ohm_m2 : specific resistance R_i (Ω·m²) of every face between two conducting
        voxels of different particles (``image.labels``, required when R_i > 0), in series with the two
        half-voxel bulk resistances: g = 1/(Δ/(2σ_a) + R_i + Δ/(2σ_b)) per unit area (``fva.interface``).
        0 (default) is the operator without interfaces, unchanged.

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
    from fva.interface import add_interface_bits, check_interface_resistance

    r_i = check_interface_resistance(interface_resistance_ohm_m2)
    if r_i > 0 and image.labels is None:
        raise ValueError("interface_resistance_ohm_m2 > 0 needs a particle label image (VoxelImage.labels: "
                         "voxelise(..., labels=True) or a grain label image); this image has none")
    ax = AXES[axis]
    check_size(image.shape, dtype, preconditioner)

    table, sigma_bulk = label_conductivities(image, sigma_bulk_S_per_m, sigma_pore_S_per_m, phase_conductivities)
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

    # host preparation at ~8 B/voxel peak, all freed before the device arrays exist
    perm = _perm(ax)
    ids, sig_of_id = phase_ids(image, table)
    ids = np.ascontiguousarray(np.transpose(ids, perm))
    d = tuple(image.voxel_m[a] for a in perm)
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    perc = percolating_mask(ids > 0, 0, (False, p1, p2), electrode_mask_high=em_face)
    n_vox = ids.size
    eps_total = float(np.count_nonzero(image.phase == image.conducting_phase)) / n_vox
    eps_perc = float(np.count_nonzero(perc & (np.transpose(image.phase, perm) == image.conducting_phase))) / n_vox
    ids[~perc] = 0
    any_perc = bool(perc.any())
    del perc
    n_iface, r_over_d = 0, None
    if r_i > 0 and any_perc:
        n_iface = add_interface_bits(ids, np.transpose(image.labels, perm), p1, p2)
        r_over_d = tuple(r_i / di for di in d)
    n0, n1, n2 = ids.shape
    length = n0 * d[0]
    area = n1 * d[1] * n2 * d[2]

    common = dict(sigma_bulk_S_per_m=sigma_bulk, eps_total=eps_total, eps_percolating=eps_perc,
                  axis=axis, preconditioner=preconditioner, interface_resistance_ohm_m2=r_i,
                  interface_faces=n_iface)
    if not any_perc:
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
                                  residual=0.0, current_imbalance=0.0, sigma_error=0.0, converged=True,
                                  percolating=False, wall_s=time.perf_counter() - t0, **common, **fields)

    if backend is not None:
        ensure_init(backend, "f64")
    else:
        current()
    from fva.pcg import pcg_solve

    want = "all" if return_fields else ("outlet" if electrode_mask is not None else "")
    areas = (d[1] * d[2], d[0] * d[2], d[0] * d[1])
    dev, info = pcg_solve(ids, sig_of_id, em_face.astype(np.int32), c, p1, p2, preconditioner=preconditioner,
                          flux_tol=flux_tol, rtol=rtol, sigma_tol=sigma_tol, max_iter=max_iter, dtype=dtype,
                          check_every=check_every, progress=progress, fields=want, areas=areas,
                          r_over_d=r_over_d)
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
    if want:
        fields["electrode_current_A_per_m2"] = dev["outlet"]
    if want == "all":   # back to [z, y, x]: axes and current components
        inv = tuple(int(a) for a in np.argsort(perm))
        fields["potential_V"] = np.transpose(dev["potential"], inv)
        fields["current_density_A_per_m2"] = np.ascontiguousarray(
            np.transpose(dev["current"], inv + (3,))[..., list(inv)])
    return ConductivityResult(sigma_eff_S_per_m=float(sigma_eff), tau=float(tau), flux_spread=info["spread"],
                              iterations=info["iterations"], residual=info["residual"],
                              current_imbalance=info["imbalance"], sigma_error=info["sigma_error"],
                              converged=bool(info["converged"]), percolating=True,
                              wall_s=time.perf_counter() - t0, **common, **fields)


def solve_all_axes(image: VoxelImage, axes=("x", "y", "z"), **kw) -> dict:
    """``{axis: ConductivityResult}`` for every requested axis (same keyword arguments)."""
    return {a: solve_conductivity(image, a, **kw) for a in axes}



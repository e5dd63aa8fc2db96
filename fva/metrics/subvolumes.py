"""Transport in sub-volumes: the tortuosity factor of every block of an n×n×n grid.

τ = ε·σ_bulk/σ_eff per block and axis, solved by :func:`fva.conduction.solve_conductivity` with
zero-flux sides. A block that does not conduct has τ = inf and is counted, never averaged away.

References
----------
Lin et al., ACS Energy Lett. 9 (2024) 2387: tortuosity factors of 64 sub-volumes (mean and spread),
in-plane vs through-plane (``docs/references.md``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from fva.metrics import _common
from fva.metrics._common import AXIS, axis_index
from fva.types import VoxelImage

__all__ = ["rve_tortuosity"]


def _blocks(image: VoxelImage, g, b):
    """Yield ((iz, iy, ix), phase block) for the equal-shape sub-volumes."""
    for iz in range(g[0]):
        for iy in range(g[1]):
            for ix in range(g[2]):
                sl = (slice(iz * b[0], (iz + 1) * b[0]), slice(iy * b[1], (iy + 1) * b[1]),
                      slice(ix * b[2], (ix + 1) * b[2]))
                yield (iz, iy, ix), image.phase[sl]


def _rve_batched_axis(image: VoxelImage, g, b, axis: str, solve, solver_kw) -> np.ndarray:
    """τ of every block along ``axis`` from ONE solve: the blocks side by side across the axis,
    separated by one-voxel insulating gaps, between shared electrodes. With insulating pores the
    blocks are independent parallel channels (exactly the zero-flux-sided sub-volume problems);
    each block's current is read from the high-face electrode current map."""
    ax = AXIS[axis]
    c1, c2 = [a for a in range(3) if a != ax]
    nb = int(np.prod(g))
    t1 = int(math.ceil(math.sqrt(nb)))
    t2 = int(math.ceil(nb / t1))
    s1, s2 = b[c1] + 1, b[c2] + 1
    nc = 0 if image.conducting_phase != 0 else 1          # a non-conducting phase value for the gaps
    perm = (ax, c1, c2)
    big = np.full((b[ax], t1 * s1, t2 * s2), nc, dtype=image.phase.dtype)
    where = {}
    for k, (idx, blk) in enumerate(_blocks(image, g, b)):
        i1, i2 = divmod(k, t2)
        big[:, i1 * s1: i1 * s1 + b[c1], i2 * s2: i2 * s2 + b[c2]] = np.transpose(blk, perm)
        where[idx] = (i1, i2)
    inv = tuple(np.argsort(perm))
    bimg = VoxelImage(phase=np.ascontiguousarray(np.transpose(big, inv)), voxel_m=image.voxel_m,
                      periodic=(False, False, False), conducting_phase=image.conducting_phase)
    em = np.ones(big.shape[1:], dtype=bool)
    with warnings.catch_warnings():   # non-percolating blocks are counted, not warned about
        warnings.filterwarnings("ignore", message="no 6-connected path", category=RuntimeWarning)
        res = solve(bimg, axis, electrode_mask=em, **solver_kw)
    tau = np.full(g, np.inf)
    j = res.electrode_current_A_per_m2
    if not res.percolating or j is None or not (res.sigma_eff_S_per_m > 0):
        return tau
    j = np.asarray(j, dtype=np.float64)
    tot = float(j.sum())
    for idx, (i1, i2) in where.items():
        jb = float(j[i1 * s1: i1 * s1 + b[c1], i2 * s2: i2 * s2 + b[c2]].sum())
        if jb <= 0 or tot <= 0:
            continue
        # σ_b = σ_eff(batch) · (I_b / I) · (A_batch / A_b): independent of the applied ΔV
        sig_b = res.sigma_eff_S_per_m * (jb / tot) * (j.size / (b[c1] * b[c2]))
        blk = image.phase[tuple(slice(i * n, (i + 1) * n) for i, n in zip(idx, b))]
        eps_b = float(np.mean(blk == image.conducting_phase))
        tau[idx] = eps_b * res.sigma_bulk_S_per_m / sig_b
    return tau


def rve_tortuosity(image: VoxelImage, grid=(4, 4, 4), axes=("x", "y", "z"), *, batch=True,
                   **solver_kw) -> dict:
    """Tortuosity factor of every sub-volume of an n×n×n grid (the study's 64 RVEs).

    The image is cut into ``grid`` = (gz, gy, gx) blocks of equal shape (floor(n/g) voxels; a
    remainder at the high end of an axis is left out), each solved with zero-flux sides (sub-volumes
    are never periodic) along every axis in ``axes`` by ``fva.conduction.solve_conductivity``.

    ``batch=True`` (default) solves all blocks of one axis at once: the blocks are laid side by side
    across the axis with one-voxel insulating gaps between them, so that they are independent
    parallel channels between shared electrodes (the same discrete problems as separate solves; one
    solve per axis instead of 64, ~10× faster because a 16³–32³ solve is dominated by kernel-launch
    overhead). Each block's current is read from the high-face electrode current map; the default
    ``flux_tol`` is then 1e-5 so that every block, not only their sum, is converged. ``batch=False``
    (or a conducting pore phase, ``sigma_pore_S_per_m > 0`` / ``phase_conductivities``) solves the
    blocks one by one (equal shapes: Taichi kernels compile once).

    Parameters
    ----------
    image : VoxelImage
    grid : int or (gz, gy, gx)
    axes : iterable of "x", "y", "z"
    batch : bool, see above.
    **solver_kw : passed to ``solve_conductivity`` (e.g. ``flux_tol``, ``preconditioner``).

    Returns
    -------
    dict with, per axis a:

    - ``tau_map[a]`` : (gz, gy, gx) tortuosity factor τ = ε·σ_bulk/σ_eff (dimensionless), ``inf``
      where the sub-volume does not conduct along a;
    - ``n_nonpercolating[a]`` : number of sub-volumes that do not conduct along a;
    - ``tau_mean[a]``, ``tau_std[a]`` : mean and population std over ALL sub-volumes, hence ``inf``
      as soon as one of them does not conduct (a blocked sub-volume is never averaged away);
    - ``tau_mean_conducting[a]``, ``tau_std_conducting[a]`` : the same over the conducting ones
      only (NaN when none conducts), to be read together with ``n_nonpercolating[a]``;

    and ``n_subvolumes``, ``porosity_map`` ((gz, gy, gx) pore fraction), ``block_voxels``, ``grid``,
    ``tau_inplane`` (mean of the x and y ``tau_mean``), ``tau_throughplane`` (``tau_mean["z"]``).

    References
    ----------
    Lin et al. 2024 (4×4×4 sub-volumes of a 460 µm cube, in-plane vs through-plane τ;
    ``docs/references.md``).
    """
    if not isinstance(image, VoxelImage):
        raise ValueError("rve_tortuosity needs a VoxelImage")
    g = (int(grid),) * 3 if np.isscalar(grid) else tuple(int(x) for x in grid)
    if len(g) != 3 or min(g) < 1:
        raise ValueError(f"grid must be a positive int or three ints (gz, gy, gx), got {grid}")
    b = tuple(n // k for n, k in zip(image.shape, g))
    if min(b) < 1:
        raise ValueError(f"grid {g} is finer than the image {image.shape}")
    for a in axes:
        axis_index(a)
    solve = _common.solver()
    solver_kw = dict(solver_kw)
    solver_kw.pop("periodic_sides", None)        # sub-volumes: zero-flux sides
    solver_kw.pop("electrode_mask", None)
    if float(solver_kw.get("sigma_pore_S_per_m", 0.0) or 0.0) > 0 or solver_kw.get("phase_conductivities"):
        batch = False                            # conducting gaps would couple the blocks
    eps = np.zeros(g)
    for idx, blk in _blocks(image, g, b):
        eps[idx] = 1.0 - float(np.mean(blk == image.conducting_phase))
    tau = {}
    if batch:
        kw = dict(solver_kw)
        kw.setdefault("flux_tol", 1e-5)
        for a in axes:
            tau[a] = _rve_batched_axis(image, g, b, a, solve, kw)
    else:
        tau = {a: np.full(g, np.inf) for a in axes}
        for idx, blk in _blocks(image, g, b):
            sub = VoxelImage(phase=np.ascontiguousarray(blk), voxel_m=image.voxel_m,
                             periodic=(False, False, False), conducting_phase=image.conducting_phase)
            for a in axes:
                with warnings.catch_warnings():   # counted in n_nonpercolating instead
                    warnings.filterwarnings("ignore", message="no 6-connected path", category=RuntimeWarning)
                    res = solve(sub, a, **solver_kw)
                t = float(res.tau)
                tau[a][idx] = t if (res.percolating and np.isfinite(t) and t > 0) else np.inf
    out = dict(grid=list(g), block_voxels=list(b), axes=list(axes), tau_map=tau, porosity_map=eps,
               n_subvolumes=int(np.prod(g)), tau_mean={}, tau_std={}, tau_mean_conducting={},
               tau_std_conducting={}, n_nonpercolating={}, batched=bool(batch))
    for a in axes:
        v = tau[a][np.isfinite(tau[a])]
        blocked = int(tau[a].size - v.size)
        out["n_nonpercolating"][a] = blocked
        out["tau_mean_conducting"][a] = float(v.mean()) if v.size else float("nan")
        out["tau_std_conducting"][a] = float(v.std()) if v.size else float("nan")
        out["tau_mean"][a] = float("inf") if blocked else out["tau_mean_conducting"][a]
        out["tau_std"][a] = float("inf") if blocked else out["tau_std_conducting"][a]
    inpl = [out["tau_mean"][a] for a in ("x", "y") if a in axes]
    out["tau_inplane"] = float(np.mean(inpl)) if inpl else float("nan")
    out["tau_throughplane"] = out["tau_mean"].get("z", float("nan"))
    return out

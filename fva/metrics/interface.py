"""Current density at an electrode in partial contact with the top face of a pellet.

Currents in A/m² (10 A/m² = 1 mA/cm²).

References
----------
Lin et al., ACS Energy Lett. 9 (2024) 2387: current hot spots at a Li electrode touching 93.06 % of
the electrolyte surface; mean = applied current / contact fraction (``docs/references.md``).
"""
from __future__ import annotations

import numpy as np

from fva.metrics import _common
from fva.types import VoxelImage

__all__ = ["electrode_interface_current"]


def _contact_pattern(ny, nx, fraction, pattern, rng) -> np.ndarray:
    n = ny * nx
    m = int(round(float(fraction) * n))
    flat = np.zeros(n, dtype=bool)
    if pattern == "random":
        flat[rng.permutation(n)[:m]] = True
    elif pattern == "disc":
        yy, xx = np.mgrid[0:ny, 0:nx]
        d2 = (yy - (ny - 1) / 2.0) ** 2 + (xx - (nx - 1) / 2.0) ** 2
        flat[np.argsort(d2.ravel(), kind="stable")[:m]] = True
    else:
        raise ValueError(f"pattern must be 'random', 'disc' or 'from_surface', got {pattern!r}")
    return flat.reshape(ny, nx)


def electrode_interface_current(image: VoxelImage, *, contact_fraction=None, contact_mask=None,
                                pattern="random", applied_current_A_per_m2=10.0, seed=0,
                                hist_bins=30, **solver_kw) -> dict:
    """Current density at a planar electrode touching the top (high-z) face over part of its area.

    The electrode covers the contact mask on the top face; the rest of the face is insulating; a
    counter electrode covers the whole bottom face (z = 0). The linear problem is solved once by
    ``fva.conduction.solve_conductivity(image, "z", electrode_mask=mask)`` and the current scaled so
    that the total equals ``applied_current_A_per_m2`` × face area (galvanostatic). The mean over
    contact voxels is then exactly applied / contact fraction (the study's 1.07 mA/cm² at 93.06 %).

    Contact mask: ``contact_mask`` ((ny, nx) bool) if given; else ``pattern="from_surface"`` (the
    solid voxels of the top slab); else ``contact_fraction`` of the face as a seeded random pixel
    pattern (``"random"``) or a centred disc (``"disc"``, clipped by the square for large fractions).
    The mask is always intersected with the solid voxels of the top slab. Contact voxels that are not
    connected to the counter electrode carry zero current and stay in the statistics.

    Parameters
    ----------
    image : VoxelImage
    contact_fraction : float in (0, 1], for "random" / "disc"
    contact_mask : (ny, nx) bool, optional
    pattern : {"random", "disc", "from_surface"}
    applied_current_A_per_m2 : float, A/m² (10 A/m² = 1 mA/cm²)
    seed : int, for the random pattern
    **solver_kw : passed to the solver.

    Returns
    -------
    dict: ``map_A_per_m2`` ((ny, nx), NaN off contact), ``contact_mask``, ``contact_fraction``
    (actual, of the face area), ``contact_fraction_requested``, ``mean_A_per_m2``, ``max_A_per_m2``,
    ``max_over_mean``, ``cv`` (std/mean over contact voxels), ``hist_edges_A_per_m2``,
    ``hist_counts``, ``percolating``, ``applied_A_per_m2``.
    """
    if not isinstance(image, VoxelImage):
        raise ValueError("electrode_interface_current needs a VoxelImage")
    nz, ny, nx = image.shape
    top = image.solid[-1]
    if contact_mask is not None:
        cm = np.asarray(contact_mask, dtype=bool)
        if cm.shape != (ny, nx):
            raise ValueError(f"contact_mask must have shape (ny, nx) = {(ny, nx)}, got {cm.shape}")
        req = float(cm.mean())
    elif pattern == "from_surface":
        cm = top.copy()
        req = float(cm.mean())
    else:
        if contact_fraction is None or not (0.0 < float(contact_fraction) <= 1.0):
            raise ValueError(f"contact_fraction must be in (0, 1] for pattern {pattern!r}, got {contact_fraction}")
        cm = _contact_pattern(ny, nx, contact_fraction, pattern, np.random.default_rng(seed))
        req = float(contact_fraction)
    cm = cm & top
    frac = float(cm.mean())
    nan_map = np.full((ny, nx), np.nan)
    base = dict(contact_mask=cm, contact_fraction=frac, contact_fraction_requested=req,
                applied_A_per_m2=float(applied_current_A_per_m2), pattern=pattern if contact_mask is None else "mask")
    empty = dict(base, map_A_per_m2=nan_map, mean_A_per_m2=float("nan"), max_A_per_m2=float("nan"),
                 max_over_mean=float("nan"), cv=float("nan"), hist_edges_A_per_m2=np.zeros(0),
                 hist_counts=np.zeros(0, dtype=np.int64), percolating=False)
    if not cm.any():
        return empty
    solver_kw = dict(solver_kw)
    solver_kw.pop("electrode_mask", None)
    res = _common.solver()(image, "z", electrode_mask=cm, **solver_kw)
    j = res.electrode_current_A_per_m2
    if j is None:
        raise RuntimeError("the conduction solver returned no electrode_current_A_per_m2 map")
    j = np.asarray(j, dtype=np.float64)
    total = float(j[cm].sum())
    if not res.percolating or total == 0.0 or not np.isfinite(total):
        return empty
    j = j * (float(applied_current_A_per_m2) * ny * nx / total)   # equal face voxels: Σ j dA = J A
    jm = np.where(cm, j, np.nan)
    v = j[cm]
    mean = float(v.mean())
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-6 * abs(mean):              # uniform current: a narrow window around the mean
        lo, hi = mean * (1 - 1e-3), mean * (1 + 1e-3)
    cnt, edges = np.histogram(v, bins=hist_bins, range=(lo, hi))
    return dict(base, map_A_per_m2=jm, mean_A_per_m2=mean, max_A_per_m2=float(v.max()),
                max_over_mean=float(v.max() / mean), cv=float(v.std() / mean),
                hist_edges_A_per_m2=edges, hist_counts=cnt, percolating=True)

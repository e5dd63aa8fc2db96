"""Pore sizes: local thickness (largest inscribed sphere) and pore-size distributions.

Lengths in metres; anisotropic voxels allowed.

References
----------
Hildebrand & Rüegsegger, "A new method for the model-independent assessment of thickness in
three-dimensional images", J. Microsc. 185 (1997) 67 (local thickness); Gostick et al., "PoreSpy:
a Python toolkit for quantitative analysis of porous media images", J. Open Source Softw. 4 (2019)
1296 (distance-transform convention); Lin et al. 2024 (pore-size histogram normalised by the pore
count; ``docs/references.md``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from fva.metrics._common import STRUCT6, spacing

__all__ = ["local_thickness", "pore_size_distribution"]


def _ball_kernel(r_vox: float, sp: np.ndarray) -> np.ndarray:
    """Ellipsoidal kernel in index space: offsets o with Σ (o_i·s_i)² ≤ r² (r and s in voxel units)."""
    h = [int(math.floor(r_vox / si + 1e-9)) for si in sp]
    g = np.ogrid[-h[0]:h[0] + 1, -h[1]:h[1] + 1, -h[2]:h[2] + 1]
    d2 = (g[0] * sp[0]) ** 2 + (g[1] * sp[1]) ** 2 + (g[2] * sp[2]) ** 2
    return d2 <= r_vox * r_vox * (1 + 1e-9)


def local_thickness(pore_mask, voxel_m, *, bins=25) -> np.ndarray:
    """Local thickness: radius of the largest inscribed sphere that covers each pore voxel.

    Sphere sweep on the Euclidean distance transform ``dt`` (distance from a pore voxel centre to
    the nearest solid voxel centre, scipy convention as in PoreSpy): for each radius level r,
    from large to small, the voxels within r of a centre with ``dt ≥ r`` get thickness r (if not
    already thicker). The dilation by a ball is done by FFT convolution on a zero-padded grid
    (≈0.1–0.2 s per level on 128³); the smallest level needs no dilation (every pore voxel is the
    centre of its own ball). Values are quantised down to the levels (error < one level step).
    The image edge is not a wall: pores cut by the edge are treated as open there.

    Parameters
    ----------
    pore_mask : (nz, ny, nx) bool array, True = pore (or the phase to measure)
    voxel_m : float or (dz, dy, dx), metres (anisotropic spacing allowed)
    bins : int or 1-D array
        Number of radius levels, linearly spaced between the smallest and largest ``dt`` (default
        25), or explicit radius levels in metres.

    Returns
    -------
    (nz, ny, nx) float64 array: local thickness as a RADIUS in metres, 0 outside the pore mask.
    Diameters are twice this value.
    """
    import scipy.fft as sfft

    pm = np.asarray(pore_mask, dtype=bool)
    if pm.ndim != 3:
        raise ValueError(f"pore_mask must be 3-D [z, y, x], got shape {pm.shape}")
    sp_m = np.array(spacing(voxel_m))
    unit = float(sp_m.min())                 # work in units of the smallest voxel edge
    sp = sp_m / unit
    out = np.zeros(pm.shape, dtype=np.float64)
    if not pm.any():
        return out
    if pm.all():
        raise ValueError("pore_mask has no solid voxel: the local thickness is unbounded")
    dt = ndi.distance_transform_edt(pm, sampling=sp)
    dmin, dmax = float(dt[pm].min()), float(dt.max())
    if np.isscalar(bins):
        n = max(int(bins), 1)
        levels = np.unique(np.linspace(dmin, dmax, n)) if dmax > dmin else np.array([dmin])
    else:
        levels = np.unique(np.asarray(bins, dtype=np.float64) / unit)
        levels = levels[(levels > 0)]
        if levels.size == 0:
            raise ValueError("bins must contain positive radius levels")
    levels = np.sort(levels)
    # every pore voxel is covered by its own ball: floor dt to the levels
    k = np.searchsorted(levels, dt[pm] * (1 + 1e-12), side="right") - 1
    out_p = np.where(k >= 0, levels[np.clip(k, 0, None)], 0.0)
    out[pm] = out_p
    # sweep from large to small; the largest level's centres all sit inside their balls
    pad = [int(math.ceil(levels[-1] / si)) + 1 for si in sp]
    shape_p = tuple(sfft.next_fast_len(n + p, real=True) for n, p in zip(pm.shape, pad))
    for r in levels[::-1]:
        centres = dt >= r * (1 - 1e-12)
        if not centres.any():
            continue
        need = pm & (out < r)
        if not need.any():
            continue
        ker = _ball_kernel(r, sp)
        if ker.size == 1:
            continue
        # FFT dilation: conv(centres, ball) > 0.5
        a = np.zeros(shape_p, dtype=np.float32)
        a[: pm.shape[0], : pm.shape[1], : pm.shape[2]] = centres
        b = np.zeros(shape_p, dtype=np.float32)
        h = [(s - 1) // 2 for s in ker.shape]
        b[: ker.shape[0], : ker.shape[1], : ker.shape[2]] = ker
        b = np.roll(b, shift=(-h[0], -h[1], -h[2]), axis=(0, 1, 2))
        c = sfft.irfftn(sfft.rfftn(a, workers=-1) * sfft.rfftn(b, workers=-1), s=shape_p, workers=-1)
        cov = c[: pm.shape[0], : pm.shape[1], : pm.shape[2]] > 0.5
        upd = need & cov
        out[upd] = r
    return out * unit


def pore_size_distribution(local_thickness, bins=20, *, voxel_m=None) -> dict:
    """Pore-size distribution by pore count and by volume.

    Individual pores are the 6-connected components of ``local_thickness > 0`` (scipy.ndimage.label;
    a fully connected pore network counts as one pore). Each pore's size is its maximum inscribed
    DIAMETER, 2·max(local thickness) over the pore. The number histogram is normalised by the pore
    count (the study's "frequency normalised by the number of pores"); the volume histogram is the
    fraction of pore volume whose local diameter (2·local thickness) falls in each bin.

    Parameters
    ----------
    local_thickness : (nz, ny, nx) float array, radius in metres (from :func:`local_thickness`)
    bins : int or array of diameter edges in metres
    voxel_m : optional voxel size; when given, the equivalent-volume diameter of each pore
        (6V/π)^(1/3) is also returned.

    Returns
    -------
    dict with ``edges_m`` (diameter bin edges, m), ``counts_by_number`` (sum 1), ``counts_by_volume``
    (sum 1), ``mean_m`` (number-mean of the per-pore max-inscribed diameters, m),
    ``mean_volume_weighted_m`` (volume-weighted mean local diameter, m), ``n_pores``,
    ``pore_diameters_m`` (per pore) and, with ``voxel_m``, ``equivalent_diameters_m``.
    """
    lt = np.asarray(local_thickness, dtype=np.float64)
    pm = lt > 0
    lab, n = ndi.label(pm, structure=STRUCT6)
    if n == 0:
        e = np.asarray(bins, dtype=float) if not np.isscalar(bins) else np.linspace(0.0, 1.0, int(bins) + 1)
        z = np.zeros(e.size - 1)
        return dict(edges_m=e, counts_by_number=z, counts_by_volume=z.copy(), mean_m=float("nan"),
                    mean_volume_weighted_m=float("nan"), n_pores=0, pore_diameters_m=np.zeros(0))
    dpore = 2.0 * np.asarray(ndi.maximum(lt, labels=lab, index=np.arange(1, n + 1)), dtype=np.float64)
    dloc = 2.0 * lt[pm]
    if np.isscalar(bins):
        hi = max(float(dpore.max()), float(dloc.max()))
        edges = np.linspace(0.0, hi * (1 + 1e-9), int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
    cn, _ = np.histogram(dpore, bins=edges)
    cv, _ = np.histogram(dloc, bins=edges)
    out = dict(edges_m=edges, counts_by_number=cn / max(n, 1), counts_by_volume=cv / max(dloc.size, 1),
               mean_m=float(dpore.mean()), mean_volume_weighted_m=float(dloc.mean()), n_pores=int(n),
               pore_diameters_m=dpore)
    if voxel_m is not None:
        vvox = float(np.prod(spacing(voxel_m)))
        nvox = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        out["equivalent_diameters_m"] = (6.0 * nvox * vvox / np.pi) ** (1.0 / 3.0)
    return out

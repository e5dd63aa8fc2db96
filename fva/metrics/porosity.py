"""Porosity metrics: profiles, sub-volume spread, in-plane heterogeneity, percolating fraction.

One function per metric, numpy in, numpy out. Images are indexed ``[z, y, x]``; a ``solid`` mask is
True on the conducting phase. All results are dimensionless pore fractions unless a unit is named.

References
----------
Lin et al., "Nonintuitive Role of Solid Electrolyte Porosity on Failure", ACS Energy Lett. 9 (2024)
2387: porosity profile along z, in-plane "structure factor" map, sub-volume representativeness
(see ``docs/references.md``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fva.metrics._common import STRUCT6, as_solid, axis_index, spacing

__all__ = ["porosity_profile", "subvolume_porosity_std", "inplane_map", "inplane_rms",
           "radial_structure_factor", "percolating_fraction"]


def porosity_profile(image_or_solid, axis="z") -> np.ndarray:
    """Porosity of every slice normal to ``axis``.

    Parameters
    ----------
    image_or_solid : VoxelImage or (nz, ny, nx) bool array (True = solid)
    axis : {"x", "y", "z"}
        Slices are normal to this axis; entry ``i`` is the pore fraction of slice ``i``
        (index 0 = low end, e.g. the bottom wall for z).

    Returns
    -------
    (n_axis,) float64 array, dimensionless pore fraction per slice.
    """
    s = as_solid(image_or_solid)
    a = axis_index(axis)
    other = tuple(i for i in range(3) if i != a)
    return 1.0 - s.mean(axis=other, dtype=np.float64)


def subvolume_porosity_std(solid, cube_voxels) -> tuple:
    """Porosity mean and standard deviation over non-overlapping cubic sub-volumes.

    The study's representativeness check (σ_ε = 0.005 for 460 µm cubes). Cubes tile the image
    from index 0; a remainder thinner than a cube at the high end of an axis is left out.

    Parameters
    ----------
    solid : (nz, ny, nx) bool array or VoxelImage
    cube_voxels : int or (cz, cy, cx)
        Edge of a sub-volume in voxels.

    Returns
    -------
    (mean, std, n) : mean and population standard deviation (ddof=0) of the sub-volume porosities,
        and the number of sub-volumes.
    """
    s = as_solid(solid)
    c = (int(cube_voxels),) * 3 if np.isscalar(cube_voxels) else tuple(int(x) for x in cube_voxels)
    if len(c) != 3 or min(c) < 1:
        raise ValueError(f"cube_voxels must be a positive int or three ints, got {cube_voxels}")
    m = [n // k for n, k in zip(s.shape, c)]
    if min(m) < 1:
        raise ValueError(f"a cube of {c} voxels does not fit in an image of shape {s.shape}")
    t = s[: m[0] * c[0], : m[1] * c[1], : m[2] * c[2]]
    t = t.reshape(m[0], c[0], m[1], c[1], m[2], c[2])
    eps = 1.0 - t.mean(axis=(1, 3, 5), dtype=np.float64)
    return float(eps.mean()), float(eps.std()), int(eps.size)


def inplane_map(solid) -> np.ndarray:
    """The study's in-plane "structure factor" map.

    For every (x, y) column: its porosity along z minus the porosity of the whole sample.
    Zero everywhere = perfectly uniform in-plane.

    Parameters
    ----------
    solid : (nz, ny, nx) bool array or VoxelImage

    Returns
    -------
    (ny, nx) float64 array, dimensionless (pore fraction deviation).
    """
    s = as_solid(solid)
    col = 1.0 - s.mean(axis=0, dtype=np.float64)
    return col - (1.0 - s.mean(dtype=np.float64))


def inplane_rms(inplane) -> float:
    """Root mean square of an :func:`inplane_map` (dimensionless scalar summary; 0 = uniform)."""
    m = np.asarray(inplane, dtype=np.float64)
    return float(np.sqrt(np.mean(m ** 2))) if m.size else float("nan")


def radial_structure_factor(solid, voxel_m, *, method="peak") -> tuple:
    """Radially averaged Fourier structure factor of the pore indicator in xy slices.

    S(k) = |FFT₂(δ)|² / (nx·ny) for every z slice, with δ = pore indicator − sample porosity,
    averaged over z and over rings |k| ∈ [(i−½)Δk, (i+½)Δk), Δk = 2π / max(Lx, Ly), up to the
    Nyquist wavenumber π / max(dx, dy). The k = 0 term is excluded.

    Parameters
    ----------
    solid : (nz, ny, nx) bool array or VoxelImage
    voxel_m : float or (dz, dy, dx), metres
    method : {"peak", "moment"}
        Characteristic length 2π/k* with k* the wavenumber of the maximum of S(k) ("peak"; for
        random media without a correlation hole the peak sits at the lowest k and the length is the
        box size), or the first moment k* = Σ k S / Σ S ("moment").

    Returns
    -------
    k_per_m : (nk,) ring-centre wavenumbers i·Δk, rad/m
    S_k : (nk,) radially averaged structure factor (dimensionless, variance units per pixel)
    characteristic_length_m : float, metres (NaN for a single-phase image)
    """
    s = as_solid(solid)
    _, dy, dx = spacing(voxel_m)
    nz, ny, nx = s.shape
    p = (~s).astype(np.float64)
    p -= p.mean()
    F = np.fft.fft2(p, axes=(1, 2))
    S2 = (np.abs(F) ** 2).mean(axis=0) / (nx * ny)
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=dy)
    kx = 2 * np.pi * np.fft.fftfreq(nx, d=dx)
    K = np.hypot(ky[:, None], kx[None, :])
    dk = 2 * np.pi / max(nx * dx, ny * dy)
    kmax = np.pi / max(dx, dy)
    idx = np.rint(K / dk).astype(np.int64)
    keep = (idx > 0) & (K <= kmax * (1 + 1e-12))
    nb = int(idx[keep].max()) + 1 if np.any(keep) else 1
    cnt = np.bincount(idx[keep], minlength=nb)
    ssum = np.bincount(idx[keep], weights=S2[keep], minlength=nb)
    ok = cnt > 0
    ok[0] = False
    k = np.arange(nb)[ok] * dk
    S = ssum[ok] / cnt[ok]
    if k.size == 0 or not np.any(S > 0):
        return k, S, float("nan")
    if method == "peak":
        kstar = k[int(np.argmax(S))]
    elif method == "moment":
        kstar = float(np.sum(k * S) / np.sum(S))
    else:
        raise ValueError(f"method must be 'peak' or 'moment', got {method!r}")
    return k, S, float(2 * np.pi / kstar)


def percolating_fraction(mask, axis="z") -> float:
    """Fraction of a phase that is 6-connected to both faces normal to ``axis``.

    Parameters
    ----------
    mask : (nz, ny, nx) bool array (pores: ``~solid``; solid: ``solid``)
    axis : {"x", "y", "z"}

    Returns
    -------
    float in [0, 1]; 0.0 for an empty phase.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3-D [z, y, x], got shape {m.shape}")
    tot = int(m.sum())
    if tot == 0:
        return 0.0
    a = axis_index(axis)
    lab, n = ndi.label(m, structure=STRUCT6)
    lo = np.unique(np.take(lab, 0, axis=a))
    hi = np.unique(np.take(lab, -1, axis=a))
    both = np.intersect1d(lo[lo > 0], hi[hi > 0])
    if both.size == 0:
        return 0.0
    return float(np.isin(lab, both).sum() / tot)

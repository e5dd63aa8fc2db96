"""Voxelise a sphere packing into a phase image [z, y, x] (union of spheres, periodic wrap).

A voxel is solid (phase 1) when its centre lies inside at least one sphere (or one of its periodic
images across the x / y faces), pore (phase 0) otherwise. The optional label image gives each
solid voxel the index of the sphere that contains it most deeply (largest r − distance), -1 for pore.
Along a periodic axis the voxel edge is adjusted to ``L / round(L / voxel_m)`` so that the image
tiles the box exactly; along z the requested size is used.
"""
from __future__ import annotations

import math

import numpy as np

from fva.types import Packing, VoxelImage


def _axis_indices(c, r, d, n, periodic):
    lo = int(math.floor((c - r) / d - 0.5))
    hi = int(math.ceil((c + r) / d - 0.5))
    idx = np.arange(lo, hi + 1)
    pos = (idx + 0.5) * d  # unwrapped centre coordinates
    if periodic:
        return idx % n, pos
    m = (idx >= 0) & (idx < n)
    return idx[m], pos[m]


def voxelise(packing: Packing, voxel_m: float, *, labels: bool = False, z_range_m=None) -> VoxelImage:
    """Phase image of ``packing`` with (about) cubic voxels of edge ``voxel_m`` metres.

    Parameters
    ----------
    packing : Packing (centres, radii, box Lx, Ly, H in metres; periodic (px, py, pz)).
    voxel_m : voxel edge in metres (> 0).
    labels : also return the int32 particle label image (``VoxelImage.labels``).
    z_range_m : optional (z0, z1) slab of the box to voxelise (default (0, H)).

    Returns
    -------
    VoxelImage with phase uint8 [z, y, x] (1 solid, 0 pore), voxel_m (dz, dy, dx),
    periodic = packing.periodic.
    """
    if not (np.isfinite(voxel_m) and voxel_m > 0):
        raise ValueError(f"voxel_m must be a positive length in metres, got {voxel_m}")
    Lx, Ly, H = (float(v) for v in packing.box_m)
    z0, z1 = (0.0, H) if z_range_m is None else (float(z_range_m[0]), float(z_range_m[1]))
    if not z1 > z0:
        raise ValueError(f"z_range_m must be increasing, got {z_range_m}")
    px, py, pz = packing.periodic
    nx = max(1, int(round(Lx / voxel_m)))
    ny = max(1, int(round(Ly / voxel_m)))
    nz = max(1, int(round((z1 - z0) / voxel_m)))
    n = nx * ny * nz
    if n > 2 ** 31 - 1:
        raise ValueError(f"voxel image {nz}x{ny}x{nx} exceeds Taichi's 2**31-element array limit")
    dx, dy = Lx / nx, Ly / ny
    dz = (z1 - z0) / nz
    solid = np.zeros((nz, ny, nx), dtype=bool)
    lab = np.full((nz, ny, nx), -1, dtype=np.int32) if labels else None
    depth = np.full((nz, ny, nx), -np.inf, dtype=np.float64) if labels else None
    cs = packing.centers_m
    rs = packing.radii_m
    for p in range(packing.n):
        cx, cy, cz = cs[p]
        r = rs[p]
        if not pz and (cz + r < z0 or cz - r > z1):
            continue
        ix, xs = _axis_indices(cx, r, dx, nx, px)
        iy, ys = _axis_indices(cy, r, dy, ny, py)
        iz, zs = _axis_indices(cz - z0, r, dz, nz, pz)
        if ix.size == 0 or iy.size == 0 or iz.size == 0:
            continue
        d2 = ((zs - (cz - z0))[:, None, None] ** 2 + (ys - cy)[None, :, None] ** 2
              + (xs - cx)[None, None, :] ** 2)
        inside = d2 <= r * r
        if not inside.any():
            continue
        sel = np.ix_(iz, iy, ix)
        dup = len(np.unique(ix)) < ix.size or len(np.unique(iy)) < iy.size or len(np.unique(iz)) < iz.size
        if dup:  # sphere wider than a periodic box: several images hit one voxel
            zz, yy, xx = np.meshgrid(iz, iy, ix, indexing="ij")
            np.logical_or.at(solid, (zz[inside], yy[inside], xx[inside]), True)
        else:
            solid[sel] |= inside
        if labels:
            dep = np.where(inside, r - np.sqrt(d2), -np.inf)
            if dup:
                zz, yy, xx = np.meshgrid(iz, iy, ix, indexing="ij")
                for a, b, cc, v in zip(zz[inside], yy[inside], xx[inside], dep[inside]):
                    if v > depth[a, b, cc]:
                        depth[a, b, cc] = v
                        lab[a, b, cc] = p
            else:
                cur = depth[sel]
                better = dep > cur
                depth[sel] = np.where(better, dep, cur)
                lab[sel] = np.where(better, p, lab[sel])
    return VoxelImage(phase=solid.astype(np.uint8), voxel_m=(dz, dy, dx), periodic=packing.periodic,
                      conducting_phase=1, labels=lab)


def resolution_study(packing: Packing, voxels_per_dmin=(4, 6, 8), axis: str = "z", **solve_kw) -> list:
    """Solid fraction and σ_eff at several resolutions (voxels per smallest particle diameter).

    Returns a list of dicts: voxels_per_dmin, voxel_m, shape, solid_fraction, sigma_eff_S_per_m,
    sigma_eff_over_bulk, tau, iterations, converged. Extra keywords go to ``solve_conductivity``.
    """
    from fva.conduction import solve_conductivity

    if packing.n == 0:
        raise ValueError("resolution_study needs a packing with at least one particle")
    dmin = 2.0 * float(np.min(packing.radii_m))
    out = []
    for v in voxels_per_dmin:
        if not v > 0:
            raise ValueError(f"voxels_per_dmin must be positive, got {v}")
        vox = dmin / float(v)
        img = voxelise(packing, vox)
        res = solve_conductivity(img, axis, **solve_kw)
        out.append(dict(voxels_per_dmin=float(v), voxel_m=vox, shape=img.shape,
                        solid_fraction=1.0 - img.porosity(), sigma_eff_S_per_m=res.sigma_eff_S_per_m,
                        sigma_eff_over_bulk=res.sigma_eff_over_bulk, tau=res.tau,
                        iterations=res.iterations, converged=res.converged))
    return out


def random_sphere_image(n: int, solid_fraction: float = 0.75, radius_vox: float = 5.0, seed: int = 0,
                        periodic=(True, True, False)) -> VoxelImage:
    """Random overlapping spheres (Boolean model) in an n³ box at about ``solid_fraction``.

    Used by the benchmarks and tests; the number of spheres follows from the Boolean-model
    relation 1 − φ = exp(−N·V_sphere/V_box).
    """
    rng = np.random.default_rng(seed)
    vs = 4.0 / 3.0 * math.pi * radius_vox ** 3
    count = max(1, int(round(-math.log(1.0 - solid_fraction) * n ** 3 / vs)))
    centers = rng.random((count, 3)) * n
    pk = Packing(centers_m=centers, radii_m=np.full(count, radius_vox), box_m=np.array([n, n, n], float),
                 periodic=periodic)
    return voxelise(pk, 1.0)

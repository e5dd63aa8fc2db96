"""DEM contact statistics and particle–particle interface area of label images.

Lengths in metres, areas in m².

References
----------
Johnson, Contact Mechanics (Cambridge University Press, 1985), ch. 4: Hertz contact radius
a = √(R*·δ) with R* = r₁r₂/(r₁ + r₂).
"""
from __future__ import annotations

import numpy as np

from fva.metrics._common import spacing
from fva.types import Packing

__all__ = ["dem_contact_radii", "interface_area_from_labels"]


def dem_contact_radii(packing: Packing, *, bins=20) -> dict:
    """Contact radius of every overlapping pair of a DEM packing (Hertz geometry).

    Pairs are found with scipy's cKDTree, minimum image on the periodic axes. For a pair with
    centre distance d < r1 + r2: δ = r1 + r2 − d, R* = r1 r2 / (r1 + r2), a = √(R*·δ), area π a².

    Parameters
    ----------
    packing : Packing
    bins : int, for the contact-area histogram

    Returns
    -------
    dict with ``pairs`` ((M, 2) int), ``overlap_m``, ``R_star_m``, ``contact_radius_m``,
    ``contact_area_m2`` (each (M,)), ``n_contacts``, ``coordination`` (2M/N),
    ``mean_contact_radius_m``, ``mean_contact_area_m2``, ``total_contact_area_m2``,
    ``area_hist_edges_m2``, ``area_hist_counts``.
    """
    from scipy.spatial import cKDTree

    c = packing.centers_m.copy()
    r = packing.radii_m
    N = packing.n
    box = packing.box_m
    per = np.array(packing.periodic[:3], dtype=bool)
    empty = dict(pairs=np.zeros((0, 2), dtype=np.int64), overlap_m=np.zeros(0), R_star_m=np.zeros(0),
                 contact_radius_m=np.zeros(0), contact_area_m2=np.zeros(0), n_contacts=0,
                 coordination=0.0, mean_contact_radius_m=float("nan"), mean_contact_area_m2=float("nan"),
                 total_contact_area_m2=0.0, area_hist_edges_m2=np.zeros(0),
                 area_hist_counts=np.zeros(0, dtype=np.int64))
    if N < 2:
        return empty
    rmax = float(r.max())
    bs = np.empty(3)
    for i in range(3):
        if per[i]:
            c[:, i] = np.mod(c[:, i], box[i])
            c[c[:, i] >= box[i], i] = 0.0
            bs[i] = box[i]
        else:  # a box twice the extent never wraps within the cut-off
            c[:, i] -= c[:, i].min()
            bs[i] = 2.0 * (c[:, i].max() + 4.0 * rmax) + 1e-12
    tree = cKDTree(c, boxsize=bs)
    pairs = tree.query_pairs(r=2.0 * rmax, output_type="ndarray")
    if pairs.size == 0:
        return empty
    d = c[pairs[:, 0]] - c[pairs[:, 1]]
    for i in range(3):
        if per[i]:
            d[:, i] -= box[i] * np.rint(d[:, i] / box[i])
    dist = np.sqrt(np.sum(d * d, axis=1))
    r1, r2 = r[pairs[:, 0]], r[pairs[:, 1]]
    delta = r1 + r2 - dist
    keep = delta > 0
    pairs, delta, r1, r2 = pairs[keep], delta[keep], r1[keep], r2[keep]
    if pairs.shape[0] == 0:
        return empty
    rs = r1 * r2 / (r1 + r2)
    a = np.sqrt(rs * delta)
    area = np.pi * a * a
    cnt, edges = np.histogram(area, bins=bins)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return dict(pairs=pairs[order], overlap_m=delta[order], R_star_m=rs[order], contact_radius_m=a[order],
                contact_area_m2=area[order], n_contacts=int(pairs.shape[0]),
                coordination=2.0 * pairs.shape[0] / N, mean_contact_radius_m=float(a.mean()),
                mean_contact_area_m2=float(area.mean()), total_contact_area_m2=float(area.sum()),
                area_hist_edges_m2=edges, area_hist_counts=cnt)


def interface_area_from_labels(labels, voxel_m, *, periodic=(False, False, False)) -> float:
    """Particle–particle interface area in a label image.

    Counts the voxel faces shared by two voxels of different particle labels (both ≥ 0; −1 = pore)
    and multiplies by the face area (dy·dx for faces normal to z, dz·dx normal to y, dz·dy normal to x).

    Parameters
    ----------
    labels : (nz, ny, nx) int array, particle index per voxel, negative for pore
    voxel_m : float or (dz, dy, dx), metres
    periodic : (px, py, pz), count faces across the periodic image boundaries too

    Returns
    -------
    float, m².
    """
    L = np.asarray(labels)
    if L.ndim != 3:
        raise ValueError(f"labels must be 3-D [z, y, x], got shape {L.shape}")
    dz, dy, dx = spacing(voxel_m)
    face = (dy * dx, dz * dx, dz * dy)
    per_arr = (bool(periodic[2]), bool(periodic[1]), bool(periodic[0]))   # array-axis order z, y, x
    total = 0.0
    for ax in range(3):
        a = L
        b = np.roll(L, -1, axis=ax) if per_arr[ax] else None
        if b is None:
            sl0 = [slice(None)] * 3
            sl1 = [slice(None)] * 3
            sl0[ax] = slice(0, -1)
            sl1[ax] = slice(1, None)
            a, b = L[tuple(sl0)], L[tuple(sl1)]
        n = np.count_nonzero((a >= 0) & (b >= 0) & (a != b))
        total += n * face[ax]
    return float(total)

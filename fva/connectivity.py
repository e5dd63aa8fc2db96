"""Percolating (electrode-to-electrode) connectivity of a voxel phase, 6-connected.

The 6-connectivity is the stencil's: voxels that touch only along an edge or a corner exchange
no current in the 7-point finite-volume operator, so they are not connected here either.
Periodic sides join labels across the wrap with a union-find.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

_STRUCT6 = ndimage.generate_binary_structure(3, 1)


def _find(parent: np.ndarray, a: int) -> int:
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:  # path compression
        parent[a], a = root, parent[a]
    return root


def label_6(mask: np.ndarray, periodic=(False, False, False)) -> tuple[np.ndarray, int]:
    """6-connected labels of ``mask`` (array-axis order), merged across periodic axes.

    Returns ``(labels, n)``: int32 labels (0 = background), relabelled 1..n consecutively.
    """
    mask = np.asarray(mask, dtype=bool)
    lab, n = ndimage.label(mask, structure=_STRUCT6)
    if n == 0:
        return lab.astype(np.int32), 0
    pairs = []
    for ax, per in enumerate(periodic):
        if not per or mask.shape[ax] < 2:
            continue
        a = np.take(lab, 0, axis=ax)
        b = np.take(lab, -1, axis=ax)
        both = (a > 0) & (b > 0) & (a != b)
        if np.any(both):
            pairs.append(np.stack([a[both], b[both]], axis=1))
    if pairs:
        parent = np.arange(n + 1)
        for a, b in np.unique(np.concatenate(pairs), axis=0):
            ra, rb = _find(parent, int(a)), _find(parent, int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([_find(parent, i) for i in range(n + 1)])
        uniq, compact = np.unique(roots, return_inverse=True)
        lab = compact[lab]  # root 0 (background) maps to 0
        n = len(uniq) - 1
    return lab.astype(np.int32), int(n)


def percolating_mask(conducting: np.ndarray, axis: int = 0, periodic=(False, False, False), *,
                     electrode_mask_high: np.ndarray | None = None,
                     electrode_mask_low: np.ndarray | None = None) -> np.ndarray:
    """Voxels of ``conducting`` 6-connected to both electrode faces along array ``axis``.

    Parameters
    ----------
    conducting : (n0, n1, n2) bool, voxels that carry current (array order, e.g. [z, y, x]).
    axis : array axis normal to the electrodes (0 for z in a [z, y, x] image).
    periodic : per ARRAY axis; the solve axis itself is never treated as periodic.
    electrode_mask_high / electrode_mask_low : optional 2-D bool maps over the face (the array
        with ``axis`` removed); only True face voxels count as electrode contacts.

    Returns
    -------
    bool array, same shape: the percolating part (all False when nothing percolates).
    """
    cond = np.asarray(conducting, dtype=bool)
    if cond.ndim != 3:
        raise ValueError(f"conducting must be a 3-D array, got shape {cond.shape}")
    per = [bool(p) for p in periodic]
    per[axis] = False
    lab, n = label_6(cond, per)
    if n == 0:
        return np.zeros_like(cond)
    lo = np.take(lab, 0, axis=axis)
    hi = np.take(lab, -1, axis=axis)
    if electrode_mask_low is not None:
        lo = np.where(np.asarray(electrode_mask_low, bool), lo, 0)
    if electrode_mask_high is not None:
        hi = np.where(np.asarray(electrode_mask_high, bool), hi, 0)
    keep = np.intersect1d(np.unique(lo[lo > 0]), np.unique(hi[hi > 0]))
    if keep.size == 0:
        return np.zeros_like(cond)
    lut = np.zeros(n + 1, dtype=bool)
    lut[keep] = True
    return lut[lab]

"""Face masks: the fine level of an image with one conducting σ, as one byte of open faces per cell (host side).

When every conducting phase id has the same σ (binary images, ``--phase N`` on a label image, any table whose
non-zero entries are equal), every face conductance is σ·c (both cells conducting) or 0, so the fine kernels
(:mod:`fva.fine_kernels`, ``mask=True``) need no table gather per face: the byte of cell (i, j, k) holds

* bit 2·axis + 0 / + 1: the face towards the −1 / +1 neighbour along that array axis is open (both cells
  conduct; the periodic wrap face of a periodic side with more than one cell included);
* bit 6: an inlet electrode face (first plane), bit 7: an outlet electrode face (last plane, where the
  electrode mask is 1).

A conducting cell with no open face is removed (mask 0), as its zero diagonal removed it before. The diagonal
of the operator is a function of the mask alone: D[m] = σ·(c0·(b0 + b1) + c1·(b2 + b3) + c2·(b4 + b5)
+ 2·c0·(b6 + b7)) (an electrode face is half a voxel).
"""
from __future__ import annotations

import numpy as np

from fva.fine_kernels import MASK_SIGMA, NTAB

DENSE_ROW = 0.5  # a row at least this conducting is one run: the dense loop (200³ spheres: no slow-down)
MAX_RUNS = 1 / 8  # a row with more runs than this per cell is one run too: ≤ 1 B/voxel of runs on any image


def single_sigma(sig_of_id) -> float | None:
    """σ (S/m) shared by every conducting id of the table ``sig_of_id`` (σ per id, id 0 removed), or None when
    the conducting ids differ in σ or none conducts."""
    vals = np.asarray(sig_of_id, np.float64)[1:]
    pos = vals[vals > 0]
    if pos.size == 0 or not np.all(pos == pos[0]):
        return None
    return float(pos[0])


def face_mask(ids: np.ndarray, sig_of_id, em: np.ndarray, p1: bool, p2: bool) -> np.ndarray:
    """uint8 face mask (module docstring) of the [n0, n1, n2] id image ``ids``; ``em``: outlet electrode mask
    (n1, n2); ``p1``, ``p2``: periodic sides 1 and 2. Temporaries: two bytes per voxel."""
    lut = np.zeros(NTAB, bool)
    lut[:len(sig_of_id)] = np.asarray(sig_of_id, np.float64) > 0
    cond = lut[ids]
    mask = np.zeros(ids.shape, np.uint8)
    periodic = (False, bool(p1), bool(p2))
    for ax in range(3):
        n = ids.shape[ax]
        pairs = [(slice(0, n - 1), slice(1, n))]
        if periodic[ax] and n > 1:
            pairs.append((slice(n - 1, n), slice(0, 1)))  # the wrap face: last cell → first cell
        for lo, hi in pairs:
            ilo = tuple(lo if a == ax else slice(None) for a in range(3))
            ihi = tuple(hi if a == ax else slice(None) for a in range(3))
            both = np.logical_and(cond[ilo], cond[ihi]).view(np.uint8)
            np.left_shift(both, 2 * ax, out=both)
            mask[ihi] |= both                                 # the upper cell's face towards −1
            np.left_shift(both, 1, out=both)
            mask[ilo] |= both                                 # the lower cell's face towards +1
            del both
    mask[0] |= cond[0].view(np.uint8) << 6
    mask[-1] |= (cond[-1] & (np.asarray(em) != 0)).view(np.uint8) << 7
    return mask


def mask_table(sigma: float, c) -> np.ndarray:
    """Float64 table of the face-mask kernels: D[m] for the 256 masks, then 1/D[m] (0 where D = 0), then σ at
    ``MASK_SIGMA``; ``c`` = (c0, c1, c2) the face factors."""
    m = np.arange(NTAB)
    bit = [(m >> b) & 1 for b in range(8)]
    D = sigma * (c[0] * (bit[0] + bit[1]) + c[1] * (bit[2] + bit[3]) + c[2] * (bit[4] + bit[5])
                 + 2.0 * c[0] * (bit[6] + bit[7]))
    T = np.zeros(MASK_SIGMA + 1)
    T[:NTAB] = D
    T[NTAB:2 * NTAB] = np.divide(1.0, D, out=np.zeros(NTAB), where=D > 0)
    T[MASK_SIGMA] = sigma
    return T


def row_segments(mask: np.ndarray, dense_row: float = DENSE_ROW, max_runs: float = MAX_RUNS,
                 chunk_cells: int = 1 << 23) -> np.ndarray:
    """Runs of conducting cells (mask ≠ 0) along axis 2 of the [n0, n1, n2] face mask, as one int32 array
    ``rs`` for the fine kernels: rs[r] … rs[r + 1] (r = i·n1 + j, n0·n1 + 1 offsets) are the indices of row r's
    runs, run s covering k ∈ [rs[h + 2s], rs[h + 2s + 1]) with h = n0·n1 + 1. The mask kernels then visit the
    conducting cells only (a removed cell's value is 0 in every vector: skipping it changes nothing). A row whose
    conducting fraction is at least ``dense_row``, or with more than ``max_runs``·n2 runs, is one run [0, n2):
    the kernels treat it as before, without a loop per run (a removed cell computes to 0). Built in chunks of
    rows: temporaries ≈ ``chunk_cells`` bytes, the result 8 bytes per run (≤ 8·max_runs B/voxel)."""
    n0, n1, n2 = mask.shape
    rows = mask.reshape(n0 * n1, n2)
    nrows = rows.shape[0]
    step = max(1, chunk_cells // max(n2, 1))
    counts = np.zeros(nrows, np.int64)
    pairs = []
    for r0 in range(0, nrows, step):
        m = min(step, nrows - r0)
        on = np.zeros((m, n2 + 2), np.int8)
        on[:, 1:-1] = rows[r0:r0 + step] != 0
        dense = np.count_nonzero(on, axis=1) >= dense_row * n2
        d = np.diff(on, axis=1)
        del on
        ri, start = np.nonzero(d == 1)       # row-major order: runs sorted by row, then k
        end = np.nonzero(d == -1)[1]
        del d
        whole = np.flatnonzero(dense | (np.bincount(ri, minlength=m) > max_runs * n2))
        if whole.size:
            part = np.ones(m, bool)
            part[whole] = False
            keep = part[ri]
            order = np.argsort(np.concatenate([ri[keep], whole]), kind="stable")
            ri = np.concatenate([ri[keep], whole])[order]
            start = np.concatenate([start[keep], np.zeros(whole.size, start.dtype)])[order]
            end = np.concatenate([end[keep], np.full(whole.size, n2, end.dtype)])[order]
        counts[r0:r0 + m] = np.bincount(ri, minlength=m)
        pairs.append(np.stack([start, end], axis=1).astype(np.int32).reshape(-1))
    off = np.zeros(nrows + 1, np.int64)
    np.cumsum(counts, out=off[1:])
    if off[-1] * 2 + nrows + 1 >= 2 ** 31:
        raise ValueError(f"{off[-1]} runs of conducting cells: too many for int32 indices")
    return np.concatenate([off.astype(np.int32)] + pairs)

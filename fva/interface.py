"""Grain-boundary (particle–particle contact) interface resistance of the conduction operator.

A voxel face between two conducting voxels that belong to *different* particles (labels ≥ 0 that
differ) carries a specific resistance R_i (Ω·m²) in series with the two half-voxel bulk resistances,
so its conductance per unit area is

    g = 1 / (Δ/(2σ_a) + R_i + Δ/(2σ_b))          (Δ: voxel spacing normal to the face)

and the face conductance is g × face area, i.e. ``c × 1/(1/(2σ_a) + 1/(2σ_b) + R_i/Δ)`` with the
solver's ``c = area/Δ``. Faces inside one particle keep the harmonic mean 2σ_aσ_b/(σ_a+σ_b). The
contact resistance between the grains of a compacted solid electrolyte is the model's missing
term at low pressure (Schneider et al. 2023, ``docs/references.md``).

Storage: no extra array. The u8 id of a voxel keeps its phase id in the low ``ID_BITS`` bits and
one bit per array axis (bit ``ID_BITS + axis``) set when its face towards +1 along that axis is an
interface (the periodic wrap face included). The table of the fine kernels then holds six face
blocks, one per direction (``fva.conduction_kernels``); R_i = 0 never builds them, so the solver
runs exactly the old operator.
"""
from __future__ import annotations

import math

import numpy as np

ID_BITS = 5                     # phase ids 1..31 with interfaces (255 without)
MAX_IDS = (1 << ID_BITS) - 1
SLAB = 64                       # axis-0 slabs per pass of the host mask (bounded temporaries)


def check_interface_resistance(value, name: str = "interface_resistance_ohm_m2") -> float:
    """R_i in Ω·m² must be a finite number ≥ 0 (``ValueError`` naming ``name``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0 in ohm*m^2 (e.g. 1e-5), got {value!r}") from None
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0 in ohm*m^2 (e.g. 1e-5), got {value!r}")
    return v


def _pair(la, lb, ia, ib):
    """Interface mask of the faces between the cells (la, ia) and (lb, ib): different particles, both conducting."""
    return (la != lb) & (la >= 0) & (lb >= 0) & (ia > 0) & (ib > 0)


def add_interface_bits(ids: np.ndarray, labels: np.ndarray, p1: bool, p2: bool) -> int:
    """Set the interface bits of ``ids`` (u8 [n0, n1, n2], phase ids ≤ ``MAX_IDS``) in place; return the count.

    ``labels``: the particle label of every cell in the same (permuted) layout, −1 for pore. Axis 0 is the
    solve axis (no wrap face); axes 1 and 2 wrap when ``p1`` / ``p2`` (and have more than one cell).
    """
    if ids.dtype != np.uint8 or labels.shape != ids.shape:
        raise ValueError("add_interface_bits needs u8 ids and labels of the same shape")
    if int(ids.max(initial=0)) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} distinct non-zero conductivities are supported with an interface "
                         "resistance")
    n0, n1, n2 = ids.shape
    count = 0
    for i0 in range(0, n0, SLAB):
        i1 = min(i0 + SLAB, n0)
        base = ids[i0:min(i1 + 1, n0)].copy()  # phase ids of the slab (+ the next plane), before any bit
        lab = labels[i0:min(i1 + 1, n0)]
        m = i1 - i0
        bits = np.zeros((m, n1, n2), np.uint8)
        if base.shape[0] > 1:  # axis 0: faces i → i+1 inside the image
            k = base.shape[0] - 1
            f = _pair(lab[:k], lab[1:], base[:k], base[1:])
            bits[:k] |= f.astype(np.uint8) << ID_BITS
        for ax, per in ((1, p1), (2, p2)):
            n = ids.shape[ax]
            if n < 2:
                continue
            lo = [slice(0, m), slice(None), slice(None)]
            hi = [slice(0, m), slice(None), slice(None)]
            lo[ax], hi[ax] = slice(0, n - 1), slice(1, n)
            f = _pair(lab[tuple(lo)], lab[tuple(hi)], base[tuple(lo)], base[tuple(hi)])
            bits[tuple(lo)] |= f.astype(np.uint8) << (ID_BITS + ax)
            if per:
                lo[ax], hi[ax] = slice(n - 1, n), slice(0, 1)
                f = _pair(lab[tuple(lo)], lab[tuple(hi)], base[tuple(lo)], base[tuple(hi)])
                bits[tuple(lo)] |= f.astype(np.uint8) << (ID_BITS + ax)
        count += int(np.unpackbits(bits >> ID_BITS).sum())
        ids[i0:i1] |= bits
    return count


def face_table(sig_of_id: np.ndarray, r_over_d) -> np.ndarray:
    """Float64 table of the fine kernels with interfaces: σ per id byte (NTAB entries), then six face blocks.

    Block d = 2·axis + s (s = 1: face towards +1, s = 0: towards −1) holds, for the id bytes (a: this cell,
    b: the neighbour), 1/(1/(2σ_a) + 1/(2σ_b) + R_i/Δ_axis) when the face is an interface (bit of the lower
    cell: a for s = 1, b for s = 0) and the harmonic mean otherwise; 0 when either σ is 0. ``r_over_d``: R_i/Δ
    per array axis (Ω·m). The −1 block is the transpose of the +1 block, so the operator is symmetric.
    """
    from fva.fine_kernels import NTAB
    from fva.reference import harmonic

    vals = np.asarray(sig_of_id, np.float64)
    if vals.size > MAX_IDS + 1:
        raise ValueError(f"at most {MAX_IDS} distinct non-zero conductivities are supported with an interface "
                         "resistance")
    byte = np.arange(NTAB)
    base = byte & MAX_IDS
    sig = np.where(base < vals.size, vals[np.minimum(base, vals.size - 1)], 0.0)
    sa, sb = sig[:, None], sig[None, :]
    H = harmonic(sa, sb)
    with np.errstate(divide="ignore"):
        half = np.where((sa > 0) & (sb > 0), 0.5 / np.where(sa > 0, sa, 1.0) + 0.5 / np.where(sb > 0, sb, 1.0), 0.0)
    T = np.zeros(NTAB + 6 * NTAB * NTAB)
    T[:NTAB] = sig
    for ax in range(3):
        hit = ((byte >> (ID_BITS + ax)) & 1).astype(bool)[:, None] & (half > 0)
        with np.errstate(divide="ignore"):
            Gi = np.where(hit, 1.0 / np.where(hit, half + float(r_over_d[ax]), 1.0), H)
        plus = NTAB + (2 * ax + 1) * NTAB * NTAB
        minus = NTAB + 2 * ax * NTAB * NTAB
        T[plus:plus + NTAB * NTAB] = Gi.ravel()
        T[minus:minus + NTAB * NTAB] = Gi.T.ravel()
    return T


def grain_image(arr: np.ndarray, voxel_m, pore_label: int = 0, periodic=(False, False, False)):
    """VoxelImage of a grain label image (e.g. a watershed segmentation of a tomogram): every voxel whose
    value is not ``pore_label`` is solid (phase 1, conducting) and its value is its grain's label, so that
    R_i acts on the faces between different grains; pore voxels get phase 0 and label −1."""
    from fva.types import VoxelImage

    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"a grain label image must hold integer labels, got {arr.dtype}")
    if arr.size and (int(arr.max()) > np.iinfo(np.int32).max or int(arr.min()) < np.iinfo(np.int32).min):
        raise ValueError("grain labels must fit in int32")
    solid = arr != pore_label
    if not solid.any():
        raise ValueError(f"the grain label image holds only the pore label {pore_label}: no grain to conduct")
    labels = arr.astype(np.int32)
    labels[~solid] = -1
    if np.any(labels[solid] < 0):
        raise ValueError("grain labels must be >= 0 (the pore is given by --grain-labels PORE)")
    return VoxelImage(phase=solid.astype(np.uint8), voxel_m=voxel_m, periodic=tuple(periodic),
                      conducting_phase=1, labels=labels)

"""Loose packing by random sequential insertion (RSI) into a tall periodic column.

``insert_loose`` places non-overlapping spheres one at a time, largest first, at uniformly random
positions in a column of base Lx × Ly (periodic in x and y, minimum image) above a bottom wall at z = 0
and below a lid at z = H: every sphere satisfies r ≤ z ≤ H − r. A uniform cell grid with edge ≥ d_max
(so the 3×3×3 neighbouring cells hold every possible overlap partner) keeps each attempt O(1); ordering
largest first keeps the candidate count per cell small for the many small particles placed last.

The result is the *initial* state for the DEM run (which then settles it under gravity or a light punch);
its solid fraction is the box fraction Σ(π d³/6)/(Lx·Ly·H), returned by ``initial_solid_fraction``.

RSI saturates (jams) near a solid fraction of ~0.38 for equal spheres and somewhat higher for wide size
distributions, so ask for 0.2–0.35 (default 0.3) and let the DEM settling densify the packing. A short
column jams earlier (the walls exclude a layer r thick at each end: 30 particles of the quick start fill a
column only 1.4 d_max high): without a given height, a jammed insertion is retried in a column 1.25× taller
(up to 12 times) and the spheres are then dropped straight down (:func:`settle_down`); the box height is the
larger of the requested one and the settled top, so the fill is never denser than asked and its real solid
fraction is what the caller reports. A fill that inserts at the first try is unchanged by this.

>>> from dem.sizes import sample_diameters
>>> from dem.loose import insert_loose, initial_solid_fraction
>>> d = sample_diameters(9591, shape=1.94431, scale_m=7.04802e-6, d_min_m=1e-6, d_max_m=50e-6)
>>> pk = insert_loose(d, 210e-6, 210e-6)            # ≈ 0.3 s, H ≈ 3.0 mm
>>> initial_solid_fraction(pk)                      # 0.30
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fva.types import Packing

__all__ = ["insert_loose", "settle_down", "LooseInsertionError", "initial_solid_fraction", "column_height_for_fraction",
           "in_spatial_order"]


# a jammed insertion without a given column height retries in a column this much taller, up to this many times
COLUMN_GROWTH = 1.25
MAX_COLUMN_GROWTHS = 12


class LooseInsertionError(ValueError):
    """Random sequential insertion found no free spot: ``placed`` of ``n`` spheres at solid fraction
    ``fraction`` in a column ``height_m`` high; ``need_height_m`` gives a solid fraction of 0.30."""

    def __init__(self, placed, n, fraction, height_m, need_height_m, message):
        super().__init__(message)
        self.placed, self.n, self.fraction = int(placed), int(n), float(fraction)
        self.height_m, self.need_height_m = float(height_m), float(need_height_m)


def settle_down(centers_m, radii_m, base_x_m, base_y_m) -> np.ndarray:
    """Each sphere, lowest first, dropped straight down until it rests on the floor (z = r) or on a sphere
    dropped before it (periodic in x, y); returns the new centres. No overlap is created: a sphere stops at
    z_j + sqrt((r_i + r_j)² − h_ij²) above every lower sphere j it overlaps horizontally (h_ij < r_i + r_j),
    and never moves up (the insertion left it at least that high above the spheres' original places)."""
    c = np.array(centers_m, dtype=np.float64)
    r = np.asarray(radii_m, dtype=np.float64)
    Lx, Ly = float(base_x_m), float(base_y_m)
    order = np.argsort(c[:, 2] - r, kind="stable")
    dmax = 2.0 * float(r.max())
    ncx, ncy = max(1, int(Lx // dmax)), max(1, int(Ly // dmax))
    cells: list[list[int]] = [[] for _ in range(ncx * ncy)]
    offx = sorted({(-1) % ncx, 0, 1 % ncx})
    offy = sorted({(-1) % ncy, 0, 1 % ncy})
    for i in order:
        ix, iy = int(c[i, 0] / Lx * ncx) % ncx, int(c[i, 1] / Ly * ncy) % ncy
        cand = [j for ox in offx for oy in offy for j in cells[((ix + ox) % ncx) * ncy + (iy + oy) % ncy]]
        z = r[i]
        if cand:
            cj = np.asarray(cand, dtype=np.int64)
            dx = c[cj, 0] - c[i, 0]
            dy = c[cj, 1] - c[i, 1]
            dx -= Lx * np.round(dx / Lx)
            dy -= Ly * np.round(dy / Ly)
            s2 = (r[cj] + r[i]) ** 2 - dx * dx - dy * dy
            hit = s2 > 0
            if np.any(hit):
                z = max(z, float(np.max(c[cj[hit], 2] + np.sqrt(s2[hit]))))
        c[i, 2] = min(c[i, 2], z)
        cells[ix * ncy + iy].append(int(i))
    return c


def column_height_for_fraction(diameters_m, base_x_m, base_y_m, target_fraction) -> float:
    """Column height (metres) at which the spheres fill ``target_fraction`` of Lx·Ly·H."""
    d = np.asarray(diameters_m, dtype=np.float64)
    v = float(np.sum(np.pi / 6.0 * d ** 3))
    return v / (float(target_fraction) * float(base_x_m) * float(base_y_m))


def initial_solid_fraction(packing: Packing) -> float:
    """Σ sphere volumes / box volume (exact for a non-overlapping packing inside the box)."""
    return packing.solid_volume_m3() / float(np.prod(packing.box_m))


def insert_loose(diameters_m, base_x_m, base_y_m, *, column_height_m=None, target_fraction=0.3, seed=0,
                 max_attempts_per_particle=200) -> Packing:
    """Random sequential insertion of non-overlapping spheres into a periodic (x, y) column.

    Parameters
    ----------
    diameters_m : (N,) diameters in metres (any order; the returned packing keeps this order).
    base_x_m, base_y_m : die base Lx, Ly in metres; each must be ≥ 2·d_max (periodic images).
    column_height_m : column height H in metres; default: the height giving ``target_fraction``.
    target_fraction : solid fraction Σ(π d³/6)/(Lx Ly H) used to size the column when H is not given.
    seed : seed for ``numpy.random.SeedSequence``.
    max_attempts_per_particle : random trial positions per sphere before giving up.

    Returns
    -------
    Packing(centers_m (N, 3), radii_m (N,), box_m = (Lx, Ly, H), periodic = (True, True, False)).

    Raises
    ------
    ValueError for bad sizes/box; :class:`LooseInsertionError` (a ValueError) when a sphere cannot be placed
    in a given column (or in the tallest retry): the message gives how many were placed, the solid fraction
    reached and how to fix it.
    """
    d = np.asarray(diameters_m, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("diameters_m is empty")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("diameters_m must be positive, finite lengths in metres")
    Lx, Ly = float(base_x_m), float(base_y_m)
    if not (np.isfinite(Lx) and Lx > 0):
        raise ValueError(f"base_x_m must be a positive length in metres, got {base_x_m}")
    if not (np.isfinite(Ly) and Ly > 0):
        raise ValueError(f"base_y_m must be a positive length in metres, got {base_y_m}")
    dmax = float(d.max())
    for nm, L in (("base_x_m", Lx), ("base_y_m", Ly)):
        if L < 2.0 * dmax:
            raise ValueError(f"{nm} = {L:.4g} m is narrower than 2·d_max = {2 * dmax:.4g} m: a particle "
                             "would touch its own periodic image; widen the die or truncate the sizes")
    if column_height_m is None:
        if not (0.0 < float(target_fraction) < 1.0):
            raise ValueError(f"target_fraction must be in (0, 1), got {target_fraction}")
        H = column_height_for_fraction(d, Lx, Ly, target_fraction)
    else:
        H = float(column_height_m)
        if not (np.isfinite(H) and H > 0):
            raise ValueError(f"column_height_m must be a positive length in metres, got {column_height_m}")
    if H < dmax:
        if column_height_m is None:
            H = dmax * 1.000001
        else:
            raise ValueError(f"column_height_m = {H:.4g} m is lower than the largest diameter {dmax:.4g} m")
    if int(max_attempts_per_particle) < 1:
        raise ValueError("max_attempts_per_particle must be >= 1")
    n_att = int(max_attempts_per_particle)

    rng = np.random.default_rng(np.random.SeedSequence(seed))
    H_fill = H
    for attempt in range(MAX_COLUMN_GROWTHS + 1):
        try:
            pos, order = _rsi(d, Lx, Ly, H, rng, n_att)
            break
        except LooseInsertionError as exc:
            # a short column jams first (the walls exclude a layer r thick at both ends; 30 particles in a
            # column 1.4 d_max high): insert into a taller one, then settle down to the requested fill
            if column_height_m is not None or attempt == MAX_COLUMN_GROWTHS:
                raise exc from None
            H *= COLUMN_GROWTH
    if H > H_fill:
        pos = settle_down(pos, 0.5 * d[order], Lx, Ly)
        top = float(np.max(pos[:, 2] + 0.5 * d[order]))
        H = max(H_fill, top)

    # back to the caller's order
    centers = np.empty_like(pos)
    centers[order] = pos
    centers[:, 0] %= Lx
    centers[:, 1] %= Ly
    return Packing(centers_m=centers, radii_m=0.5 * d, box_m=np.array([Lx, Ly, H]),
                   periodic=(True, True, False), label="loose (random sequential insertion)")


def _rsi(d, Lx, Ly, H, rng, n_att):
    """Random sequential insertion, largest first: (positions in insertion order, the order)."""
    dmax = float(d.max())
    r = 0.5 * d
    order = np.argsort(-d, kind="stable")

    # cell grid, edge ≥ d_max in every direction
    ncx = max(1, int(Lx // dmax))
    ncy = max(1, int(Ly // dmax))
    ncz = max(1, int(H // dmax))
    cx, cy, cz = Lx / ncx, Ly / ncy, H / ncz
    cells: list[list[int]] = [[] for _ in range(ncx * ncy * ncz)]
    # neighbour offsets: unique periodic images in x, y (tiny grids would repeat cells)
    offx = sorted({(-1) % ncx, 0, 1 % ncx})
    offy = sorted({(-1) % ncy, 0, 1 % ncy})

    pos = np.empty((d.size, 3))
    rad = np.empty(d.size)
    n_placed = 0
    v_placed = 0.0
    box_vol = Lx * Ly * H
    batch = 8  # trial positions drawn per vectorised round

    for idx in order:
        ri = r[idx]
        placed = False
        tries = 0
        while tries < n_att and not placed:
            m = min(batch, n_att - tries)
            tries += m
            trial = rng.random((m, 3)) * np.array([Lx, Ly, H - 2.0 * ri]) + np.array([0.0, 0.0, ri])
            for t in trial:
                ix = int(t[0] / cx) % ncx
                iy = int(t[1] / cy) % ncy
                iz = min(int(t[2] / cz), ncz - 1)
                cand: list[int] = []
                for ox in offx:
                    jx = (ix + ox) % ncx
                    for oy in offy:
                        base = (jx * ncy + (iy + oy) % ncy) * ncz
                        for jz in (iz - 1, iz, iz + 1):
                            if 0 <= jz < ncz:
                                cand.extend(cells[base + jz])
                if cand:
                    cj = np.fromiter(cand, dtype=np.int64, count=len(cand))
                    dd = pos[cj] - t
                    dd[:, 0] -= Lx * np.round(dd[:, 0] / Lx)
                    dd[:, 1] -= Ly * np.round(dd[:, 1] / Ly)
                    lim = rad[cj] + ri
                    if np.any(np.einsum("ij,ij->i", dd, dd) < lim * lim):
                        continue
                pos[n_placed] = t
                rad[n_placed] = ri
                cells[(ix * ncy + iy) * ncz + iz].append(n_placed)
                n_placed += 1
                v_placed += np.pi / 6.0 * d[idx] ** 3
                placed = True
                break
        if not placed:
            total = float(np.sum(np.pi / 6.0 * d ** 3))
            need = total / (0.3 * Lx * Ly)
            raise LooseInsertionError(
                n_placed, d.size, v_placed / box_vol, H, need,
                f"random sequential insertion placed {n_placed} of {d.size} particles (largest first) "
                f"in a {Lx:.4g} × {Ly:.4g} × {H:.4g} m column; particle {n_placed + 1} (d = {d[idx]:.4g} m) "
                f"found no free spot in {n_att} attempts at solid fraction {v_placed / box_vol:.3f} "
                f"(requested {total / box_vol:.3f}; insertion jams near 0.35-0.4). Fix: a taller column "
                f"(column_height_m ≥ {need:.4g} m gives 0.30, or a lower target_fraction), fewer "
                f"particles, or smaller particles (lower d_max_m).")

    return pos, order


def in_spatial_order(packing: Packing, cell_m: float | None = None) -> Packing:
    """The same spheres renumbered in spatial order: cells of edge ``cell_m`` (default: the mean diameter)
    visited z-major, then y, then x (stable within a cell).

    Contact partners then sit close in memory (for a 9591-sphere die of 13 × 13 cells per layer, within a few
    hundred indices instead of anywhere in the array), so the DEM kernels' reads of a partner's state and the
    per-pair force records hit the cache (as LIGGGHTS' ``atom_modify sort``). Particle order carries no
    physics; compaction moves the spheres mostly along z, so the order stays local throughout a run.
    """
    c = np.asarray(packing.centers_m, dtype=np.float64)
    r = np.asarray(packing.radii_m, dtype=np.float64)
    if c.shape[0] == 0:
        return packing
    h = float(cell_m) if cell_m is not None else 2.0 * float(np.mean(r))
    if not h > 0:
        raise ValueError(f"in_spatial_order: cell_m must be > 0 (got {h})")
    lo = c.min(axis=0)
    ic = np.floor((c - lo) / h).astype(np.int64)
    order = np.lexsort((ic[:, 0], ic[:, 1], ic[:, 2]))
    return dataclasses.replace(packing, centers_m=c[order], radii_m=r[order])

"""Verlet neighbour list with a skin for wide size ratios (kernels in :mod:`dem.neighbours_kernels`).

Build = bin particles in a cell grid (count → exclusive scan → fill) → one search pass appending the owned
pairs at atomic slots (counted per owner) → scan → counting sort into the owners' rows → sort each row by
partner index → carry each pair's contact history over from the previous
list (binary search in the owner's old sorted row) → transposed ("reverse") rows so each particle can sum
the forces of the pairs it does not own without atomics (deterministic sums).

Rebuild criterion: some particle moved (plus radius growth) more than half the skin since the last build.
Capacity-sized ndarrays; when the pair count exceeds capacity they grow by 1.5× (recorded in ``grow_events``).
"""
from __future__ import annotations

import math

import numpy as np

from fva.backend import ti
from dem import neighbours_kernels as K

N_HIST = 8   # per-pair history: ξ (3), δ_max, δ_p, R_p*, spare (2)


class NeighbourList:
    """Owned-pair CSR Verlet list over ``n`` particles in a box periodic in x, y.

    Attributes after :meth:`build`: ``row_start`` (n+1), ``partner`` (cap), ``pair_owner`` (cap),
    ``hist`` (cap, N_HIST), ``rev_start`` (n+1), ``rev_pairs`` (cap), ``npairs``.
    """

    def __init__(self, n: int, box_xy, z_range, r0: np.ndarray, skin: float, *, capacity: int | None = None,
                 cell_size: float | None = None):
        self.n = int(n)
        self.Lx, self.Ly = float(box_xy[0]), float(box_xy[1])
        self.zmin, self.zmax = float(z_range[0]), float(z_range[1])
        self.skin = float(skin)
        r0 = np.asarray(r0, dtype=np.float64)
        # cells: about the mean interaction diameter (owner search spans more cells for big particles)
        c = cell_size or max(2.0 * float(np.mean(r0)) + self.skin, 1e-30)
        self.nx = max(1, int(self.Lx // c))
        self.ny = max(1, int(self.Ly // c))
        self.cx, self.cy, self.cz = self.Lx / self.nx, self.Ly / self.ny, c
        self.nz = max(1, int(math.ceil((self.zmax - self.zmin) / c)))
        self.ncell = self.nx * self.ny * self.nz
        i32, f = ti.i32, ti.f64
        self.particle_cell = ti.ndarray(i32, shape=self.n)
        self.cell_count = ti.ndarray(i32, shape=self.ncell)
        self.cell_start = ti.ndarray(i32, shape=self.ncell + 1)
        self.cell_fill = ti.ndarray(i32, shape=self.ncell)
        self.cell_particles = ti.ndarray(i32, shape=self.n)
        self.row_count = ti.ndarray(i32, shape=self.n)
        self.row_start = ti.ndarray(i32, shape=self.n + 1)
        self.old_row_start = ti.ndarray(i32, shape=self.n + 1)
        self.rev_count = ti.ndarray(i32, shape=self.n)
        self.rev_start = ti.ndarray(i32, shape=self.n + 1)
        self.rev_fill = ti.ndarray(i32, shape=self.n)
        self.x_build = ti.ndarray(f, shape=(self.n, 3))
        self.r_build = ti.ndarray(f, shape=self.n)
        self._motion = ti.ndarray(f, shape=1)
        self._total = ti.ndarray(i32, shape=1)
        self.r_bound = ti.ndarray(f, shape=self.n)
        # ownership order: (r0 ascending, index descending) → everything particle i may own precedes it
        self._order = np.lexsort((-np.arange(self.n), r0))
        self._pos = np.empty(self.n, dtype=np.int64)
        self._pos[self._order] = np.arange(self.n)
        self.capacity = 0
        self._alloc_pairs(int(capacity or max(16, 8 * self.n)))
        self.old_partner = ti.ndarray(i32, shape=self.capacity)
        self.old_hist = ti.ndarray(f, shape=(self.capacity, N_HIST))
        self.npairs = 0
        self.builds = 0
        self.grow_events = 0
        self._has_old = 0

    def _alloc_pairs(self, cap: int):
        self.capacity = int(cap)
        self.partner = ti.ndarray(ti.i32, shape=cap)
        self.pair_owner = ti.ndarray(ti.i32, shape=cap)
        self.hist = ti.ndarray(ti.f64, shape=(cap, N_HIST))
        self.rev_pairs = ti.ndarray(ti.i32, shape=cap)

    def build(self, x, r, r0) -> bool:
        """(Re)build from positions ``x`` (N,3 ndarray), current radii ``r`` and original radii ``r0``
        (ndarrays; ownership follows r0; the search bound comes from the current radii). Returns True when the
        pair capacity had to grow."""
        n = self.n
        # keep the current list as "old" for the history transfer (swap references, no copy)
        self.old_partner, self.partner = self.partner, self.old_partner
        self.old_hist, self.hist = self.hist, self.old_hist
        self.old_row_start, self.row_start = self.row_start, self.old_row_start
        grid = (self.Lx, self.Ly, self.zmin, self.cx, self.cy, self.cz, self.nx, self.ny, self.nz)
        K.bin_particles(n, x, *grid, self.particle_cell, self.cell_count)
        K.exclusive_scan(self.ncell, self.cell_count, self.cell_start)
        K.bucket_fill(self.ncell, n, self.particle_cell, self.cell_start, self.cell_fill, self.cell_particles)
        rn = r.to_numpy() if hasattr(r, "to_numpy") else np.asarray(r, float)
        self.r_bound.from_numpy(np.maximum.accumulate(rn[self._order])[self._pos])
        # one search pass appends the owned pairs (pair_owner and rev_pairs serve as the append buffers: both are
        # rewritten below); a second pass only when they did not fit
        args = (n, x, r, r0, self.r_bound, self.skin, *grid, self.cell_start, self.cell_particles)
        K.search_append(*args, self.capacity, self._total, self.row_count, self.pair_owner, self.rev_pairs)
        total = int(self._total[0])
        grew = False
        cap_needed = max(total, 1)
        if self.capacity < cap_needed:
            # grow: the "old" arrays keep the previous list for the history transfer
            self._alloc_pairs(int(1.5 * cap_needed) + 16)
            self.grow_events += 1
            grew = True
            K.search_append(*args, self.capacity, self._total, self.row_count, self.pair_owner, self.rev_pairs)
        elif self.partner.shape[0] != self.capacity or self.hist.shape[0] != self.capacity:
            # after a growth the swapped-in buffer may be the small one: replace it
            self.partner = ti.ndarray(ti.i32, shape=self.capacity)
            self.hist = ti.ndarray(ti.f64, shape=(self.capacity, N_HIST))
        K.exclusive_scan(n, self.row_count, self.row_start)
        K.scatter_rows(n, total, self.pair_owner, self.rev_pairs, self.row_start, self.rev_fill, self.partner)
        K.sort_rows(n, self.row_start, self.partner)
        K.set_owner(n, self.row_start, self.pair_owner)
        K.remap_history(n, N_HIST, self.row_start, self.partner, self.hist, self.old_row_start,
                        self.old_partner, self.old_hist, self._has_old)
        self.npairs = total
        K.count_reverse(n, total, self.partner, self.rev_count)
        K.exclusive_scan(n, self.rev_count, self.rev_start)
        K.bucket_fill(n, total, self.partner, self.rev_start, self.rev_fill, self.rev_pairs)
        K.sort_rows(n, self.rev_start, self.rev_pairs)
        K.snapshot_positions(n, x, r, self.x_build, self.r_build)
        self._has_old = 1
        self.builds += 1
        return grew

    def max_motion(self, x, r) -> float:
        """max_i |x_i − x_i(build)| + radius growth since the last build (m)."""
        K.max_motion(self.n, x, r, self.x_build, self.r_build, self.Lx, self.Ly, self._motion)
        return float(self._motion[0])

    def needs_rebuild(self, x, r, margin: float = 0.0) -> bool:
        """Positions-only test (no velocities): twice the largest displacement plus ``margin`` past the skin.
        The engine uses the sharper velocity-aware two-largest-reach test of ``SK.diagnostics`` instead."""
        return self.max_motion(x, r) + margin > 0.5 * self.skin

    # ---------------------------------------------------------------- host views (tests, diagnostics)
    def pairs_numpy(self) -> np.ndarray:
        """(npairs, 2) int array of (owner, partner)."""
        m = self.npairs
        return np.stack([self.pair_owner.to_numpy()[:m], self.partner.to_numpy()[:m]], axis=1)



def brute_force_pairs(centers: np.ndarray, radii: np.ndarray, box_xy, skin: float) -> set:
    """Reference O(N²) search: {(i, j), i < j} with minimum-image distance < r_i + r_j + skin."""
    c = np.asarray(centers, float)
    r = np.asarray(radii, float)
    d = c[None, :, :] - c[:, None, :]
    L = np.array([box_xy[0], box_xy[1]])
    d[..., :2] -= L * np.round(d[..., :2] / L)
    dist = np.sqrt((d ** 2).sum(-1))
    cut = r[:, None] + r[None, :] + skin
    ii, jj = np.nonzero(np.triu(dist < cut, k=1))
    return set(zip(ii.tolist(), jj.tolist()))

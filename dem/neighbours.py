"""Verlet neighbour list with a skin for wide size ratios (kernels in :mod:`dem.neighbours_kernels`).

Build = bin particles in a cell grid (count → exclusive scan → fill) → search bounds (running maximum of the radii
in ownership order; the scans are two-level, no serial loop over N) → one search pass appending the owned
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
from dem.graph import KernelGraph

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
        # chunk results of the two-level scans (K.SCAN_CHUNK): sums of counts (cells, rows), maxima of radii;
        # the motion test's [max, chunk maxima...]
        nch = -(-max(self.n, self.ncell) // K.SCAN_CHUNK)
        self._chunk_total = ti.ndarray(i32, shape=max(1, nch))
        self._chunk_max = ti.ndarray(f, shape=max(1, nch))
        self._motion = ti.ndarray(f, shape=1 + -(-self.n // K.SCAN_CHUNK))
        self._total = ti.ndarray(i32, shape=1)
        self.r_bound = ti.ndarray(f, shape=self.n)
        # ownership order: (r0 ascending, index descending) → everything particle i may own precedes it
        self._order = np.lexsort((-np.arange(self.n), r0))
        self._order_nd = ti.ndarray(i32, shape=self.n)
        self._order_nd.from_numpy(self._order.astype(np.int32))
        self._graph = KernelGraph()
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

    # the build's two dispatch sequences; each name is a key of :meth:`_values`, in the kernel's parameter order
    _GRID = ("Lx", "Ly", "zmin", "cx", "cy", "cz", "nx", "ny", "nz")
    _SEARCH = (
        (K.bin_particles, ("n", "x") + _GRID + ("particle_cell", "cell_count")),
        (K.exclusive_scan, ("ncell", "cell_count", "cell_start", "chunk_total")),
        (K.bucket_fill, ("ncell", "n", "particle_cell", "cell_start", "cell_fill", "cell_particles")),
        (K.bound_radii, ("n", "order", "r", "r_bound", "chunk_max")),
        (K.search_append, ("n", "x", "r", "r0", "r_bound", "skin") + _GRID
         + ("cell_start", "cell_particles", "cap", "total", "row_count", "app_owner", "app_partner")),
    )
    _ROWS = (
        (K.exclusive_scan, ("n", "row_count", "row_start", "chunk_total")),
        (K.scatter_rows, ("n", "npairs", "app_owner", "app_partner", "row_start", "rev_fill", "partner")),
        (K.sort_rows, ("n", "row_start", "partner")),
        (K.set_owner, ("n", "row_start", "pair_owner")),
        (K.remap_history, ("n", "nh", "row_start", "partner", "hist", "old_row_start", "old_partner", "old_hist",
                           "has_old")),
        (K.count_reverse, ("n", "npairs", "partner", "rev_count")),
        (K.exclusive_scan, ("n", "rev_count", "rev_start", "chunk_total")),
        (K.bucket_fill, ("n", "npairs", "partner", "rev_start", "rev_fill", "rev_pairs")),
        (K.sort_rows, ("n", "rev_start", "rev_pairs")),
        (K.snapshot_positions, ("n", "x", "r", "x_build", "r_build")),
    )

    def _values(self, x, r, r0, npairs=0) -> dict:
        return dict(n=self.n, ncell=self.ncell, x=x, r=r, r0=r0, Lx=self.Lx, Ly=self.Ly, zmin=self.zmin, cx=self.cx,
                    cy=self.cy, cz=self.cz, nx=self.nx, ny=self.ny, nz=self.nz, particle_cell=self.particle_cell,
                    cell_count=self.cell_count, cell_start=self.cell_start, cell_fill=self.cell_fill,
                    cell_particles=self.cell_particles, order=self._order_nd, r_bound=self.r_bound, skin=self.skin,
                    cap=self.capacity, total=self._total, row_count=self.row_count, app_owner=self.pair_owner,
                    app_partner=self.rev_pairs, npairs=int(npairs), row_start=self.row_start,
                    rev_fill=self.rev_fill, partner=self.partner, pair_owner=self.pair_owner, nh=N_HIST,
                    hist=self.hist, old_row_start=self.old_row_start, old_partner=self.old_partner,
                    old_hist=self.old_hist, has_old=int(self._has_old), rev_count=self.rev_count,
                    rev_start=self.rev_start, rev_pairs=self.rev_pairs, x_build=self.x_build, r_build=self.r_build,
                    chunk_total=self._chunk_total, chunk_max=self._chunk_max)

    def build(self, x, r, r0) -> bool:
        """(Re)build from positions ``x`` (N,3 ndarray), current radii ``r`` and original radii ``r0``
        (ndarrays; ownership follows r0; the search bound comes from the current radii). Returns True when the
        pair capacity had to grow. Two graph launches (:class:`dem.graph.KernelGraph`) and one read (the pair
        count, which decides whether the pair arrays must grow)."""
        if not hasattr(r, "to_numpy"):
            r = self._nd(np.asarray(r, float))
        if not hasattr(r0, "to_numpy"):
            r0 = self._nd(np.asarray(r0, float))
        # keep the current list as "old" for the history transfer (swap references, no copy)
        self.old_partner, self.partner = self.partner, self.old_partner
        self.old_hist, self.hist = self.hist, self.old_hist
        self.old_row_start, self.row_start = self.row_start, self.old_row_start
        # one search pass appends the owned pairs (pair_owner and rev_pairs serve as the append buffers: both are
        # rewritten below); a second pass only when they did not fit
        self._graph.run("search", lambda: self._SEARCH, self._values(x, r, r0))
        total = int(self._total[0])
        grew = False
        cap_needed = max(total, 1)
        if self.capacity < cap_needed:
            # grow: the "old" arrays keep the previous list for the history transfer
            self._alloc_pairs(int(1.5 * cap_needed) + 16)
            self.grow_events += 1
            grew = True
            self._graph.run("search", lambda: self._SEARCH, self._values(x, r, r0))
        elif self.partner.shape[0] != self.capacity or self.hist.shape[0] != self.capacity:
            # after a growth the swapped-in buffer may be the small one: replace it
            self.partner = ti.ndarray(ti.i32, shape=self.capacity)
            self.hist = ti.ndarray(ti.f64, shape=(self.capacity, N_HIST))
        self._graph.run("rows", lambda: self._ROWS, self._values(x, r, r0, total))
        self.npairs = total
        self._has_old = 1
        self.builds += 1
        return grew

    @staticmethod
    def _nd(a):
        nd = ti.ndarray(ti.f64, shape=a.shape)
        nd.from_numpy(np.ascontiguousarray(a))
        return nd

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

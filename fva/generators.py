"""Synthetic voxel images with known difficulty for the conduction solver (phase 1 conducts, 0 is pore).

Each generator returns a ``uint8`` array indexed ``[z, y, x]``. They are the family the solver's
stopping rule is validated on (``tests/test_fva_convergence.py``, ``benchmarks/calibrate_solver_tol.py``):
geometries where a linear initial potential looks converged to a flux-spread test, where current must
run sideways, through dead ends or through single-voxel necks, and random media near the site
percolation threshold of the simple cubic lattice (p_c ≈ 0.3116; Stauffer & Aharony, *Introduction to
Percolation Theory*, 1994).
"""
from __future__ import annotations

import numpy as np


def serpentine_path(ny: int, nx: int) -> list[tuple[int, int]]:
    """(y, x) cells of a boustrophedon path filling an ny × nx plane (rows on even y, links on odd y)."""
    path: list[tuple[int, int]] = []
    for r in range(0, ny, 2):
        xs = list(range(nx)) if (r // 2) % 2 == 0 else list(range(nx - 1, -1, -1))
        path.extend((r, x) for x in xs)
        if r + 1 < ny:
            path.append((r + 1, xs[-1]))
    return path


def winding_channel(levels: int = 3, ny: int = 5, nx: int = 6) -> np.ndarray:
    """A one-voxel channel that fills each of ``levels`` planes with a serpentine, linked by single voxels.

    Every plane normal to z is crossed by exactly one voxel pair, so the linear initial guess has
    equal plane currents (spread ≈ 1e-15) while the exact σ is ~10x lower: the false-convergence case.
    Shape (2·levels + 1, ny, nx).
    """
    nz = 2 * levels + 1
    ph = np.zeros((nz, ny, nx), np.uint8)
    p = serpentine_path(ny, nx)
    ph[0][p[0]] = 1
    for lev in range(levels):
        z = 2 * lev + 1
        path = p if lev % 2 == 0 else p[::-1]
        for q in path:
            ph[z][q] = 1
        ph[z + 1][path[-1]] = 1
    return ph


def parallel_windings(layers: int = 20, width: int = 2, nx: int = 16, ny: int = 4) -> np.ndarray:
    """Parallel channels winding back and forth along x between z levels (gap layers of pore between).

    Each horizontal run spans x; successive runs are joined by a vertical link at alternate ends.
    Shape (2·layers − 1, ny, nx); channels are ``width`` voxels wide in y, separated by pore rows.
    """
    nz = 2 * layers - 1
    ph = np.zeros((nz, ny, nx), np.uint8)
    for y0 in range(0, ny, width + 1):
        ys = slice(y0, min(y0 + width, ny))
        for lev in range(layers):
            z = 2 * lev
            ph[z, ys, :] = 1
            if lev < layers - 1:
                xe = nx - 1 if lev % 2 == 0 else 0
                ph[z + 1, ys, xe] = 1
    return ph


def dead_end_branches(n: int = 16, branches: int = 6, seed: int = 0) -> np.ndarray:
    """A straight trunk along z with side branches that end in pore (they carry no current)."""
    rng = np.random.default_rng(seed)
    ph = np.zeros((n, n, n), np.uint8)
    c = n // 2
    ph[:, c, c] = 1
    for _ in range(branches):
        z = int(rng.integers(1, n - 1))
        length = int(rng.integers(2, c))
        if rng.random() < 0.5:
            ph[z, c, c:c + length] = 1
            ph[z:min(n - 1, z + length), c, c + length - 1] = 1  # a hook back along z, still a dead end
        else:
            ph[z, c - length:c, c] = 1
    return ph


def bottleneck(n: int = 12, neck: int = 1) -> np.ndarray:
    """Two solid blocks joined by a single ``neck`` × ``neck`` column of voxels one voxel long."""
    ph = np.ones((n, n, n), np.uint8)
    mid = n // 2
    ph[mid] = 0
    c = n // 2
    ph[mid, c:c + neck, c:c + neck] = 1
    return ph


def random_site(shape=(24, 24, 24), fraction: float = 0.36, seed: int = 0) -> np.ndarray:
    """Uncorrelated random voxels of solid fraction ``fraction`` (near p_c ≈ 0.3116: sparse, tortuous)."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < fraction).astype(np.uint8)

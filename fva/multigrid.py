"""Geometric multigrid V-cycle preconditioner for the conduction operator (Python orchestration).

Coarsening: 2x2x2 cell aggregation (the last block of an odd axis keeps one cell). The coarse
operator is the Galerkin product R A P with piecewise-constant P and R = P^T, scaled by
``COARSE_SCALE`` = 0.6: a coarse face conductance is 0.6 x the sum of the fine face conductances
crossing it. (0.5 would match a rediscretisation of a uniform medium; the slight over-correction of
piecewise-constant cell-centred multigrid, 0.6, needed fewer iterations on sphere packings.)
It stays a 7-point, symmetric, diagonally dominant operator; removed voxels (sigma = 0) carry
no conductance at any level, and a coarse cell with no conductance is excluded.

Smoother: multi-colour Gauss-Seidel (red/black, plus extra colours for the wrap slice of an odd
periodic axis, so that the in-place parallel update never races). The pre-smoother sweeps the
colours in one order, the post-smoother in the reverse order and the coarsest level does k
forward then k backward sweeps, so the V-cycle is a symmetric positive-definite operator: a
valid CG preconditioner.
"""
from __future__ import annotations


from fva.backend import ti

COARSE_SCALE = 0.6
MIN_COARSE_DIM = 4      # coarsen while every axis has at least this many cells
COARSEST_SWEEPS = 8
GAMMA = 1                # coarse-grid visits per coarse level (1: V-cycle, 2: W-cycle)
PRE = 2                 # Gauss-Seidel sweeps before (and after) the coarse correction
SERIAL_CELLS = 32768    # CPU: a coarse level this small is smoothed on one thread in one launch per sweep group


def _ncol(shape, p1, p2):
    o1 = int(bool(p1) and shape[1] % 2 == 1 and shape[1] > 1)
    o2 = int(bool(p2) and shape[2] % 2 == 1 and shape[2] > 1)
    cols = [c for c in range(8) if (c & 2 == 0 or o1) and (c & 4 == 0 or o2)]
    return o1, o2, cols


def level_shapes(shape, max_levels: int = 20) -> list:
    """Shapes of the coarse levels below the fine grid ``shape``."""
    out = []
    s = tuple(int(n) for n in shape)
    while len(out) < max_levels and min(s) >= MIN_COARSE_DIM:
        s = tuple((n + 1) // 2 for n in s)
        out.append(s)
    return out


def coarse_bytes(shape, itemsize: int) -> int:
    """Device bytes of all coarse levels (gA, gB, gC, dinv, x, b, r per level)."""
    tot = 0
    for s in level_shapes(shape):
        n = s[0] * s[1] * s[2]
        tot += (7 * n + s[1] * s[2]) * itemsize
    return tot


class Multigrid:
    """The level hierarchy of one solve; ``apply(r, z, tmp)`` computes z = M r."""

    def __init__(self, K, fine, pre: int | None = None, post: int | None = None):
        """``fine``: the fine level's device arrays (``fva.pcg._Fine``: flat ids ``sig``, tables ``T`` (float64)
        and ``Ts`` (storage type), electrode mask ``em``, ``shape``, face factors ``C`` and geometry ``G``)."""
        pre = PRE if pre is None else pre
        post = pre if post is None else post
        self.K, self.F = K, fine
        p1, p2 = int(fine.G[3]), int(fine.G[4])
        self.p1, self.p2 = p1, p2
        self.pre, self.post = pre, post
        self.fine_cols = _ncol(fine.shape, p1, p2)
        from fva.backend import current

        self.serial_small = current().backend == "cpu"
        self.levels = []
        prev = None
        for s in level_shapes(fine.shape):
            n = s[0] * s[1] * s[2]  # flat arrays (fva.conduction_kernels), G the level's geometry
            L = dict(shape=s, G=ti.Vector([s[0], s[1], s[2], p1, p2], dt=ti.i32),
                     gA=ti.ndarray(K.dtype, n + s[1] * s[2]),
                     gB=ti.ndarray(K.dtype, n), gC=ti.ndarray(K.dtype, n),
                     dinv=ti.ndarray(K.dtype, n), x=ti.ndarray(K.dtype, n),
                     b=ti.ndarray(K.dtype, n), r=ti.ndarray(K.dtype, n),
                     cols=_ncol(s, p1, p2))
            if prev is None:
                K.build_from_sigma(fine.sig, fine.T, fine.em, L["gA"], L["gB"], L["gC"], COARSE_SCALE, fine.C,
                                   fine.G, L["G"])
            else:
                K.build_from_coarse(prev["gA"], prev["gB"], prev["gC"], L["gA"], L["gB"], L["gC"],
                                    COARSE_SCALE, prev["G"], L["G"])
            K.c_diag_inv(L["gA"], L["gB"], L["gC"], L["dinv"], L["G"])
            L["serial"] = self.serial_small and s[0] * s[1] * s[2] <= SERIAL_CELLS
            self.levels.append(L)
            prev = L

    # ---- smoothing helpers
    def _fine_sweep(self, x, rhs, order):
        K, F = self.K, self.F
        o1, o2, cols = self.fine_cols
        for col in (cols if order > 0 else cols[::-1]):
            K.f_smooth(F.sig, F.Ts, F.em, F.rs, x, rhs, col, o1, o2, F.C, F.G)

    def _coarse_sweeps(self, L, order, sweeps, zero=False):
        """``sweeps`` multi-colour sweeps of level L (x = 0 first when ``zero``)."""
        o1, o2, cols = L["cols"]
        if L["serial"]:
            self.K.c_smooth_serial(L["gA"], L["gB"], L["gC"], L["dinv"], L["x"], L["b"], sweeps, order, int(zero),
                                   o1, o2, L["G"])
            return
        if zero:
            self.K.fill1(L["x"], 0.0)
        for _ in range(sweeps):
            for col in (cols if order > 0 else cols[::-1]):
                self.K.c_smooth(L["gA"], L["gB"], L["gC"], L["dinv"], L["x"], L["b"], col, o1, o2,
                                L["G"])

    def _cycle(self, li):
        K, L = self.K, self.levels[li]
        if li == len(self.levels) - 1:
            self._coarse_sweeps(L, +1, COARSEST_SWEEPS, zero=True)
            self._coarse_sweeps(L, -1, COARSEST_SWEEPS)
            return
        self._coarse_sweeps(L, +1, self.pre, zero=True)
        N = self.levels[li + 1]
        for _ in range(GAMMA):  # GAMMA = 2: W-cycle below the fine level (still symmetric)
            K.c_resid(L["gA"], L["gB"], L["gC"], L["dinv"], L["x"], L["b"], L["r"], L["G"])
            K.restrict(L["r"], N["b"], L["G"], N["G"])
            self._cycle(li + 1)
            K.prolong(L["dinv"], N["x"], L["x"], L["G"], N["G"])
        self._coarse_sweeps(L, -1, self.post)

    def apply(self, r, z, tmp):
        """z = M r (one symmetric V-cycle from z = 0); ``tmp`` is a fine-size scratch array."""
        K, F = self.K, self.F
        K.fill1(z, 0.0)
        for _ in range(self.pre):
            self._fine_sweep(z, r, +1)
        if self.levels:
            K.f_resid_restrict(F.sig, F.Ts, F.em, F.rs, z, r, self.levels[0]["b"], F.C, F.G)
            self._cycle(0)
            K.prolong_f(F.sig, F.rs, self.levels[0]["x"], z, F.G)
        for _ in range(self.post):
            self._fine_sweep(z, r, -1)

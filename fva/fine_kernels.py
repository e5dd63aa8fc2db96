"""Fine-level kernels of the conduction solve on flat arrays (only ``@ti.kernel`` / ``@ti.func``).

Layout: the fine arrays are one-dimensional, cell (i, j, k) of the [n0, n1, n2] grid at q = (i·n1 + j)·n2 + k
(axis 0 the solve axis, as in :mod:`fva.conduction_kernels`), followed by one **sentinel row** of n2 removed
cells (id 0, value 0) at q ∈ [N, N + n2), N = n0·n1·n2. A neighbour that does not exist (past an electrode
plane or an insulating side) is read from the sentinel row: its id 0 gives a zero face conductance through the
same table lookup, so the stencil of an interior row has no branch per neighbour. The row geometry (the
bases of the four neighbouring rows) is computed once per row; only the two end cells of a row look up
their k neighbours. Taichi 1.7.4 computes a 3-D ndarray address with the runtime shape at every access;
flat indices with row bases cut the fine Gauss–Seidel sweep's CPU time by ≈ 1.7× (benchmarks/README.md).

``G`` = (n0, n1, n2, p1, p2) (grid and periodic sides), ``C`` = (c0, c1, c2) the face factors d1·d2/d0 etc.
Two ways to give the conductances (chosen per solve, compiled separately):

* ids (``mask`` False): ``sig`` holds a phase id per cell and ``T`` is :func:`fva.pcg.sigma_table` (or
  ``fva.interface.face_table``): T[id] = σ, then the face blocks (one, or six with interface resistance) —
  a table gather per face.
* face masks (``mask`` True, images with one conducting σ: :mod:`fva.face_mask`): ``sig`` holds per cell the
  bits of its open faces (bit 2·axis + 0 towards −1, + 1 towards +1) and of its electrode faces (bit 6 inlet,
  bit 7 outlet); ``T`` = (D[m], 1/D[m], σ) with D[m] the diagonal of a cell of mask m. Every vector of the
  solve is 0 on the removed cells (mask 0) and on the sentinel row, so a conducting neighbour contributes
  σ·c·x_n and any other 0 without a lookup: Σ_n g_n x_n = σ·(c0·(x_i− + x_i+) + c1·(…) + c2·(…)), and
  the smoother is x = (rhs + that)·(1/D[m]) with no branch (1/D[0] = 0). On the CPU the kernels of the
  iteration visit only each row's runs of conducting cells (``rs``, :func:`fva.face_mask.row_segments`); the
  id kernels get a dummy ``rs`` and visit every cell.

The Gauss–Seidel smoother and the restricted residual run in the storage type (a float32 preconditioner is
still a symmetric one); the matrix–vector product, the true residual and every reduction are float64.
Row geometry and cell loops: :mod:`fva.fine_rows`; currents and field maps: :mod:`fva.fine_fields`; the CG
vector kernels: :mod:`fva.vector_kernels`.
"""

from types import SimpleNamespace

from fva.backend import ti
from fva.fine_rows import colour_span, get_row_loops  # noqa: F401  (colour_span: re-exported)

NTAB = 256  # phase ids per fine voxel (u8); table: NTAB conductivities, then NTAB*NTAB per face block
MASK_SIGMA = 2 * NTAB  # face-mask table: D[m] (NTAB), 1/D[m] (NTAB), then σ at this index
_CACHE: dict = {}


@ti.func
def own_sigma(sig: ti.template(), T: ti.template(), q, mask: ti.template()):
    """σ (S/m, float64) of fine cell q: T[id], or with face masks σ where the mask is non-zero."""
    s = ti.cast(0.0, ti.f64)
    if ti.static(mask):
        if sig[q] != 0:
            s = ti.cast(T[MASK_SIGMA], ti.f64)
    else:
        s = ti.cast(T[ti.cast(sig[q], ti.i32)], ti.f64)
    return s


@ti.func
def face_sigma(sig: ti.template(), T: ti.template(), qa, qb, ax: ti.template(), mask: ti.template()):
    """Face conductivity (S/m, float64) between fine cell qa and its +``ax`` neighbour qb: the harmonic-mean
    table entry of the two ids, or with face masks σ where qa's bit 2·ax + 1 is set."""
    s = ti.cast(0.0, ti.f64)
    if ti.static(mask):
        if (ti.cast(sig[qa], ti.i32) >> (2 * ax + 1)) & 1 != 0:
            s = ti.cast(T[MASK_SIGMA], ti.f64)
    else:
        s = ti.cast(T[NTAB + (2 * ax + 1) * blk(T) + ti.cast(sig[qa], ti.i32) * NTAB + ti.cast(sig[qb], ti.i32)],
                    ti.f64)
    return s


@ti.func
def blk(T: ti.template()):
    """Stride between the per-direction face blocks of a conductance table: 0 for the one-block table."""
    s = 0
    if T.shape[0] > NTAB + NTAB * NTAB:
        s = NTAB * NTAB
    return s


def get_fine_kernels(dtype_name: str = "f64", serial_k: bool = True, mask: bool = False) -> SimpleNamespace:
    """Flat fine-level kernels for storage dtype ``"f64"`` or ``"f32"``; ``serial_k``: CPU row loops (True) or
    one flat parallel loop over the cells (GPU, coalesced); ``mask``: ``sig`` holds face masks, not ids."""
    from fva.fine_fields import get_field_kernels
    from fva.vector_kernels import get_vector_kernels

    SERIAL_K, MASK = bool(serial_k), bool(mask)
    key = (dtype_name, SERIAL_K, MASK)
    if key in _CACHE:
        return _CACHE[key]
    dt = ti.f64 if dtype_name == "f64" else ti.f32
    f64, i32 = ti.f64, ti.i32
    U1 = ti.types.ndarray(dtype=ti.u8, ndim=1)
    F1 = ti.types.ndarray(dtype=dt, ndim=1)
    X1 = ti.types.ndarray(dtype=f64, ndim=1)
    D1 = ti.types.ndarray(dtype=f64, ndim=1)
    T1 = ti.types.ndarray(dtype=dt, ndim=1)
    I2 = ti.types.ndarray(dtype=i32, ndim=2)
    GEO = ti.types.vector(5, i32)
    CND = ti.types.vector(3, f64)

    L = get_row_loops(SERIAL_K, MASK)  # with face masks on the CPU: the runs of conducting cells only
    row_geom, k_nbrs, cells_sum, cells_do, colour_sweep = L.row_geom, L.k_nbrs, L.cells_sum, L.cells_do, \
        L.colour_sweep
    Ld = get_row_loops(SERIAL_K, False)  # every cell: set-up and Jacobi kernels (no ``rs``)
    I1 = ti.types.ndarray(dtype=i32, ndim=1)

    @ti.func
    def nsum(T: ti.template(), x: ti.template(), R, k, G, C, ty: ti.template()):
        """Face masks: Σ_n g_n x_n = σ·(c0·(x_i− + x_i+) + c1·(x_j− + x_j+) + c2·(x_k− + x_k+)) in type ``ty``
        (x is 0 on every cell that is not a conducting neighbour)."""
        qm, qp = k_nbrs(R, k, G)
        return ti.cast(T[MASK_SIGMA], ty) * (
            ti.cast(C[0], ty) * (ti.cast(x[R[1] + k], ty) + ti.cast(x[R[2] + k], ty))
            + ti.cast(C[1], ty) * (ti.cast(x[R[3] + k], ty) + ti.cast(x[R[4] + k], ty))
            + ti.cast(C[2], ty) * (ti.cast(x[qm], ty) + ti.cast(x[qp], ty)))

    @ti.func
    def row7(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), R, k, G, C,
             ty: ti.template()):
        """(diag, Σ_j g_ij x_j) of the fine operator at cell k of row R, in type ``ty`` (that of the table T);
        (0, 0) for a removed cell. Electrode faces (half a voxel, at 1 V below and 0 V above) add 2σ·c0 to the
        diagonal."""
        q = R[0] + k
        a = ti.cast(sig[q], i32)
        out = ti.Vector([0.0, 0.0], dt=ty)
        if ti.static(MASK):
            out = ti.Vector([ti.cast(T[a], ty), ti.select(a != 0, nsum(T, x, R, k, G, C, ty), ti.cast(0.0, ty))])
        elif a != 0:
            qm, qp = k_nbrs(R, k, G)
            ra = NTAB + a * NTAB
            sb = blk(T)
            c0, c1, c2 = ti.cast(C[0], ty), ti.cast(C[1], ty), ti.cast(C[2], ty)
            g0 = c0 * T[ra + ti.cast(sig[R[1] + k], i32)]
            g1 = c0 * T[ra + sb + ti.cast(sig[R[2] + k], i32)]
            g2 = c1 * T[ra + 2 * sb + ti.cast(sig[R[3] + k], i32)]
            g3 = c1 * T[ra + 3 * sb + ti.cast(sig[R[4] + k], i32)]
            g4 = c2 * T[ra + 4 * sb + ti.cast(sig[qm], i32)]
            g5 = c2 * T[ra + 5 * sb + ti.cast(sig[qp], i32)]
            ends = ti.cast(0.0, ty)
            if R[5] == 0:
                ends += ti.cast(1.0, ty)
            if R[5] == G[0] - 1:
                ends += ti.cast(em[R[6], k], ty)
            out[0] = g0 + g1 + g2 + g3 + g4 + g5 + ti.cast(2.0, ty) * c0 * T[a] * ends
            out[1] = (g0 * ti.cast(x[R[1] + k], ty) + g1 * ti.cast(x[R[2] + k], ty)
                      + g2 * ti.cast(x[R[3] + k], ty) + g3 * ti.cast(x[R[4] + k], ty)
                      + g4 * ti.cast(x[qm], ty) + g5 * ti.cast(x[qp], ty))
        return out

    @ti.func
    def inlet(sig: ti.template(), T: ti.template(), R, k, C):
        """b at cell k of row R: 2σ·c0 on the first plane (1 V), else 0."""
        b = ti.cast(0.0, f64)
        if R[5] == 0:
            b = 2.0 * C[0] * own_sigma(sig, T, R[0] + k, MASK)
        return b

    # ------------------------------------------------------------------ operator
    @ti.func
    def c_matvec(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, p, ap = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = row7(sig, T, em, p, R, k, G, S[0], f64)
        q = R[0] + k
        pv = ti.cast(p[q], f64)
        y = v[0] * pv - v[1]
        ap[q] = ti.cast(y, dt)
        return ti.Vector([y * pv], dt=f64)

    @ti.kernel
    def f_matvec_dot(sig: U1, T: D1, em: I2, rs: I1, p: F1, ap: F1, C: CND, G: GEO) -> f64:
        """ap = A p; returns pᵀA p."""
        return cells_sum(c_matvec, (sig, T, em, p, ap), (C,), G, 1, rs)[0]

    @ti.func
    def c_fresid(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, x, out = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = row7(sig, T, em, x, R, k, G, S[0], f64)
        q = R[0] + k
        r = ti.cast(0.0, f64)
        if ti.static(MASK) or v[0] > 0:  # masks: (0, 0), x = 0 and σ = 0 on a removed cell
            r = v[1] - v[0] * ti.cast(x[q], f64) + inlet(sig, T, R, k, S[0])
        out[q] = ti.cast(r, dt)
        return ti.Vector([r * r, ti.cast(x[q], f64) * r], dt=f64)

    @ti.kernel
    def f_resid_xr(sig: U1, T: D1, em: I2, rs: I1, x: X1, out: F1, C: CND, G: GEO) -> ti.types.vector(2, f64):
        """out = b − A x; returns (Σ r², Σ x·r) — the true residual and the first-order current error."""
        return cells_sum(c_fresid, (sig, T, em, x, out), (C,), G, 2, rs)

    @ti.func
    def c_init(A: ti.template(), S: ti.template(), G, R, k):
        sig, x = ti.static(A[0], A[1])
        q = R[0] + k
        v = ti.cast(0.0, f64)
        if sig[q] != 0:
            v = 1.0 - (ti.cast(R[5], f64) + 0.5) / ti.cast(G[0], f64)
        x[q] = v

    @ti.kernel
    def init_linear(sig: U1, x: X1, G: GEO):
        """x = 1 − (i + ½)/n0 on active cells, 0 elsewhere (and on the sentinel row): the exact potential of a
        uniform block."""
        for t in range(G[2]):
            x[G[0] * G[1] * G[2] + t] = 0.0
        Ld.cells_do(c_init, (sig, x), (), G, sig)

    # ------------------------------------------------------------------ multigrid (fine level)
    @ti.func
    def c_smooth(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, x, rhs = ti.static(A[0], A[1], A[2], A[3], A[4])
        if ti.static(MASK):  # no branch: 1/D[0] = 0 and rhs = 0 on a removed cell
            q = R[0] + k
            x[q] = (rhs[q] + nsum(T, x, R, k, G, S[0], dt)) * T[NTAB + ti.cast(sig[q], i32)]
        else:
            v = row7(sig, T, em, x, R, k, G, S[0], dt)
            if v[0] > 0:
                q = R[0] + k
                x[q] = (rhs[q] + v[1]) / v[0]

    @ti.kernel
    def f_smooth(sig: U1, T: T1, em: I2, rs: I1, x: F1, rhs: F1, col: i32, o1: i32, o2: i32, C: CND, G: GEO):
        """One colour of a multi-colour Gauss–Seidel sweep on the fine level (``T`` in the storage type)."""
        colour_sweep(c_smooth, (sig, T, em, x, rhs), (C,), G, col, o1, o2, rs)

    @ti.func
    def resid_at(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), rhs: ti.template(),
                 R, k, G, C):
        v = row7(sig, T, em, x, R, k, G, C, dt)
        q = R[0] + k
        s = ti.cast(0.0, dt)
        if ti.static(MASK):  # (0, 0) and rhs = 0 on a removed cell: no branch
            s = rhs[q] + v[1] - v[0] * x[q]
        elif v[0] > 0:
            s = rhs[q] + v[1] - v[0] * x[q]
        return s

    @ti.func
    def whole(rs: ti.template(), R, G):
        """Row R is one run over all its cells (:func:`fva.face_mask.row_segments`)."""
        r = R[5] * G[1] + R[6]
        out = 0
        if rs[r + 1] - rs[r] == 1:
            a, b = L.run(rs, G, R[5], R[6], rs[r])
            if a == 0 and b == G[2]:
                out = 1
        return out

    @ti.kernel
    def f_resid_restrict(sig: U1, T: T1, em: I2, rs: I1, x: F1, rhs: F1, bc: F1, C: CND, G: GEO):
        """bc = R (rhs − A x): the fine residual summed over each 2×2×2 block, never stored."""
        n0, n1, n2 = G[0], G[1], G[2]
        m0, m1, m2 = (n0 + 1) // 2, (n1 + 1) // 2, (n2 + 1) // 2  # the first coarse level (flat)
        if ti.static(SERIAL_K):
            for I, J in ti.ndrange(m0, m1):
                cb = (I * m1 + J) * m2
                # the four fine rows under coarse row (I, J); a row past an odd side is the last row again
                # with weight 0
                i1, j1 = ti.min(2 * I + 1, n0 - 1), ti.min(2 * J + 1, n1 - 1)
                R0, R1 = row_geom(2 * I, 2 * J, G), row_geom(2 * I, j1, G)
                R2, R3 = row_geom(i1, 2 * J, G), row_geom(i1, j1, G)
                nwhole = 4
                if ti.static(L.seg):
                    nwhole = whole(rs, R0, G) + whole(rs, R1, G) + whole(rs, R2, G) + whole(rs, R3, G)
                if nwhole < 4:
                    # runs of conducting cells: each fine row's runs, two fine cells per coarse update
                    for K in range(m2):
                        bc[cb + K] = ti.cast(0.0, dt)
                    for u in range(4):
                        i, j = 2 * I + (u >> 1), 2 * J + (u & 1)
                        if i < n0 and j < n1:
                            R = row_geom(i, j, G)
                            r = i * n1 + j
                            for t in range(rs[r], rs[r + 1]):
                                a, b = L.run(rs, G, i, j, t)
                                for K in range(a // 2, (b + 1) // 2):
                                    s = ti.cast(0.0, dt)
                                    if 2 * K >= a:
                                        s += resid_at(sig, T, em, x, rhs, R, 2 * K, G, C)
                                    if 2 * K + 1 < b:
                                        s += resid_at(sig, T, em, x, rhs, R, 2 * K + 1, G, C)
                                    bc[cb + K] += s
                else:  # every cell of the four rows, summed in registers
                    w1 = ti.cast(1.0 if 2 * J + 1 < n1 else 0.0, dt)
                    w2 = ti.cast(1.0 if 2 * I + 1 < n0 else 0.0, dt)
                    w3 = w1 * w2
                    for K in range(m2):
                        s = ti.cast(0.0, dt)
                        for u in ti.static(range(2)):
                            k = 2 * K + u
                            if ti.static(u == 0) or k < n2:
                                s += (resid_at(sig, T, em, x, rhs, R0, k, G, C)
                                      + w1 * resid_at(sig, T, em, x, rhs, R1, k, G, C)
                                      + w2 * resid_at(sig, T, em, x, rhs, R2, k, G, C)
                                      + w3 * resid_at(sig, T, em, x, rhs, R3, k, G, C))
                        bc[cb + K] = s
        else:
            for I, J, K in ti.ndrange(m0, m1, m2):
                s = ti.cast(0.0, dt)
                for t in range(8):
                    i, j, k = 2 * I + (t >> 2), 2 * J + ((t >> 1) & 1), 2 * K + (t & 1)
                    if i < n0 and j < n1 and k < n2:
                        s += resid_at(sig, T, em, x, rhs, row_geom(i, j, G), k, G, C)
                bc[(I * m1 + J) * m2 + K] = ti.cast(s, dt)

    @ti.func
    def c_prolong(A: ti.template(), S: ti.template(), G, R, k):
        sig, xc, xf = ti.static(A[0], A[1], A[2])
        q = R[0] + k
        if sig[q] != 0:
            xf[q] = ti.cast(ti.cast(xf[q], f64) + ti.cast(xc[R[7] + k // 2], f64), dt)

    @ti.kernel
    def prolong_f(sig: U1, rs: I1, xc: F1, xf: F1, G: GEO):
        """xf += P xc on the conducting cells of the fine level (piecewise constant)."""
        cells_do(c_prolong, (sig, xc, xf), (), G, rs)

    # ------------------------------------------------------------------ Jacobi preconditioner
    @ti.func
    def c_jac(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, r, z = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = row7(sig, T, em, r, R, k, G, S[0], f64)
        q = R[0] + k
        zz = ti.cast(0.0, f64)
        if v[0] > 0:
            zz = ti.cast(r[q], f64) / v[0]
        z[q] = ti.cast(zz, dt)
        return ti.Vector([zz * ti.cast(r[q], f64)], dt=f64)

    @ti.kernel
    def f_jacobi_dot(sig: U1, T: D1, em: I2, r: F1, z: F1, C: CND, G: GEO) -> f64:
        """z = r / diag(A); returns rᵀz."""
        return Ld.cells_sum(c_jac, (sig, T, em, r, z), (C,), G, 1, sig)[0]

    @ti.func
    def c_diaginv(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, dinv = ti.static(A[0], A[1], A[2], A[3])
        v = row7(sig, T, em, dinv, R, k, G, S[0], f64)
        d = ti.cast(0.0, f64)
        if v[0] > 0:
            d = 1.0 / v[0]
        dinv[R[0] + k] = ti.cast(d, dt)

    @ti.kernel
    def f_diag_inv(sig: U1, T: D1, em: I2, dinv: F1, C: CND, G: GEO):
        """dinv = 1/diag(A) on active cells, 0 on removed ones (reads dinv only as a dummy x)."""
        Ld.cells_do(c_diaginv, (sig, T, em, dinv), (C,), G, sig)

    ns = SimpleNamespace(
        f_matvec_dot=f_matvec_dot, f_resid_xr=f_resid_xr, init_linear=init_linear,
        f_smooth=f_smooth, f_resid_restrict=f_resid_restrict, prolong_f=prolong_f, f_jacobi_dot=f_jacobi_dot,
        f_diag_inv=f_diag_inv, mask=MASK, seg=L.seg, **vars(get_field_kernels(MASK)),
        **vars(get_vector_kernels(dtype_name)))
    _CACHE[key] = ns
    return ns

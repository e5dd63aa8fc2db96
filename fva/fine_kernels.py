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
The table ``T`` is :func:`fva.pcg.sigma_table` (or ``fva.interface.face_table``): T[id] = σ, then the face
blocks (one, or six with interface resistance). The Gauss–Seidel smoother and the restricted residual run
in the storage type (a float32 preconditioner is still a symmetric one); the matrix–vector product, the true
residual and every reduction are float64.
"""

from types import SimpleNamespace

from fva.backend import ti

NTAB = 256  # phase ids per fine voxel (u8); table: NTAB conductivities, then NTAB*NTAB per face block
_CACHE: dict = {}


@ti.func
def blk(T: ti.template()):
    """Stride between the per-direction face blocks of a conductance table: 0 for the one-block table."""
    s = 0
    if T.shape[0] > NTAB + NTAB * NTAB:
        s = NTAB * NTAB
    return s


@ti.func
def colour_span(i, j, col, o1, o2, n1, n2):
    """(first k, count, stride) of the cells of colour ``col`` in row (i, j): colour = parity (i + j + k) & 1,
    + 2 on the wrap slice j = n1 − 1 of an odd periodic side 1 (``o1``), + 4 on k = n2 − 1 of an odd periodic
    side 2 (``o2``): a multi-colour Gauss–Seidel sweep never reads a cell of the colour it updates."""
    k0, cnt, stride = 0, 0, 2
    jsl = 1 if (o1 != 0 and j == n1 - 1) else 0
    if jsl == (col >> 1) & 1:
        if (col >> 2) & 1 == 1:
            k0, stride = n2 - 1, 1
            if (i + j + k0) & 1 == col & 1:
                cnt = 1
        else:
            k0 = ((col & 1) + i + j) & 1
            cnt = (n2 - o2 - k0 + 1) // 2
    return k0, cnt, stride


def get_fine_kernels(dtype_name: str = "f64", serial_k: bool = True) -> SimpleNamespace:
    """Flat fine-level kernels for storage dtype ``"f64"`` or ``"f32"``; ``serial_k``: CPU row loops (True) or
    one flat parallel loop over the cells (GPU, coalesced)."""
    SERIAL_K = bool(serial_k)
    key = (dtype_name, SERIAL_K)
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
    D2 = ti.types.ndarray(dtype=f64, ndim=2)
    F3 = ti.types.ndarray(dtype=dt, ndim=3)
    GEO = ti.types.vector(5, i32)
    CND = ti.types.vector(3, f64)

    @ti.func
    def side(c, n, per, step):
        """Neighbour index c + step along a side of n cells: wrapped when ``per``, −1 past an insulating side
        or when the side has a single cell."""
        m = c + step
        if m < 0 or m >= n:
            m = (m + n) % n if (per != 0 and n > 1) else -1
        return m

    @ti.func
    def row_geom(i, j, G):
        """(base, base of row i−1, i+1, j−1, j+1, i, j) of fine row (i, j); a missing row is the sentinel."""
        n0, n1, n2 = G[0], G[1], G[2]
        ns = n0 * n1 * n2
        base = (i * n1 + j) * n2
        jm, jp = side(j, n1, G[3], -1), side(j, n1, G[3], 1)
        bim = base - n1 * n2 if i > 0 else ns
        bip = base + n1 * n2 if i < n0 - 1 else ns
        bjm = (i * n1 + jm) * n2 if jm >= 0 else ns
        bjp = (i * n1 + jp) * n2 if jp >= 0 else ns
        return ti.Vector([base, bim, bip, bjm, bjp, i, j])

    @ti.func
    def k_nbrs(R, k, G):
        """Flat indices of the k − 1 and k + 1 neighbours of cell k of row R (wrap or sentinel at the ends)."""
        n2 = G[2]
        ns = G[0] * G[1] * n2
        qm, qp = R[0] + k - 1, R[0] + k + 1
        if k == 0:
            km = side(k, n2, G[4], -1)
            qm = R[0] + km if km >= 0 else ns
        if k == n2 - 1:
            kp = side(k, n2, G[4], 1)
            qp = R[0] + kp if kp >= 0 else ns
        return qm, qp

    @ti.func
    def row7(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), R, k, G, C,
             ty: ti.template()):
        """(diag, Σ_j g_ij x_j) of the fine operator at cell k of row R, in type ``ty`` (that of the table T);
        (0, 0) for a removed cell. Electrode faces (half a voxel, at 1 V below and 0 V above) add 2σ·c0 to the
        diagonal."""
        q = R[0] + k
        a = ti.cast(sig[q], i32)
        out = ti.Vector([0.0, 0.0], dt=ty)
        if a != 0:
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
            b = 2.0 * C[0] * ti.cast(T[ti.cast(sig[R[0] + k], i32)], f64)
        return b

    # Loop structure: on the CPU a parallel loop over rows (i, j) with a serial k loop; on a GPU one flat loop
    # over the cells (consecutive threads on consecutive k). ``f(A, S, G, R, k)`` gets the kernel's arrays A and
    # scalars S as compile-time tuples.
    @ti.func
    def cells_sum(f: ti.template(), A: ti.template(), S: ti.template(), G, n: ti.template()):
        """Σ f(A, S, G, R, k) over the cells: an ``n``-vector of float64."""
        s = ti.Vector([0.0] * n, dt=f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], G[1]):
                R = row_geom(i, j, G)
                acc = ti.Vector([0.0] * n, dt=f64)
                for k in range(G[2]):
                    acc += f(A, S, G, R, k)
                s += acc
        else:
            for q in range(G[0] * G[1] * G[2]):
                R = row_geom(q // (G[1] * G[2]), (q // G[2]) % G[1], G)
                s += f(A, S, G, R, q % G[2])
        return s

    @ti.func
    def cells_do(f: ti.template(), A: ti.template(), S: ti.template(), G):
        """f(A, S, G, R, k) on every cell (no result)."""
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], G[1]):
                R = row_geom(i, j, G)
                for k in range(G[2]):
                    f(A, S, G, R, k)
        else:
            for q in range(G[0] * G[1] * G[2]):
                R = row_geom(q // (G[1] * G[2]), (q // G[2]) % G[1], G)
                f(A, S, G, R, q % G[2])

    @ti.func
    def colour_sweep(f: ti.template(), A: ti.template(), S: ti.template(), G, col, o1, o2):
        """f on the cells of colour ``col``: parity (i + j + k) & 1, plus 2 for the wrap slice j = n1 − 1 of
        an odd periodic side 1 (o1) and 4 for k = n2 − 1 of an odd periodic side 2 (o2), so that the in-place
        parallel update of one colour never reads a cell of the same colour."""
        n1, n2 = G[1], G[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], n1):
                k0, cnt, stride = colour_span(i, j, col, o1, o2, n1, n2)
                if cnt > 0:
                    R = row_geom(i, j, G)
                    for t in range(cnt):
                        f(A, S, G, R, k0 + stride * t)
        else:
            for q in range(G[0] * n1 * n2):
                i, j, k = q // (n1 * n2), (q // n2) % n1, q % n2
                c = (i + j + k) & 1
                if o1 != 0 and j == n1 - 1:
                    c += 2
                if o2 != 0 and k == n2 - 1:
                    c += 4
                if c == col:
                    f(A, S, G, row_geom(i, j, G), k)

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
    def f_matvec_dot(sig: U1, T: D1, em: I2, p: F1, ap: F1, C: CND, G: GEO) -> f64:
        """ap = A p; returns pᵀA p."""
        return cells_sum(c_matvec, (sig, T, em, p, ap), (C,), G, 1)[0]

    @ti.func
    def c_fresid(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, x, out = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = row7(sig, T, em, x, R, k, G, S[0], f64)
        q = R[0] + k
        r = ti.cast(0.0, f64)
        if v[0] > 0:
            r = v[1] - v[0] * ti.cast(x[q], f64) + inlet(sig, T, R, k, S[0])
        out[q] = ti.cast(r, dt)
        return ti.Vector([r * r, ti.cast(x[q], f64) * r], dt=f64)

    @ti.kernel
    def f_resid_xr(sig: U1, T: D1, em: I2, x: X1, out: F1, C: CND, G: GEO) -> ti.types.vector(2, f64):
        """out = b − A x; returns (Σ r², Σ x·r) — the true residual and the first-order current error."""
        return cells_sum(c_fresid, (sig, T, em, x, out), (C,), G, 2)

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
        cells_do(c_init, (sig, x), (), G)

    # ------------------------------------------------------------------ multigrid (fine level)
    @ti.func
    def c_smooth(A: ti.template(), S: ti.template(), G, R, k):
        sig, T, em, x, rhs = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = row7(sig, T, em, x, R, k, G, S[0], dt)
        if v[0] > 0:
            q = R[0] + k
            x[q] = (rhs[q] + v[1]) / v[0]

    @ti.kernel
    def f_smooth(sig: U1, T: T1, em: I2, x: F1, rhs: F1, col: i32, o1: i32, o2: i32, C: CND, G: GEO):
        """One colour of a multi-colour Gauss–Seidel sweep on the fine level (``T`` in the storage type)."""
        colour_sweep(c_smooth, (sig, T, em, x, rhs), (C,), G, col, o1, o2)

    @ti.func
    def resid_at(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), rhs: ti.template(),
                 R, k, G, C):
        v = row7(sig, T, em, x, R, k, G, C, dt)
        q = R[0] + k
        s = ti.cast(0.0, dt)
        if v[0] > 0:
            s = rhs[q] + v[1] - v[0] * x[q]
        return s

    @ti.kernel
    def f_resid_restrict(sig: U1, T: T1, em: I2, x: F1, rhs: F1, bc: F3, C: CND, G: GEO):
        """bc = R (rhs − A x): the fine residual summed over each 2×2×2 block, never stored."""
        n0, n1, n2 = G[0], G[1], G[2]
        if ti.static(SERIAL_K):
            for I, J in ti.ndrange(bc.shape[0], bc.shape[1]):
                for t in range(4):     # the four fine rows under coarse row (I, J); row t = 0 always exists
                    i, j = 2 * I + (t >> 1), 2 * J + (t & 1)
                    if i < n0 and j < n1:
                        R = row_geom(i, j, G)
                        for K in range(bc.shape[2]):
                            s = resid_at(sig, T, em, x, rhs, R, 2 * K, G, C)
                            if 2 * K + 1 < n2:
                                s += resid_at(sig, T, em, x, rhs, R, 2 * K + 1, G, C)
                            if t == 0:
                                bc[I, J, K] = ti.cast(s, dt)
                            else:
                                bc[I, J, K] = ti.cast(bc[I, J, K] + s, dt)
        else:
            for I, J, K in ti.ndrange(bc.shape[0], bc.shape[1], bc.shape[2]):
                s = ti.cast(0.0, dt)
                for t in range(8):
                    i, j, k = 2 * I + (t >> 2), 2 * J + ((t >> 1) & 1), 2 * K + (t & 1)
                    if i < n0 and j < n1 and k < n2:
                        s += resid_at(sig, T, em, x, rhs, row_geom(i, j, G), k, G, C)
                bc[I, J, K] = ti.cast(s, dt)

    @ti.func
    def c_prolong(A: ti.template(), S: ti.template(), G, R, k):
        sig, xc, xf = ti.static(A[0], A[1], A[2])
        q = R[0] + k
        if sig[q] != 0:
            xf[q] = ti.cast(ti.cast(xf[q], f64) + ti.cast(xc[R[5] // 2, R[6] // 2, k // 2], f64), dt)

    @ti.kernel
    def prolong_f(sig: U1, xc: F3, xf: F1, G: GEO):
        """xf += P xc on the conducting cells of the fine level (piecewise constant)."""
        cells_do(c_prolong, (sig, xc, xf), (), G)

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
        return cells_sum(c_jac, (sig, T, em, r, z), (C,), G, 1)[0]

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
        cells_do(c_diaginv, (sig, T, em, dinv), (C,), G)

    # ------------------------------------------------------------------ currents and field maps
    @ti.func
    def face_I(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), i, j, k, ax: ti.template(),
               G, c):
        """Current (A per volt) through the face of cell (i, j, k) towards +1 along array axis ``ax``. Axis 0:
        the face below cell i (i = 0 the inlet at 1 V, i = n0 the outlet at 0 V); sides: the face to the next
        cell, wrapping when periodic, 0 at an insulating side."""
        n0, n1, n2 = G[0], G[1], G[2]
        out = ti.cast(0.0, f64)
        if ti.static(ax == 0):
            if i == 0:
                q = j * n2 + k
                out = 2.0 * c * T[ti.cast(sig[q], i32)] * (1.0 - x[q])
            elif i == n0:
                q = ((n0 - 1) * n1 + j) * n2 + k
                out = 2.0 * c * T[ti.cast(sig[q], i32)] * ti.cast(em[j, k], f64) * x[q]
            else:
                qa, qb = ((i - 1) * n1 + j) * n2 + k, (i * n1 + j) * n2 + k
                out = c * T[NTAB + blk(T) + ti.cast(sig[qa], i32) * NTAB + ti.cast(sig[qb], i32)] * (x[qa] - x[qb])
        else:
            nn = G[ax]
            idx = ti.Vector([i, j, k])
            idx[ax] += 1
            if idx[ax] == nn:
                idx[ax] = 0 if (G[ti.static(2 + ax)] != 0 and nn > 1) else -1
            if idx[ax] >= 0:
                qa, qb = (i * n1 + j) * n2 + k, (idx[0] * n1 + idx[1]) * n2 + idx[2]
                off = NTAB + (2 * ax + 1) * blk(T) + ti.cast(sig[qa], i32) * NTAB + ti.cast(sig[qb], i32)
                out = c * T[off] * (x[qa] - x[qb])
        return out

    @ti.kernel
    def fields(sig: U1, T: D1, em: I2, x: X1, pot: ti.types.ndarray(dtype=ti.f32, ndim=3),
               jd: ti.types.ndarray(dtype=ti.f32, ndim=4), C: CND, area: CND, G: GEO):
        """Potential (NaN outside the conducting paths) and cell current density (A/m²: the mean of the two
        face currents per axis over the face area), float32 for the field files."""
        n0, n1, n2 = G[0], G[1], G[2]
        for i, j in ti.ndrange(n0, n1):
            for k in range(n2):
                q = (i * n1 + j) * n2 + k
                nan = ti.cast(0.0, ti.f32) / ti.cast(0.0, ti.f32)
                pot[i, j, k] = ti.cast(x[q], ti.f32) if sig[q] != 0 else nan
                jm = j - 1 if j > 0 else n1 - 1
                km = k - 1 if k > 0 else n2 - 1
                IA = face_I(sig, T, em, x, i, j, k, 0, G, C[0]) + face_I(sig, T, em, x, i + 1, j, k, 0, G, C[0])
                IB = face_I(sig, T, em, x, i, j, k, 1, G, C[1]) + face_I(sig, T, em, x, i, jm, k, 1, G, C[1])
                IC = face_I(sig, T, em, x, i, j, k, 2, G, C[2]) + face_I(sig, T, em, x, i, j, km, 2, G, C[2])
                jd[i, j, k, 0] = ti.cast(0.5 * IA / area[0], ti.f32)
                jd[i, j, k, 1] = ti.cast(0.5 * IB / area[1], ti.f32)
                jd[i, j, k, 2] = ti.cast(0.5 * IC / area[2], ti.f32)

    @ti.kernel
    def outlet_current(sig: U1, T: D1, em: I2, x: X1, jout: D2, c0: f64, a0: f64, G: GEO):
        """Normal current density (A/m²) through every cell of the outlet face (0 where insulating)."""
        for j, k in ti.ndrange(G[1], G[2]):
            jout[j, k] = face_I(sig, T, em, x, G[0], j, k, 0, G, c0) / a0

    @ti.kernel
    def plane_flux(sig: U1, T: D1, em: I2, x: X1, out: D2, c0: f64, G: GEO):
        """out[p, j] = current (A per volt) through face plane p summed over k."""
        for p, j in ti.ndrange(G[0] + 1, G[1]):
            s = ti.cast(0.0, f64)
            for k in range(G[2]):
                s += face_I(sig, T, em, x, p, j, k, 0, G, c0)
            out[p, j] = s

    # ------------------------------------------------------------------ vectors (whole arrays, sentinel included)
    @ti.kernel
    def cg_update(x: X1, r: F1, p: F1, ap: F1, alpha: f64) -> f64:
        """x += αp, r −= αAp; returns r·r."""
        s = ti.cast(0.0, f64)
        for q in range(r.shape[0]):
            x[q] = x[q] + alpha * ti.cast(p[q], f64)
            rn = ti.cast(r[q], f64) - alpha * ti.cast(ap[q], f64)
            r[q] = ti.cast(rn, dt)
            s += rn * rn
        return s

    @ti.kernel
    def cg_update_jacobi(x: X1, r: F1, p: F1, ap: F1, dinv: F1, z: F1, alpha: f64) -> ti.types.vector(2, f64):
        """x += αp, r −= αAp, z = r/diag; returns (r·r, r·z) (fused Jacobi-PCG step)."""
        s = ti.Vector([0.0, 0.0], dt=f64)
        for q in range(r.shape[0]):
            x[q] = x[q] + alpha * ti.cast(p[q], f64)
            rn = ti.cast(r[q], f64) - alpha * ti.cast(ap[q], f64)
            r[q] = ti.cast(rn, dt)
            zn = rn * ti.cast(dinv[q], f64)
            z[q] = ti.cast(zn, dt)
            s += ti.Vector([rn * rn, rn * zn], dt=f64)
        return s

    @ti.kernel
    def p_update(p: F1, z: F1, beta: f64):
        """p = z + βp."""
        for q in range(p.shape[0]):
            p[q] = ti.cast(ti.cast(z[q], f64) + beta * ti.cast(p[q], f64), dt)

    @ti.kernel
    def dot(a: F1, b: F1) -> f64:
        s = ti.cast(0.0, f64)
        for q in range(a.shape[0]):
            s += ti.cast(a[q], f64) * ti.cast(b[q], f64)
        return s

    @ti.kernel
    def copy(src: F1, dst: F1):
        for q in range(src.shape[0]):
            dst[q] = src[q]

    @ti.kernel
    def fill1(a: F1, v: f64):
        for q in range(a.shape[0]):
            a[q] = ti.cast(v, dt)

    ns = SimpleNamespace(
        f_matvec_dot=f_matvec_dot, f_resid_xr=f_resid_xr, init_linear=init_linear,
        f_smooth=f_smooth, f_resid_restrict=f_resid_restrict, prolong_f=prolong_f, f_jacobi_dot=f_jacobi_dot,
        f_diag_inv=f_diag_inv, fields=fields, outlet_current=outlet_current, plane_flux=plane_flux,
        cg_update=cg_update, cg_update_jacobi=cg_update_jacobi, p_update=p_update, dot=dot, copy=copy,
        fill1=fill1)
    _CACHE[key] = ns
    return ns

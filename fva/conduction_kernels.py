"""Taichi kernels of the finite-volume conduction solve (only ``@ti.kernel`` / ``@ti.func``).

Layout convention (the caller transposes the image so that this always holds):
array axis 0 is the solve axis (Dirichlet faces at plane 0 and plane n0), axes 1 and 2 are the
sides (periodic when ``p1`` / ``p2`` is 1, zero-flux otherwise).

* Fine level: a u8 phase-id array ``sig`` (id 0 = removed / insulating voxel) and a float64 table
  ``T``: T[id] is the conductivity (S/m) and T[NTAB + a*NTAB + b] the harmonic mean 2σaσb/(σa+σb)
  (0 when either is 0), so no division per face; face conductance = table value x ``c0 = d1*d2/d0``
  (etc.); the boundary conductance of an end slab is ``2*sigma*c0`` (half a voxel), on the high
  face only where the electrode mask ``em`` is 1. The low face is at 1 V, the high face at 0 V.
* Interface resistance (``fva.interface``): the table may hold six face blocks instead of one, one per
  direction d = 2*axis + (0: towards −1, 1: towards +1), at T[NTAB + d*NTAB² + a*NTAB + b] (a = this
  cell's id byte, b = the neighbour's); the id byte then carries interface bits that those blocks
  resolve. ``blk`` (the block stride) is 0 for a one-block table, so that path reads exactly the old
  entries.
* Coarse levels: explicit face conductances ``gA`` (n0+1, n1, n2: plane p is the face between
  cells p-1 and p, planes 0 and n0 are the electrode faces), ``gB`` / ``gC`` (face between j and
  j+1 / k and k+1, the last one being the periodic wrap face or 0), and the inverse diagonal.

All kernels take ``ti.types.ndarray`` arguments, so one compiled kernel serves every image shape
(Taichi compiles per dtype and ndim only). Reductions are float64 whatever the storage dtype.
"""

from types import SimpleNamespace

from fva.backend import ti

_CACHE: dict = {}
NTAB = 256  # phase ids per fine voxel (u8); table: NTAB conductivities, then NTAB*NTAB harmonic means


def get_kernels(dtype_name: str = "f64", serial_k: bool | None = None) -> SimpleNamespace:
    """Kernels for storage dtype ``"f64"`` or ``"f32"`` (built once per process, dtype and loop style).

    ``serial_k`` (default: True on the CPU backend) selects the row-loop structure.
    """
    if serial_k is None:
        from fva.backend import current

        serial_k = current().backend == "cpu"
    SERIAL_K = bool(serial_k)
    key = (dtype_name, SERIAL_K)
    if key in _CACHE:
        return _CACHE[key]
    dt = ti.f64 if dtype_name == "f64" else ti.f32
    F3 = ti.types.ndarray(dtype=dt, ndim=3)
    X3 = ti.types.ndarray(dtype=ti.f64, ndim=3)  # the potential x: always float64 (see fva.pcg)
    I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
    D2 = ti.types.ndarray(dtype=ti.f64, ndim=2)
    D1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
    U3 = ti.types.ndarray(dtype=ti.u8, ndim=3)
    f64 = ti.f64

    # ------------------------------------------------------------------ fine level (from sigma)
    @ti.func
    def sg(sig: ti.template(), T: ti.template(), i, j, k):
        """Conductivity (S/m) of fine cell (i, j, k): table lookup of its phase id."""
        return T[ti.cast(sig[i, j, k], ti.i32)]

    @ti.func
    def blk(T: ti.template()):
        """Stride between the per-direction face blocks of the table: 0 for the one-block table."""
        s = 0
        if T.shape[0] > NTAB + NTAB * NTAB:
            s = NTAB * NTAB
        return s

    @ti.func
    def hmi(T: ti.template(), a, b, ax: ti.template()):
        """Face conductivity (S/m) between the lower cell ``a`` and the upper cell ``b`` along array axis ``ax``
        (the +ax block; table lookup, 0 when either is 0)."""
        return T[NTAB + (2 * ax + 1) * blk(T) + ti.cast(a, ti.i32) * NTAB + ti.cast(b, ti.i32)]

    @ti.func
    def side_nb(c, n, per, step):
        """Index of the neighbour c + step (step ±1) along a side of n cells: wrapped when ``per``, −1 past an
        insulating side or when the side has a single cell."""
        m = c + step
        if m < 0 or m >= n:
            m = (m + n) % n if (per != 0 and n > 1) else -1
        return m

    @ti.func
    def link(sig: ti.template(), T: ti.template(), x: ti.template(), ra, c: f64, ii, jj, kk):
        """(g, g·x) of the face to neighbour (ii, jj, kk): g = c × the table's harmonic mean for row ``ra``."""
        g = c * T[ra + ti.cast(sig[ii, jj, kk], ti.i32)]
        return ti.Vector([g, g * ti.cast(x[ii, jj, kk], f64)], dt=f64)

    @ti.func
    def f_row(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), i, j, k,
              c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """(diag, sum_j g_ij x_j) of the fine operator at cell (i, j, k).

        A removed voxel (id 0) has an empty row (0, 0) and costs one load.
        """
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        a = ti.cast(sig[i, j, k], ti.i32)
        row = ti.Vector([0.0, 0.0], dt=f64)
        if a != 0:  # a removed/insulating voxel has an empty row: skip its loads (70 % of a 30 %-solid image)
            ra = NTAB + a * NTAB
            sb = blk(T)  # direction d adds d * sb (0: one block for all six faces)
            # axis 0 (solve axis): Dirichlet faces at the ends
            if i > 0:
                row += link(sig, T, x, ra, c0, i - 1, j, k)
            else:
                row[0] += 2.0 * c0 * T[a]
            if i < n0 - 1:
                row += link(sig, T, x, ra + 1 * sb, c0, i + 1, j, k)
            else:
                row[0] += 2.0 * c0 * T[a] * ti.cast(em[j, k], f64)
            # sides: periodic wrap or zero flux (n == 1: no side faces)
            jm, jp = side_nb(j, n1, p1, -1), side_nb(j, n1, p1, 1)
            km, kp = side_nb(k, n2, p2, -1), side_nb(k, n2, p2, 1)
            if jm >= 0:
                row += link(sig, T, x, ra + 2 * sb, c1, i, jm, k)
            if jp >= 0:
                row += link(sig, T, x, ra + 3 * sb, c1, i, jp, k)
            if km >= 0:
                row += link(sig, T, x, ra + 4 * sb, c2, i, j, km)
            if kp >= 0:
                row += link(sig, T, x, ra + 5 * sb, c2, i, j, kp)
        return row

    @ti.func
    def colour(i, j, k, n1, n2, o1: ti.i32, o2: ti.i32):
        c = (i + j + k) & 1
        if o1 != 0 and j == n1 - 1:
            c += 2
        if o2 != 0 and k == n2 - 1:
            c += 4
        return c

    # Loop structure: on CPU a parallel loop over (i, j) rows with a serial inner k loop (about 6x
    # faster than a 3-D ndrange over an ndarray, which pays integer div/mod per element); on GPU a
    # flat 3-D ndrange (consecutive threads on consecutive k: coalesced). Every cell-wise kernel goes
    # through one of the two helpers below; ``f(A, S, i, j, k)`` gets the kernel's arrays ``A`` and
    # scalars ``S`` as tuples (compile-time bundles: no copies).
    @ti.func
    def cells_sum(f: ti.template(), A: ti.template(), S: ti.template(), n: ti.template()):
        """Σ f(A, S, i, j, k) over the cells of A[0]: an ``n``-vector of float64 (f returns one)."""
        shape = ti.static(A[0]).shape
        s = ti.Vector([0.0] * n, dt=f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(shape[0], shape[1]):
                acc = ti.Vector([0.0] * n, dt=f64)
                for k in range(shape[2]):
                    acc += f(A, S, i, j, k)
                s += acc
        else:
            for i, j, k in ti.ndrange(shape[0], shape[1], shape[2]):
                s += f(A, S, i, j, k)
        return s

    @ti.func
    def cells_do(f: ti.template(), A: ti.template(), S: ti.template()):
        """f(A, S, i, j, k) on every cell of A[0] (no result)."""
        shape = ti.static(A[0]).shape
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(shape[0], shape[1]):
                for k in range(shape[2]):
                    f(A, S, i, j, k)
        else:
            for i, j, k in ti.ndrange(shape[0], shape[1], shape[2]):
                f(A, S, i, j, k)

    @ti.func
    def c_matvec(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, p, ap = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = f_row(sig, T, em, p, i, j, k, S[0], S[1], S[2], S[3], S[4])
        pv = ti.cast(p[i, j, k], f64)
        y = v[0] * pv - v[1]
        ap[i, j, k] = ti.cast(y, dt)
        return ti.Vector([y * pv], dt=f64)

    @ti.kernel
    def f_matvec_dot(sig: U3, T: D1, em: I2, p: F3, ap: F3, c0: f64, c1: f64, c2: f64,
                     p1: ti.i32, p2: ti.i32) -> f64:
        """ap = A p; returns pᵀA p."""
        return cells_sum(c_matvec, (sig, T, em, p, ap), (c0, c1, c2, p1, p2), 1)[0]

    @ti.func
    def c_fresid(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, x, rhs, out = ti.static(A[0], A[1], A[2], A[3], A[4], A[5])
        c0 = S[2]
        v = f_row(sig, T, em, x, i, j, k, c0, S[3], S[4], S[5], S[6])
        r = ti.cast(0.0, f64)
        if v[0] > 0:
            r = v[1] - v[0] * ti.cast(x[i, j, k], f64)
            if S[0] != 0:
                r += ti.cast(rhs[i, j, k], f64)
            if S[1] != 0 and i == 0:
                r += 2.0 * c0 * sg(sig, T, i, j, k)
        out[i, j, k] = ti.cast(r, dt)
        return ti.Vector([r * r], dt=f64)

    @ti.kernel
    def f_resid(sig: U3, T: D1, em: I2, x: X3, rhs: F3, out: F3, has_rhs: ti.i32, add_bc: ti.i32,
                c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32) -> f64:
        """out = [rhs] + [b] - A x; returns sum(out**2)."""
        return cells_sum(c_fresid, (sig, T, em, x, rhs, out), (has_rhs, add_bc, c0, c1, c2, p1, p2), 1)[0]

    @ti.func
    def c_fresid_xr(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, x, out = ti.static(A[0], A[1], A[2], A[3], A[4])
        c0 = S[0]
        v = f_row(sig, T, em, x, i, j, k, c0, S[1], S[2], S[3], S[4])
        r = ti.cast(0.0, f64)
        if v[0] > 0:
            r = v[1] - v[0] * x[i, j, k]
            if i == 0:
                r += 2.0 * c0 * sg(sig, T, i, j, k)
        out[i, j, k] = ti.cast(r, dt)
        return ti.Vector([r * r, x[i, j, k] * r], dt=f64)

    @ti.kernel
    def f_resid_xr(sig: U3, T: D1, em: I2, x: X3, out: F3, c0: f64, c1: f64, c2: f64,
                   p1: ti.i32, p2: ti.i32) -> ti.types.vector(2, f64):
        """out = b − A x; returns (Σ r², Σ x·r) — the true residual and the first-order current error."""
        return cells_sum(c_fresid_xr, (sig, T, em, x, out), (c0, c1, c2, p1, p2), 2)

    @ti.kernel
    def init_linear(sig: U3, x: X3):
        """x = 1 − (i + ½)/n0 on active voxels, 0 elsewhere: the exact potential of a uniform block."""
        n0 = sig.shape[0]
        for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
            for k in range(sig.shape[2]):
                v = ti.cast(0.0, f64)
                if sig[i, j, k] != 0:
                    v = 1.0 - (ti.cast(i, f64) + 0.5) / ti.cast(n0, f64)
                x[i, j, k] = v

    @ti.func
    def colour_sweep(f: ti.template(), A: ti.template(), S: ti.template(), col, o1, o2):
        """f(A, S, i, j, k) on the cells of colour ``col`` of A[0]'s grid (see ``colour``): one colour of a
        multi-colour Gauss–Seidel sweep, in place and race free."""
        shape = ti.static(A[0]).shape
        n1, n2 = shape[1], shape[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(shape[0], n1):
                jsl = 1 if (o1 != 0 and j == n1 - 1) else 0
                if jsl == (col >> 1) & 1:
                    if (col >> 2) & 1 == 1:
                        k = n2 - 1
                        if (i + j + k) & 1 == col & 1:
                            f(A, S, i, j, k)
                    else:
                        kend = n2 - o2
                        k0 = ((col & 1) + i + j) & 1
                        for t in range((kend - k0 + 1) // 2):
                            f(A, S, i, j, k0 + 2 * t)
        else:
            for i, j, k in ti.ndrange(shape[0], n1, n2):
                if colour(i, j, k, n1, n2, o1, o2) == col:
                    f(A, S, i, j, k)

    @ti.func
    def c_fsmooth(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, x, rhs = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = f_row(sig, T, em, x, i, j, k, S[0], S[1], S[2], S[3], S[4])
        if v[0] > 0:
            x[i, j, k] = ti.cast((ti.cast(rhs[i, j, k], f64) + v[1]) / v[0], dt)

    @ti.kernel
    def f_smooth(sig: U3, T: D1, em: I2, x: F3, rhs: F3, col: ti.i32, o1: ti.i32, o2: ti.i32,
                 c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """One colour of a multi-colour Gauss-Seidel sweep on the fine level."""
        colour_sweep(c_fsmooth, (sig, T, em, x, rhs), (c0, c1, c2, p1, p2), col, o1, o2)

    @ti.func
    def c_resid_block(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(),
                      rhs: ti.template(), bc: ti.template(), I, J, K, c0: f64, c1: f64, c2: f64,
                      p1: ti.i32, p2: ti.i32):
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        s = ti.cast(0.0, f64)
        for t in range(8):  # a runtime loop: one compiled copy of the stencil body
            i, j, k = 2 * I + (t >> 2), 2 * J + ((t >> 1) & 1), 2 * K + (t & 1)
            if i < n0 and j < n1 and k < n2:
                v = f_row(sig, T, em, x, i, j, k, c0, c1, c2, p1, p2)
                if v[0] > 0:
                    s += ti.cast(rhs[i, j, k], f64) + v[1] - v[0] * ti.cast(x[i, j, k], f64)
        bc[I, J, K] = ti.cast(s, dt)

    @ti.kernel
    def f_resid_restrict(sig: U3, T: D1, em: I2, x: F3, rhs: F3, bc: F3, c0: f64, c1: f64, c2: f64,
                         p1: ti.i32, p2: ti.i32):
        """bc = R (rhs − A x): fine residual summed over each 2x2x2 block, never stored."""
        if ti.static(SERIAL_K):
            for I, J in ti.ndrange(bc.shape[0], bc.shape[1]):
                for K in range(bc.shape[2]):
                    c_resid_block(sig, T, em, x, rhs, bc, I, J, K, c0, c1, c2, p1, p2)
        else:
            for I, J, K in ti.ndrange(bc.shape[0], bc.shape[1], bc.shape[2]):
                c_resid_block(sig, T, em, x, rhs, bc, I, J, K, c0, c1, c2, p1, p2)

    @ti.func
    def c_jac(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, r, z = ti.static(A[0], A[1], A[2], A[3], A[4])
        v = f_row(sig, T, em, r, i, j, k, S[0], S[1], S[2], S[3], S[4])
        zz = ti.cast(0.0, f64)
        if v[0] > 0:
            zz = ti.cast(r[i, j, k], f64) / v[0]
        z[i, j, k] = ti.cast(zz, dt)
        return ti.Vector([zz * ti.cast(r[i, j, k], f64)], dt=f64)

    @ti.kernel
    def f_jacobi_dot(sig: U3, T: D1, em: I2, r: F3, z: F3, c0: f64, c1: f64, c2: f64,
                     p1: ti.i32, p2: ti.i32) -> f64:
        """z = r / diag(A); returns rᵀz."""
        return cells_sum(c_jac, (sig, T, em, r, z), (c0, c1, c2, p1, p2), 1)[0]

    @ti.func
    def face_I(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), i, j, k, ax: ti.template(),
               c: f64, per: ti.i32):
        """Current (A per volt of drop) through the face of cell (i, j, k) towards +1 along array axis ``ax``.

        Axis 0: the face below cell i (i = 0 the inlet at 1 V, i = n0 the outlet at 0 V); axes 1 and 2: the face
        to the next cell, wrapping when periodic, 0 at an insulating side.
        """
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        out = ti.cast(0.0, f64)
        if ti.static(ax == 0):
            if i == 0:
                out = 2.0 * c * sg(sig, T, 0, j, k) * (1.0 - x[0, j, k])
            elif i == n0:
                out = 2.0 * c * sg(sig, T, n0 - 1, j, k) * ti.cast(em[j, k], f64) * x[n0 - 1, j, k]
            else:
                out = c * hmi(T, sig[i - 1, j, k], sig[i, j, k], 0) * (x[i - 1, j, k] - x[i, j, k])
        elif ti.static(ax == 1):
            jn = j + 1
            if jn == n1:
                jn = 0 if (per != 0 and n1 > 1) else -1
            if jn >= 0:
                out = c * hmi(T, sig[i, j, k], sig[i, jn, k], 1) * (x[i, j, k] - x[i, jn, k])
        else:
            kn = k + 1
            if kn == n2:
                kn = 0 if (per != 0 and n2 > 1) else -1
            if kn >= 0:
                out = c * hmi(T, sig[i, j, k], sig[i, j, kn], 2) * (x[i, j, k] - x[i, j, kn])
        return out

    @ti.kernel
    def fields(sig: U3, T: D1, em: I2, x: X3, pot: ti.types.ndarray(dtype=ti.f32, ndim=3),
               jd: ti.types.ndarray(dtype=ti.f32, ndim=4), c0: f64, c1: f64, c2: f64, a0: f64, a1: f64,
               a2: f64, p1: ti.i32, p2: ti.i32):
        """Potential (NaN outside the conducting paths) and cell current density (A/m²: the mean of the two
        face currents per axis over the face area ``a*``), float32 for the field files."""
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        for i, j in ti.ndrange(n0, n1):
            for k in range(n2):
                nan = ti.cast(0.0, ti.f32) / ti.cast(0.0, ti.f32)
                pot[i, j, k] = ti.cast(x[i, j, k], ti.f32) if sig[i, j, k] != 0 else nan
                jm = j - 1 if j > 0 else n1 - 1
                km = k - 1 if k > 0 else n2 - 1
                IA = face_I(sig, T, em, x, i, j, k, 0, c0, 0) + face_I(sig, T, em, x, i + 1, j, k, 0, c0, 0)
                IB = face_I(sig, T, em, x, i, j, k, 1, c1, p1) + face_I(sig, T, em, x, i, jm, k, 1, c1, p1)
                IC = face_I(sig, T, em, x, i, j, k, 2, c2, p2) + face_I(sig, T, em, x, i, j, km, 2, c2, p2)
                jd[i, j, k, 0] = ti.cast(0.5 * IA / a0, ti.f32)
                jd[i, j, k, 1] = ti.cast(0.5 * IB / a1, ti.f32)
                jd[i, j, k, 2] = ti.cast(0.5 * IC / a2, ti.f32)

    @ti.kernel
    def outlet_current(sig: U3, T: D1, em: I2, x: X3, jout: D2, c0: f64, a0: f64):
        """Normal current density (A/m²) through every cell of the outlet face (0 where insulating)."""
        for j, k in ti.ndrange(sig.shape[1], sig.shape[2]):
            jout[j, k] = face_I(sig, T, em, x, sig.shape[0], j, k, 0, c0, 0) / a0

    @ti.kernel
    def plane_flux(sig: U3, T: D1, em: I2, x: X3, out: D2, c0: f64):
        """out[p, j] = current (A, per unit potential) through face plane p summed over k."""
        n0, n2 = sig.shape[0], sig.shape[2]
        for p, j in ti.ndrange(n0 + 1, sig.shape[1]):
            s = ti.cast(0.0, f64)
            for k in range(n2):
                if p == 0:
                    s += 2.0 * c0 * sg(sig, T, 0, j, k) * (1.0 - ti.cast(x[0, j, k], f64))
                elif p == n0:
                    s += 2.0 * c0 * sg(sig, T, n0 - 1, j, k) * ti.cast(em[j, k], f64) \
                        * ti.cast(x[n0 - 1, j, k], f64)
                else:
                    g = c0 * hmi(T, sig[p - 1, j, k], sig[p, j, k], 0)
                    s += g * (ti.cast(x[p - 1, j, k], f64) - ti.cast(x[p, j, k], f64))
            out[p, j] = s

    # ------------------------------------------------------------------ generic vector kernels
    @ti.func
    def c_cgu(A: ti.template(), S: ti.template(), i, j, k):
        x, r, p, ap = ti.static(A[0], A[1], A[2], A[3])
        alpha = S[0]
        x[i, j, k] = x[i, j, k] + alpha * ti.cast(p[i, j, k], f64)
        rn = ti.cast(r[i, j, k], f64) - alpha * ti.cast(ap[i, j, k], f64)
        r[i, j, k] = ti.cast(rn, dt)
        return ti.Vector([rn * rn], dt=f64)

    @ti.kernel
    def cg_update(x: X3, r: F3, p: F3, ap: F3, alpha: f64) -> f64:
        """x += αp, r −= αAp; returns r·r."""
        return cells_sum(c_cgu, (x, r, p, ap), (alpha,), 1)[0]

    @ti.func
    def c_diaginv(A: ti.template(), S: ti.template(), i, j, k):
        sig, T, em, dinv = ti.static(A[0], A[1], A[2], A[3])
        v = f_row(sig, T, em, dinv, i, j, k, S[0], S[1], S[2], S[3], S[4])
        d = ti.cast(0.0, f64)
        if v[0] > 0:
            d = 1.0 / v[0]
        dinv[i, j, k] = ti.cast(d, dt)

    @ti.kernel
    def f_diag_inv(sig: U3, T: D1, em: I2, dinv: F3, c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """dinv = 1/diag(A) on active cells, 0 on removed ones (reads dinv only as a dummy x)."""
        cells_do(c_diaginv, (sig, T, em, dinv), (c0, c1, c2, p1, p2))

    @ti.func
    def c_cgj(A: ti.template(), S: ti.template(), i, j, k):
        x, r, p, ap, dinv, z = ti.static(A[0], A[1], A[2], A[3], A[4], A[5])
        alpha = S[0]
        x[i, j, k] = x[i, j, k] + alpha * ti.cast(p[i, j, k], f64)
        rn = ti.cast(r[i, j, k], f64) - alpha * ti.cast(ap[i, j, k], f64)
        r[i, j, k] = ti.cast(rn, dt)
        zn = rn * ti.cast(dinv[i, j, k], f64)
        z[i, j, k] = ti.cast(zn, dt)
        return ti.Vector([rn * rn, rn * zn], dt=f64)

    @ti.kernel
    def cg_update_jacobi(x: X3, r: F3, p: F3, ap: F3, dinv: F3, z: F3, alpha: f64) -> ti.types.vector(2, f64):
        """x += αp, r −= αAp, z = r/diag; returns (r·r, r·z) (fused Jacobi-PCG step)."""
        return cells_sum(c_cgj, (x, r, p, ap, dinv, z), (alpha,), 2)

    @ti.func
    def c_pup(A: ti.template(), S: ti.template(), i, j, k):
        p, z = ti.static(A[0], A[1])
        p[i, j, k] = ti.cast(ti.cast(z[i, j, k], f64) + S[0] * ti.cast(p[i, j, k], f64), dt)

    @ti.kernel
    def p_update(p: F3, z: F3, beta: f64):
        """p = z + βp."""
        cells_do(c_pup, (p, z), (beta,))

    @ti.func
    def c_dot(A: ti.template(), S: ti.template(), i, j, k):
        a, b = ti.static(A[0], A[1])
        return ti.Vector([ti.cast(a[i, j, k], f64) * ti.cast(b[i, j, k], f64)], dt=f64)

    @ti.kernel
    def dot(a: F3, b: F3) -> f64:
        return cells_sum(c_dot, (a, b), (), 1)[0]

    @ti.func
    def c_copy(A: ti.template(), S: ti.template(), i, j, k):
        src, dst = ti.static(A[0], A[1])
        dst[i, j, k] = src[i, j, k]

    @ti.kernel
    def copy(src: F3, dst: F3):
        cells_do(c_copy, (src, dst), ())

    @ti.func
    def c_fill(A: ti.template(), S: ti.template(), i, j, k):
        a = ti.static(A[0])
        a[i, j, k] = ti.cast(S[0], dt)

    @ti.kernel
    def fill(a: F3, v: f64):
        cells_do(c_fill, (a,), (v,))

    # ------------------------------------------------------------------ multigrid
    @ti.func
    def side_pair(g: ti.template(), x: ti.template(), i, j, k, ax: ti.template(), per):
        """g[c]·x[c+1] + g[c−1]·x[c−1] along side axis ``ax`` (wrapping when ``per``; nothing past an
        insulating side, nothing for a single cell)."""
        n = x.shape[ax]
        off = ti.cast(0.0, f64)
        if n > 1:
            up = ti.Vector([i, j, k])
            up[ax] += 1
            if up[ax] >= n:
                up[ax] = 0 if per != 0 else -1
            if up[ax] >= 0:
                off += ti.cast(g[i, j, k], f64) * ti.cast(x[up[0], up[1], up[2]], f64)
            dn = ti.Vector([i, j, k])
            dn[ax] -= 1
            if dn[ax] < 0:
                dn[ax] = n - 1 if per != 0 else -1
            if dn[ax] >= 0:
                off += ti.cast(g[dn[0], dn[1], dn[2]], f64) * ti.cast(x[dn[0], dn[1], dn[2]], f64)
        return off

    @ti.func
    def c_off(gA: ti.template(), gB: ti.template(), gC: ti.template(), x: ti.template(), i, j, k,
              p1: ti.i32, p2: ti.i32):
        """Σ_j g_ij x_j of a coarse-level row (explicit face conductances)."""
        n0 = x.shape[0]
        off = ti.cast(0.0, f64)
        if i > 0:
            off += ti.cast(gA[i, j, k], f64) * ti.cast(x[i - 1, j, k], f64)
        if i < n0 - 1:
            off += ti.cast(gA[i + 1, j, k], f64) * ti.cast(x[i + 1, j, k], f64)
        off += side_pair(gB, x, i, j, k, 1, p1)
        off += side_pair(gC, x, i, j, k, 2, p2)
        return off

    @ti.kernel
    def c_diag_inv(gA: F3, gB: F3, gC: F3, dinv: F3, p1: ti.i32, p2: ti.i32):
        n0, n1, n2 = dinv.shape[0], dinv.shape[1], dinv.shape[2]
        for i, j, k in ti.ndrange(n0, n1, n2):
            d = ti.cast(gA[i, j, k], f64) + ti.cast(gA[i + 1, j, k], f64)
            if n1 > 1:
                d += ti.cast(gB[i, j, k], f64)
                if j > 0:
                    d += ti.cast(gB[i, j - 1, k], f64)
                elif p1 != 0:
                    d += ti.cast(gB[i, n1 - 1, k], f64)
            if n2 > 1:
                d += ti.cast(gC[i, j, k], f64)
                if k > 0:
                    d += ti.cast(gC[i, j, k - 1], f64)
                elif p2 != 0:
                    d += ti.cast(gC[i, j, n2 - 1], f64)
            v = ti.cast(0.0, f64)
            if d > 0:
                v = 1.0 / d
            dinv[i, j, k] = ti.cast(v, dt)

    @ti.func
    def c_csmooth(A: ti.template(), S: ti.template(), i, j, k):
        x, gA, gB, gC, dinv, rhs = ti.static(A[0], A[1], A[2], A[3], A[4], A[5])
        di = ti.cast(dinv[i, j, k], f64)
        if di > 0:
            off = c_off(gA, gB, gC, x, i, j, k, S[0], S[1])
            x[i, j, k] = ti.cast((ti.cast(rhs[i, j, k], f64) + off) * di, dt)

    @ti.kernel
    def c_smooth(gA: F3, gB: F3, gC: F3, dinv: F3, x: F3, rhs: F3, col: ti.i32, o1: ti.i32,
                 o2: ti.i32, p1: ti.i32, p2: ti.i32):
        """One colour of a multi-colour Gauss-Seidel sweep on a coarse level."""
        colour_sweep(c_csmooth, (x, gA, gB, gC, dinv, rhs), (p1, p2), col, o1, o2)

    @ti.func
    def c_cresid(A: ti.template(), S: ti.template(), i, j, k):
        x, gA, gB, gC, dinv, rhs, out = ti.static(A[0], A[1], A[2], A[3], A[4], A[5], A[6])
        di = ti.cast(dinv[i, j, k], f64)
        r = ti.cast(0.0, f64)
        if di > 0:
            off = c_off(gA, gB, gC, x, i, j, k, S[0], S[1])
            r = ti.cast(rhs[i, j, k], f64) + off - ti.cast(x[i, j, k], f64) / di
        out[i, j, k] = ti.cast(r, dt)

    @ti.kernel
    def c_resid(gA: F3, gB: F3, gC: F3, dinv: F3, x: F3, rhs: F3, out: F3, p1: ti.i32, p2: ti.i32):
        """out = rhs − A x on a coarse level."""
        cells_do(c_cresid, (x, gA, gB, gC, dinv, rhs, out), (p1, p2))

    @ti.func
    def c_restrict(A: ti.template(), S: ti.template(), I, J, K):
        bc, rf = ti.static(A[0], A[1])
        n0, n1, n2 = rf.shape[0], rf.shape[1], rf.shape[2]
        s = ti.cast(0.0, f64)
        for a, b, c in ti.static(ti.ndrange(2, 2, 2)):
            i, j, k = 2 * I + a, 2 * J + b, 2 * K + c
            if i < n0 and j < n1 and k < n2:
                s += ti.cast(rf[i, j, k], f64)
        bc[I, J, K] = ti.cast(s, dt)

    @ti.kernel
    def restrict(rf: F3, bc: F3):
        """bc = R rf: the sum over each 2x2x2 block."""
        cells_do(c_restrict, (bc, rf), ())

    @ti.func
    def c_prolong(A: ti.template(), S: ti.template(), i, j, k):
        xf, act, xc = ti.static(A[0], A[1], A[2])
        if act[i, j, k] > 0:
            xf[i, j, k] = ti.cast(ti.cast(xf[i, j, k], f64) + ti.cast(xc[i // 2, j // 2, k // 2], f64), dt)

    @ti.kernel
    def prolong(act: F3, xc: F3, xf: F3):
        """xf += P xc on active fine cells (act = sigma on the fine level, 1/diag on coarse ones)."""
        cells_do(c_prolong, (xf, act, xc), ())

    @ti.kernel
    def prolong_f(sig: U3, xc: F3, xf: F3):
        """xf += P xc on the conducting cells of the fine level."""
        cells_do(c_prolong, (xf, sig, xc), ())

    @ti.func
    def fA_sig(sig: ti.template(), T: ti.template(), em: ti.template(), p, j, k, c0: f64):
        n0 = sig.shape[0]
        g = ti.cast(0.0, f64)
        if p == 0:
            g = 2.0 * c0 * sg(sig, T, 0, j, k)
        elif p == n0:
            g = 2.0 * c0 * sg(sig, T, n0 - 1, j, k) * ti.cast(em[j, k], f64)
        else:
            g = c0 * hmi(T, sig[p - 1, j, k], sig[p, j, k], 0)
        return g

    @ti.func
    def face_of_sigma(G: ti.template(), idx, ax: ti.template()):
        """Fine face conductance at ``idx`` normal to array axis ``ax``, from the phase ids.

        G = (sig, T, em, c0, c1, c2, p1, p2); axis 0: face plane idx[0] (electrode faces at 0 and n0); sides:
        the face to the next cell (the periodic wrap face, or none at an insulating side)."""
        sig, T, em = ti.static(G[0], G[1], G[2])
        g = ti.cast(0.0, f64)
        if ti.static(ax == 0):
            g = fA_sig(sig, T, em, idx[0], idx[1], idx[2], G[3])
        else:
            n = sig.shape[ax]
            nxt = idx
            nxt[ax] += 1
            if nxt[ax] >= n:
                nxt[ax] = 0 if (G[ti.static(5 + ax)] != 0 and n > 1) else -1
            if nxt[ax] >= 0:
                g = G[ti.static(3 + ax)] * hmi(T, sig[idx[0], idx[1], idx[2]], sig[nxt[0], nxt[1], nxt[2]], ax)
        return g

    @ti.func
    def face_of_array(G: ti.template(), idx, ax: ti.template()):
        """Face value ``G[ax][idx]`` of the next finer level's face arrays G = (gA, gB, gC)."""
        f = ti.static(G[ax])
        return ti.cast(f[idx[0], idx[1], idx[2]], f64)

    @ti.func
    def fine_faces_sum(face: ti.template(), G: ti.template(), C, ax: ti.template(), n):
        """Σ of the (up to four) fine faces ``face(G, idx, ax)`` under the coarse face C = (I, J, K) normal to
        array axis ``ax``; ``n`` = the fine cell counts. Axis 0 faces are planes 0..n0 (face p below cell p);
        side faces join cell c to c + 1."""
        o1, o2 = ti.static([a for a in range(3) if a != ax])
        s = ti.cast(0.0, f64)
        for u, v in ti.static(ti.ndrange(2, 2)):
            idx = 2 * C
            if ti.static(ax == 0):
                idx[0] = ti.min(2 * C[0], n[0])
            else:
                idx[ax] = ti.min(2 * C[ax] + 1, n[ax] - 1)
            idx[o1] += u
            idx[o2] += v
            if idx[o1] < n[o1] and idx[o2] < n[o2]:
                s += face(G, idx, ax)
        return s

    @ti.func
    def coarse_faces(face: ti.template(), G: ti.template(), n, gA: ti.template(), gB: ti.template(),
                     gC: ti.template(), scale: f64):
        """gA, gB, gC of a coarse level: ``scale`` × the sum of the fine faces crossing each coarse face
        (Galerkin R A P with piecewise-constant P, see fva.multigrid)."""
        for P, J, K in ti.ndrange(gA.shape[0], gA.shape[1], gA.shape[2]):
            gA[P, J, K] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([P, J, K]), 0, n), dt)
        for I, J, K in ti.ndrange(gB.shape[0], gB.shape[1], gB.shape[2]):
            gB[I, J, K] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([I, J, K]), 1, n), dt)
        for I, J, K in ti.ndrange(gC.shape[0], gC.shape[1], gC.shape[2]):
            gC[I, J, K] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([I, J, K]), 2, n), dt)

    @ti.kernel
    def build_from_sigma(sig: U3, T: D1, em: I2, gA: F3, gB: F3, gC: F3, scale: f64, c0: f64, c1: f64,
                         c2: f64, p1: ti.i32, p2: ti.i32):
        """First coarse level from the fine phase ids."""
        coarse_faces(face_of_sigma, (sig, T, em, c0, c1, c2, p1, p2),
                     ti.Vector([sig.shape[0], sig.shape[1], sig.shape[2]]), gA, gB, gC, scale)

    @ti.kernel
    def build_from_coarse(fA: F3, fB: F3, fC: F3, gA: F3, gB: F3, gC: F3, scale: f64):
        """Next coarse level from the face conductances of the level above."""
        coarse_faces(face_of_array, (fA, fB, fC), ti.Vector([fB.shape[0], fB.shape[1], fB.shape[2]]),
                     gA, gB, gC, scale)

    ns = SimpleNamespace(
        fields=fields, outlet_current=outlet_current,
        f_matvec_dot=f_matvec_dot, f_resid=f_resid, f_smooth=f_smooth, f_jacobi_dot=f_jacobi_dot,
        f_diag_inv=f_diag_inv, f_resid_restrict=f_resid_restrict, cg_update_jacobi=cg_update_jacobi,
        plane_flux=plane_flux, cg_update=cg_update, f_resid_xr=f_resid_xr, init_linear=init_linear,
        p_update=p_update, dot=dot, copy=copy, fill=fill,
        c_diag_inv=c_diag_inv, c_smooth=c_smooth, c_resid=c_resid, restrict=restrict, prolong=prolong,
        prolong_f=prolong_f, build_from_sigma=build_from_sigma, build_from_coarse=build_from_coarse)
    ns.dtype = dt
    _CACHE[key] = ns
    return ns

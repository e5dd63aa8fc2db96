"""Taichi kernels of the finite-volume conduction solve (only ``@ti.kernel`` / ``@ti.func``).

Layout convention (the caller transposes the image so that this always holds):
array axis 0 is the solve axis (Dirichlet faces at plane 0 and plane n0), axes 1 and 2 are the
sides (periodic when ``p1`` / ``p2`` is 1, zero-flux otherwise).

* Fine level: a u8 phase-id array ``sig`` (id 0 = removed / insulating voxel) and a float64 table
  ``T``: T[id] is the conductivity (S/m) and T[NTAB + a*NTAB + b] the harmonic mean 2σaσb/(σa+σb)
  (0 when either is 0), so no division per face; face conductance = table value x ``c0 = d1*d2/d0``
  (etc.); the boundary conductance of an end slab is ``2*sigma*c0`` (half a voxel), on the high
  face only where the electrode mask ``em`` is 1. The low face is at 1 V, the high face at 0 V.
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
    def hmi(T: ti.template(), a, b):
        """Harmonic-mean conductivity of two phase ids (table lookup, 0 when either is 0)."""
        return T[NTAB + ti.cast(a, ti.i32) * NTAB + ti.cast(b, ti.i32)]

    @ti.func
    def f_row(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), i, j, k,
              c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """(diag, sum_j g_ij x_j) of the fine operator at cell (i, j, k).

        A removed voxel (id 0) has an empty row (0, 0) and costs one load.
        """
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        a = ti.cast(sig[i, j, k], ti.i32)
        diag = ti.cast(0.0, f64)
        off = ti.cast(0.0, f64)
        if a != 0:  # a removed/insulating voxel has an empty row: skip its loads (70 % of a 30 %-solid image)
            ra = NTAB + a * NTAB
            # axis 0 (solve axis): Dirichlet faces at the ends
            if i > 0:
                g = c0 * T[ra + ti.cast(sig[i - 1, j, k], ti.i32)]
                diag += g
                off += g * ti.cast(x[i - 1, j, k], f64)
            else:
                diag += 2.0 * c0 * T[a]
            if i < n0 - 1:
                g = c0 * T[ra + ti.cast(sig[i + 1, j, k], ti.i32)]
                diag += g
                off += g * ti.cast(x[i + 1, j, k], f64)
            else:
                diag += 2.0 * c0 * T[a] * ti.cast(em[j, k], f64)
            # sides: periodic wrap or zero flux (n == 1: no side faces)
            jm = j - 1
            if j == 0:
                jm = n1 - 1 if (p1 != 0 and n1 > 1) else -1
            jp = j + 1
            if jp == n1:
                jp = 0 if (p1 != 0 and n1 > 1) else -1
            km = k - 1
            if k == 0:
                km = n2 - 1 if (p2 != 0 and n2 > 1) else -1
            kp = k + 1
            if kp == n2:
                kp = 0 if (p2 != 0 and n2 > 1) else -1
            if jm >= 0:
                g = c1 * T[ra + ti.cast(sig[i, jm, k], ti.i32)]
                diag += g
                off += g * ti.cast(x[i, jm, k], f64)
            if jp >= 0:
                g = c1 * T[ra + ti.cast(sig[i, jp, k], ti.i32)]
                diag += g
                off += g * ti.cast(x[i, jp, k], f64)
            if km >= 0:
                g = c2 * T[ra + ti.cast(sig[i, j, km], ti.i32)]
                diag += g
                off += g * ti.cast(x[i, j, km], f64)
            if kp >= 0:
                g = c2 * T[ra + ti.cast(sig[i, j, kp], ti.i32)]
                diag += g
                off += g * ti.cast(x[i, j, kp], f64)
        return ti.Vector([diag, off], dt=f64)

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
    # flat 3-D ndrange (consecutive threads on consecutive k: coalesced).
    @ti.func
    def c_matvec(sig: ti.template(), T: ti.template(), em: ti.template(), p: ti.template(), ap: ti.template(), i, j, k,
                 c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, p, i, j, k, c0, c1, c2, p1, p2)
        pv = ti.cast(p[i, j, k], f64)
        y = v[0] * pv - v[1]
        ap[i, j, k] = ti.cast(y, dt)
        return y * pv

    @ti.kernel
    def f_matvec_dot(sig: U3, T: D1, em: I2, p: F3, ap: F3, c0: f64, c1: f64, c2: f64,
                     p1: ti.i32, p2: ti.i32) -> f64:
        s = ti.cast(0.0, f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
                acc = ti.cast(0.0, f64)
                for k in range(sig.shape[2]):
                    acc += c_matvec(sig, T, em, p, ap, i, j, k, c0, c1, c2, p1, p2)
                s += acc
        else:
            for i, j, k in ti.ndrange(sig.shape[0], sig.shape[1], sig.shape[2]):
                s += c_matvec(sig, T, em, p, ap, i, j, k, c0, c1, c2, p1, p2)
        return s

    @ti.func
    def c_fresid(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), rhs: ti.template(),
                 out: ti.template(), i, j, k, has_rhs: ti.i32, add_bc: ti.i32,
                 c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, x, i, j, k, c0, c1, c2, p1, p2)
        r = ti.cast(0.0, f64)
        if v[0] > 0:
            r = v[1] - v[0] * ti.cast(x[i, j, k], f64)
            if has_rhs != 0:
                r += ti.cast(rhs[i, j, k], f64)
            if add_bc != 0 and i == 0:
                r += 2.0 * c0 * sg(sig, T, i, j, k)
        out[i, j, k] = ti.cast(r, dt)
        return r * r

    @ti.kernel
    def f_resid(sig: U3, T: D1, em: I2, x: X3, rhs: F3, out: F3, has_rhs: ti.i32, add_bc: ti.i32,
                c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32) -> f64:
        """out = [rhs] + [b] - A x; returns sum(out**2)."""
        s = ti.cast(0.0, f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
                acc = ti.cast(0.0, f64)
                for k in range(sig.shape[2]):
                    acc += c_fresid(sig, T, em, x, rhs, out, i, j, k, has_rhs, add_bc, c0, c1, c2, p1, p2)
                s += acc
        else:
            for i, j, k in ti.ndrange(sig.shape[0], sig.shape[1], sig.shape[2]):
                s += c_fresid(sig, T, em, x, rhs, out, i, j, k, has_rhs, add_bc, c0, c1, c2, p1, p2)
        return s

    @ti.func
    def c_fresid_xr(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), out: ti.template(),
                    i, j, k, c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, x, i, j, k, c0, c1, c2, p1, p2)
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
        s = ti.Vector([0.0, 0.0], dt=f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
                acc = ti.Vector([0.0, 0.0], dt=f64)
                for k in range(sig.shape[2]):
                    acc += c_fresid_xr(sig, T, em, x, out, i, j, k, c0, c1, c2, p1, p2)
                s += acc
        else:
            for i, j, k in ti.ndrange(sig.shape[0], sig.shape[1], sig.shape[2]):
                s += c_fresid_xr(sig, T, em, x, out, i, j, k, c0, c1, c2, p1, p2)
        return s

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
    def c_fsmooth(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), rhs: ti.template(),
                  i, j, k, c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, x, i, j, k, c0, c1, c2, p1, p2)
        if v[0] > 0:
            x[i, j, k] = ti.cast((ti.cast(rhs[i, j, k], f64) + v[1]) / v[0], dt)

    @ti.kernel
    def f_smooth(sig: U3, T: D1, em: I2, x: F3, rhs: F3, col: ti.i32, o1: ti.i32, o2: ti.i32,
                 c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """One colour of a multi-colour Gauss-Seidel sweep (in place, race free)."""
        n1, n2 = sig.shape[1], sig.shape[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(sig.shape[0], n1):
                jsl = 1 if (o1 != 0 and j == n1 - 1) else 0
                if jsl == (col >> 1) & 1:
                    if (col >> 2) & 1 == 1:
                        k = n2 - 1
                        if (i + j + k) & 1 == col & 1:
                            c_fsmooth(sig, T, em, x, rhs, i, j, k, c0, c1, c2, p1, p2)
                    else:
                        kend = n2 - o2
                        k0 = ((col & 1) + i + j) & 1
                        for t in range((kend - k0 + 1) // 2):
                            c_fsmooth(sig, T, em, x, rhs, i, j, k0 + 2 * t, c0, c1, c2, p1, p2)
        else:
            for i, j, k in ti.ndrange(sig.shape[0], n1, n2):
                if colour(i, j, k, n1, n2, o1, o2) == col:
                    c_fsmooth(sig, T, em, x, rhs, i, j, k, c0, c1, c2, p1, p2)

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
    def c_jac(sig: ti.template(), T: ti.template(), em: ti.template(), r: ti.template(), z: ti.template(), i, j, k,
              c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, r, i, j, k, c0, c1, c2, p1, p2)
        zz = ti.cast(0.0, f64)
        if v[0] > 0:
            zz = ti.cast(r[i, j, k], f64) / v[0]
        z[i, j, k] = ti.cast(zz, dt)
        return zz * ti.cast(r[i, j, k], f64)

    @ti.kernel
    def f_jacobi_dot(sig: U3, T: D1, em: I2, r: F3, z: F3, c0: f64, c1: f64, c2: f64,
                     p1: ti.i32, p2: ti.i32) -> f64:
        s = ti.cast(0.0, f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
                acc = ti.cast(0.0, f64)
                for k in range(sig.shape[2]):
                    acc += c_jac(sig, T, em, r, z, i, j, k, c0, c1, c2, p1, p2)
                s += acc
        else:
            for i, j, k in ti.ndrange(sig.shape[0], sig.shape[1], sig.shape[2]):
                s += c_jac(sig, T, em, r, z, i, j, k, c0, c1, c2, p1, p2)
        return s

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
                out = c * hmi(T, sig[i - 1, j, k], sig[i, j, k]) * (x[i - 1, j, k] - x[i, j, k])
        elif ti.static(ax == 1):
            jn = j + 1
            if jn == n1:
                jn = 0 if (per != 0 and n1 > 1) else -1
            if jn >= 0:
                out = c * hmi(T, sig[i, j, k], sig[i, jn, k]) * (x[i, j, k] - x[i, jn, k])
        else:
            kn = k + 1
            if kn == n2:
                kn = 0 if (per != 0 and n2 > 1) else -1
            if kn >= 0:
                out = c * hmi(T, sig[i, j, k], sig[i, j, kn]) * (x[i, j, k] - x[i, j, kn])
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
                    g = c0 * hmi(T, sig[p - 1, j, k], sig[p, j, k])
                    s += g * (ti.cast(x[p - 1, j, k], f64) - ti.cast(x[p, j, k], f64))
            out[p, j] = s

    # ------------------------------------------------------------------ generic vector kernels
    @ti.func
    def c_cgu(x: ti.template(), r: ti.template(), p: ti.template(), ap: ti.template(), i, j, k, alpha: f64):
        x[i, j, k] = x[i, j, k] + alpha * ti.cast(p[i, j, k], f64)
        rn = ti.cast(r[i, j, k], f64) - alpha * ti.cast(ap[i, j, k], f64)
        r[i, j, k] = ti.cast(rn, dt)
        return rn * rn

    @ti.kernel
    def cg_update(x: X3, r: F3, p: F3, ap: F3, alpha: f64) -> f64:
        s = ti.cast(0.0, f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(x.shape[0], x.shape[1]):
                acc = ti.cast(0.0, f64)
                for k in range(x.shape[2]):
                    acc += c_cgu(x, r, p, ap, i, j, k, alpha)
                s += acc
        else:
            for i, j, k in ti.ndrange(x.shape[0], x.shape[1], x.shape[2]):
                s += c_cgu(x, r, p, ap, i, j, k, alpha)
        return s

    @ti.func
    def c_diaginv(sig: ti.template(), T: ti.template(), em: ti.template(), dinv: ti.template(), i, j, k,
                  c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        v = f_row(sig, T, em, dinv, i, j, k, c0, c1, c2, p1, p2)
        d = ti.cast(0.0, f64)
        if v[0] > 0:
            d = 1.0 / v[0]
        return d

    @ti.kernel
    def f_diag_inv(sig: U3, T: D1, em: I2, dinv: F3, c0: f64, c1: f64, c2: f64, p1: ti.i32, p2: ti.i32):
        """dinv = 1/diag(A) on active cells, 0 on removed ones (reads dinv only as a dummy x)."""
        for i, j in ti.ndrange(sig.shape[0], sig.shape[1]):
            for k in range(sig.shape[2]):
                dinv[i, j, k] = ti.cast(c_diaginv(sig, T, em, dinv, i, j, k, c0, c1, c2, p1, p2), dt)

    @ti.func
    def c_cgj(x: ti.template(), r: ti.template(), p: ti.template(), ap: ti.template(), dinv: ti.template(),
              z: ti.template(), i, j, k, alpha: f64):
        x[i, j, k] = x[i, j, k] + alpha * ti.cast(p[i, j, k], f64)
        rn = ti.cast(r[i, j, k], f64) - alpha * ti.cast(ap[i, j, k], f64)
        r[i, j, k] = ti.cast(rn, dt)
        zn = rn * ti.cast(dinv[i, j, k], f64)
        z[i, j, k] = ti.cast(zn, dt)
        return ti.Vector([rn * rn, rn * zn], dt=f64)

    @ti.kernel
    def cg_update_jacobi(x: X3, r: F3, p: F3, ap: F3, dinv: F3, z: F3, alpha: f64) -> ti.types.vector(2, f64):
        """x += αp, r −= αAp, z = r/diag; returns (r·r, r·z) (fused Jacobi-PCG step)."""
        s = ti.Vector([0.0, 0.0], dt=f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(x.shape[0], x.shape[1]):
                acc = ti.Vector([0.0, 0.0], dt=f64)
                for k in range(x.shape[2]):
                    acc += c_cgj(x, r, p, ap, dinv, z, i, j, k, alpha)
                s += acc
        else:
            for i, j, k in ti.ndrange(x.shape[0], x.shape[1], x.shape[2]):
                s += c_cgj(x, r, p, ap, dinv, z, i, j, k, alpha)
        return s

    @ti.kernel
    def p_update(p: F3, z: F3, beta: f64):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(p.shape[0], p.shape[1]):
                for k in range(p.shape[2]):
                    p[i, j, k] = ti.cast(ti.cast(z[i, j, k], f64) + beta * ti.cast(p[i, j, k], f64), dt)
        else:
            for i, j, k in ti.ndrange(p.shape[0], p.shape[1], p.shape[2]):
                p[i, j, k] = ti.cast(ti.cast(z[i, j, k], f64) + beta * ti.cast(p[i, j, k], f64), dt)

    @ti.kernel
    def dot(a: F3, b: F3) -> f64:
        s = ti.cast(0.0, f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(a.shape[0], a.shape[1]):
                acc = ti.cast(0.0, f64)
                for k in range(a.shape[2]):
                    acc += ti.cast(a[i, j, k], f64) * ti.cast(b[i, j, k], f64)
                s += acc
        else:
            for i, j, k in ti.ndrange(a.shape[0], a.shape[1], a.shape[2]):
                s += ti.cast(a[i, j, k], f64) * ti.cast(b[i, j, k], f64)
        return s

    @ti.kernel
    def copy(src: F3, dst: F3):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(src.shape[0], src.shape[1]):
                for k in range(src.shape[2]):
                    dst[i, j, k] = src[i, j, k]
        else:
            for i, j, k in ti.ndrange(src.shape[0], src.shape[1], src.shape[2]):
                dst[i, j, k] = src[i, j, k]

    @ti.kernel
    def fill(a: F3, v: f64):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(a.shape[0], a.shape[1]):
                for k in range(a.shape[2]):
                    a[i, j, k] = ti.cast(v, dt)
        else:
            for i, j, k in ti.ndrange(a.shape[0], a.shape[1], a.shape[2]):
                a[i, j, k] = ti.cast(v, dt)

    # ------------------------------------------------------------------ multigrid
    @ti.func
    def c_off(gA: ti.template(), gB: ti.template(), gC: ti.template(), x: ti.template(), i, j, k,
              p1: ti.i32, p2: ti.i32):
        n0, n1, n2 = x.shape[0], x.shape[1], x.shape[2]
        off = ti.cast(0.0, f64)
        if i > 0:
            off += ti.cast(gA[i, j, k], f64) * ti.cast(x[i - 1, j, k], f64)
        if i < n0 - 1:
            off += ti.cast(gA[i + 1, j, k], f64) * ti.cast(x[i + 1, j, k], f64)
        if n1 > 1:
            jp = j + 1
            if jp >= n1:
                jp = 0 if p1 != 0 else -1
            if jp >= 0:
                off += ti.cast(gB[i, j, k], f64) * ti.cast(x[i, jp, k], f64)
            jm = j - 1
            if jm < 0:
                jm = n1 - 1 if p1 != 0 else -1
            if jm >= 0:
                off += ti.cast(gB[i, jm, k], f64) * ti.cast(x[i, jm, k], f64)
        if n2 > 1:
            kp = k + 1
            if kp >= n2:
                kp = 0 if p2 != 0 else -1
            if kp >= 0:
                off += ti.cast(gC[i, j, k], f64) * ti.cast(x[i, j, kp], f64)
            km = k - 1
            if km < 0:
                km = n2 - 1 if p2 != 0 else -1
            if km >= 0:
                off += ti.cast(gC[i, j, km], f64) * ti.cast(x[i, j, km], f64)
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
    def c_csmooth(gA: ti.template(), gB: ti.template(), gC: ti.template(), dinv: ti.template(),
                  x: ti.template(), rhs: ti.template(), i, j, k, p1: ti.i32, p2: ti.i32):
        di = ti.cast(dinv[i, j, k], f64)
        if di > 0:
            off = c_off(gA, gB, gC, x, i, j, k, p1, p2)
            x[i, j, k] = ti.cast((ti.cast(rhs[i, j, k], f64) + off) * di, dt)

    @ti.kernel
    def c_smooth(gA: F3, gB: F3, gC: F3, dinv: F3, x: F3, rhs: F3, col: ti.i32, o1: ti.i32,
                 o2: ti.i32, p1: ti.i32, p2: ti.i32):
        n1, n2 = x.shape[1], x.shape[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(x.shape[0], n1):
                jsl = 1 if (o1 != 0 and j == n1 - 1) else 0
                if jsl == (col >> 1) & 1:
                    if (col >> 2) & 1 == 1:
                        k = n2 - 1
                        if (i + j + k) & 1 == col & 1:
                            c_csmooth(gA, gB, gC, dinv, x, rhs, i, j, k, p1, p2)
                    else:
                        kend = n2 - o2
                        k0 = ((col & 1) + i + j) & 1
                        for t in range((kend - k0 + 1) // 2):
                            c_csmooth(gA, gB, gC, dinv, x, rhs, i, j, k0 + 2 * t, p1, p2)
        else:
            for i, j, k in ti.ndrange(x.shape[0], n1, n2):
                if colour(i, j, k, n1, n2, o1, o2) == col:
                    c_csmooth(gA, gB, gC, dinv, x, rhs, i, j, k, p1, p2)

    @ti.func
    def c_cresid(gA: ti.template(), gB: ti.template(), gC: ti.template(), dinv: ti.template(),
                 x: ti.template(), rhs: ti.template(), out: ti.template(), i, j, k, p1: ti.i32, p2: ti.i32):
        di = ti.cast(dinv[i, j, k], f64)
        r = ti.cast(0.0, f64)
        if di > 0:
            off = c_off(gA, gB, gC, x, i, j, k, p1, p2)
            r = ti.cast(rhs[i, j, k], f64) + off - ti.cast(x[i, j, k], f64) / di
        out[i, j, k] = ti.cast(r, dt)

    @ti.kernel
    def c_resid(gA: F3, gB: F3, gC: F3, dinv: F3, x: F3, rhs: F3, out: F3, p1: ti.i32, p2: ti.i32):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(x.shape[0], x.shape[1]):
                for k in range(x.shape[2]):
                    c_cresid(gA, gB, gC, dinv, x, rhs, out, i, j, k, p1, p2)
        else:
            for i, j, k in ti.ndrange(x.shape[0], x.shape[1], x.shape[2]):
                c_cresid(gA, gB, gC, dinv, x, rhs, out, i, j, k, p1, p2)

    @ti.func
    def c_restrict(rf: ti.template(), bc: ti.template(), I, J, K):
        n0, n1, n2 = rf.shape[0], rf.shape[1], rf.shape[2]
        s = ti.cast(0.0, f64)
        for a, b, c in ti.static(ti.ndrange(2, 2, 2)):
            i, j, k = 2 * I + a, 2 * J + b, 2 * K + c
            if i < n0 and j < n1 and k < n2:
                s += ti.cast(rf[i, j, k], f64)
        bc[I, J, K] = ti.cast(s, dt)

    @ti.kernel
    def restrict(rf: F3, bc: F3):
        if ti.static(SERIAL_K):
            for I, J in ti.ndrange(bc.shape[0], bc.shape[1]):
                for K in range(bc.shape[2]):
                    c_restrict(rf, bc, I, J, K)
        else:
            for I, J, K in ti.ndrange(bc.shape[0], bc.shape[1], bc.shape[2]):
                c_restrict(rf, bc, I, J, K)

    @ti.func
    def c_prolong(act: ti.template(), xc: ti.template(), xf: ti.template(), i, j, k):
        if act[i, j, k] > 0:
            xf[i, j, k] = ti.cast(ti.cast(xf[i, j, k], f64) + ti.cast(xc[i // 2, j // 2, k // 2], f64), dt)

    @ti.kernel
    def prolong(act: F3, xc: F3, xf: F3):
        """xf += P xc on active fine cells (act = sigma on the fine level, 1/diag on coarse ones)."""
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(xf.shape[0], xf.shape[1]):
                for k in range(xf.shape[2]):
                    c_prolong(act, xc, xf, i, j, k)
        else:
            for i, j, k in ti.ndrange(xf.shape[0], xf.shape[1], xf.shape[2]):
                c_prolong(act, xc, xf, i, j, k)

    @ti.kernel
    def prolong_f(sig: U3, xc: F3, xf: F3):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(xf.shape[0], xf.shape[1]):
                for k in range(xf.shape[2]):
                    c_prolong(sig, xc, xf, i, j, k)
        else:
            for i, j, k in ti.ndrange(xf.shape[0], xf.shape[1], xf.shape[2]):
                c_prolong(sig, xc, xf, i, j, k)

    @ti.func
    def fA_sig(sig: ti.template(), T: ti.template(), em: ti.template(), p, j, k, c0: f64):
        n0 = sig.shape[0]
        g = ti.cast(0.0, f64)
        if p == 0:
            g = 2.0 * c0 * sg(sig, T, 0, j, k)
        elif p == n0:
            g = 2.0 * c0 * sg(sig, T, n0 - 1, j, k) * ti.cast(em[j, k], f64)
        else:
            g = c0 * hmi(T, sig[p - 1, j, k], sig[p, j, k])
        return g

    @ti.kernel
    def build_from_sigma(sig: U3, T: D1, em: I2, gA: F3, gB: F3, gC: F3, scale: f64, c0: f64, c1: f64,
                         c2: f64, p1: ti.i32, p2: ti.i32):
        n0, n1, n2 = sig.shape[0], sig.shape[1], sig.shape[2]
        for P, J, K in ti.ndrange(gA.shape[0], gA.shape[1], gA.shape[2]):
            pf = ti.min(2 * P, n0)
            s = ti.cast(0.0, f64)
            for b, c in ti.static(ti.ndrange(2, 2)):
                j, k = 2 * J + b, 2 * K + c
                if j < n1 and k < n2:
                    s += fA_sig(sig, T, em, pf, j, k, c0)
            gA[P, J, K] = ti.cast(scale * s, dt)
        for I, J, K in ti.ndrange(gB.shape[0], gB.shape[1], gB.shape[2]):
            jf = ti.min(2 * J + 1, n1 - 1)
            jn = jf + 1
            if jn >= n1:
                jn = 0 if (p1 != 0 and n1 > 1) else -1
            s = ti.cast(0.0, f64)
            if jn >= 0:
                for a, c in ti.static(ti.ndrange(2, 2)):
                    i, k = 2 * I + a, 2 * K + c
                    if i < n0 and k < n2:
                        s += c1 * hmi(T, sig[i, jf, k], sig[i, jn, k])
            gB[I, J, K] = ti.cast(scale * s, dt)
        for I, J, K in ti.ndrange(gC.shape[0], gC.shape[1], gC.shape[2]):
            kf = ti.min(2 * K + 1, n2 - 1)
            kn = kf + 1
            if kn >= n2:
                kn = 0 if (p2 != 0 and n2 > 1) else -1
            s = ti.cast(0.0, f64)
            if kn >= 0:
                for a, b in ti.static(ti.ndrange(2, 2)):
                    i, j = 2 * I + a, 2 * J + b
                    if i < n0 and j < n1:
                        s += c2 * hmi(T, sig[i, j, kf], sig[i, j, kn])
            gC[I, J, K] = ti.cast(scale * s, dt)

    @ti.kernel
    def build_from_coarse(fA: F3, fB: F3, fC: F3, gA: F3, gB: F3, gC: F3, scale: f64):
        n0, n1, n2 = fB.shape[0], fB.shape[1], fB.shape[2]
        for P, J, K in ti.ndrange(gA.shape[0], gA.shape[1], gA.shape[2]):
            pf = ti.min(2 * P, n0)
            s = ti.cast(0.0, f64)
            for b, c in ti.static(ti.ndrange(2, 2)):
                j, k = 2 * J + b, 2 * K + c
                if j < n1 and k < n2:
                    s += ti.cast(fA[pf, j, k], f64)
            gA[P, J, K] = ti.cast(scale * s, dt)
        for I, J, K in ti.ndrange(gB.shape[0], gB.shape[1], gB.shape[2]):
            jf = ti.min(2 * J + 1, n1 - 1)
            s = ti.cast(0.0, f64)
            for a, c in ti.static(ti.ndrange(2, 2)):
                i, k = 2 * I + a, 2 * K + c
                if i < n0 and k < n2:
                    s += ti.cast(fB[i, jf, k], f64)
            gB[I, J, K] = ti.cast(scale * s, dt)
        for I, J, K in ti.ndrange(gC.shape[0], gC.shape[1], gC.shape[2]):
            kf = ti.min(2 * K + 1, n2 - 1)
            s = ti.cast(0.0, f64)
            for a, b in ti.static(ti.ndrange(2, 2)):
                i, j = 2 * I + a, 2 * J + b
                if i < n0 and j < n1:
                    s += ti.cast(fC[i, j, kf], f64)
            gC[I, J, K] = ti.cast(scale * s, dt)

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

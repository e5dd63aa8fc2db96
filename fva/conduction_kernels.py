"""Taichi kernels of the finite-volume conduction solve (only ``@ti.kernel`` / ``@ti.func``).

Layout convention (the caller transposes the image so that this always holds):
array axis 0 is the solve axis (Dirichlet faces at plane 0 and plane n0), axes 1 and 2 are the
sides (periodic when ``p1`` / ``p2`` is 1, zero-flux otherwise).

The fine-level kernels (flat arrays) are in :mod:`fva.fine_kernels` and are returned here too; this module holds
the coarse levels of the multigrid preconditioner and the table conventions.

* Fine level: a u8 phase-id array ``sig`` (id 0 = removed / insulating voxel) and a float64 table
  ``T``: T[id] is the conductivity (S/m) and T[NTAB + a*NTAB + b] the harmonic mean 2σaσb/(σa+σb)
  (0 when either is 0), so no division per face; face conductance = table value x ``c0 = d1*d2/d0``
  (etc.); the boundary conductance of an end slab is ``2*sigma*c0`` (half a voxel), on the high
  face only where the electrode mask ``em`` is 1. The low face is at 1 V, the high face at 0 V.
* Interface resistance (``fva.interface``): the table may hold six face blocks instead of one, one per
  direction d = 2*axis + (0: towards −1, 1: towards +1), at T[NTAB + d*NTAB² + a*NTAB + b] (a = this
  cell's id byte, b = the neighbour's); the id byte then carries interface bits that those blocks
  resolve (``fva.fine_kernels.face_sigma``); images with one conducting σ use face masks instead of ids
  (:mod:`fva.fine_kernels`).
* Coarse levels: explicit face conductances ``gA`` (n0+1, n1, n2: plane p is the face between
  cells p-1 and p, planes 0 and n0 are the electrode faces), ``gB`` / ``gC`` (face between j and
  j+1 / k and k+1, the last one being the periodic wrap face or 0), and the inverse diagonal.

All kernels take ``ti.types.ndarray`` arguments, so one compiled kernel serves every image shape
(Taichi compiles per dtype and ndim only). Reductions are float64 whatever the storage dtype.
"""

from types import SimpleNamespace

from fva.backend import ti
from fva.fine_kernels import colour_span, face_sigma, get_fine_kernels, own_sigma

_CACHE: dict = {}


def get_kernels(dtype_name: str = "f64", serial_k: bool | None = None, mask: bool = False) -> SimpleNamespace:
    """Kernels for storage dtype ``"f64"`` or ``"f32"`` (built once per process, dtype, loop style and fine
    conductance form).

    ``serial_k`` (default: True on the CPU backend) selects the row-loop structure; ``mask``: the fine ``sig``
    holds face masks (:mod:`fva.face_mask`), not phase ids.
    """
    if serial_k is None:
        from fva.backend import current

        serial_k = current().backend == "cpu"
    SERIAL_K, MASK = bool(serial_k), bool(mask)
    key = (dtype_name, SERIAL_K, MASK)
    if key in _CACHE:
        return _CACHE[key]
    dt = ti.f64 if dtype_name == "f64" else ti.f32
    F3 = ti.types.ndarray(dtype=dt, ndim=3)
    I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
    D1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
    U1 = ti.types.ndarray(dtype=ti.u8, ndim=1)
    f64 = ti.f64

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
    def colour_row(f: ti.template(), A: ti.template(), S: ti.template(), i, j, col, o1, o2, n1, n2):
        """f on the cells of colour ``col`` in row (i, j) (:func:`fva.fine_kernels.colour_span`)."""
        k0, cnt, stride = colour_span(i, j, col, o1, o2, n1, n2)
        for t in range(cnt):
            f(A, S, i, j, k0 + stride * t)

    @ti.func
    def colour_sweep(f: ti.template(), A: ti.template(), S: ti.template(), col, o1, o2):
        """f(A, S, i, j, k) on the cells of colour ``col`` of A[0]'s grid (see ``colour``): one colour of a
        multi-colour Gauss–Seidel sweep, in place and race free."""
        shape = ti.static(A[0]).shape
        n1, n2 = shape[1], shape[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(shape[0], n1):
                colour_row(f, A, S, i, j, col, o1, o2, n1, n2)
        else:
            for i, j, k in ti.ndrange(shape[0], n1, n2):
                if colour(i, j, k, n1, n2, o1, o2) == col:
                    f(A, S, i, j, k)

    # ------------------------------------------------------------------ vector kernels (coarse levels)
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

    @ti.kernel
    def c_smooth_serial(gA: F3, gB: F3, gC: F3, dinv: F3, x: F3, rhs: F3, sweeps: ti.i32, order: ti.i32,
                        zero: ti.i32, o1: ti.i32, o2: ti.i32, p1: ti.i32, p2: ti.i32):
        """``sweeps`` whole multi-colour Gauss–Seidel sweeps of a small coarse level in one launch, on one thread
        (colours ascending for ``order`` > 0, descending otherwise; x = 0 first when ``zero``): the same updates
        as the parallel colour sweeps, without a launch per colour. On the CPU a level of a few thousand cells
        costs less than the launches it saves (fva.multigrid.SERIAL_CELLS)."""
        n0, n1, n2 = x.shape[0], x.shape[1], x.shape[2]
        ti.loop_config(serialize=True)
        for _ in range(1):
            if zero != 0:
                for i, j, k in ti.ndrange(n0, n1, n2):
                    x[i, j, k] = ti.cast(0.0, dt)
            for t in range(sweeps * 8):
                c = t % 8
                if order <= 0:
                    c = 7 - c
                if (c & 2 == 0 or o1 != 0) and (c & 4 == 0 or o2 != 0):
                    for i, j in ti.ndrange(n0, n1):
                        colour_row(c_csmooth, (x, gA, gB, gC, dinv, rhs), (p1, p2), i, j, c, o1, o2, n1, n2)

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

    @ti.func
    def face_of_sigma(G: ti.template(), idx, ax: ti.template()):
        """Fine face conductance at ``idx`` normal to array axis ``ax``, from the flat phase ids
        (:mod:`fva.fine_kernels` layout).

        G = (sig, T, em, c, geo) with c = (c0, c1, c2) and geo = (n0, n1, n2, p1, p2); axis 0: face plane idx[0]
        (electrode faces at 0 and n0); sides: the face to the next cell (the periodic wrap face, or none at an
        insulating side)."""
        sig, T, em = ti.static(G[0], G[1], G[2])
        c, geo = G[3], G[4]
        n1, n2 = geo[1], geo[2]
        g = ti.cast(0.0, f64)
        q = (idx[0] * n1 + idx[1]) * n2 + idx[2]
        if ti.static(ax == 0):
            n0 = geo[0]
            p = idx[0]
            if p == 0:
                g = 2.0 * c[0] * own_sigma(sig, T, q, MASK)
            elif p == n0:
                g = 2.0 * c[0] * own_sigma(sig, T, q - n1 * n2, MASK) * ti.cast(em[idx[1], idx[2]], f64)
            else:
                g = c[0] * face_sigma(sig, T, q - n1 * n2, q, 0, MASK)
        else:
            n = geo[ax]
            nxt = idx
            nxt[ax] += 1
            if nxt[ax] >= n:
                nxt[ax] = 0 if (geo[ti.static(2 + ax)] != 0 and n > 1) else -1
            if nxt[ax] >= 0:
                g = c[ax] * face_sigma(sig, T, q, (nxt[0] * n1 + nxt[1]) * n2 + nxt[2], ax, MASK)
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
        for t in range(4):  # a runtime loop: one compiled copy of the face function per axis
            u, v = t >> 1, t & 1
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
    def build_from_sigma(sig: U1, T: D1, em: I2, gA: F3, gB: F3, gC: F3, scale: f64,
                         c: ti.types.vector(3, f64), geo: ti.types.vector(5, ti.i32)):
        """First coarse level from the flat fine phase ids."""
        coarse_faces(face_of_sigma, (sig, T, em, c, geo), ti.Vector([geo[0], geo[1], geo[2]]), gA, gB, gC, scale)

    @ti.kernel
    def build_from_coarse(fA: F3, fB: F3, fC: F3, gA: F3, gB: F3, gC: F3, scale: f64):
        """Next coarse level from the face conductances of the level above."""
        coarse_faces(face_of_array, (fA, fB, fC), ti.Vector([fB.shape[0], fB.shape[1], fB.shape[2]]),
                     gA, gB, gC, scale)

    ns = SimpleNamespace(
        fill=fill, c_diag_inv=c_diag_inv, c_smooth=c_smooth, c_smooth_serial=c_smooth_serial, c_resid=c_resid,
        restrict=restrict, prolong=prolong, build_from_sigma=build_from_sigma, build_from_coarse=build_from_coarse,
        **vars(get_fine_kernels(dtype_name, SERIAL_K, MASK)))
    ns.dtype = dt
    _CACHE[key] = ns
    return ns

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
  j+1 / k and k+1, the last one being the periodic wrap face or 0), and the inverse diagonal; flat
  arrays like the fine level's (cell (i, j, k) at (i·n1 + j)·n2 + k, row bases once per row), with the
  level's geometry G = (n0, n1, n2, p1, p2) as an argument.

All kernels take ``ti.types.ndarray`` arguments, so one compiled kernel serves every image shape
(Taichi compiles per dtype and ndim only). Reductions are float64 whatever the storage dtype.
"""

from types import SimpleNamespace

from fva.backend import ti
from fva.fine_kernels import colour_span, face_sigma, get_fine_kernels, own_sigma
from fva.fine_rows import cell_colour

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
    F1 = ti.types.ndarray(dtype=dt, ndim=1)
    I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
    D1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
    U1 = ti.types.ndarray(dtype=ti.u8, ndim=1)
    GEO = ti.types.vector(5, ti.i32)
    f64 = ti.f64

    # Coarse levels are flat like the fine one: cell (i, j, k) of a level of shape (n0, n1, n2) at
    # (i·n1 + j)·n2 + k, its faces gA (plane p below cell p, n0 + 1 planes), gB, gC at the index of the cell
    # below the face; G = (n0, n1, n2, p1, p2). The last gB / gC face of a row is the periodic wrap face or 0,
    # so the neighbour indices simply wrap (an insulating side meets a zero face); a side of one cell has no
    # side faces (weight 0). Per row the five row bases are computed once (Taichi 1.7.4 computes a 3-D ndarray
    # address from the runtime shape at every access).
    @ti.func
    def crow(i, j, G):
        """(base, base of row i−1, i+1, j−1, j+1 (wrapped), i, j), (weight of i−1, of i+1, of the side-1 pair)."""
        n0, n1, n2 = G[0], G[1], G[2]
        base = (i * n1 + j) * n2
        s = n1 * n2
        bim = base - s if i > 0 else base
        bip = base + s if i < n0 - 1 else base
        bjm = (i * n1 + (j + n1 - 1) % n1) * n2
        bjp = (i * n1 + (j + 1) % n1) * n2
        return (ti.Vector([base, bim, bip, bjm, bjp, i, j]),
                ti.Vector([1.0 if i > 0 else 0.0, 1.0 if i < n0 - 1 else 0.0, 1.0 if n1 > 1 else 0.0], dt=f64))

    @ti.func
    def c_off(gA: ti.template(), gB: ti.template(), gC: ti.template(), x: ti.template(), R, W, k, G):
        """(diagonal, Σ_j g_ij x_j) of coarse cell k of row (R, W) (explicit face conductances)."""
        n2 = G[2]
        q = R[0] + k
        km = R[0] + (k + n2 - 1) % n2
        kp = R[0] + (k + 1) % n2
        w2 = ti.cast(1.0 if n2 > 1 else 0.0, f64)
        ga, gap = ti.cast(gA[q], f64), ti.cast(gA[q + G[1] * n2], f64)
        gb, gbm = ti.cast(gB[q], f64), ti.cast(gB[R[3] + k], f64)
        gc, gcm = ti.cast(gC[q], f64), ti.cast(gC[km], f64)
        d = ga + gap + W[2] * (gb + gbm) + w2 * (gc + gcm)
        off = (W[0] * ga * ti.cast(x[R[1] + k], f64) + W[1] * gap * ti.cast(x[R[2] + k], f64)
               + W[2] * (gb * ti.cast(x[R[4] + k], f64) + gbm * ti.cast(x[R[3] + k], f64))
               + w2 * (gc * ti.cast(x[kp], f64) + gcm * ti.cast(x[km], f64)))
        return d, off

    # Loop structure: CPU rows (i, j) with a serial k loop, GPU one flat loop; f(A, S, G, R, W, k).
    @ti.func
    def ccells_do(f: ti.template(), A: ti.template(), S: ti.template(), G):
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], G[1]):
                R, W = crow(i, j, G)
                for k in range(G[2]):
                    f(A, S, G, R, W, k)
        else:
            for q in range(G[0] * G[1] * G[2]):
                R, W = crow(q // (G[1] * G[2]), (q // G[2]) % G[1], G)
                f(A, S, G, R, W, q % G[2])

    @ti.func
    def crow_colour(f: ti.template(), A: ti.template(), S: ti.template(), G, i, j, col, o1, o2):
        """f on the cells of colour ``col`` in row (i, j) (:func:`fva.fine_rows.colour_span`)."""
        k0, cnt, stride = colour_span(i, j, col, o1, o2, G[1], G[2])
        if cnt > 0:
            R, W = crow(i, j, G)
            for t in range(cnt):
                f(A, S, G, R, W, k0 + stride * t)

    @ti.func
    def ccolour_sweep(f: ti.template(), A: ti.template(), S: ti.template(), G, col, o1, o2):
        """One colour of a multi-colour Gauss–Seidel sweep, in place and race free."""
        n1, n2 = G[1], G[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], n1):
                crow_colour(f, A, S, G, i, j, col, o1, o2)
        else:
            for q in range(G[0] * n1 * n2):
                i, j, k = q // (n1 * n2), (q // n2) % n1, q % n2
                if cell_colour(i, j, k, o1, o2, n1, n2) == col:
                    R, W = crow(i, j, G)
                    f(A, S, G, R, W, k)

    # ------------------------------------------------------------------ multigrid
    @ti.func
    def c_cdinv(A: ti.template(), S: ti.template(), G, R, W, k):
        gA, gB, gC, dinv = ti.static(A[0], A[1], A[2], A[3])
        d, _ = c_off(gA, gB, gC, dinv, R, W, k, G)
        dinv[R[0] + k] = ti.cast(1.0 / d if d > 0 else 0.0, dt)

    @ti.kernel
    def c_diag_inv(gA: F1, gB: F1, gC: F1, dinv: F1, G: GEO):
        """dinv = 1/diag on a coarse level (0 where no face conducts; reads dinv as a dummy x)."""
        ccells_do(c_cdinv, (gA, gB, gC, dinv), (), G)

    @ti.func
    def c_csmooth(A: ti.template(), S: ti.template(), G, R, W, k):
        x, gA, gB, gC, dinv, rhs = ti.static(A[0], A[1], A[2], A[3], A[4], A[5])
        q = R[0] + k
        di = ti.cast(dinv[q], f64)
        if di > 0:
            _, off = c_off(gA, gB, gC, x, R, W, k, G)
            x[q] = ti.cast((ti.cast(rhs[q], f64) + off) * di, dt)

    @ti.kernel
    def c_smooth(gA: F1, gB: F1, gC: F1, dinv: F1, x: F1, rhs: F1, col: ti.i32, o1: ti.i32, o2: ti.i32, G: GEO):
        """One colour of a multi-colour Gauss-Seidel sweep on a coarse level."""
        ccolour_sweep(c_csmooth, (x, gA, gB, gC, dinv, rhs), (), G, col, o1, o2)

    @ti.kernel
    def c_smooth_serial(gA: F1, gB: F1, gC: F1, dinv: F1, x: F1, rhs: F1, sweeps: ti.i32, order: ti.i32,
                        zero: ti.i32, o1: ti.i32, o2: ti.i32, G: GEO):
        """``sweeps`` whole multi-colour Gauss–Seidel sweeps of a small coarse level in one launch, on one thread
        (colours ascending for ``order`` > 0, descending otherwise; x = 0 first when ``zero``): the same updates
        as the parallel colour sweeps, without a launch per colour. On the CPU a level of a few thousand cells
        costs less than the launches it saves (fva.multigrid.SERIAL_CELLS)."""
        n0, n1 = G[0], G[1]
        ti.loop_config(serialize=True)
        for _ in range(1):
            if zero != 0:
                for q in range(x.shape[0]):
                    x[q] = ti.cast(0.0, dt)
            for t in range(sweeps * 8):
                c = t % 8
                if order <= 0:
                    c = 7 - c
                if (c & 2 == 0 or o1 != 0) and (c & 4 == 0 or o2 != 0):
                    for i, j in ti.ndrange(n0, n1):
                        crow_colour(c_csmooth, (x, gA, gB, gC, dinv, rhs), (), G, i, j, c, o1, o2)

    @ti.func
    def c_cresid(A: ti.template(), S: ti.template(), G, R, W, k):
        x, gA, gB, gC, dinv, rhs, out = ti.static(A[0], A[1], A[2], A[3], A[4], A[5], A[6])
        q = R[0] + k
        di = ti.cast(dinv[q], f64)
        r = ti.cast(0.0, f64)
        if di > 0:
            _, off = c_off(gA, gB, gC, x, R, W, k, G)
            r = ti.cast(rhs[q], f64) + off - ti.cast(x[q], f64) / di
        out[q] = ti.cast(r, dt)

    @ti.kernel
    def c_resid(gA: F1, gB: F1, gC: F1, dinv: F1, x: F1, rhs: F1, out: F1, G: GEO):
        """out = rhs − A x on a coarse level."""
        ccells_do(c_cresid, (x, gA, gB, gC, dinv, rhs, out), (), G)

    @ti.func
    def c_restrict(A: ti.template(), S: ti.template(), G, R, W, K):
        rf, bc = ti.static(A[0], A[1])
        Gf = S[0]
        I, J = R[5], R[6]
        s = ti.cast(0.0, f64)
        for a, b, c in ti.static(ti.ndrange(2, 2, 2)):
            i, j, k = 2 * I + a, 2 * J + b, 2 * K + c
            if i < Gf[0] and j < Gf[1] and k < Gf[2]:
                s += ti.cast(rf[(i * Gf[1] + j) * Gf[2] + k], f64)
        bc[R[0] + K] = ti.cast(s, dt)

    @ti.kernel
    def restrict(rf: F1, bc: F1, Gf: GEO, G: GEO):
        """bc = R rf: the sum over each 2x2x2 block (Gf, G: the fine and coarse level geometry)."""
        ccells_do(c_restrict, (rf, bc), (Gf,), G)

    @ti.func
    def c_prolong(A: ti.template(), S: ti.template(), G, R, W, k):
        xf, act, xc = ti.static(A[0], A[1], A[2])
        Gc = S[0]
        q = R[0] + k
        if act[q] > 0:
            i, j = R[5], R[6]
            xf[q] = ti.cast(ti.cast(xf[q], f64)
                            + ti.cast(xc[((i // 2) * Gc[1] + j // 2) * Gc[2] + k // 2], f64), dt)

    @ti.kernel
    def prolong(act: F1, xc: F1, xf: F1, G: GEO, Gc: GEO):
        """xf += P xc on the active cells of a coarse level (act = 1/diag; G, Gc: this level and the next)."""
        ccells_do(c_prolong, (xf, act, xc), (Gc,), G)

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
        """Face value ``G[ax][idx]`` of the next finer level's flat face arrays G = (gA, gB, gC, geometry)."""
        f = ti.static(G[ax])
        return ti.cast(f[(idx[0] * G[3][1] + idx[1]) * G[3][2] + idx[2]], f64)

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
                     gC: ti.template(), scale: f64, Gc):
        """gA, gB, gC of a coarse level of geometry ``Gc``: ``scale`` × the sum of the fine faces crossing each
        coarse face (Galerkin R A P with piecewise-constant P, see fva.multigrid)."""
        m1, m2 = Gc[1], Gc[2]
        for P, J, K in ti.ndrange(Gc[0] + 1, m1, m2):
            gA[(P * m1 + J) * m2 + K] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([P, J, K]), 0, n), dt)
        for I, J, K in ti.ndrange(Gc[0], m1, m2):
            q = (I * m1 + J) * m2 + K
            gB[q] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([I, J, K]), 1, n), dt)
            gC[q] = ti.cast(scale * fine_faces_sum(face, G, ti.Vector([I, J, K]), 2, n), dt)

    @ti.kernel
    def build_from_sigma(sig: U1, T: D1, em: I2, gA: F1, gB: F1, gC: F1, scale: f64,
                         c: ti.types.vector(3, f64), geo: GEO, Gc: GEO):
        """First coarse level (geometry ``Gc``) from the flat fine phase ids or face masks."""
        coarse_faces(face_of_sigma, (sig, T, em, c, geo), ti.Vector([geo[0], geo[1], geo[2]]), gA, gB, gC, scale,
                     Gc)

    @ti.kernel
    def build_from_coarse(fA: F1, fB: F1, fC: F1, gA: F1, gB: F1, gC: F1, scale: f64, Gf: GEO, Gc: GEO):
        """Next coarse level (geometry ``Gc``) from the face conductances of the level above (``Gf``)."""
        coarse_faces(face_of_array, (fA, fB, fC, Gf), ti.Vector([Gf[0], Gf[1], Gf[2]]), gA, gB, gC, scale, Gc)

    ns = SimpleNamespace(
        c_diag_inv=c_diag_inv, c_smooth=c_smooth, c_smooth_serial=c_smooth_serial, c_resid=c_resid,
        restrict=restrict, prolong=prolong, build_from_sigma=build_from_sigma, build_from_coarse=build_from_coarse,
        **vars(get_fine_kernels(dtype_name, SERIAL_K, MASK)))
    ns.dtype = dt
    _CACHE[key] = ns
    return ns

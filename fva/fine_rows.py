"""Row geometry and cell loops of the flat fine level (only ``@ti.func``; layout of :mod:`fva.fine_kernels`).

Loop structure: on the CPU a parallel loop over rows (i, j) with a serial k loop; on a GPU one flat loop over
the cells (consecutive threads on consecutive k). With face masks on the CPU (``seg``) the k loop visits the
runs of conducting cells of the row only (``rs`` from :func:`fva.face_mask.row_segments`): every vector of the
solve is 0 on a removed cell and stays so, so skipping it changes nothing, and an image whose phase is 30 % of
the voxels pays for that 30 %. ``f(A, S, G, R, k)`` gets the kernel's arrays A and scalars S as compile-time
tuples.
"""

from types import SimpleNamespace

from fva.backend import ti

_CACHE: dict = {}


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


@ti.func
def cell_colour(i, j, k, o1, o2, n1, n2):
    """Colour of cell (i, j, k) in the numbering of :func:`colour_span` (one cell at a time: the GPU loops)."""
    c = (i + j + k) & 1
    if o1 != 0 and j == n1 - 1:
        c += 2
    if o2 != 0 and k == n2 - 1:
        c += 4
    return c


def get_row_loops(serial_k: bool, seg: bool) -> SimpleNamespace:
    """Row helpers and cell loops; ``serial_k``: CPU row loops, ``seg``: visit the runs of ``rs`` only."""
    SERIAL_K, SEG = bool(serial_k), bool(seg) and bool(serial_k)
    key = (SERIAL_K, SEG)
    if key in _CACHE:
        return _CACHE[key]
    f64 = ti.f64

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
        """(base, base of row i−1, i+1, j−1, j+1, i, j, base of the coarse row under it) of fine row (i, j); a
        missing row is the sentinel."""
        n0, n1, n2 = G[0], G[1], G[2]
        ns = n0 * n1 * n2
        base = (i * n1 + j) * n2
        jm, jp = side(j, n1, G[3], -1), side(j, n1, G[3], 1)
        bim = base - n1 * n2 if i > 0 else ns
        bip = base + n1 * n2 if i < n0 - 1 else ns
        bjm = (i * n1 + jm) * n2 if jm >= 0 else ns
        bjp = (i * n1 + jp) * n2 if jp >= 0 else ns
        cbase = ((i // 2) * ((n1 + 1) // 2) + j // 2) * ((n2 + 1) // 2)  # row of the first coarse level
        return ti.Vector([base, bim, bip, bjm, bjp, i, j, cbase])

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
    def run(rs: ti.template(), G, i, j, s):
        """[a, b): the k range of run s of row (i, j)."""
        h = G[0] * G[1] + 1
        return rs[h + 2 * s], rs[h + 2 * s + 1]

    @ti.func
    def cells_sum(f: ti.template(), A: ti.template(), S: ti.template(), G, n: ti.template(), rs: ti.template()):
        """Σ f(A, S, G, R, k) over the (conducting, with ``seg``) cells: an ``n``-vector of float64."""
        s = ti.Vector([0.0] * n, dt=f64)
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], G[1]):
                R = row_geom(i, j, G)
                acc = ti.Vector([0.0] * n, dt=f64)
                if ti.static(SEG):
                    r = i * G[1] + j
                    for t in range(rs[r], rs[r + 1]):
                        a, b = run(rs, G, i, j, t)
                        for k in range(a, b):
                            acc += f(A, S, G, R, k)
                else:
                    for k in range(G[2]):
                        acc += f(A, S, G, R, k)
                s += acc
        else:
            for q in range(G[0] * G[1] * G[2]):
                R = row_geom(q // (G[1] * G[2]), (q // G[2]) % G[1], G)
                s += f(A, S, G, R, q % G[2])
        return s

    @ti.func
    def cells_do(f: ti.template(), A: ti.template(), S: ti.template(), G, rs: ti.template()):
        """f(A, S, G, R, k) on every (conducting, with ``seg``) cell (no result)."""
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], G[1]):
                R = row_geom(i, j, G)
                if ti.static(SEG):
                    r = i * G[1] + j
                    for t in range(rs[r], rs[r + 1]):
                        a, b = run(rs, G, i, j, t)
                        for k in range(a, b):
                            f(A, S, G, R, k)
                else:
                    for k in range(G[2]):
                        f(A, S, G, R, k)
        else:
            for q in range(G[0] * G[1] * G[2]):
                R = row_geom(q // (G[1] * G[2]), (q // G[2]) % G[1], G)
                f(A, S, G, R, q % G[2])

    @ti.func
    def colour_sweep(f: ti.template(), A: ti.template(), S: ti.template(), G, col, o1, o2, rs: ti.template()):
        """f on the cells of colour ``col`` (:func:`colour_span`), so that the in-place parallel update of one
        colour never reads a cell of the same colour; with ``seg`` only those inside the row's runs."""
        n1, n2 = G[1], G[2]
        if ti.static(SERIAL_K):
            for i, j in ti.ndrange(G[0], n1):
                k0, cnt, stride = colour_span(i, j, col, o1, o2, n1, n2)
                if cnt > 0:
                    R = row_geom(i, j, G)
                    if ti.static(SEG):
                        r = i * n1 + j
                        for t in range(rs[r], rs[r + 1]):
                            a, b = run(rs, G, i, j, t)  # colour cells k0 + stride·u inside [a, b)
                            u0 = ti.max(0, (a - k0 + stride - 1) // stride)
                            u1 = ti.min(cnt, (b - k0 + stride - 1) // stride)
                            for u in range(u0, u1):
                                f(A, S, G, R, k0 + stride * u)
                    else:
                        for u in range(cnt):
                            f(A, S, G, R, k0 + stride * u)
        else:
            for q in range(G[0] * n1 * n2):
                i, j, k = q // (n1 * n2), (q // n2) % n1, q % n2
                if cell_colour(i, j, k, o1, o2, n1, n2) == col:
                    f(A, S, G, row_geom(i, j, G), k)

    ns = SimpleNamespace(side=side, row_geom=row_geom, k_nbrs=k_nbrs, run=run, cells_sum=cells_sum,
                         cells_do=cells_do, colour_sweep=colour_sweep, seg=SEG)
    _CACHE[key] = ns
    return ns

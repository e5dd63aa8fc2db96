"""Taichi kernels of the Verlet neighbour list (orchestrated by :mod:`dem.neighbours`).

Arrays are Taichi ndarrays (kernels compile once per dtype, not per shape or per simulation).
Positions ``x`` are (N, 3); x, y periodic with box (Lx, Ly); z bounded.

Pair ownership (each pair stored once, in the row of its owner): the particle with the larger original
radius r0 owns the pair (ties: the lower index). An owner therefore only searches for partners no larger
than itself, within ``r_i + r_bound_i + skin``,
so a small particle scans a small neighbourhood even when d_max/d_min ≈ 25, and a large particle scans a
large one: the work per particle scales with its own size, not with d_max. With volume correction the
current radii grow: ``r_bound[i]`` = the largest current radius among the particles i may own (running max
over the ownership order, computed on the device at each build) keeps the search exact.

No loop over N runs on one thread: the prefix sums and the running maximum are two-level scans (chunks of
SCAN_CHUNK items in parallel, one thread over the ⌈N/SCAN_CHUNK⌉ chunk results, a parallel fix-up).
"""
from fva.backend import spirv_backend, ti


@ti.func
def min_image(d, Lx, Ly):
    """Minimum-image separation vector in x and y (z not periodic)."""
    d[0] -= Lx * ti.round(d[0] / Lx)
    d[1] -= Ly * ti.round(d[1] / Ly)
    return d


@ti.func
def vec3(a: ti.template(), i):
    return ti.Vector([a[i, 0], a[i, 1], a[i, 2]])


@ti.func
def cell_coord(x, Lx, Ly, zmin, cx, cy, cz, nx, ny, nz):
    ix = ti.cast(ti.floor(x[0] / cx), ti.i32) % nx
    iy = ti.cast(ti.floor(x[1] / cy), ti.i32) % ny
    iz = ti.min(ti.max(ti.cast(ti.floor((x[2] - zmin) / cz), ti.i32), 0), nz - 1)
    return ix, iy, iz


@ti.kernel
def bin_particles(n: ti.i32, x: ti.types.ndarray(), Lx: float, Ly: float, zmin: float, cx: float, cy: float,
                  cz: float, nx: ti.i32, ny: ti.i32, nz: ti.i32, particle_cell: ti.types.ndarray(),
                  cell_count: ti.types.ndarray()):
    for c in range(nx * ny * nz):
        cell_count[c] = 0
    for i in range(n):
        ix, iy, iz = cell_coord(vec3(x, i), Lx, Ly, zmin, cx, cy, cz, nx, ny, nz)
        c = (iz * ny + iy) * nx + ix
        particle_cell[i] = c
        ti.atomic_add(cell_count[c], 1)


SCAN_CHUNK = 1024   # items per chunk of the two-level scans (one thread scans a chunk serially)


@ti.kernel
def exclusive_scan(n: ti.i32, count: ti.types.ndarray(), start: ti.types.ndarray(),
                   chunk_total: ti.types.ndarray()):
    """start[k] = Σ_{m<k} count[m], start[n] = total, as a two-level scan (no serial loop over n): each chunk of
    SCAN_CHUNK items is scanned by one thread (parallel over chunks) and leaves its total in ``chunk_total``; one
    thread scans the ⌈n/SCAN_CHUNK⌉ totals into chunk offsets; a parallel loop adds each item's chunk offset.
    Integer sums: the same result as a serial scan on any backend (Blelloch 1990, "Prefix sums and their
    applications", §1.3 — the blocked variant)."""
    nch = (n + SCAN_CHUNK - 1) // SCAN_CHUNK
    for c in range(nch):
        acc = 0
        for k in range(c * SCAN_CHUNK, ti.min(n, (c + 1) * SCAN_CHUNK)):
            start[k] = acc
            acc += count[k]
        chunk_total[c] = acc
    if n >= 0:                        # inside an if: one thread, over the chunks only
        acc = 0
        for c in range(nch):
            t = chunk_total[c]
            chunk_total[c] = acc
            acc += t
        start[n] = acc
    for k in range(n):
        start[k] += chunk_total[k // SCAN_CHUNK]


@ti.kernel
def bound_radii(n: ti.i32, order: ti.types.ndarray(), r: ti.types.ndarray(), r_bound: ti.types.ndarray(),
                chunk_max: ti.types.ndarray()):
    """r_bound[order[k]] = max_{m ≤ k} r[order[m]]: the largest radius among the particles a particle may own
    (ownership order: r0 ascending), the reach of its owner search. A two-level running maximum, as
    :func:`exclusive_scan` (chunks in parallel, one thread over the chunk maxima, a parallel fix-up); max is
    exact, so the result is the serial one bitwise."""
    nch = (n + SCAN_CHUNK - 1) // SCAN_CHUNK
    for c in range(nch):
        acc = 0.0
        for k in range(c * SCAN_CHUNK, ti.min(n, (c + 1) * SCAN_CHUNK)):
            j = order[k]
            acc = ti.max(acc, r[j])
            r_bound[j] = acc
        chunk_max[c] = acc
    if n >= 0:
        acc = 0.0
        for c in range(nch):
            t = chunk_max[c]
            chunk_max[c] = acc
            acc = ti.max(acc, t)
    for k in range(n):
        j = order[k]
        r_bound[j] = ti.max(r_bound[j], chunk_max[k // SCAN_CHUNK])


@ti.kernel
def bucket_fill(n_buckets: ti.i32, n_items: ti.i32, bucket: ti.types.ndarray(), start: ti.types.ndarray(),
                fill: ti.types.ndarray(), out: ti.types.ndarray()):
    """Counting-sort fill: item i goes to ``out[start[bucket[i]] + k]``, k its arrival order in its bucket
    (``start`` is the exclusive prefix sum of the bucket counts). Cells → particles, partners → pairs."""
    for c in range(n_buckets):
        fill[c] = 0
    for i in range(n_items):
        c = bucket[i]
        k = ti.atomic_add(fill[c], 1)
        out[start[c] + k] = i


@ti.func
def _owns(i, j, r0: ti.template()):
    return (r0[j] < r0[i]) or (r0[j] == r0[i] and j > i)


_APPEND, _COUNT, _FILL = 0, 1, 2


@ti.func
def _owned_search(i, x: ti.template(), r: ti.template(), r0: ti.template(), r_bound: ti.template(), skin, Lx, Ly,
                  zmin, cx, cy, cz, nx, ny, nz, cell_start: ti.template(), cell_particles: ti.template(), cap,
                  total: ti.template(), app_owner: ti.template(), app_partner: ti.template(), mode: ti.template(),
                  base):
    """Visit particle i's owned pairs (dist < r_i + r_j + skin) in the cells its reach covers; returns how many.
    ``mode``: _APPEND each at an atomic slot of total[0]; _COUNT only; _FILL at slots base, base + 1, ..."""
    xi = vec3(x, i)
    ri = r[i]
    reach = ri + r_bound[i] + skin      # r_bound[i] ≥ current radius of every particle i may own
    lox = ti.cast(ti.floor((xi[0] - reach) / cx), ti.i32)
    hix = ti.cast(ti.floor((xi[0] + reach) / cx), ti.i32)
    loy = ti.cast(ti.floor((xi[1] - reach) / cy), ti.i32)
    hiy = ti.cast(ti.floor((xi[1] + reach) / cy), ti.i32)
    if hix - lox + 1 > nx:
        lox = 0
        hix = nx - 1
    if hiy - loy + 1 > ny:
        loy = 0
        hiy = ny - 1
    loz = ti.max(ti.cast(ti.floor((xi[2] - reach - zmin) / cz), ti.i32), 0)
    hiz = ti.min(ti.cast(ti.floor((xi[2] + reach - zmin) / cz), ti.i32), nz - 1)
    loz = ti.min(loz, nz - 1)
    hiz = ti.max(hiz, 0)
    cnt = 0
    for iz in range(loz, hiz + 1):
        for iy0 in range(loy, hiy + 1):
            iy = iy0 % ny
            for ix0 in range(lox, hix + 1):
                ix = ix0 % nx
                c = (iz * ny + iy) * nx + ix
                for k in range(cell_start[c], cell_start[c + 1]):
                    j = cell_particles[k]
                    if _owns(i, j, r0):
                        d = min_image(vec3(x, j) - xi, Lx, Ly)
                        cut = ri + r[j] + skin
                        if d.norm_sqr() < cut * cut:
                            if ti.static(mode != _COUNT):
                                slot = base + cnt
                                if ti.static(mode == _APPEND):
                                    slot = ti.atomic_add(total[0], 1)
                                if slot < cap:
                                    app_owner[slot] = i
                                    app_partner[slot] = j
                            cnt += 1
    return cnt


@ti.kernel
def search_append(n: ti.i32, x: ti.types.ndarray(), r: ti.types.ndarray(), r0: ti.types.ndarray(),
                  r_bound: ti.types.ndarray(), skin: float, Lx: float, Ly: float, zmin: float, cx: float, cy: float,
                  cz: float, nx: ti.i32, ny: ti.i32, nz: ti.i32, cell_start: ti.types.ndarray(),
                  cell_particles: ti.types.ndarray(), cap: ti.i32, total: ti.types.ndarray(),
                  row_count: ti.types.ndarray(), app_owner: ti.types.ndarray(), app_partner: ti.types.ndarray()):
    """One search pass: every owned pair (dist < r_i + r_j + skin) is appended at an atomic slot of
    (app_owner, app_partner) while it fits in ``cap``; row_count[i] = i's pairs, total[0] = all pairs (appended
    or not). The slots' order depends on the threads; :func:`scatter_rows` + :func:`sort_rows` make the rows
    deterministic.

    On SPIR-V backends the pass counts i's pairs, reserves them with one atomic and visits them again to fill the
    slots: an atomic inside these nested data-dependent loops was miscompiled on Vulkan (Taichi 1.7.4, Mesa
    lavapipe 22.3: most pairs were lost; tests/test_dem_neighbours.py), and the rows end the same after the sort."""
    total[0] = 0
    for i in range(n):
        if ti.static(spirv_backend()):
            cnt = _owned_search(i, x, r, r0, r_bound, skin, Lx, Ly, zmin, cx, cy, cz, nx, ny, nz, cell_start,
                                cell_particles, cap, total, app_owner, app_partner, _COUNT, 0)
            base = ti.atomic_add(total[0], cnt)
            _owned_search(i, x, r, r0, r_bound, skin, Lx, Ly, zmin, cx, cy, cz, nx, ny, nz, cell_start,
                          cell_particles, cap, total, app_owner, app_partner, _FILL, base)
            row_count[i] = cnt
        else:
            row_count[i] = _owned_search(i, x, r, r0, r_bound, skin, Lx, Ly, zmin, cx, cy, cz, nx, ny, nz,
                                         cell_start, cell_particles, cap, total, app_owner, app_partner, _APPEND, 0)


@ti.kernel
def scatter_rows(n: ti.i32, npairs: ti.i32, app_owner: ti.types.ndarray(), app_partner: ti.types.ndarray(),
                 row_start: ti.types.ndarray(), row_fill: ti.types.ndarray(), partner: ti.types.ndarray()):
    """Counting sort of the appended pairs by owner into the CSR rows (row order fixed by :func:`sort_rows`)."""
    for i in range(n):
        row_fill[i] = 0
    for k in range(npairs):
        i = app_owner[k]
        partner[row_start[i] + ti.atomic_add(row_fill[i], 1)] = app_partner[k]


@ti.kernel
def sort_rows(n: ti.i32, row_start: ti.types.ndarray(), key: ti.types.ndarray()):
    """Insertion-sort every row of ``key`` (makes row order, hence force sums, deterministic)."""
    for i in range(n):
        a = row_start[i]
        b = row_start[i + 1]
        for k in range(a + 1, b):
            v = key[k]
            m = k - 1
            moving = 1
            while moving != 0:
                moving = 0
                if m >= a:
                    if key[m] > v:
                        key[m + 1] = key[m]
                        m -= 1
                        moving = 1
            key[m + 1] = v


@ti.kernel
def remap_history(n: ti.i32, nh: ti.i32, row_start: ti.types.ndarray(), partner: ti.types.ndarray(),
                  hist: ti.types.ndarray(), old_row_start: ti.types.ndarray(), old_partner: ti.types.ndarray(),
                  old_hist: ti.types.ndarray(), has_old: ti.i32):
    """Copy each pair's contact history (tangential spring, plastic state) from the previous list:
    binary search of the partner in the owner's previous (sorted) row; new pairs start from zero."""
    for i in range(n):
        a = old_row_start[i]
        b = old_row_start[i + 1]
        for p in range(row_start[i], row_start[i + 1]):
            j = partner[p]
            found = -1
            if has_old != 0:
                lo = a
                hi = b - 1
                while lo <= hi:
                    mid = (lo + hi) // 2
                    pj = old_partner[mid]
                    if pj == j:
                        found = mid
                        lo = hi + 1
                    elif pj < j:
                        lo = mid + 1
                    else:
                        hi = mid - 1
            for c in range(nh):
                hist[p, c] = 0.0
            if found >= 0:
                for c in range(nh):
                    hist[p, c] = old_hist[found, c]


@ti.kernel
def set_owner(n: ti.i32, row_start: ti.types.ndarray(), pair_owner: ti.types.ndarray()):
    for i in range(n):
        for p in range(row_start[i], row_start[i + 1]):
            pair_owner[p] = i


@ti.kernel
def count_reverse(n: ti.i32, npairs: ti.i32, partner: ti.types.ndarray(), rev_count: ti.types.ndarray()):
    for i in range(n):
        rev_count[i] = 0
    for p in range(npairs):
        ti.atomic_add(rev_count[partner[p]], 1)


@ti.kernel
def snapshot_positions(n: ti.i32, x: ti.types.ndarray(), r: ti.types.ndarray(), x_build: ti.types.ndarray(),
                       r_build: ti.types.ndarray()):
    for i in range(n):
        for c in ti.static(range(3)):
            x_build[i, c] = x[i, c]
        r_build[i] = r[i]


@ti.kernel
def max_motion(n: ti.i32, x: ti.types.ndarray(), r: ti.types.ndarray(), x_build: ti.types.ndarray(),
               r_build: ti.types.ndarray(), Lx: float, Ly: float, out: ti.types.ndarray()):
    """out[0] = max_i (|x_i − x_i(build)| + (r_i − r_i(build))⁺): the Verlet criterion. Two-level maximum without
    contended atomics: chunk c's maximum in out[1 + c] (one thread per chunk of SCAN_CHUNK particles), then one
    thread over the chunk maxima (max is exact: the same bits in any order)."""
    nch = (n + SCAN_CHUNK - 1) // SCAN_CHUNK
    for c in range(nch):
        acc = 0.0
        for i in range(c * SCAN_CHUNK, ti.min(n, (c + 1) * SCAN_CHUNK)):
            d = min_image(vec3(x, i) - vec3(x_build, i), Lx, Ly)
            acc = ti.max(acc, d.norm() + ti.max(r[i] - r_build[i], 0.0))
        out[1 + c] = acc
    if n >= 0:
        acc = 0.0
        for c in range(nch):
            acc = ti.max(acc, out[1 + c])
        out[0] = acc

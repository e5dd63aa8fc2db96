"""Two-level parallel scans of the neighbour build (dem.neighbours_kernels): exclusive prefix sum, running maximum
over a permutation, and the chunked motion maximum, against numpy at the chunk edges and at a large random size,
on the CPU and (in a child process) on Vulkan."""
import numpy as np
import pytest

from dem.neighbours_kernels import SCAN_CHUNK

C = SCAN_CHUNK
SIZES = (0, 1, C - 1, C, C + 1, 3 * C + 17, 50_000)


def _nd(a, dtype):
    from fva.backend import ti

    a = np.asarray(a)
    nd = ti.ndarray(dtype, shape=a.shape)
    if a.size:
        nd.from_numpy(a)
    return nd


def scan_mismatches(seed: int = 7) -> list:
    """Run the three kernels on every size in SIZES on the current Taichi runtime; returns the (kernel, n) that
    differ from numpy (empty: all equal, exactly)."""
    from fva.backend import ti
    from dem import neighbours_kernels as K

    rng = np.random.default_rng(seed)
    bad = []
    for n in SIZES:
        nch = max(1, -(-n // C))
        # exclusive scan: start[k] = Σ_{m<k} count[m], start[n] = Σ count
        count = rng.integers(0, 40, max(n, 1)).astype(np.int32)
        count[n:] = 0
        start = _nd(np.full(n + 1, -5, np.int32), ti.i32)
        K.exclusive_scan(n, _nd(count, ti.i32), start, _nd(np.zeros(nch, np.int32), ti.i32))
        if not np.array_equal(start.to_numpy(), np.concatenate([[0], np.cumsum(count[:n])]).astype(np.int32)):
            bad.append(("exclusive_scan", n))
        # running maximum in a permuted order: r_bound[order[k]] = max_{m ≤ k} r[order[m]]
        m = max(n, 1)
        order = rng.permutation(m).astype(np.int32)
        r = rng.uniform(1e-6, 2e-5, m)
        rb = _nd(np.zeros(m), ti.f64)
        K.bound_radii(n, _nd(order, ti.i32), _nd(r, ti.f64), rb, _nd(np.zeros(nch), ti.f64))
        want = np.zeros(m)
        want[order[:n]] = np.maximum.accumulate(r[order[:n]])
        if not np.array_equal(rb.to_numpy()[order[:n]], want[order[:n]]):
            bad.append(("bound_radii", n))
        # motion maximum: max_i |x_i − x_i(build)| + (r_i − r_i(build))⁺ (no periodic wrap at these offsets)
        xb = rng.uniform(0.0, 1e-4, (m, 3))
        x = xb + rng.normal(0.0, 1e-7, (m, 3))
        rbld = rng.uniform(1e-6, 2e-5, m)
        rr = rbld + rng.uniform(-1e-8, 1e-8, m)
        out = _nd(np.full(1 + nch, -1.0), ti.f64)
        K.max_motion(n, _nd(x, ti.f64), _nd(rr, ti.f64), _nd(xb, ti.f64), _nd(rbld, ti.f64), 1.0, 1.0, out)
        mot = np.linalg.norm(x - xb, axis=1) + np.maximum(rr - rbld, 0.0)
        want_m = float(mot[:n].max()) if n else 0.0
        if not np.isclose(out.to_numpy()[0], want_m, rtol=1e-12, atol=0.0):
            bad.append(("max_motion", n))
    return bad


def test_two_level_scans_equal_numpy_on_cpu(taichi_runtime):
    assert scan_mismatches() == []


@pytest.mark.gpu
def test_two_level_scans_equal_numpy_on_vulkan():
    from vulkan_child import run_on_vulkan

    got = run_on_vulkan("from tests.test_dem_scan import scan_mismatches\n"
                        "print('SCAN', repr(scan_mismatches()).replace(' ', ''))\n", "SCAN")
    assert got == ["[]"], got


def diagnostics_mismatch(chunk: int = 64) -> list:
    """SK.diagnostics (chunk partials, one-thread combine) on a random owned-pair list of 600 particles — one
    NaN velocity, escaped particles below the bottom wall and above the punch — against numpy; returns
    [(slot, got, want)] where they differ."""
    from fva.backend import ti
    from dem import simulation_kernels as SK
    from tests.test_dem_neighbours import _build, _random_config

    rng = np.random.default_rng(3)
    c, r, L, H = _random_config(rng)
    n, pz = len(r), 0.9 * H
    nl, _, _ = _build(c, r, L, H, 0.4e-6)
    P = nl.pairs_numpy()
    v = rng.normal(0.0, 1e-3, (n, 3))
    c[17, 2] = -2.0 * r[17]                      # below the bottom wall
    c[401, 2] = pz + 2.0 * r[401]                # above the punch
    c[55, 2] = -3.0 * r[55]                      # behind the bottom wall too, but a film (flowed, in contact) ...
    c[300, 2] = pz + 3.0 * r[300]                # ... and one at the punch
    c[90, 2] = -2.5 * r[90]                      # in contact but not flowed: escaped
    ncont = rng.integers(0, 3, n).astype(np.int32)
    eps_p = rng.uniform(0.0, 1.0, n)
    ncont[[17, 401]] = 0
    ncont[[55, 300, 90]] = 2
    eps_p[[55, 300]] = 0.9
    eps_p[90] = 0.1
    v[233, 1] = np.nan
    pw = np.zeros((max(nl.capacity, 1), 12))
    pw[:len(P), 10] = rng.integers(0, 2, len(P))  # contact flags
    blk = _nd(np.full(20, 7.0), ti.f64)
    nch = -(-n // chunk)
    part = _nd(np.zeros((nch, SK.DIAG_COL + SK.N_DIAG)), ti.f64)
    SK.diagnostics(n, _nd(c, ti.f64), _nd(v, ti.f64), _nd(r, ti.f64), _nd(pw, ti.f64),
                   _nd(np.array([pz, 0.0, 0.0]), ti.f64), 1, blk, 3, nl.row_start, nl.partner, float(L[0]),
                   float(L[1]), chunk, part, _nd(ncont, ti.i32), _nd(eps_p, ti.f64))
    got = blk.to_numpy()[3:3 + SK.N_DIAG]
    ok = ~np.isnan(v).any(axis=1)
    film = (ncont > 0) & (eps_p > SK.FILM_PLASTIC_STRAIN)
    esc = ((c[:, 2] < -r) | (c[:, 2] > pz + r)) & ~film
    ii, jj = P[pw[:len(P), 10] > 0].T
    d = c[jj] - c[ii]
    d[:, :2] -= L * np.round(d[:, :2] / L)
    sp = np.linalg.norm(v[ok], axis=1)
    assert esc[17] and esc[401] and esc[90] and not (esc[55] or esc[300]) and esc.sum() < n // 2
    wall = np.maximum((r - c[:, 2]) / r, (c[:, 2] + r - pz) / r)
    wall[film] = np.minimum(wall[film], 2.0)
    want = [1.0, np.max(2.0 * (r[ii] + r[jj] - np.linalg.norm(d, axis=1)) / (r[ii] + r[jj])), esc.sum(), sp.max(),
            np.max(wall), np.nonzero(esc | ~ok)[0].max(),
            np.max(sp / r[ok])]
    return [(k, float(g), float(w)) for k, (g, w) in enumerate(zip(got, want))
            if not np.isclose(g, w, rtol=1e-12, atol=0.0)]


def test_block_diagnostics_equal_numpy_on_cpu(taichi_runtime):
    assert diagnostics_mismatch() == []


@pytest.mark.gpu
def test_block_diagnostics_equal_numpy_on_vulkan():
    from vulkan_child import run_on_vulkan

    got = run_on_vulkan("from tests.test_dem_scan import diagnostics_mismatch\n"
                        "print('DIAG', repr(diagnostics_mismatch()).replace(' ', ''))\n", "DIAG")
    assert got == ["[]"], got

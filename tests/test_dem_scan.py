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

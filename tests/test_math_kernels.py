"""fva.math_kernels: the f64 cube root and logarithm written for SPIR-V backends (no 64-bit pow/log there) are
accurate to a few ulp over the whole f64 range, and on the CPU the dispatching functions stay the native ones
(bitwise what the kernels computed before)."""
import numpy as np
import pytest

from fva import math_kernels as FM
from fva.backend import ti

_ULP = np.finfo(np.float64).eps


def _eval(which, arith, xs):
    x = ti.ndarray(ti.f64, len(xs))
    x.from_numpy(np.asarray(xs, dtype=np.float64))
    out = ti.ndarray(ti.f64, len(xs))
    FM.eval_math_kernel(which, arith, x, out)
    return out.to_numpy()


def _samples(rng):
    tiny = np.array([5e-324, 1e-320, 2.2250738585072014e-308, 1e-300, 1e-45, 1e-38])
    huge = np.array([1e38, 3.5e38, 1e100, 1e300, 1.7976931348623157e308])
    near1 = 1.0 + np.array([-1e-12, -1e-8, 0.0, 1e-15, 1e-8, 0.4142135623730951, 0.5, -0.29])
    si = rng.uniform(1e-18, 1e-12, 300)                     # particle volumes in m³, porosity ratios
    return np.concatenate([tiny, huge, near1, si, 10.0 ** rng.uniform(-300, 300, 300), rng.uniform(1, 200, 100)])


def test_arithmetic_cbrt_matches_numpy_to_few_ulp(taichi_runtime, rng):
    xs = _samples(rng)
    got = _eval(0, 1, xs)
    ref = np.cbrt(xs)
    rel = np.abs(got - ref) / ref
    # ≤ 3 ulp: LLVM may contract the Newton step into FMAs or not, depending on the host CPU (1.5 ulp on one
    # AMD EPYC, 2.15 ulp at x = 6.2e-13 on another); a wrong iteration or seed is off by far more
    assert rel.max() <= 3 * _ULP, (xs[np.argmax(rel)], rel.max() / _ULP)
    assert _eval(0, 1, [0.0])[0] == 0.0 and np.isnan(_eval(0, 1, [-8.0])[0])


def test_arithmetic_log_matches_numpy_to_few_ulp(taichi_runtime, rng):
    xs = _samples(rng)
    got = _eval(1, 1, xs)
    ref = np.log(xs)
    err = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-300)
    big = np.abs(ref) > 1e-3             # relative error away from x = 1; absolute near it (ln x ≈ x − 1)
    assert err[big].max() <= 4 * _ULP, (xs[big][np.argmax(err[big])], err[big].max() / _ULP)
    assert np.abs(got - ref)[~big].max() <= 2 * _ULP
    assert _eval(1, 1, [1.0])[0] == 0.0
    assert _eval(1, 1, [0.0])[0] == -np.inf and np.isnan(_eval(1, 1, [-1.0])[0])


@ti.kernel
def _native(which: ti.template(), xs: ti.types.ndarray(), out: ti.types.ndarray()):
    for i in range(xs.shape[0]):
        if ti.static(which == 0):
            out[i] = xs[i] ** (1.0 / 3.0)
        else:
            out[i] = ti.log(xs[i])


def test_cpu_dispatch_is_the_native_function_bitwise(taichi_runtime, rng):
    xs = _samples(rng)
    x = ti.ndarray(ti.f64, len(xs))
    x.from_numpy(xs)
    for which in (0, 1):
        out = ti.ndarray(ti.f64, len(xs))
        _native(which, x, out)
        assert np.array_equal(_eval(which, 0, xs), out.to_numpy())


@pytest.mark.gpu
def test_spirv_branch_on_vulkan_matches_numpy():
    """On a Vulkan device (child process: one Taichi runtime per process) the functions the kernels call compile
    (no 64-bit Pow/Log in SPIR-V) and stay within a few ulp of numpy."""
    from vulkan_child import run_on_vulkan

    words = run_on_vulkan("from tests.test_math_kernels import _eval, _samples\n"
                          "xs = _samples(np.random.default_rng(7))\n"
                          "xs = xs[xs >= np.finfo(np.float64).tiny]\n"   # GPUs may flush f64 subnormals to zero
                          "e0 = np.max(np.abs(_eval(0, 0, xs) - np.cbrt(xs)) / np.cbrt(xs))\n"
                          "ref = np.log(xs)\n"
                          "e1 = np.max(np.abs(_eval(1, 0, xs) - ref) / np.maximum(np.abs(ref), 1e-3))\n"
                          "print('ERR', e0 / 2.220446049250313e-16, e1 / 2.220446049250313e-16)\n", "ERR")
    ulp_cbrt, ulp_log = map(float, words)
    assert ulp_cbrt <= 2 and ulp_log <= 4, words

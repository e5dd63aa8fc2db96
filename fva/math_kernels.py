"""Float64 cube root and natural logarithm as ``@ti.func`` that also compile for SPIR-V backends (Vulkan).

SPIR-V's GLSL.std.450 instruction set defines ``Pow``, ``Exp``, ``Log`` and the trigonometric functions for
16- and 32-bit floats only (Khronos, *GLSL.std.450 extended instruction set*, rev. 9: "Result Type and the
type of x must be ... 16 or 32-bit floating-point"), so Taichi's Vulkan code generator refuses them on f64
operands. ``Sqrt``, ``Floor``, ``Round``, ``FAbs``, ``FMin``/``FMax`` and the four arithmetic operations are
defined for f64.

The choice is made when the kernel is compiled (``ti.static``): on the LLVM backends (CPU, CUDA) the functions
are the native ``x ** (1/3)`` and ``ti.log(x)`` — the CPU runs stay bitwise what they were — and on a SPIR-V
backend they are computed in f64 from arithmetic and square roots only:

* :func:`cbrt` — an f32 ``pow`` as the first guess (≈ 1e−7 relative), then two Newton steps
  g ← (2g + y/g²)/3 in f64 (quadratic convergence: 1e−7 → 1e−14 → rounding), within a few ulp of the
  correctly rounded result. The argument is first scaled by exact powers of 2⁹⁶ into the f32 range.
* :func:`log` — range reduction x = 2ᵏ·m with m ∈ (√½, √2] by exact binary scalings, then
  ln m = 2 atanh(s) = 2(s + s³/3 + s⁵/5 + …), s = (m−1)/(m+1), |s| ≤ 0.1716 (14 terms reach 1e−17), and
  ln x = k·ln 2 + ln m with ln 2 split in a high and a low part (Cody & Waite 1980, *Software Manual for
  the Elementary Functions*, ch. 5). A few ulp.

Both are checked against numpy on the CPU in tests (the SPIR-V branch forced) and on Vulkan when one exists (Mesa's
lavapipe: ≤ 1.5 ulp for the cube root, ≤ 1 ulp for the logarithm). A device that flushes f64 subnormals to zero
(lavapipe does) sees x < 2.2e−308 as 0; the DEM's arguments (volumes in m³, porosity ratios) are far from that.
"""

from fva.backend import spirv_backend, ti

_SCALE_UP = 2.0 ** 96       # exact powers of two: scaling by them changes only the exponent
_SCALE_DOWN = 2.0 ** -96
_CBRT_UP = 2.0 ** 32        # cbrt(2^96)
_CBRT_DOWN = 2.0 ** -32
_LN2_HI = 6.93147180369123816490e-01    # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with a short mantissa (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
_LOG_TERMS = 14


@ti.func
def cbrt_f64(y):
    """Cube root y^{1/3} (y ≥ 0; NaN for y < 0 as ``pow``) from f64 arithmetic and one f32 ``pow``."""
    z = ti.cast(y, ti.f64)
    out = ti.cast(0.0, ti.f64)
    if z > 0.0:
        s = ti.cast(1.0, ti.f64)
        for _ in range(12):                       # at most 12 scalings cover the f64 exponent range
            if z < _SCALE_DOWN:
                z *= _SCALE_UP
                s *= _CBRT_DOWN
            elif z > _SCALE_UP:
                z *= _SCALE_DOWN
                s *= _CBRT_UP
        g = ti.cast(ti.pow(ti.cast(z, ti.f32), ti.cast(1.0 / 3.0, ti.f32)), ti.f64)
        for _ in range(2):
            g = (2.0 * g + z / (g * g)) / 3.0
        out = g * s
    elif z < 0.0:
        out = ti.sqrt(z)                          # NaN, as pow(negative, 1/3)
    return out


@ti.func
def log_f64(x):
    """Natural logarithm (x > 0; −inf for 0, NaN below) from f64 arithmetic only (see the module docstring)."""
    m = ti.cast(x, ti.f64)
    out = ti.cast(0.0, ti.f64)
    if m > 0.0:
        k = 0
        for e in ti.static((512, 256, 128, 64, 32, 16, 8, 4, 2, 1)):   # m ← m·2^−k, m ∈ [1, 2)
            if m >= 2.0 ** e:
                m *= 2.0 ** -e
                k += e
        for e in ti.static((512, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)):   # subnormals need 2^1074
            if m < 2.0 ** (1 - e):
                m *= 2.0 ** e
                k -= e
        if m < 1.0:
            m *= 2.0
            k -= 1
        if m > _SQRT2:
            m *= 0.5
            k += 1
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        acc = ti.cast(1.0 / (2 * _LOG_TERMS - 1), ti.f64)
        for t in range(_LOG_TERMS - 1):               # Horner in s²: Σ s^{2j}/(2j+1)
            acc = acc * s2 + 1.0 / (2.0 * (_LOG_TERMS - 2 - t) + 1.0)
        kf = ti.cast(k, ti.f64)
        out = kf * _LN2_HI + (2.0 * s * acc + kf * _LN2_LO)
    elif m == 0.0:
        out = -ti.math.inf
    else:
        out = ti.sqrt(m)                              # NaN
    return out


@ti.func
def _native_cbrt(y):
    return y ** (1.0 / 3.0)


@ti.func
def _by_backend(spirv_f: ti.template(), native_f: ti.template(), x):
    """``native_f(x)`` on LLVM backends (bitwise as before), ``spirv_f(x)`` on SPIR-V backends."""
    out = x
    if ti.static(spirv_backend()):
        out = spirv_f(x)
    else:
        out = native_f(x)
    return out


@ti.func
def cbrt(y):
    """y^{1/3}: native ``pow`` on LLVM backends, :func:`cbrt_f64` on SPIR-V backends."""
    return _by_backend(cbrt_f64, _native_cbrt, y)


@ti.func
def log(x):
    """ln x: native ``ti.log`` on LLVM backends, :func:`log_f64` on SPIR-V backends."""
    return _by_backend(log_f64, ti.log, x)


@ti.kernel
def eval_math_kernel(which: ti.template(), arith: ti.template(), xs: ti.types.ndarray(), out: ti.types.ndarray()):
    """out[i] = f(xs[i]) for f = cbrt (which = 0) or log (1); ``arith`` = 1 forces the SPIR-V branch (tests)."""
    for i in range(xs.shape[0]):
        if ti.static(which == 0):
            if ti.static(arith):
                out[i] = cbrt_f64(xs[i])
            else:
                out[i] = cbrt(xs[i])
        else:
            if ti.static(arith):
                out[i] = log_f64(xs[i])
            else:
                out[i] = log(xs[i])

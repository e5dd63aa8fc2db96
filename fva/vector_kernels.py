"""Whole-array vector kernels of the conduction solve's CG recurrences (only ``@ti.kernel``).

They run over the flat fine arrays of :mod:`fva.fine_kernels`, the sentinel row included (it stays 0: every
update is a linear combination of zeros there). Storage in ``dtype`` (float32 by default), the potential ``x``
and every reduction in float64.
"""

from types import SimpleNamespace

from fva.backend import ti

_CACHE: dict = {}


def get_vector_kernels(dtype_name: str = "f64") -> SimpleNamespace:
    """CG vector kernels for storage dtype ``"f64"`` or ``"f32"`` (built once per process and dtype)."""
    if dtype_name in _CACHE:
        return _CACHE[dtype_name]
    dt = ti.f64 if dtype_name == "f64" else ti.f32
    f64 = ti.f64
    F1 = ti.types.ndarray(dtype=dt, ndim=1)
    X1 = ti.types.ndarray(dtype=f64, ndim=1)

    @ti.kernel
    def cg_update(x: X1, r: F1, p: F1, ap: F1, alpha: f64) -> f64:
        """x += αp, r −= αAp; returns r·r."""
        s = ti.cast(0.0, f64)
        for q in range(r.shape[0]):
            x[q] = x[q] + alpha * ti.cast(p[q], f64)
            rn = ti.cast(r[q], f64) - alpha * ti.cast(ap[q], f64)
            r[q] = ti.cast(rn, dt)
            s += rn * rn
        return s

    @ti.kernel
    def cg_update_jacobi(x: X1, r: F1, p: F1, ap: F1, dinv: F1, z: F1, alpha: f64) -> ti.types.vector(2, f64):
        """x += αp, r −= αAp, z = r/diag; returns (r·r, r·z) (fused Jacobi-PCG step)."""
        s = ti.Vector([0.0, 0.0], dt=f64)
        for q in range(r.shape[0]):
            x[q] = x[q] + alpha * ti.cast(p[q], f64)
            rn = ti.cast(r[q], f64) - alpha * ti.cast(ap[q], f64)
            r[q] = ti.cast(rn, dt)
            zn = rn * ti.cast(dinv[q], f64)
            z[q] = ti.cast(zn, dt)
            s += ti.Vector([rn * rn, rn * zn], dt=f64)
        return s

    @ti.kernel
    def p_update(p: F1, z: F1, beta: f64):
        """p = z + βp."""
        for q in range(p.shape[0]):
            p[q] = ti.cast(ti.cast(z[q], f64) + beta * ti.cast(p[q], f64), dt)

    @ti.kernel
    def dot(a: F1, b: F1) -> f64:
        s = ti.cast(0.0, f64)
        for q in range(a.shape[0]):
            s += ti.cast(a[q], f64) * ti.cast(b[q], f64)
        return s

    @ti.kernel
    def copy(src: F1, dst: F1):
        for q in range(src.shape[0]):
            dst[q] = src[q]

    @ti.kernel
    def fill1(a: F1, v: f64):
        for q in range(a.shape[0]):
            a[q] = ti.cast(v, dt)

    ns = SimpleNamespace(cg_update=cg_update, cg_update_jacobi=cg_update_jacobi, p_update=p_update, dot=dot,
                         copy=copy, fill1=fill1)
    _CACHE[dtype_name] = ns
    return ns

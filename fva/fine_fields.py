"""Currents and field maps of a solved fine level (only ``@ti.kernel`` / ``@ti.func``; layout of
:mod:`fva.fine_kernels`: flat arrays, ids or face masks ``sig``, table ``T`` in float64).

The current through a face is g·(x_a − x_b) with g = σ_face·c (c = d1·d2/d0 etc.); an electrode face is half a
voxel, g = 2σ·c0, at 1 V below the first plane and 0 V above the last (where the electrode mask ``em`` is 1).
"""

from types import SimpleNamespace

from fva.backend import ti
from fva.fine_kernels import face_sigma, own_sigma

_CACHE: dict = {}


def get_field_kernels(mask: bool = False) -> SimpleNamespace:
    """Current and field kernels for id tables (``mask`` False) or face masks (True: :mod:`fva.face_mask`)."""
    MASK = bool(mask)
    if MASK in _CACHE:
        return _CACHE[MASK]
    f64 = ti.f64
    U1 = ti.types.ndarray(dtype=ti.u8, ndim=1)
    X1 = ti.types.ndarray(dtype=f64, ndim=1)
    D1 = ti.types.ndarray(dtype=f64, ndim=1)
    I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
    D2 = ti.types.ndarray(dtype=f64, ndim=2)
    CND = ti.types.vector(3, f64)
    GEO = ti.types.vector(5, ti.i32)

    @ti.func
    def face_I(sig: ti.template(), T: ti.template(), em: ti.template(), x: ti.template(), i, j, k, ax: ti.template(),
               G, c):
        """Current (A per volt) through the face of cell (i, j, k) towards +1 along array axis ``ax``. Axis 0:
        the face below cell i (i = 0 the inlet at 1 V, i = n0 the outlet at 0 V); sides: the face to the next
        cell, wrapping when periodic, 0 at an insulating side."""
        n0, n1, n2 = G[0], G[1], G[2]
        out = ti.cast(0.0, f64)
        if ti.static(ax == 0):
            if i == 0:
                q = j * n2 + k
                out = 2.0 * c * own_sigma(sig, T, q, MASK) * (1.0 - x[q])
            elif i == n0:
                q = ((n0 - 1) * n1 + j) * n2 + k
                out = 2.0 * c * own_sigma(sig, T, q, MASK) * ti.cast(em[j, k], f64) * x[q]
            else:
                qa, qb = ((i - 1) * n1 + j) * n2 + k, (i * n1 + j) * n2 + k
                out = c * face_sigma(sig, T, qa, qb, 0, MASK) * (x[qa] - x[qb])
        else:
            nn = G[ax]
            idx = ti.Vector([i, j, k])
            idx[ax] += 1
            if idx[ax] == nn:
                idx[ax] = 0 if (G[ti.static(2 + ax)] != 0 and nn > 1) else -1
            if idx[ax] >= 0:
                qa, qb = (i * n1 + j) * n2 + k, (idx[0] * n1 + idx[1]) * n2 + idx[2]
                out = c * face_sigma(sig, T, qa, qb, ax, MASK) * (x[qa] - x[qb])
        return out

    @ti.kernel
    def fields(sig: U1, T: D1, em: I2, x: X1, pot: ti.types.ndarray(dtype=ti.f32, ndim=3),
               jd: ti.types.ndarray(dtype=ti.f32, ndim=4), C: CND, area: CND, G: GEO):
        """Potential (NaN outside the conducting paths) and cell current density (A/m²: the mean of the two
        face currents per axis over the face area), float32 for the field files."""
        n0, n1, n2 = G[0], G[1], G[2]
        for i, j in ti.ndrange(n0, n1):
            for k in range(n2):
                q = (i * n1 + j) * n2 + k
                nan = ti.cast(0.0, ti.f32) / ti.cast(0.0, ti.f32)
                pot[i, j, k] = ti.cast(x[q], ti.f32) if sig[q] != 0 else nan
                jm = j - 1 if j > 0 else n1 - 1
                km = k - 1 if k > 0 else n2 - 1
                IA = face_I(sig, T, em, x, i, j, k, 0, G, C[0]) + face_I(sig, T, em, x, i + 1, j, k, 0, G, C[0])
                IB = face_I(sig, T, em, x, i, j, k, 1, G, C[1]) + face_I(sig, T, em, x, i, jm, k, 1, G, C[1])
                IC = face_I(sig, T, em, x, i, j, k, 2, G, C[2]) + face_I(sig, T, em, x, i, j, km, 2, G, C[2])
                jd[i, j, k, 0] = ti.cast(0.5 * IA / area[0], ti.f32)
                jd[i, j, k, 1] = ti.cast(0.5 * IB / area[1], ti.f32)
                jd[i, j, k, 2] = ti.cast(0.5 * IC / area[2], ti.f32)

    @ti.kernel
    def outlet_current(sig: U1, T: D1, em: I2, x: X1, jout: D2, c0: f64, a0: f64, G: GEO):
        """Normal current density (A/m²) through every cell of the outlet face (0 where insulating)."""
        for j, k in ti.ndrange(G[1], G[2]):
            jout[j, k] = face_I(sig, T, em, x, G[0], j, k, 0, G, c0) / a0

    @ti.kernel
    def plane_flux(sig: U1, T: D1, em: I2, x: X1, out: D2, c0: f64, G: GEO):
        """out[p, j] = current (A per volt) through face plane p summed over k."""
        for p, j in ti.ndrange(G[0] + 1, G[1]):
            s = ti.cast(0.0, f64)
            for k in range(G[2]):
                s += face_I(sig, T, em, x, p, j, k, 0, G, c0)
            out[p, j] = s

    ns = SimpleNamespace(fields=fields, outlet_current=outlet_current, plane_flux=plane_flux)
    _CACHE[MASK] = ns
    return ns

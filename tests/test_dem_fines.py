"""Fines in a wide size distribution: a small sphere flattened between two large ones (a film), and the
size-dependent mass scaling that keeps the fines from setting the time step."""

import numpy as np
import pytest

from fva.types import Packing
from dem.types import Die, Material, SimParams, Stage

R_BIG, R_FINE, L = 16e-6, 1e-6, 64e-6      # 32 µm grains, a 2 µm fine (size ratio 16), die 2·d_max wide


def _material():
    # the study scenarios' calibrated pore-collapse material (p_y 0.42 GPa, E 22 GPa)
    return Material(1900.0, 22e9, 0.3, yield_stress_Pa=420e6, friction=0.3, wall_friction=0.1, restitution=0.5)


def _params(**kw):
    base = dict(mass_scaling=1e4, dt_safety=0.05, bulk_stiffness_fraction=1.0, pore_collapse_pressure_Pa=1.2e9,
                history_every=200)
    base.update(kw)
    return SimParams(**base)


def _column():
    """Two 32 µm grains stacked on the die axis with a 2 µm fine between them, touching."""
    z0 = R_BIG
    c = np.array([[L / 2, L / 2, z0], [L / 2, L / 2, z0 + R_BIG + R_FINE],
                  [L / 2, L / 2, z0 + 2 * R_BIG + 2 * R_FINE]])
    r = np.array([R_BIG, R_FINE, R_BIG])
    top = float(c[2, 2] + R_BIG)
    return Packing(c, r, np.array([L, L, top]))


def _press(params, target_Pa=10e6, pk=None):
    """Load ``pk`` (default :func:`_column`) to ``target_Pa``; returns (result, the engine's Simulation)."""
    from dem.simulation import Simulation, run_compaction

    pk = _column() if pk is None else pk
    holder = {}
    init = Simulation.__init__

    def keep(self, *a, **k):
        init(self, *a, **k)
        holder["sim"] = self
    Simulation.__init__ = keep
    try:
        res = run_compaction(pk, _material(), Die(L, L, pk.box_m[2]),
                             [Stage("load", target_Pa, punch_speed_m_per_s=0.05)], params)
    finally:
        Simulation.__init__ = init
    return res, holder["sim"]


def test_a_fine_squeezed_between_two_grains_becomes_a_film(taichi_runtime):
    """The reproducer of the push-through (issue #17): at 10 MPa on this 64 µm die the two grains carry 0.04 N,
    while the fine's contacts carry at most ≈ (2 p_y + p_bulk) π r_fine² ≈ 0.01 N: the grains close on it until
    their own contact carries the load, and the fine ends inside their lens, overlapping each by more than its
    diameter (physically: flattened to a film; by volume conservation F = H V0/t, ~0.1 µm thick here). Before
    the fix the run stopped on the overlap check ("the smaller sphere lies entirely inside its partner") and the
    fine's plastic volumetric strain grew past 1 (it "lost" more than its own volume to the pores)."""
    res, sim = _press(_params())
    assert res.history["p_top_Pa"][-1] >= 10e6
    x = sim.x.to_numpy()
    assert np.all(np.isfinite(x))
    t = sim.pair_table()
    ov = t["overlap_fraction"]                               # δ / min(r_i, r_j)
    fine_pairs = (t["owner"] == 1) | (t["partner"] == 1)
    assert np.count_nonzero(fine_pairs & (ov > 0)) == 2
    assert np.all(ov[fine_pairs] >= 2.0)                     # δ ≥ the fine's diameter on both sides: a film
    big = ~fine_pairs
    assert np.all(ov[big] > 0)                               # the grains carry the load on their own contact
    assert x[0, 2] < x[1, 2] < x[2, 2]                       # the fine stays between them (no flip)
    eps_v, eps_p = sim.eps_v.to_numpy(), sim.eps_p.to_numpy()
    assert eps_p[1] <= 1.0 and eps_v[1] + eps_p[1] <= 1.0 + 1e-12   # never more than its own volume
    assert eps_p[1] > 0.5                                    # its volume went (plastically) to the pores


def test_size_dependent_mass_scaling_sets_dt_from_the_scaling_diameter(taichi_runtime):
    """ρ_i = ρ_s (d_ms/d_i)² below d_ms: each fine's Rayleigh time π r √(ρ_i/G)/(0.1631ν + 0.8766) equals a d_ms
    particle's, and dt follows from d_ms instead of the smallest particle."""
    from dem.contact import rayleigh_time
    from dem.simulation import Simulation

    mat = _material()
    G = mat.youngs_modulus_Pa / (2 * (1 + mat.poisson_ratio))
    pk = _column()
    d_ms = 8e-6
    plain = Simulation(pk, mat, None, _params(), punch_z=pk.box_m[2])
    scaled = Simulation(pk, mat, None, _params(mass_scaling_min_diameter_m=d_ms), punch_z=pk.box_m[2])
    rho_s = mat.density_kg_m3 * 1e4
    np.testing.assert_allclose(scaled.m_np / plain.m_np, [1.0, (d_ms / 2 / R_FINE) ** 2, 1.0], rtol=1e-12)
    t_fine = rayleigh_time(R_FINE, rho_s * (d_ms / 2 / R_FINE) ** 2, G, mat.poisson_ratio)
    assert t_fine == pytest.approx(rayleigh_time(d_ms / 2, rho_s, G, mat.poisson_ratio), rel=1e-12)
    assert scaled.dt == pytest.approx(0.05 * t_fine, rel=1e-12)
    assert scaled.dt / plain.dt == pytest.approx(d_ms / 2 / R_FINE, rel=1e-12)
    # a scaling diameter below every particle changes nothing
    same = Simulation(pk, mat, None, _params(mass_scaling_min_diameter_m=1e-6), punch_z=pk.box_m[2])
    assert same.dt == plain.dt and np.array_equal(same.m_np, plain.m_np)


def _fines_bed(seed=3):
    """A 4 × 4 × 4 lattice of 9–9.6 µm grains (10 µm spacing) with a 2–3 µm fine in every other interstice."""
    rng = np.random.default_rng(seed)
    a = 10e-6
    g = np.arange(4) * a + a / 2
    X, Y, Z = np.meshgrid(g, g, g, indexing="ij")
    big = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()]) + rng.uniform(-0.02 * a, 0.02 * a, (64, 3))
    rb = rng.uniform(0.45 * a, 0.48 * a, 64)
    h = np.arange(3) * a + a
    X, Y, Z = np.meshgrid(h, h, h, indexing="ij")
    fine = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])[::2]
    rf = rng.uniform(1.0e-6, 1.5e-6, len(fine))
    return Packing(np.vstack([big, fine]), np.concatenate([rb, rf]), np.array([4 * a, 4 * a, 4 * a]))


def test_size_dependent_mass_scaling_keeps_a_quasi_static_compaction(taichi_runtime):
    """The same bed of grains and fines pressed to 0.2 GPa with and without size-dependent mass scaling (d_ms =
    the grains' size, 4× fewer steps): the same density within 1 % (the plain run alone moves by 1.3 % between
    0.03 and 0.1 m/s; at 0.1 m/s, I ≈ 0.03, the two differ by 2 %: not quasi-static), inertial number < 0.01."""
    from dem.simulation import run_compaction

    pk = _fines_bed()
    prot = [Stage("load", 0.2e9, punch_speed_m_per_s=0.03)]
    out = {}
    for name, d_ms in (("plain", None), ("scaled", 8e-6)):
        res = run_compaction(pk, _material(), Die(40e-6, 40e-6, 40e-6), prot,
                             _params(mass_scaling_min_diameter_m=d_ms))
        h = res.history
        at = [float(np.interp(c, h["p_top_Pa"], h["relative_density"])) for c in (0.05e9, 0.1e9, 0.2e9)]
        late = h["p_top_Pa"] > 0.05e9
        out[name] = dict(rho=np.array(at), steps=res.info["n_steps"], I=float(np.nanmax(h["inertial_number"][late])),
                         ke=float(np.nanmax(h["ke_ratio"][late])))
    assert out["scaled"]["steps"] < 0.4 * out["plain"]["steps"]
    np.testing.assert_allclose(out["scaled"]["rho"], out["plain"]["rho"], rtol=1e-2)
    for o in out.values():
        assert o["I"] < 1e-2 and o["ke"] < 0.1


def test_a_fine_pressed_into_the_punch_face_is_a_film_not_an_escape(taichi_runtime):
    """A 2 µm fine between a 32 µm grain and the bottom wall, pressed to 40 MPa (the wall analogue of the film
    above): the fine is flattened into the grain's wall lens — its centre ends more than its radius behind the
    wall plane, inside the grain's own wall overlap — and the run goes on. Before, the check counted it as an
    escape (the full-size study runs with the fines stopped at 0.8 and 1.2 GPa on one such fine, ε_p 0.98)."""
    c = np.array([[L / 2, L / 2, R_FINE], [L / 2, L / 2, 2 * R_FINE + R_BIG],
                  [L / 2, L / 2, 2 * R_FINE + 3 * R_BIG]])
    pk = Packing(c, np.array([R_FINE, R_BIG, R_BIG]), np.array([L, L, float(c[2, 2] + R_BIG)]))
    res, sim = _press(_params(), 40e6, pk)
    assert res.history["p_top_Pa"][-1] >= 40e6
    x, r = sim.x.to_numpy(), sim.r.to_numpy()
    assert np.all(np.isfinite(x))
    assert x[0, 2] < -r[0]                                   # behind the wall plane by more than its radius ...
    assert x[1, 2] - r[1] < x[0, 2]                          # ... but inside the grain's wall lens
    assert sim.ncont.to_numpy()[0] >= 1                      # still in contact with the grain
    assert sim.eps_p.to_numpy()[0] > 0.5                     # its volume went (plastically) to the pores

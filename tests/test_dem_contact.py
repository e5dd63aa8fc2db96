"""Contact laws: analytic Hertz / Thornton–Ning checks through the engine's own Taichi code."""
import math

import numpy as np
import pytest

from fva.types import Packing
from dem.contact import (damping_beta, effective_modulus, effective_shear_modulus, hertz_contact_time,
                         hertz_force, hertz_max_overlap, normal_force_curve, rayleigh_time, tn_force,
                         tn_unloading, yield_overlap)
from dem.types import Material, SimParams

R_P = 5e-6
E_MOD = 1e9
NU = 0.3
RHO = 2000.0


def _pair(material, v_rel, dt_s, gap=0.2e-6):
    """Two equal spheres approaching head-on along z in a wide periodic box, no punch."""
    from dem.simulation import Simulation

    L = 100e-6
    z1 = 30e-6
    c = np.array([[50e-6, 50e-6, z1], [50e-6, 50e-6, z1 + 2 * R_P + gap]])
    pk = Packing(c, np.array([R_P, R_P]), np.array([L, L, 100e-6]))
    v = np.array([[0, 0, v_rel / 2], [0, 0, -v_rel / 2]])
    params = SimParams(damping=0.0, dt_s=dt_s, volume_correction=False)
    return Simulation(pk, material, None, params, velocities=v, top_wall=False)


def _collide(material, v_rel, n_per_contact=400):
    m = 4 / 3 * math.pi * R_P ** 3 * RHO
    Es = effective_modulus(E_MOD, NU)
    tc = hertz_contact_time(m / 2, R_P / 2, Es, v_rel)
    dt = tc / n_per_contact
    gap = 0.25 * v_rel * tc          # closes in a quarter of the contact time
    sim = _pair(material, v_rel, dt, gap=gap)
    deltas, forces, steps_in = [], [], 0
    for _ in range(int(4 * n_per_contact)):
        sim.advance(1)
        t = sim.pair_table()
        ov = float(t["overlap_fraction"][0]) * R_P if t["owner"].size else -1.0
        if ov > 0:
            steps_in += 1
            deltas.append(ov)
            forces.append(float(np.linalg.norm(t["force"][0])))
        elif steps_in:
            break
    v = sim.state()["v"][:, 2]
    return dict(dt=dt, tc=tc, steps_in=steps_in, delta=np.array(deltas), force=np.array(forces),
                v_after=v[1] - v[0], m=m, Es=Es)


@pytest.mark.parametrize("v_rel", [0.5, 2.0])
def test_hertz_collision_force_and_duration(taichi_runtime, v_rel):
    mat = Material(RHO, E_MOD, NU, friction=0.3, restitution=1.0, contact_model="hertz_mindlin")
    res = _collide(mat, v_rel)
    # force vs overlap: 4/3 E* sqrt(R*) delta^1.5 (elastic, undamped)
    ref = hertz_force(res["delta"], R_P / 2, res["Es"])
    np.testing.assert_allclose(res["force"], ref, rtol=1e-9)
    # max overlap vs analytic
    dmax = hertz_max_overlap(res["m"] / 2, R_P / 2, res["Es"], v_rel)
    assert abs(res["delta"].max() / dmax - 1) < 0.01
    # contact duration within 2 % of the analytic Hertz time
    t_sim = res["steps_in"] * res["dt"]
    assert abs(t_sim / res["tc"] - 1) < 0.02, (t_sim, res["tc"])
    # elastic: rebound speed equals impact speed
    assert abs(res["v_after"] / v_rel - 1) < 1e-3


@pytest.mark.parametrize("e", [0.5, 0.8])
def test_restitution_matches_request(taichi_runtime, e):
    mat = Material(RHO, E_MOD, NU, friction=0.3, restitution=e, contact_model="hertz_mindlin")
    res = _collide(mat, 1.0, n_per_contact=200)
    ratio = res["v_after"] / 1.0
    assert abs(ratio / e - 1) < 0.02, (ratio, e)


def test_damping_beta_formula():
    assert damping_beta(1.0) == 0.0
    e = 0.5
    assert damping_beta(e) == pytest.approx(math.log(e) / math.sqrt(math.log(e) ** 2 + math.pi ** 2))
    with pytest.raises(ValueError):
        damping_beta(0.0)


def test_effective_moduli_and_rayleigh():
    E, nu = 20e9, 0.3
    assert effective_modulus(E, nu) == pytest.approx(E / (2 * (1 - nu ** 2)))
    assert effective_modulus(E, nu, math.inf) == pytest.approx(E / (1 - nu ** 2))
    G = E / (2 * (1 + nu))
    assert effective_shear_modulus(E, nu) == pytest.approx(G / (2 * (2 - nu)))
    tR = rayleigh_time(1e-6, 2000.0, G, nu)
    assert tR == pytest.approx(math.pi * 1e-6 * math.sqrt(2000 / G) / (0.1631 * nu + 0.8766))


def test_thornton_ning_loading_unloading(taichi_runtime):
    R, Es, py = 2.5e-6, effective_modulus(20e9, 0.3), 300e6
    dy = yield_overlap(R, Es, py)
    assert dy == pytest.approx((math.pi * py / (2 * Es)) ** 2 * R)
    dmax = 40 * dy
    load = np.linspace(0, dmax, 401)
    unload = np.linspace(dmax, 0.2 * dmax, 401)[1:]   # below delta_p, still overlapping
    reload = np.linspace(0, 1.2 * dmax, 481)[1:]
    path = np.concatenate([load, unload, reload])
    out = normal_force_curve("thornton_ning", path, R, Es, py)
    F = out[:, 0]
    # force at yield = Hertz force at delta_y
    Fy = 4 / 3 * Es * math.sqrt(R) * dy ** 1.5
    k_y = int(np.searchsorted(load, dy))
    np.testing.assert_allclose(F[:k_y], hertz_force(load[:k_y], R, Es), rtol=1e-12)
    Fy_num = normal_force_curve("thornton_ning", np.array([dy]), R, Es, py)[0, 0]
    assert Fy_num == pytest.approx(Fy, rel=1e-12)
    # plastic loading slope pi p_y R*
    sl = np.diff(F[k_y + 5:401]) / np.diff(load[k_y + 5:401])
    np.testing.assert_allclose(sl, math.pi * py * R, rtol=1e-9)
    np.testing.assert_allclose(F[:401], tn_force(load, R, Es, py), rtol=1e-12)
    # unloading: elastic Hertz with R_p*, residual overlap delta_p
    Fmax, Rp, dp = tn_unloading(dmax, R, Es, py)
    assert out[400, 2] == pytest.approx(dmax)
    assert out[401, 3] == pytest.approx(dp, rel=1e-12)
    assert out[401, 4] == pytest.approx(Rp, rel=1e-12)
    Fu = F[401:801]
    ref_u = 4 / 3 * Es * math.sqrt(Rp) * np.maximum(unload - dp, 0) ** 1.5
    np.testing.assert_allclose(Fu, ref_u, rtol=1e-9, atol=1e-12 * Fmax)
    # force vanishes at the residual overlap, which is a sizeable fraction of dmax for 40 delta_y
    zero = unload[np.argmax(Fu <= 0)]
    assert abs(zero - dp) <= (unload[0] - unload[1]) + 1e-18
    assert 0.5 * dmax < dp < dmax
    # unloading is stiffer than loading and continuous at dmax
    assert F[400] == pytest.approx(Fmax, rel=1e-12)
    assert 4 / 3 * Es * math.sqrt(Rp) * (dmax - dp) ** 1.5 == pytest.approx(Fmax, rel=1e-12)
    assert Rp > R
    # re-loading: elastic back up to dmax, then plastic line again
    Fr = F[801:]
    k_back = np.searchsorted(reload, dmax)
    ref_r = 4 / 3 * Es * math.sqrt(Rp) * np.maximum(reload[:k_back] - dp, 0) ** 1.5
    np.testing.assert_allclose(Fr[:k_back], ref_r, rtol=1e-9, atol=1e-12 * Fmax)
    np.testing.assert_allclose(Fr[k_back + 1:], tn_force(reload[k_back + 1:], R, Es, py), rtol=1e-9)
    # full separation (delta <= 0) resets the plastic state: a new contact starts on Hertz again
    sep = normal_force_curve("thornton_ning", np.array([dmax, 0.0, 0.5 * dy]), R, Es, py)
    assert sep[2, 0] == pytest.approx(float(hertz_force(0.5 * dy, R, Es)), rel=1e-12)


def test_hertz_law_kernel_matches_formula(taichi_runtime):
    d = np.linspace(0, 1e-7, 50)
    out = normal_force_curve("hertz_mindlin", d, 3e-6, 1e10)
    np.testing.assert_allclose(out[:, 0], hertz_force(d, 3e-6, 1e10), rtol=1e-12)
    np.testing.assert_allclose(out[1:, 1], 2 * 1e10 * np.sqrt(3e-6 * d[1:]), rtol=1e-12)   # stiffness
    np.testing.assert_allclose(out[:, 5], 0.4 * out[:, 0] * d, rtol=1e-12)                  # energy


def test_flattened_contact_bond_flat_punch_pull_off(taichi_runtime):
    """A flattened Thornton–Ning contact opened past δ_p pulls back as a bonded flat punch of radius a_p
    (F = −2E* a_p (δ_p − δ)) up to Kendall's pull-off √(8π E* Δγ a_p³), then breaks (F = 0); Δγ = 0 is the plain
    law, and an unflattened (elastic) contact never bonds."""
    def bonded(path, gam):
        """(F, S, F_c) of the Thornton–Ning law with bonding along ``path``."""
        return normal_force_curve("thornton_ning", path, R, Es, py, gam)[:, [0, 1, 6]]

    R, Es, py, gam = 2.5e-6, effective_modulus(20e9, 0.3), 300e6, 0.5
    dmax = 40 * yield_overlap(R, Es, py)
    _, Rp, dp = tn_unloading(dmax, R, Es, py)
    ap = math.sqrt(Rp * (dmax - dp))
    kb, Fc = 2 * Es * ap, math.sqrt(8 * math.pi * Es * gam * ap ** 3)
    open_c = Fc / kb                                         # opening at pull-off (tens of nm)
    assert 1e-9 < open_c < 1e-7
    seps = np.array([0.25, 0.5, 0.99, 1.01, 2.0]) * open_c
    path = np.concatenate([np.linspace(0, dmax, 201), dp - seps])
    out = bonded(path, gam)
    np.testing.assert_allclose(out[:201, 0], tn_force(path[:201], R, Es, py), rtol=1e-9)   # loading unchanged
    np.testing.assert_allclose(out[201:204, 0], -kb * seps[:3], rtol=1e-9)                # bonded, in tension
    np.testing.assert_allclose(out[201:204, 2], Fc, rtol=1e-12)                            # cohesion while bonded
    assert np.all(out[204:, :] == 0.0)                                                     # broken past F_c
    plain = bonded(path, 0.0)
    assert np.all(plain[201:, 0] == 0.0) and np.all(plain[:, 2] == 0.0)
    d_el = 0.5 * yield_overlap(R, Es, py)
    elastic = bonded(np.array([d_el, 0.5 * d_el, 1e-3 * d_el]), gam)
    assert np.all(elastic[:, 0] >= 0.0) and np.all(elastic[:, 2] == 0.0)

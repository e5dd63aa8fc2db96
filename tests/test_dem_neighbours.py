"""Verlet list: equals brute force (wide size ratio, periodic faces), grows, carries contact history."""
import numpy as np
import pytest

from fva.types import Packing
from dem.neighbours import N_HIST, NeighbourList, brute_force_pairs
from dem.types import Material, SimParams


def _random_config(rng, n=600, L=(120e-6, 90e-6), H=150e-6, rmin=0.5e-6, rmax=10e-6):
    # wide size ratio (d_max/d_min = 20), log-uniform radii, overlaps allowed: a pure geometry test
    r = np.exp(rng.uniform(np.log(rmin), np.log(rmax), n))
    c = np.column_stack([rng.uniform(0, L[0], n), rng.uniform(0, L[1], n), rng.uniform(0, H, n)])
    return c, r, np.array(L), H


def _build(c, r, L, H, skin, capacity=None):
    from fva.backend import ti

    n = len(r)
    x = ti.ndarray(ti.f64, (n, 3))
    x.from_numpy(c)
    rr = ti.ndarray(ti.f64, n)
    rr.from_numpy(r)
    nl = NeighbourList(n, L, (0.0, H), r, skin, capacity=capacity)
    nl.build(x, rr, rr)
    return nl, x, rr


def _pairset(nl):
    P = nl.pairs_numpy()
    s = set((int(min(a, b)), int(max(a, b))) for a, b in P)
    assert len(s) == len(P), "a pair is listed twice"
    return s


def test_neighbour_list_equals_brute_force(taichi_runtime, rng):
    c, r, L, H = _random_config(rng)
    skin = 0.4e-6
    nl, x, rr = _build(c, r, L, H, skin)
    ref = brute_force_pairs(c, r, L, skin)
    got = _pairset(nl)
    assert got == ref
    # the configuration really has pairs across the periodic faces, in x and in y
    ii, jj = np.array(sorted(ref)).T
    dx = np.abs(c[ii, :2] - c[jj, :2])
    assert np.sum(dx[:, 0] > L[0] / 2) >= 3 and np.sum(dx[:, 1] > L[1] / 2) >= 3
    # owner = larger particle; rows sorted by partner; reverse rows consistent
    P = nl.pairs_numpy()
    assert np.all(r[P[:, 0]] >= r[P[:, 1]])
    rs = nl.row_start.to_numpy()
    part = nl.partner.to_numpy()
    for i in range(len(r)):
        row = part[rs[i]:rs[i + 1]]
        assert np.all(np.diff(row) > 0)
    rev_s, rev_p = nl.rev_start.to_numpy(), nl.rev_pairs.to_numpy()
    for j in range(0, len(r), 37):
        assert set(rev_p[rev_s[j]:rev_s[j + 1]].tolist()) == set(np.nonzero(P[:, 1] == j)[0].tolist())


def test_capacity_grows(taichi_runtime, rng):
    c, r, L, H = _random_config(rng, n=300)
    nl, x, rr = _build(c, r, L, H, 0.5e-6, capacity=16)
    assert nl.grow_events >= 1 and nl.capacity >= nl.npairs
    assert _pairset(nl) == brute_force_pairs(c, r, L, 0.5e-6)
    nl.build(x, rr, rr)        # second build with the swapped (small) buffer replaced
    assert _pairset(nl) == brute_force_pairs(c, r, L, 0.5e-6)


def test_rebuild_criterion(taichi_runtime, rng):
    c, r, L, H = _random_config(rng, n=100)
    skin = 1e-6
    nl, x, rr = _build(c, r, L, H, skin)
    assert not nl.needs_rebuild(x, rr)
    c2 = c.copy()
    c2[7, 0] += 0.6 * skin     # one particle beyond half the skin
    x.from_numpy(c2)
    assert nl.max_motion(x, rr) == pytest.approx(0.6 * skin)
    assert nl.needs_rebuild(x, rr)


def _compressed_sim(seed=3, restitution=1.0):
    """A small stack of spheres squeezed by the punch so that contacts carry tangential history."""
    from dem.simulation import Simulation

    rng = np.random.default_rng(seed)
    a = 10e-6
    g = np.arange(4) * a + a / 2
    X, Y, Z = np.meshgrid(g, g, np.arange(4) * a + a / 2, indexing="ij")
    c = np.column_stack([X.ravel(), Y.ravel(), Z.ravel()]) + rng.uniform(-0.03 * a, 0.03 * a, (64, 3))
    r = rng.uniform(0.5 * a, 0.52 * a, 64)
    c[:, 2] = np.clip(c[:, 2], r, None)
    H = float((c[:, 2] + r).max())
    pk = Packing(c, r, np.array([4 * a, 4 * a, H]))
    mat = Material(2000.0, 5e9, 0.3, yield_stress_Pa=200e6, friction=0.5, wall_friction=0.3, restitution=restitution)
    v = rng.normal(0, 0.2, (64, 3))
    return Simulation(pk, mat, None, SimParams(volume_correction=False, damping=0.1), velocities=v)


def test_history_survives_rebuild(taichi_runtime):
    sim = _compressed_sim()
    sim.set_punch_velocity(-0.05)
    sim.advance(300)
    t0 = sim.pair_table()
    key0 = {(int(i), int(j)): h for i, j, h in zip(t0["owner"], t0["partner"], t0["hist"])}
    nonzero = [k for k, h in key0.items() if np.linalg.norm(h[:3]) > 0 and h[3] > 0]
    assert len(nonzero) > 20, "test set-up must have contacts with tangential and plastic history"
    builds = sim.nlist.builds
    # a rebuild with a larger skin changes the list layout; each history must follow its pair
    sim.nlist.skin *= 4.5
    sim._rebuild()
    assert sim.nlist.builds == builds + 1
    t1 = sim.pair_table()
    key1 = {(int(i), int(j)): h for i, j, h in zip(t1["owner"], t1["partner"], t1["hist"])}
    assert set(key0) <= set(key1) and len(key1) > len(key0)
    for k in key0:
        np.testing.assert_array_equal(key1[k], key0[k])
    for k in set(key1) - set(key0):
        assert not np.any(key1[k])
    # and the forces computed from the transferred state are unchanged
    f0 = {(int(i), int(j)): f for i, j, f in zip(t0["owner"], t0["partner"], t0["force"])}
    sim._force_eval()
    t2 = sim.pair_table()
    for i, j, f in zip(t2["owner"], t2["partner"], t2["force"]):
        if (int(i), int(j)) in f0:
            np.testing.assert_allclose(f, f0[(int(i), int(j))], rtol=1e-9, atol=1e-15)
    assert t2["hist"].shape[1] == N_HIST


def test_grown_radii_still_exact(taichi_runtime, rng):
    """Volume correction grows radii unevenly (small particles most): ownership stays on the original
    radii and the search bound on the current ones, so the list is still exact."""
    from fva.backend import ti

    c, r0, L, H = _random_config(rng, n=400)
    r = r0 * rng.uniform(1.0, 1.6, r0.size) * np.where(r0 < 2e-6, 2.0, 1.0)   # some small ones doubled
    n = r0.size
    x = ti.ndarray(ti.f64, (n, 3))
    x.from_numpy(c)
    rr = ti.ndarray(ti.f64, n)
    rr.from_numpy(r)
    rr0 = ti.ndarray(ti.f64, n)
    rr0.from_numpy(r0)
    nl = NeighbourList(n, L, (0.0, H), r0, 0.3e-6)
    nl.build(x, rr, rr0)
    assert _pairset(nl) == brute_force_pairs(c, r, L, 0.3e-6)


def _gas(n, rng):
    """A periodic gas of n spheres (r 2–4 µm) at rest, without overlaps, in a 60 µm cube (Hertz–Mindlin,
    undamped). Returns (sim, L)."""
    from dem.simulation import Simulation

    L, H = (60e-6, 60e-6), 60e-6
    r = rng.uniform(2e-6, 4e-6, n)
    c = np.zeros((n, 3))
    k = 0
    while k < n:
        p = np.array([rng.uniform(0, L[0]), rng.uniform(0, L[1]), rng.uniform(r[k], H - r[k])])
        d = c[:k] - p
        d[:, :2] -= np.array(L) * np.round(d[:, :2] / np.array(L))
        if k == 0 or np.all(np.sqrt((d ** 2).sum(1)) > r[:k] + r[k] + 0.1e-6):
            c[k] = p
            k += 1
    mat = Material(2000.0, 5e9, 0.3, friction=0.3, wall_friction=0.1, restitution=0.9, contact_model="hertz_mindlin")
    sim = Simulation(Packing(c, r, np.array([L[0], L[1], H])), mat, None,
                     SimParams(volume_correction=False, damping=0.0), punch_z=H)
    return sim, L


def _rattler_gas():
    """A dilute periodic gas at rest, without overlaps, and one fast particle (a rattler shot out on release)."""
    n = 40
    sim, L = _gas(n, np.random.default_rng(5))
    v = np.zeros((n, 3))
    v[0] = [1.0, 0.7, 0.0]
    sim.v.from_numpy(v * (0.08 * sim.nlist.skin / (np.linalg.norm(v[0]) * sim.dt)))
    return sim, L


def test_fast_rattler_keeps_the_list_complete_without_rebuilding_every_check(taichi_runtime):
    """One particle moving 0.08 skin per step: the list stays complete (every touching pair is listed at
    every check) and is rebuilt only every ~12 steps (17 builds in 200 steps: the fast particle may use the
    whole skin while its neighbours rest; twice its displacement plus 2 k_next v_max dt gave 37, the older
    margin check_every·v_max·dt = 0.8 skin forced a rebuild at every check: 196)."""
    sim, L = _rattler_gas()
    b0, steps = sim.nlist.builds, 0
    for _ in range(40):
        steps += sim.advance(5)
        x, r = sim.x.to_numpy(), sim.r.to_numpy()
        touching = brute_force_pairs(x, r, L, 0.0)
        assert touching <= _pairset(sim.nlist)
    builds = sim.nlist.builds - b0
    assert 5 <= builds <= 0.15 * steps


def test_extra_rebuilds_do_not_change_the_dynamics(taichi_runtime):
    """A rebuild (and the force refresh after it) must not touch the contact state: forcing a rebuild at every
    check leaves the trajectory of a sheared, sliding packing unchanged (it used to fold each sliding contact's
    damping force into its spring once more per rebuild, and a servo hold ended 40 % off target)."""
    runs = []
    for extra in (False, True):
        sim = _compressed_sim(restitution=0.5)
        sim.set_punch_velocity(-0.05)
        sim.advance(100)
        t = sim.pair_table()
        sliding = np.count_nonzero((t["overlap_fraction"] > 0) & (np.linalg.norm(t["hist"][:, :3], axis=1) > 0))
        assert sliding > 20
        for _ in range(40):
            sim.advance(10)
            if extra:
                sim._rebuild()
                sim._pair_forces_eval()
        runs.append((sim.x.to_numpy(), sim.pressures()[0], sim.nlist.builds))
    (xa, pa, ba), (xb, pb, bb) = runs
    assert bb >= ba + 40
    np.testing.assert_allclose(xb, xa, rtol=0, atol=1e-12 * 10e-6)
    assert pb == pytest.approx(pa, rel=1e-9)


def _hot_gas(n=300, speed_skin_per_step=0.1):
    """A periodic gas of n spheres without overlaps (solid fraction ≈ 0.2), every sphere moving in a random
    direction at ``speed_skin_per_step`` skins per step: many pairs close their gap within a few steps."""
    rng = np.random.default_rng(5)
    sim, _ = _gas(n, rng)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    sim.v.from_numpy(u * (speed_skin_per_step * sim.nlist.skin / sim.dt))
    return sim


def test_verlet_criterion_never_misses_a_contact(taichi_runtime):
    """The rebuild criterion (two largest reaches A_1 + A_2 ≤ skin, SK.diagnostics) against a list rebuilt before
    every step: since rebuilds do not change the dynamics, any contact missed at any step would change the
    trajectory. A criterion twice as lax (A_1 ≤ skin) diverges here (checked when this test was written: 74
    builds, positions off by 58 µm); the shipped one rebuilds 164 times in 400 steps and matches to the bit."""
    steps = 400
    sim = _hot_gas()
    b0 = sim.nlist.builds
    sim.advance(steps)
    builds = sim.nlist.builds - b0
    ref = _hot_gas()
    ref.k_cap = 1
    for _ in range(steps):
        ref.advance(1)
        ref._rebuild()
    assert np.count_nonzero(np.abs(ref.v.to_numpy() - _hot_gas().v.to_numpy()).max(axis=1) > 0) == 300
    np.testing.assert_array_equal(sim.x.to_numpy(), ref.x.to_numpy())
    assert builds < 0.6 * steps


@pytest.mark.gpu
def test_neighbour_list_on_vulkan_equals_brute_force():
    """On a Vulkan device (in a child process: one Taichi runtime per process) the list equals brute force: an
    atomic append inside the nested cell loops was miscompiled there (lavapipe lost ~80 % of the pairs)."""
    from vulkan_child import run_on_vulkan

    n_got, n_ref, same = run_on_vulkan("from tests.test_dem_neighbours import _random_config, _build, _pairset\n"
                                       "from dem.neighbours import brute_force_pairs\n"
                                       "c, r, L, H = _random_config(np.random.default_rng(12345))\n"
                                       "nl, x, rr = _build(c, r, L, H, 0.4e-6)\n"
                                       "got, ref = _pairset(nl), brute_force_pairs(c, r, L, 0.4e-6)\n"
                                       "print('PAIRS', len(got), len(ref), got == ref)\n", "PAIRS")
    assert same == "True" and int(n_ref) > 200, (n_got, n_ref, same)

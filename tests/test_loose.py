"""Random sequential insertion into a periodic column."""

import numpy as np
import pytest

from dem.loose import column_height_for_fraction, in_spatial_order, initial_solid_fraction, insert_loose
from dem.sizes import sample_diameters

UM = 1e-6


def _brute_force_min_gap(pk):
    """Smallest surface gap over all pairs, minimum image in x and y (negative = overlap)."""
    c, r = pk.centers_m, pk.radii_m
    Lx, Ly, _ = pk.box_m
    dd = c[:, None, :] - c[None, :, :]
    dd[..., 0] -= Lx * np.round(dd[..., 0] / Lx)
    dd[..., 1] -= Ly * np.round(dd[..., 1] / Ly)
    dist = np.sqrt(np.sum(dd ** 2, axis=-1))
    gap = dist - (r[:, None] + r[None, :])
    np.fill_diagonal(gap, np.inf)
    return gap.min()


def _check_inside(pk):
    c, r = pk.centers_m, pk.radii_m
    Lx, Ly, H = pk.box_m
    assert np.all((c[:, 0] >= 0) & (c[:, 0] < Lx) & (c[:, 1] >= 0) & (c[:, 1] < Ly))
    assert np.all(c[:, 2] - r >= -1e-15) and np.all(c[:, 2] + r <= H + 1e-15)


def test_no_overlaps_including_periodic_faces():
    d = sample_diameters(1500, shape=1.94431, scale_m=7.04802 * UM, d_min_m=2 * UM, d_max_m=30 * UM, seed=4)
    # narrow base (2.2·d_max) so that many contacts cross the periodic faces
    pk = insert_loose(d, 66 * UM, 70 * UM, target_fraction=0.3, seed=1)
    assert pk.periodic == (True, True, False)
    assert np.allclose(pk.radii_m, d / 2)           # caller's order kept
    assert _brute_force_min_gap(pk) >= 0.0
    _check_inside(pk)
    assert initial_solid_fraction(pk) == pytest.approx(0.3, rel=1e-9)
    # spheres do straddle the periodic faces (the check above covered image pairs)
    c, r = pk.centers_m, pk.radii_m
    assert np.any(c[:, 0] < r) and np.any(c[:, 0] > pk.box_m[0] - r)


def test_seeded_and_explicit_height():
    d = np.full(200, 10 * UM)
    a = insert_loose(d, 60 * UM, 60 * UM, column_height_m=400 * UM, seed=3)
    b = insert_loose(d, 60 * UM, 60 * UM, column_height_m=400 * UM, seed=3)
    assert np.array_equal(a.centers_m, b.centers_m)
    assert a.box_m[2] == pytest.approx(400 * UM)
    assert initial_solid_fraction(a) == pytest.approx(200 * np.pi / 6 * 1e-15 / (60 * 60 * 400 * 1e-18))
    assert _brute_force_min_gap(a) >= 0.0
    _check_inside(a)


def test_impossible_request_gives_helpful_error():
    d = np.full(400, 10 * UM)
    with pytest.raises(ValueError) as e:
        insert_loose(d, 40 * UM, 40 * UM, column_height_m=60 * UM, max_attempts_per_particle=100)
    msg = str(e.value)
    assert "placed" in msg and "of 400" in msg and "solid fraction" in msg
    assert "column_height_m" in msg and "fewer" in msg and "smaller" in msg


@pytest.mark.parametrize("kw, match", [
    (dict(base_x_m=15 * UM), "base_x_m"),
    (dict(base_y_m=19.9 * UM), "base_y_m"),
    (dict(column_height_m=5 * UM), "column_height_m"),
    (dict(target_fraction=1.2), "target_fraction"),
])
def test_bad_input(kw, match):
    args = dict(diameters_m=np.full(5, 10 * UM), base_x_m=40 * UM, base_y_m=40 * UM)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        insert_loose(**args)
    with pytest.raises(ValueError, match="diameters_m"):
        insert_loose(np.array([1e-5, -1e-6]), 40 * UM, 40 * UM)


def test_column_height_for_fraction():
    d = np.full(10, 10 * UM)
    H = column_height_for_fraction(d, 100 * UM, 100 * UM, 0.25)
    assert H == pytest.approx(10 * np.pi / 6 * 1e-15 / (0.25 * 1e-8))


def test_study_setup_9591_particles():
    # ~1.5 s on an idle 2-core CPU, so not marked slow (no wall-time bound here: speed belongs in benchmarks, and
    # a bound flaked under load)
    d = sample_diameters(9591, shape=1.94431, scale_m=7.04802 * UM, d_min_m=1 * UM, d_max_m=50 * UM, seed=1)
    pk = insert_loose(d, 210 * UM, 210 * UM, target_fraction=0.3, seed=1)
    assert pk.n == 9591
    assert initial_solid_fraction(pk) == pytest.approx(0.3, rel=1e-9)
    _check_inside(pk)
    # no overlaps: exact check with a periodic k-d tree (brute force would be 9591² pairs)
    from scipy.spatial import cKDTree

    c = pk.centers_m.copy()
    Lx, Ly, H = pk.box_m
    tree = cKDTree(c, boxsize=[Lx, Ly, 10 * H])
    pairs = tree.query_pairs(2 * pk.radii_m.max(), output_type="ndarray")
    dd = c[pairs[:, 0]] - c[pairs[:, 1]]
    dd[:, 0] -= Lx * np.round(dd[:, 0] / Lx)
    dd[:, 1] -= Ly * np.round(dd[:, 1] / Ly)
    gap = np.linalg.norm(dd, axis=1) - pk.radii_m[pairs[:, 0]] - pk.radii_m[pairs[:, 1]]
    assert gap.min() >= 0.0


def test_spatial_order_is_a_local_renumbering_of_the_same_spheres():
    """in_spatial_order keeps every sphere (same centre–radius pairs) and puts near neighbours close in index:
    the median index distance of pairs within one mean diameter drops from ~n/3 (random order) to a small
    fraction of n."""
    d = sample_diameters(2000, shape=1.94431, scale_m=7.04802 * UM, d_min_m=8 * UM, d_max_m=40 * UM, seed=3)
    pk = insert_loose(d, 120 * UM, 120 * UM, target_fraction=0.3, seed=3)
    sp = in_spatial_order(pk)
    key = lambda c, r: sorted(map(tuple, np.round(np.column_stack([c, r]) / UM, 9)))  # noqa: E731
    assert key(sp.centers_m, sp.radii_m) == key(pk.centers_m, pk.radii_m)
    assert np.array_equal(sp.box_m, pk.box_m)

    def median_gap(p):
        c = p.centers_m
        dd = c[:, None, :] - c[None, :, :]
        dd[..., :2] -= p.box_m[:2] * np.round(dd[..., :2] / p.box_m[:2])
        i, j = np.nonzero(np.triu(np.sqrt((dd ** 2).sum(-1)) < 2 * np.mean(p.radii_m) * 2, k=1))
        return float(np.median(np.abs(i - j)))

    assert median_gap(pk) > 0.25 * pk.n
    assert median_gap(sp) < 0.05 * pk.n
    with pytest.raises(ValueError, match="cell_m"):
        in_spatial_order(pk, cell_m=0.0)

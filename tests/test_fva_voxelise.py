"""Voxelisation of sphere packings: volume convergence, periodic wrap, labels, resolution study."""
import math

import numpy as np
import pytest

from fva.types import Packing
from fva.voxelise import random_sphere_image, resolution_study, voxelise


def test_sphere_volume_converges():
    r = 10e-6
    pk = Packing(centers_m=[[25e-6, 25e-6, 25e-6]], radii_m=[r], box_m=[50e-6, 50e-6, 50e-6],
                 periodic=(False, False, False))
    exact = 4.0 / 3.0 * math.pi * r ** 3
    errs = []
    for n_per_r in (3, 6, 12, 24):
        img = voxelise(pk, r / n_per_r)
        vol = img.phase.sum() * np.prod(img.voxel_m)
        errs.append(abs(vol / exact - 1))
    assert errs[-1] < 5e-3
    assert errs[-1] < errs[0]


def test_periodic_wrap_puts_sphere_on_both_sides():
    pk = Packing(centers_m=[[1e-6, 10e-6, 10e-6]], radii_m=[3e-6], box_m=[20e-6, 20e-6, 20e-6],
                 periodic=(True, True, False))
    img = voxelise(pk, 1e-6)
    assert img.periodic == (True, True, False)
    assert img.shape == (20, 20, 20)
    ph = img.phase
    assert ph[10, 10, 0] == 1 and ph[10, 10, 19] == 1 and ph[10, 10, 18] == 1 and ph[10, 10, 10] == 0
    centred = Packing([[10e-6, 10e-6, 10e-6]], [3e-6], pk.box_m, periodic=(True, True, False))
    assert ph.sum() == voxelise(centred, 1e-6).phase.sum()  # nothing lost by the wrap
    # not periodic: the part outside the box is lost
    pk2 = Packing(pk.centers_m, pk.radii_m, pk.box_m, periodic=(False, False, False))
    assert voxelise(pk2, 1e-6).phase[10, 10, 19] == 0


def test_labels_choose_the_deepest_sphere():
    pk = Packing(centers_m=[[5e-6, 5e-6, 5e-6], [9e-6, 5e-6, 5e-6]], radii_m=[3e-6, 2.5e-6],
                 box_m=[14e-6, 10e-6, 10e-6], periodic=(False, False, False))
    img = voxelise(pk, 0.5e-6, labels=True)
    lab = img.labels
    assert lab.dtype == np.int32 and lab.shape == img.shape
    assert np.all((lab >= 0) == (img.phase == 1))
    z = y = 10  # centre row at 5.25 µm
    assert lab[z, y, 10] == 0 and lab[z, y, 18] == 1 and lab[0, 0, 0] == -1


def test_axis_order_and_z_range():
    pk = Packing(centers_m=[[2e-6, 6e-6, 15e-6]], radii_m=[1.5e-6], box_m=[10e-6, 12e-6, 20e-6],
                 periodic=(True, True, False))
    img = voxelise(pk, 1e-6)
    assert img.shape == (20, 12, 10)  # [z, y, x]
    assert img.phase[15, 6, 2] == 1
    sub = voxelise(pk, 1e-6, z_range_m=(10e-6, 20e-6))
    assert sub.shape == (10, 12, 10) and sub.phase[5, 6, 2] == 1
    with pytest.raises(ValueError):
        voxelise(pk, 0.0)


def test_random_sphere_image_fraction():
    img = random_sphere_image(40, 0.75, 4.0, seed=0)
    assert abs((1 - img.porosity()) - 0.75) < 0.05


def test_many_spheres_match_a_brute_force_membership():
    """3000 overlapping spheres: every sampled voxel centre is solid exactly when it lies in some sphere (periodic
    in x, y). Speed is a benchmark's business (benchmarks/bench_fva.py), not a test's."""
    rng = np.random.default_rng(0)
    n = 3000
    pk = Packing(centers_m=rng.random((n, 3)) * 100e-6, radii_m=rng.uniform(2e-6, 5e-6, n),
                 box_m=[100e-6] * 3)
    img = voxelise(pk, 1e-6)
    assert 0.3 < 1 - img.porosity() < 0.7
    nz, ny, nx = img.shape
    k = rng.integers(0, [nz, ny, nx], size=(400, 3))
    p = (k[:, ::-1] + 0.5) * np.asarray(img.voxel_m)[::-1]          # voxel centres (x, y, z), m
    d = p[:, None, :] - pk.centers_m[None, :, :]
    d[..., :2] -= 100e-6 * np.round(d[..., :2] / 100e-6)
    dist = np.sqrt((d ** 2).sum(-1)) - pk.radii_m[None, :]
    clear = np.abs(dist).min(1) > 1e-9                                # not on a sphere's surface to rounding
    inside = (dist <= 0).any(1)
    np.testing.assert_array_equal(img.phase[k[:, 0], k[:, 1], k[:, 2]][clear] == 1, inside[clear])


def test_resolution_study(taichi_runtime):
    rng = np.random.default_rng(3)
    n = 60
    pk = Packing(centers_m=rng.random((n, 3)) * 20e-6, radii_m=np.full(n, 3e-6), box_m=[20e-6] * 3)
    rows = resolution_study(pk, voxels_per_dmin=(2, 4), axis="z", flux_tol=1e-6)
    assert [r["voxels_per_dmin"] for r in rows] == [2.0, 4.0]
    for r in rows:
        assert 0.5 < r["solid_fraction"] < 1 and r["converged"] and 0 < r["sigma_eff_over_bulk"] < 1
    assert rows[1]["shape"][0] > rows[0]["shape"][0] and rows[1]["voxel_m"] == pytest.approx(1.5e-6)

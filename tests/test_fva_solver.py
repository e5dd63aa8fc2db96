"""Finite-volume conduction solver: analytic cases, scipy reference, connectivity, bad input."""
import math
import warnings

import numpy as np
import pytest

from fva.activation import sigma_bulk_at_pressure
from fva.conduction import (AXES, check_size, estimate_memory_bytes, solve_all_axes,
                            solve_conductivity)
from fva.connectivity import label_6, percolating_mask
from fva.reference import solve_reference
from fva.types import VoxelImage


def _ref_sigma(img, axis="z", sig_map=None, periodic=None, em=None):
    """σ_eff of the same discretisation by a scipy direct solve (after the percolation cut)."""
    ax = AXES[axis]
    perm = (ax,) + tuple(a for a in range(3) if a != ax)
    sig = (img.phase == img.conducting_phase).astype(float) if sig_map is None else sig_map
    sig = np.transpose(sig, perm)
    d = [img.voxel_m[a] for a in perm]
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    per_arr = (img.periodic[2], img.periodic[1], img.periodic[0]) if periodic is None else periodic
    p1, p2 = per_arr[perm[1]], per_arr[perm[2]]
    perc = percolating_mask(sig > 0, 0, (False, p1, p2), electrode_mask_high=em)
    phi, planes = solve_reference(np.where(perc, sig, 0.0), em, c, p1, p2)
    n0, n1, n2 = sig.shape
    return planes.mean() * n0 * d[0] / (n1 * d[1] * n2 * d[2]), planes


# ----------------------------------------------------------------------------- analytic cases
@pytest.mark.parametrize("axis", ["x", "y", "z"])
@pytest.mark.parametrize("pc", ["mg", "jacobi"])
def test_uniform_block_every_axis(taichi_runtime, axis, pc):
    img = VoxelImage(np.ones((7, 9, 11), np.uint8), voxel_m=(1e-6, 2e-6, 0.5e-6))
    r = solve_conductivity(img, axis, sigma_bulk_S_per_m=0.3, preconditioner=pc, flux_tol=1e-10)
    assert r.converged and r.percolating
    assert r.sigma_eff_S_per_m == pytest.approx(0.3, rel=1e-8)
    assert r.tau == pytest.approx(1.0, rel=1e-8)
    assert r.eps_total == 1.0 and r.eps_percolating == 1.0
    assert r.macmullin == pytest.approx(1.0, rel=1e-8)


def test_uniform_block_f32(taichi_runtime):
    img = VoxelImage(np.ones((8, 6, 5), np.uint8), voxel_m=1e-6)
    r = solve_conductivity(img, "z", dtype="f32", flux_tol=1e-4)
    assert r.converged and r.tau == pytest.approx(1.0, rel=1e-5)


def test_series_layers_harmonic_mean(taichi_runtime):
    ph = np.ones((12, 5, 6), np.int32)
    ph[3:7] = 2
    ph[9:] = 3
    sig = {1: 1.0, 2: 0.2, 3: 5.0}
    img = VoxelImage(ph, voxel_m=(1e-6, 1e-6, 1e-6))
    r = solve_conductivity(img, "z", phase_conductivities=sig, flux_tol=1e-10, rtol=1e-11)
    thick = np.array([np.sum(ph == k) / 30 for k in (1, 2, 3)])
    expect = thick.sum() / np.sum(thick / np.array([1.0, 0.2, 5.0]))
    assert r.sigma_eff_S_per_m == pytest.approx(expect, rel=1e-8)


def test_parallel_layers_arithmetic_mean(taichi_runtime):
    ph = np.ones((10, 6, 8), np.int32)
    ph[:, :, 2:5] = 2
    img = VoxelImage(ph, voxel_m=(2e-6, 1e-6, 1e-6))
    r = solve_conductivity(img, "z", phase_conductivities={1: 1.0, 2: 0.1}, flux_tol=1e-10)
    expect = (5 * 1.0 + 3 * 0.1) / 8
    assert r.sigma_eff_S_per_m == pytest.approx(expect, rel=1e-8)
    # across the layers (x) it is the series (harmonic) mean
    rx = solve_conductivity(img, "x", phase_conductivities={1: 1.0, 2: 0.1}, flux_tol=1e-10, rtol=1e-12)
    assert rx.sigma_eff_S_per_m == pytest.approx(8 / (5 / 1.0 + 3 / 0.1), rel=1e-8)


def test_straight_channels_area_fraction(taichi_runtime):
    ph = np.zeros((9, 12, 12), np.uint8)
    ph[:, 2, 3] = 1
    ph[:, 6:8, 6:9] = 1
    ph[:, 10, 0:2] = 1
    img = VoxelImage(ph, voxel_m=1e-6)
    r = solve_conductivity(img, "z", sigma_bulk_S_per_m=2.0, flux_tol=1e-10)
    frac = ph[0].mean()
    assert r.sigma_eff_S_per_m == pytest.approx(frac * 2.0, rel=1e-8)
    assert r.tau == pytest.approx(1.0, rel=1e-8)


def _serpentine():
    ph = np.zeros((10, 9, 9), np.uint8)
    # a staircase / serpentine path: down in z, sideways in x and y, with a dead end
    ph[0:4, 1, 1] = 1
    ph[3, 1, 1:7] = 1
    ph[3:7, 1, 6] = 1
    ph[6, 1:7, 6] = 1
    ph[6:10, 6, 6] = 1
    ph[5, 3, 2:5] = 1  # dangling island
    ph[4:6, 4:6, 2:4] = 1
    for z in range(10):  # a slanted path
        ph[z, 7, z % 9] = 1
        ph[z, 7, (z + 1) % 9] = 1
    return ph


@pytest.mark.parametrize("pc", ["mg", "jacobi"])
def test_serpentine_and_slanted_vs_scipy(taichi_runtime, pc):
    img = VoxelImage(_serpentine(), voxel_m=(1e-6, 1.5e-6, 0.7e-6), periodic=(True, False, False))
    r = solve_conductivity(img, "z", preconditioner=pc, flux_tol=1e-10, rtol=1e-10)
    ref, _ = _ref_sigma(img)
    assert r.converged
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=1e-6)
    assert r.flux_spread <= 1e-10


@pytest.mark.parametrize("seed,per,axis", [(1, (False, False, False), "z"), (2, (True, True, False), "z"),
                                           (3, (True, True, False), "x")])
def test_random_32_vs_scipy(taichi_runtime, seed, per, axis):
    rng = np.random.default_rng(seed)
    img = VoxelImage((rng.random((32, 32, 31)) < 0.62).astype(np.uint8), voxel_m=1e-6, periodic=per)
    ref, planes = _ref_sigma(img, axis)
    r = solve_conductivity(img, axis, flux_tol=1e-9, rtol=1e-10, return_fields=True)
    assert r.converged and r.flux_spread <= 1e-9
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=1e-6)
    # flux equal on every plane: mean current density over each plane normal to the axis
    ax = AXES[axis]
    j = r.current_density_A_per_m2[..., ax]
    plane_mean = j.mean(axis=tuple(a for a in range(3) if a != ax))
    L = img.shape[ax] * 1e-6
    assert np.allclose(plane_mean, r.sigma_eff_S_per_m / L, rtol=1e-6)


def test_jacobi_and_mg_agree_and_mg_needs_fewer_iterations(taichi_runtime):
    from fva.voxelise import random_sphere_image

    img = random_sphere_image(40, 0.75, 4.0, seed=5)
    a = solve_conductivity(img, "z", preconditioner="jacobi", flux_tol=1e-8)
    b = solve_conductivity(img, "z", preconditioner="mg", flux_tol=1e-8)
    assert a.converged and b.converged
    assert a.sigma_eff_S_per_m == pytest.approx(b.sigma_eff_S_per_m, rel=1e-6)
    assert b.iterations * 4 < a.iterations


def test_isolated_islands_do_not_change_sigma(taichi_runtime):
    ph = np.zeros((10, 10, 10), np.uint8)
    ph[:, 2:4, 2:4] = 1
    base = solve_conductivity(VoxelImage(ph, 1e-6), "z", flux_tol=1e-10).sigma_eff_S_per_m
    ph2 = ph.copy()
    ph2[3:6, 6:9, 6:9] = 1  # floating island
    ph2[0:4, 7, 1] = 1      # touches the inlet only
    ph2[6:10, 1, 7] = 1     # touches the outlet only
    r = solve_conductivity(VoxelImage(ph2, 1e-6), "z", flux_tol=1e-10)
    assert r.sigma_eff_S_per_m == pytest.approx(base, rel=1e-10)
    assert r.eps_percolating == pytest.approx(ph.mean()) and r.eps_total == pytest.approx(ph2.mean())


def test_non_percolating_returns_zero_at_once(taichi_runtime):
    ph = np.ones((12, 8, 8), np.uint8)
    ph[6] = 0
    with pytest.warns(RuntimeWarning, match="no 6-connected path"):
        r = solve_conductivity(VoxelImage(ph, 1e-6), "z")
    assert r.sigma_eff_S_per_m == 0.0 and r.tau == math.inf and not r.percolating
    assert r.iterations == 0 and r.eps_percolating == 0.0 and r.macmullin == math.inf
    # but it conducts sideways
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert solve_conductivity(VoxelImage(ph, 1e-6), "x", flux_tol=1e-8).sigma_eff_S_per_m > 0


@pytest.mark.parametrize("kind", ["edge", "corner"])
def test_edge_or_corner_contacts_do_not_conduct(taichi_runtime, kind):
    ph = np.zeros((8, 6, 6), np.uint8)
    ph[0:4, 1:3, 1:3] = 1
    if kind == "edge":
        ph[4:8, 3:5, 1:3] = 1   # shares only the edge at (z=3.5, y=2.5)
    else:
        ph[4:8, 3:5, 3:5] = 1   # shares only a corner
    with pytest.warns(RuntimeWarning):
        r = solve_conductivity(VoxelImage(ph, 1e-6), "z")
    assert not r.percolating and r.sigma_eff_S_per_m == 0.0
    ph[4, 2, 2:4] = 1  # face-sharing voxels join them
    assert solve_conductivity(VoxelImage(ph, 1e-6), "z", flux_tol=1e-8).sigma_eff_S_per_m > 0


def test_periodic_sides_join_a_wrapping_path(taichi_runtime):
    ph = np.zeros((6, 4, 8), np.uint8)
    ph[0:3, 1, 6:8] = 1
    ph[2, 1, 0:2] = 1  # continues across the x wrap
    ph[2:6, 1, 1] = 1
    img_p = VoxelImage(ph, 1e-6, periodic=(True, True, False))
    r = solve_conductivity(img_p, "z", flux_tol=1e-10, rtol=1e-10)
    assert r.percolating and r.sigma_eff_S_per_m == pytest.approx(_ref_sigma(img_p)[0], rel=1e-6)
    with pytest.warns(RuntimeWarning):
        r0 = solve_conductivity(img_p, "z", periodic_sides=False)
    assert not r0.percolating


def test_pore_conductivity(taichi_runtime):
    ph = np.ones((10, 6, 6), np.uint8)
    ph[5] = 0
    r = solve_conductivity(VoxelImage(ph, 1e-6), "z", sigma_bulk_S_per_m=1.0, sigma_pore_S_per_m=0.1,
                           flux_tol=1e-10)
    assert r.sigma_eff_S_per_m == pytest.approx(10 / (9 + 1 / 0.1), rel=1e-8)
    assert r.eps_total == pytest.approx(0.9)


def test_partial_electrode_contact(taichi_runtime):
    n = 16
    img = VoxelImage(np.ones((12, n, n), np.uint8), voxel_m=1e-6)
    mask = np.zeros((n, n), bool)
    mask[4:12, 4:12] = True
    r = solve_conductivity(img, "z", electrode_mask=mask, flux_tol=1e-9, rtol=1e-10)
    full = solve_conductivity(img, "z", flux_tol=1e-9)
    assert r.converged and 0 < r.sigma_eff_S_per_m < full.sigma_eff_S_per_m
    jmap = r.electrode_current_A_per_m2
    assert jmap.shape == (n, n) and np.all(jmap[~mask] == 0) and np.all(jmap[mask] > 0)
    total_A = r.sigma_eff_S_per_m * (n * 1e-6) ** 2 / (12e-6)  # I = σ_eff·A·ΔV/L with ΔV = 1 V
    face_area = 1e-12
    assert jmap.sum() * face_area == pytest.approx(total_A, rel=1e-6)
    assert jmap[mask].mean() == pytest.approx(total_A / (mask.sum() * face_area), rel=1e-6)
    # current crowds at the edges / corners of the contact
    assert jmap[4, 4] > jmap[4, 8] > jmap[8, 8]
    ref, _ = _ref_sigma(img, em=mask)
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=1e-6)


def test_mask_blocks_an_uncontacted_path(taichi_runtime):
    ph = np.zeros((8, 6, 6), np.uint8)
    ph[:, 1, 1] = 1
    mask = np.ones((6, 6), bool)
    mask[1, 1] = False
    with pytest.warns(RuntimeWarning):
        r = solve_conductivity(VoxelImage(ph, 1e-6), "z", electrode_mask=mask)
    assert not r.percolating and r.electrode_current_A_per_m2.shape == (6, 6)


def test_fields_uniform_block(taichi_runtime):
    img = VoxelImage(np.ones((5, 4, 3), np.uint8), voxel_m=(2e-6, 1e-6, 1e-6))
    r = solve_conductivity(img, "y", sigma_bulk_S_per_m=2.0, return_fields=True)
    phi = r.potential_V
    assert phi.shape == img.shape
    assert np.allclose(phi[0, :, 0], 1 - (np.arange(4) + 0.5) / 4)  # 1 V at y index 0 face
    j = r.current_density_A_per_m2
    assert np.allclose(j[..., 1], 2.0 / 4e-6) and np.allclose(j[..., [0, 2]], 0)


def test_solve_all_axes_anisotropic(taichi_runtime):
    ph = np.ones((12, 8, 8), np.uint8)
    ph[4, :, :6] = 0  # partial horizontal crack: hurts z only
    res = solve_all_axes(VoxelImage(ph, 1e-6), flux_tol=1e-8)
    assert set(res) == {"x", "y", "z"}
    assert res["z"].tau > 2 * res["x"].tau and res["x"].tau < 1.05
    assert res["y"].tau == pytest.approx(1.0, rel=1e-8)  # the crack lies along y: area loss only


def test_unconverged_says_so(taichi_runtime):
    rng = np.random.default_rng(0)
    img = VoxelImage((rng.random((20, 20, 20)) < 0.7).astype(np.uint8), 1e-6)
    with pytest.warns(RuntimeWarning, match="did NOT converge"):
        r = solve_conductivity(img, "z", preconditioner="jacobi", max_iter=3, flux_tol=1e-8)
    assert not r.converged and r.iterations == 3


# ----------------------------------------------------------------------------- bad input, sizes
def test_bad_input_errors(taichi_runtime):
    with pytest.raises(ValueError, match="non-empty"):
        VoxelImage(np.zeros((0, 3, 3), np.uint8), 1e-6)
    with pytest.raises(ValueError, match="integer or boolean"):
        VoxelImage(np.random.default_rng(0).random((4, 4, 4)), 1e-6)
    with pytest.raises(ValueError, match="positive"):
        VoxelImage(np.ones((4, 4, 4), np.uint8), 0.0)
    three = VoxelImage(np.arange(64).reshape(4, 4, 4) % 3, 1e-6)
    with pytest.raises(ValueError, match="no entry.*labels present: 0, 1, 2"):
        solve_conductivity(three, "z", phase_conductivities={0: 1.0, 1: 1.0})
    with pytest.raises(ValueError, match="does not contain.*labels present"):
        solve_conductivity(three, "z", phase_conductivities={0: 1.0, 1: 1.0, 2: 0.0, 7: 1.0})
    img = VoxelImage(np.ones((4, 4, 4), np.uint8), 1e-6)
    with pytest.raises(ValueError, match="axis"):
        solve_conductivity(img, "w")
    with pytest.raises(ValueError, match="preconditioner"):
        solve_conductivity(img, "z", preconditioner="ilu")
    with pytest.raises(ValueError, match="electrode_mask"):
        solve_conductivity(img, "z", electrode_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="sigma_bulk"):
        solve_conductivity(img, "z", sigma_bulk_S_per_m=-1.0)


def test_too_large_image_error_names_the_limit(taichi_runtime):
    with pytest.raises(ValueError, match=r"2\*\*31"):
        check_size((1300, 1300, 1300), "f32", "mg")

    class Huge(VoxelImage):  # a lazy stand-in: only .shape is looked at before the check
        pass

    fake = VoxelImage.__new__(Huge)
    object.__setattr__(fake, "phase", np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8),
                                                                       (1300, 1300, 1300), (0, 0, 0)))
    object.__setattr__(fake, "voxel_m", (1.0, 1.0, 1.0))
    object.__setattr__(fake, "periodic", (False, False, False))
    object.__setattr__(fake, "conducting_phase", 1)
    object.__setattr__(fake, "labels", None)
    with pytest.raises(ValueError, match="Taichi"):
        solve_conductivity(fake, "z")


def test_memory_estimate_bytes_per_voxel():
    n = 256 ** 3
    assert estimate_memory_bytes((256, 256, 256), "f32", "mg") / n <= 30
    assert estimate_memory_bytes((256, 256, 256), "f32", "jacobi") / n <= 29   # 25 device + 2 host + ≤ 1 of runs
    assert estimate_memory_bytes((64, 64, 64), "f64", "mg") > estimate_memory_bytes((64, 64, 64), "f32", "mg")


def test_label_6_periodic_merge():
    m = np.zeros((3, 4, 5), bool)
    m[1, 1, 0] = m[1, 1, 4] = True
    assert label_6(m)[1] == 2
    assert label_6(m, (False, False, True))[1] == 1


# ----------------------------------------------------------------------------- activation volume
def test_activation_volume():
    s = sigma_bulk_at_pressure(0.0, 1e-3)
    assert s == pytest.approx(1e-3)
    expect = 1e-3 * math.exp(-1.4e-6 * 1e9 / (8.314462618 * 298.15))
    assert sigma_bulk_at_pressure(1e9, 1e-3) == pytest.approx(expect, rel=1e-12)
    arr = sigma_bulk_at_pressure(np.array([0.0, 1e8, 5e8]), 2.0, p_ref_Pa=1e8)
    assert arr.shape == (3,) and arr[1] == pytest.approx(2.0) and arr[0] > 2.0 > arr[2]
    with pytest.raises(ValueError):
        sigma_bulk_at_pressure(1e9, -1.0)
    with pytest.raises(ValueError):
        sigma_bulk_at_pressure(1e9, 1.0, T_K=0.0)
    with pytest.raises(ValueError, match="cm"):
        sigma_bulk_at_pressure(1e9, 1.0, dV_m3_per_mol=1.4)


def test_no_recompilation_for_new_shapes(taichi_runtime):
    """Kernels take ndarrays: a new image shape reuses the compiled kernel (sub-volume sweeps)."""
    from fva.conduction_kernels import get_kernels

    from fva.conduction import DEFAULT_DTYPE

    K = get_kernels(DEFAULT_DTYPE, mask=True)   # binary images: face masks (fva.face_mask)
    rng = np.random.default_rng(4)
    for shape in [(9, 10, 11), (12, 7, 8), (16, 16, 5)]:
        img = VoxelImage((rng.random(shape) < 0.8).astype(np.uint8), 1e-6, periodic=(True, True, False))
        solve_conductivity(img, "z", flux_tol=1e-6)
    for name in ("f_matvec_dot", "f_smooth", "f_resid_restrict", "c_smooth_serial", "plane_flux"):
        assert len(getattr(K, name)._primal.compiled_kernels) == 1, name
    assert len(K.c_smooth._primal.compiled_kernels) <= 1   # small levels are smoothed by c_smooth_serial


def test_gpu_style_flat_loops_agree_on_cpu(taichi_runtime, monkeypatch):
    """The flat 3-D loop variant (used on GPUs) gives the same answer, odd periodic sides included."""
    import fva.conduction_kernels as ck

    orig = ck.get_kernels
    monkeypatch.setattr(ck, "get_kernels", lambda dt="f64", serial_k=None, **kw: orig(dt, serial_k=False, **kw))
    rng = np.random.default_rng(7)
    img = VoxelImage((rng.random((13, 11, 9)) < 0.7).astype(np.uint8), 1e-6, periodic=(True, True, False))
    r = solve_conductivity(img, "z", flux_tol=1e-10, rtol=1e-10)
    assert r.sigma_eff_S_per_m == pytest.approx(_ref_sigma(img)[0], rel=1e-6)
    r = solve_conductivity(img, "z", preconditioner="jacobi", flux_tol=1e-10, rtol=1e-10)
    assert r.sigma_eff_S_per_m == pytest.approx(_ref_sigma(img)[0], rel=1e-6)


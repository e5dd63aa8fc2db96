"""The solver's stopping rule cannot lie: default solves of hard geometries match a direct solve to 1e-4.

Family (fva.generators): winding channels (the false-convergence case: equal plane currents at the
initial guess), parallel windings, dead-end branches, one-voxel bottlenecks, random media near the
percolation threshold; anisotropic voxels; periodic and insulating sides; along x, y and z.
"""
import warnings

import numpy as np
import pytest

from fva import generators as gen
from fva.conduction import AXES, check_tolerance, solve_conductivity
from fva.connectivity import percolating_mask
from fva.reference import solve_reference
from fva.types import VoxelImage

CASES = {
    "winding": lambda: gen.winding_channel(3, 5, 6),
    "winding_long": lambda: gen.winding_channel(6, 7, 8),
    "parallel_windings": lambda: gen.parallel_windings(12, 2, 12, 5),
    "dead_ends": lambda: gen.dead_end_branches(14, 6, seed=1),
    "bottleneck": lambda: gen.bottleneck(10, 1),
    "near_threshold": lambda: gen.random_site((20, 18, 16), 0.36, seed=4),
}
VOXEL = {"iso": (1e-6, 1e-6, 1e-6), "aniso": (2e-6, 0.7e-6, 1.3e-6)}


def _oriented(ph, axis):
    """Turn a z-oriented generator image so that its z direction lies along ``axis``."""
    return {"z": ph, "y": np.swapaxes(ph, 0, 1), "x": np.swapaxes(ph, 0, 2)}[axis].copy()


def _reference_sigma(img, axis, periodic):
    ax = AXES[axis]
    perm = (ax,) + tuple(a for a in range(3) if a != ax)
    sig = np.transpose(img.solid.astype(float), perm)
    d = [img.voxel_m[a] for a in perm]
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    p1 = p2 = periodic
    perc = percolating_mask(sig > 0, 0, (False, p1, p2))
    if not perc.any():
        return 0.0
    _, planes = solve_reference(np.where(perc, sig, 0.0), None, c, p1, p2)
    n0, n1, n2 = sig.shape
    return planes.mean() * n0 * d[0] / (n1 * d[1] * n2 * d[2])


@pytest.mark.parametrize("voxel", ["iso", "aniso"])
@pytest.mark.parametrize("periodic", [False, True], ids=["insulating", "periodic"])
@pytest.mark.parametrize("axis", ["x", "y", "z"])
@pytest.mark.parametrize("case", list(CASES))
def test_default_solve_matches_direct_solve(taichi_runtime, case, axis, periodic, voxel):
    img = VoxelImage(_oriented(CASES[case](), axis), VOXEL[voxel], periodic=(periodic,) * 3)
    ref = _reference_sigma(img, axis, periodic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a default solve of these must converge without a warning
        r = solve_conductivity(img, axis)
    assert r.converged
    if ref == 0.0:
        assert not r.percolating and r.sigma_eff_S_per_m == 0.0
        return
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=1e-4)
    assert r.residual <= 1e-6 and r.flux_spread <= 1e-4 and r.current_imbalance <= 1e-4


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("pc", ["mg", "jacobi"])
def test_winding_channel_is_not_converged_at_the_initial_guess(taichi_runtime, pc, dtype):
    """The linear initial guess gives equal plane currents here: the solve must still iterate."""
    img = VoxelImage(gen.winding_channel(3, 5, 6), 1e-6)
    ref = _reference_sigma(img, "z", False)
    r = solve_conductivity(img, "z", preconditioner=pc, dtype=dtype)
    assert r.iterations > 0 and r.converged
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=1e-4)


def test_stopped_short_is_reported_not_converged(taichi_runtime):
    """max_iter below what the winding channel needs: converged False, a warning, and the numbers say why."""
    img = VoxelImage(gen.winding_channel(6, 7, 8), 1e-6)
    with pytest.warns(RuntimeWarning, match="did NOT converge"):
        r = solve_conductivity(img, "z", max_iter=2)
    assert not r.converged and r.iterations == 2
    assert r.residual > 1e-6


@pytest.mark.parametrize("name", ["flux_tol", "rtol", "sigma_tol"])
@pytest.mark.parametrize("value", [5, 1.0, 0.0, -1e-3, float("nan"), float("inf"), "x"])
def test_tolerances_must_be_between_0_and_1(taichi_runtime, name, value):
    img = VoxelImage(np.ones((4, 4, 4), np.uint8), 1e-6)
    with pytest.raises(ValueError, match=name):
        solve_conductivity(img, "z", **{name: value})
    with pytest.raises(ValueError, match=name):
        check_tolerance(name, value)


def test_results_report_residual_and_current_balance(taichi_runtime):
    img = VoxelImage(gen.random_site((16, 16, 16), 0.5, seed=2), 1e-6)
    r = solve_conductivity(img, "z")
    fig = r.figures()
    for key in ("residual", "current_imbalance", "sigma_error", "flux_spread", "iterations", "converged"):
        assert key in fig
    assert fig["current_imbalance"] <= fig["flux_spread"] + 1e-15


# ----------------------------------------------------------------------------- labelled images
def _labelled():
    """A [z, y, x] label image like TauFactor's electrode example: pore 0, particles 85, binder 170."""
    ph = np.zeros((12, 10, 10), np.uint8)
    ph[:, :, :4] = 85
    ph[:, :, 4:6] = 170
    ph[:, 3:5, 6:] = 85
    return ph


def test_phase_label_on_a_label_image_other_labels_insulate(taichi_runtime):
    ph = _labelled()
    img = VoxelImage(ph, 1e-6, conducting_phase=170)
    r = solve_conductivity(img, "z", sigma_bulk_S_per_m=2.0)
    assert r.sigma_eff_S_per_m == pytest.approx(2.0 * np.mean(ph[0] == 170), rel=1e-8)
    multi = solve_conductivity(img, "z", phase_conductivities={0: 0.0, 85: 1.0, 170: 2.0})
    expect = (2.0 * np.sum(ph[0] == 170) + 1.0 * np.sum(ph[0] == 85)) / ph[0].size
    assert multi.sigma_eff_S_per_m == pytest.approx(expect, rel=1e-8)
    assert multi.sigma_bulk_S_per_m == 2.0


def test_load_image_refuses_an_absent_label(tmp_path):
    from fva.io import load_image

    f = tmp_path / "lab.npy"
    np.save(f, _labelled())
    assert load_image(f, voxel_m=1e-6, phase=85).conducting_phase == 85
    with pytest.raises(ValueError, match=r"conducting phase 255 is not in the image \(labels present: 0, 85, 170\)"):
        load_image(f, voxel_m=1e-6, phase=255)
    with pytest.raises(ValueError, match="conducting phase 1 is not"):
        load_image(f, voxel_m=1e-6)


@pytest.mark.parametrize("axis,periodic", [("y", True), ("x", False), ("z", True)])
def test_device_fields_match_the_host_face_currents(taichi_runtime, axis, periodic):
    """Potential and current density computed on the device = the numpy face currents of the same potential."""
    from fva.reference import face_conductances, face_currents

    img = VoxelImage(gen.random_site((9, 8, 7), 0.6, seed=3), (1.5e-6, 1e-6, 0.7e-6), periodic=(periodic,) * 3)
    r = solve_conductivity(img, axis, return_fields=True, dtype="f64", rtol=1e-10, flux_tol=1e-9)
    ax = AXES[axis]
    perm = (ax,) + tuple(a for a in range(3) if a != ax)
    phi = np.nan_to_num(np.transpose(r.potential_V, perm).astype(np.float64))
    sig = np.where(np.isnan(np.transpose(r.potential_V, perm)), 0.0, 1.0)
    d = [img.voxel_m[a] for a in perm]
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    gA, gB, gC = face_conductances(sig, np.ones(sig.shape[1:]), c, periodic, periodic)
    IA, IB, IC = face_currents(phi, gA, gB, gC)
    jA = 0.5 * (IA[:-1] + IA[1:]) / (d[1] * d[2])
    jB = 0.5 * (IB + np.roll(IB, 1, axis=1)) / (d[0] * d[2])
    jC = 0.5 * (IC + np.roll(IC, 1, axis=2)) / (d[0] * d[1])
    j = np.transpose(r.current_density_A_per_m2, perm + (3,))[..., list(perm)]
    scale = np.abs(jA).max()
    for comp, ref in enumerate((jA, jB, jC)):
        np.testing.assert_allclose(j[..., comp], ref, atol=1e-6 * scale)
    np.testing.assert_allclose(r.electrode_current_A_per_m2, IA[-1] / (d[1] * d[2]), atol=1e-6 * scale)

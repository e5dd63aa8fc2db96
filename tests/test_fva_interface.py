"""Grain-boundary interface resistance R_i of the conduction solver (fva.interface)."""
import math

import numpy as np
import pytest

from fva.conduction import AXES, solve_conductivity
from fva.connectivity import percolating_mask
from fva.interface import add_interface_bits, check_interface_resistance
from fva.reference import solve_reference
from fva.types import Packing, VoxelImage
from fva.voxelise import voxelise

TIGHT = dict(rtol=1e-11, sigma_tol=1e-10, flux_tol=1e-10, dtype="f64")


def _blocks(cuts, shape=(18, 4, 5), axis=0):
    """Phase 1 everywhere, particle label k between cuts[k-1] and cuts[k] along array ``axis``."""
    lab = np.zeros(shape, np.int32)
    idx = np.arange(shape[axis])
    per = np.searchsorted(np.asarray(cuts), idx, side="right").astype(np.int32)
    lab += np.expand_dims(per, tuple(a for a in range(3) if a != axis))
    return np.ones(shape, np.uint8), lab


# ----------------------------------------------------------------------------- analytic series
@pytest.mark.parametrize("pc", ["mg", "jacobi"])
def test_two_blocks_in_series(taichi_runtime, pc):
    """R_total·A = L₁/σ₁ + R_i + L₂/σ₂ for two blocks of different conductivity, to 1e-6."""
    ph, lab = _blocks([7], (18, 4, 5))
    ph[7:] = 2
    d = (0.8e-6, 1.1e-6, 1.3e-6)
    img = VoxelImage(ph, voxel_m=d, labels=lab)
    s1, s2, R = 0.4, 1.7, 2.5e-6
    r = solve_conductivity(img, "z", phase_conductivities={1: s1, 2: s2}, interface_resistance_ohm_m2=R,
                           preconditioner=pc, **TIGHT)
    L1, L2 = 7 * d[0], 11 * d[0]
    expect = (L1 + L2) / (L1 / s1 + R + L2 / s2)
    assert r.converged
    assert r.sigma_eff_S_per_m == pytest.approx(expect, rel=1e-6)
    assert r.interface_faces == 4 * 5
    assert r.interface_resistance_ohm_m2 == R


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_several_blocks_every_axis(taichi_runtime, axis):
    """k blocks along the solve axis: k − 1 interfaces in series; side faces of the blocks carry no current."""
    a = AXES[axis]
    shape = (10, 12, 14)
    cuts = {0: [3, 5, 9], 1: [2, 6, 7, 10], 2: [4, 11]}[a]
    ph, lab = _blocks(cuts, shape, a)
    d = (1.0e-6, 0.7e-6, 1.4e-6)
    img = VoxelImage(ph, voxel_m=d, labels=lab, periodic=(True, True, False))
    sig, R = 0.9, 4e-7
    r = solve_conductivity(img, axis, sigma_bulk_S_per_m=sig, interface_resistance_ohm_m2=R, **TIGHT)
    L = shape[a] * d[a]
    assert r.sigma_eff_S_per_m == pytest.approx(L / (L / sig + len(cuts) * R), rel=1e-6)
    # the same blocks across the current: interfaces parallel to it change nothing
    other = "x" if axis != "x" else "y"
    r2 = solve_conductivity(img, other, sigma_bulk_S_per_m=sig, interface_resistance_ohm_m2=R, **TIGHT)
    assert r2.sigma_eff_S_per_m == pytest.approx(sig, rel=1e-9)


def test_zero_resistance_is_the_old_operator_bitwise(taichi_runtime):
    """R_i = 0 with labels gives exactly (bitwise) the solve of the image without labels."""
    rng = np.random.default_rng(7)
    pk = Packing(rng.random((40, 3)) * 20e-6, np.full(40, 3e-6), np.array([20e-6, 20e-6, 20e-6]))
    img = voxelise(pk, 1e-6, labels=True)
    plain = VoxelImage(img.phase, img.voxel_m, img.periodic)
    for pc in ("mg", "jacobi"):
        a = solve_conductivity(img, "z", preconditioner=pc, interface_resistance_ohm_m2=0.0)
        b = solve_conductivity(plain, "z", preconditioner=pc)
        assert a.sigma_eff_S_per_m == b.sigma_eff_S_per_m and a.iterations == b.iterations
        assert a.interface_faces == 0


def _packing_image(seed=3, n=45, box=22e-6, r=3.2e-6, vox=1e-6):
    rng = np.random.default_rng(seed)
    pk = Packing(rng.random((n, 3)) * box, r * (0.8 + 0.4 * rng.random(n)), np.array([box, box, box]))
    return voxelise(pk, vox, labels=True)


@pytest.mark.parametrize("axis,pc,dtype", [("z", "mg", "f32"), ("x", "jacobi", "f64"), ("y", "mg", "f64")])
def test_packing_matches_scipy_reference(taichi_runtime, axis, pc, dtype):
    """Random labelled packing (periodic sides): the Taichi solve equals the scipy direct solve of the same
    operator, built independently from the labels (fva.reference)."""
    img = _packing_image()
    R = 3e-6
    r = solve_conductivity(img, axis, sigma_bulk_S_per_m=1.0, interface_resistance_ohm_m2=R,
                           preconditioner=pc, dtype=dtype)
    ax = AXES[axis]
    perm = (ax,) + tuple(a for a in range(3) if a != ax)
    sig = np.transpose(img.phase, perm).astype(float)
    lab = np.transpose(img.labels, perm)
    d = [img.voxel_m[a] for a in perm]
    c = (d[1] * d[2] / d[0], d[0] * d[2] / d[1], d[0] * d[1] / d[2])
    per = (img.periodic[2], img.periodic[1], img.periodic[0])
    p1, p2 = per[perm[1]], per[perm[2]]
    perc = percolating_mask(sig > 0, 0, (False, p1, p2))
    _, planes = solve_reference(np.where(perc, sig, 0.0), None, c, p1, p2, labels=lab,
                                r_over_d=[R / v for v in d])
    ref = planes.mean() * sig.shape[0] * d[0] / (sig.shape[1] * d[1] * sig.shape[2] * d[2])
    r0 = solve_conductivity(img, axis, sigma_bulk_S_per_m=1.0, preconditioner=pc, dtype=dtype)
    assert r.converged and r.interface_faces > 0
    assert r.sigma_eff_S_per_m == pytest.approx(ref, rel=5e-5)
    assert r.sigma_eff_S_per_m < 0.9 * r0.sigma_eff_S_per_m  # the interfaces matter at this R_i


def test_interface_bits_count_and_wrap():
    """One bit per interface face (towards +1), the periodic wrap face included only when periodic."""
    ids = np.ones((2, 3, 4), np.uint8)
    lab = np.zeros((2, 3, 4), np.int32)
    lab[:, :, 2:] = 1           # faces k=1→2 and (periodic) k=3→0 along axis 2
    lab[1, 0, 0] = -1           # a pore-labelled voxel never makes an interface ...
    ids[1, 0, 0] = 0            # ... (nor does a removed one)
    n_open = add_interface_bits(ids.copy(), lab, False, False)
    n_wrap = add_interface_bits(ids.copy(), lab, False, True)
    assert n_open == 2 * 3
    assert n_wrap == n_open + 2 * 3 - 1
    b = ids.copy()
    add_interface_bits(b, lab, False, True)
    assert np.all(b & 31 == ids) and b[0, 1, 1] == ids[0, 1, 1] | (1 << 7)


# ----------------------------------------------------------------------------- resolution
def test_resolution_interface_term_converges(taichi_runtime):
    """Simple-cubic lattice of overlapping spheres (r = 0.7 a), 4 layers: the interface part of the
    resistance, L/σ(R_i) − L/σ(0), converges with the voxel size instead of scaling with 1/Δ (a per-voxel
    error would double it between 12 and 24 voxels per lattice spacing)."""
    a, nl, m = 10e-6, 4, 2
    cs = np.array([[(i + .5) * a, (j + .5) * a, (k + .5) * a] for i in range(m) for j in range(m) for k in range(nl)])
    pk = Packing(cs, np.full(len(cs), 0.7 * a), np.array([m * a, m * a, nl * a]))
    R, L = 2e-5, nl * a
    term = []
    for npa in (12, 16, 24):
        img = voxelise(pk, a / npa, labels=True)
        r0 = solve_conductivity(img, "z", sigma_bulk_S_per_m=1.0)
        r1 = solve_conductivity(img, "z", sigma_bulk_S_per_m=1.0, interface_resistance_ohm_m2=R)
        term.append((L / r1.sigma_eff_S_per_m - L / r0.sigma_eff_S_per_m) / ((nl - 1) * R))
    assert max(term) / min(term) < 1.1, term
    # bounded by the isopotential-grain limit R·(cell area / neck area) per interface plane
    neck = math.pi * ((0.7 * a) ** 2 - (a / 2) ** 2)
    assert all(0.5 < t < a * a / neck for t in term), term


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [-1e-6, float("inf"), float("nan"), "x"])
def test_bad_resistance_rejected(bad):
    with pytest.raises(ValueError, match="interface_resistance_ohm_m2"):
        check_interface_resistance(bad)


def test_resistance_needs_labels(taichi_runtime):
    img = VoxelImage(np.ones((4, 4, 4), np.uint8), voxel_m=1e-6)
    with pytest.raises(ValueError, match="interface_resistance_ohm_m2 > 0 needs a particle label image"):
        solve_conductivity(img, "z", interface_resistance_ohm_m2=1e-6)

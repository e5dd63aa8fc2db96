"""Microstructure metrics (fva.microstructure): synthetic images with known answers.

Solver-dependent tests run twice: against a tiny scipy-sparse reference kept here (test helper
only) and against the project's fva.conduction solver (skipped while that module is absent).
"""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

import fva.microstructure as ms
from fva.metrics import _common
from fva.types import Packing, VoxelImage


# ------------------------------------------------------------------ reference solver (tests only)
def _ref_solve(image, axis="z", *, sigma_bulk_S_per_m=1.0, electrode_mask=None, **_):
    """7-point FV, harmonic faces (pore σ = 0), Dirichlet half a voxel outside the end slabs,
    zero-flux sides, optional electrode mask on the high face."""
    order = {"z": (0, 1, 2), "y": (1, 0, 2), "x": (2, 0, 1)}[axis]      # face axes stay ascending
    s = np.transpose(image.solid, order)
    h = [image.voxel_m[i] for i in order]
    n0 = s.shape[0]
    hi_mask = np.ones(s.shape[1:], bool) if electrode_mask is None else np.asarray(electrode_mask, bool)
    lab, _ = ndi.label(s, structure=ndi.generate_binary_structure(3, 1))
    lo = np.unique(lab[0][s[0]])
    hi = np.unique(lab[-1][s[-1] & hi_mask])
    keep = np.isin(lab, np.intersect1d(lo, hi)) & s
    eps = float(s.mean())
    face_area = h[1] * h[2]
    res = types.SimpleNamespace(tau=np.inf, percolating=False, sigma_eff_S_per_m=0.0,
                                sigma_bulk_S_per_m=sigma_bulk_S_per_m,
                                electrode_current_A_per_m2=np.zeros(s.shape[1:]))
    if not keep.any():
        return res
    idx = -np.ones(s.shape, np.int64)
    idx[keep] = np.arange(keep.sum())
    sig = sigma_bulk_S_per_m
    rows, cols, vals = [], [], []
    diag = np.zeros(keep.sum())
    b = np.zeros(keep.sum())
    for ax in range(3):
        area = np.prod([h[i] for i in range(3) if i != ax])
        g = sig * area / h[ax]
        a = [slice(None)] * 3
        c = [slice(None)] * 3
        a[ax], c[ax] = slice(0, -1), slice(1, None)
        i1, i2 = idx[tuple(a)], idx[tuple(c)]
        m = (i1 >= 0) & (i2 >= 0)
        i1, i2 = i1[m], i2[m]
        rows += [i1, i2]
        cols += [i2, i1]
        vals += [np.full(i1.size, -g)] * 2
        np.add.at(diag, i1, g)
        np.add.at(diag, i2, g)
    gb = 2 * sig * face_area / h[0]
    lo_i = idx[0][keep[0]]
    np.add.at(diag, lo_i, gb)
    b[lo_i] += gb * 1.0                                   # V = 1 at the low face
    hi_sel = keep[-1] & hi_mask
    hi_i = idx[-1][hi_sel]
    np.add.at(diag, hi_i, gb)                             # V = 0 at the high face
    n = keep.sum()
    A = coo_matrix((np.concatenate(vals + [diag]),
                    (np.concatenate(rows + [np.arange(n)]), np.concatenate(cols + [np.arange(n)]))),
                   shape=(n, n)).tocsr()
    phi = spsolve(A, b)
    jmap = np.zeros(s.shape[1:])
    jmap[hi_sel] = gb * phi[hi_i] / face_area
    current = float(jmap.sum() * face_area)
    L = n0 * h[0]
    sigma_eff = current * L / (face_area * s.shape[1] * s.shape[2] * 1.0)
    res.percolating = True
    res.sigma_eff_S_per_m = sigma_eff
    res.tau = eps * sig / sigma_eff
    res.electrode_current_A_per_m2 = jmap
    return res


def _have_conduction():
    try:
        import fva.conduction  # noqa: F401

        return hasattr(fva.conduction, "solve_conductivity")
    except Exception:
        return False


@pytest.fixture(params=["reference", "taichi"])
def solver(request, monkeypatch):
    """Which solver fva.microstructure calls; returns a tolerance for its results."""
    if request.param == "reference":
        monkeypatch.setattr(_common, "solver", lambda: _ref_solve)
        return 1e-9
    if not _have_conduction():
        pytest.skip("fva.conduction.solve_conductivity not available yet")
    request.getfixturevalue("taichi_runtime")
    return 2e-3


# ------------------------------------------------------------------ porosity
def test_porosity_profile_slabs():
    nz, ny, nx = 10, 8, 6
    want_z = np.linspace(0.0, 0.9, nz)
    s = np.ones((nz, ny, nx), bool)
    rng = np.random.default_rng(0)
    for k, e in enumerate(want_z):
        flat = np.ones(ny * nx, bool)
        flat[rng.permutation(ny * nx)[: int(round(e * ny * nx))]] = False
        s[k] = flat.reshape(ny, nx)
    exact = np.array([round(e * ny * nx) / (ny * nx) for e in want_z])
    np.testing.assert_allclose(ms.porosity_profile(s, "z"), exact, atol=1e-12)
    img = VoxelImage(s.astype(np.uint8), 1e-6)
    np.testing.assert_allclose(ms.porosity_profile(img, "z"), exact, atol=1e-12)
    # x profile of an x-slab image
    s2 = np.ones((4, 5, 6), bool)
    s2[:, :, 2] = False
    s2[:2, :, 4] = False
    np.testing.assert_allclose(ms.porosity_profile(s2, "x"), [0, 0, 1, 0, 0.5, 0])
    np.testing.assert_allclose(ms.porosity_profile(s2, "y"), np.full(5, (4 + 2) / 24))
    with pytest.raises(ValueError):
        ms.porosity_profile(s2, "w")


def test_subvolume_porosity_std_known():
    s = np.ones((8, 8, 9), bool)            # last x column is a remainder, left out
    s[:4, :4, :4] = False                   # one of 8 cubes fully porous
    s[4:, 4:, 4:8][:, :, :2] = False        # another half porous
    s[:, :, 8] = False                      # remainder must not count
    mean, std, n = ms.subvolume_porosity_std(s, 4)
    vals = np.array([1.0, 0.5] + [0.0] * 6)
    assert n == 8
    assert mean == pytest.approx(vals.mean())
    assert std == pytest.approx(vals.std())
    with pytest.raises(ValueError):
        ms.subvolume_porosity_std(s, 20)


def test_inplane_map_columns():
    nz, ny, nx = 8, 8, 16
    s = np.ones((nz, ny, nx), bool)
    s[:4, :, :4] = False                    # columns x < 4: porosity 0.5 along z
    m = ms.inplane_map(s)
    eps = 0.5 * 4 / 16
    assert m.shape == (ny, nx)
    np.testing.assert_allclose(m[:, :4], 0.5 - eps)
    np.testing.assert_allclose(m[:, 4:], -eps)
    assert ms.inplane_rms(m) == pytest.approx(np.sqrt(0.25 * (0.5 - eps) ** 2 + 0.75 * eps ** 2))
    assert ms.inplane_rms(ms.inplane_map(np.ones((3, 4, 4), bool))) == 0.0


def test_radial_structure_factor_stripes():
    period, dx = 8, 0.5e-6
    s = np.ones((4, 32, 32), bool)
    s[:, :, (np.arange(32) % period) < period // 2] = False
    k, S, L = ms.radial_structure_factor(s, dx)
    assert L == pytest.approx(period * dx, rel=1e-6)
    assert k[np.argmax(S)] == pytest.approx(2 * np.pi / (period * dx), rel=1e-6)
    assert np.all(np.diff(k) > 0)


# ------------------------------------------------------------------ pore sizes
def _sphere_pores(n, centres, R):
    s = np.ones((n, n, n), bool)
    zz, yy, xx = np.indices(s.shape)
    for c in centres:
        s[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= R * R] = False
    return s


def test_local_thickness_spheres_peak_at_radius():
    R, vox = 6, 0.5e-6
    s = _sphere_pores(48, [(12, 12, 12), (12, 34, 30), (34, 20, 14), (34, 34, 34)], R)
    lt = ms.local_thickness(~s, vox)
    assert np.all(lt[s] == 0) and np.all(lt[~s] > 0)
    vals, cnt = np.unique(lt[~s], return_counts=True)
    peak = vals[np.argmax(cnt)]
    assert R * vox <= peak <= (R + 1) * vox
    psd = ms.pore_size_distribution(lt, bins=np.arange(0, 30) * vox, voxel_m=vox)
    assert psd["n_pores"] == 4
    assert psd["counts_by_number"].sum() == pytest.approx(1.0)
    assert psd["counts_by_volume"].sum() == pytest.approx(1.0)
    assert 2 * R * vox <= psd["mean_m"] <= 2 * (R + 1) * vox
    e = psd["edges_m"]
    i = int(np.argmax(psd["counts_by_volume"]))
    assert e[i] <= peak * 2 + 1e-15 and e[i + 1] >= 2 * R * vox
    np.testing.assert_allclose(psd["equivalent_diameters_m"], 2 * R * vox, rtol=0.05)


def test_local_thickness_matches_brute_force():
    rng = np.random.default_rng(3)
    pore = ndi.gaussian_filter(rng.random((20, 22, 24)), 2) > 0.5
    sp = np.array([1.5, 1.0, 1.25])
    dt = ndi.distance_transform_edt(pore, sampling=sp)
    levels = np.unique(dt[pore])
    lt = ms.local_thickness(pore, tuple(sp), bins=levels)
    ref = np.zeros(pore.shape)
    Z, Y, X = np.indices(pore.shape)
    for c in zip(*np.nonzero(pore)):
        r = dt[c]
        m = ((Z - c[0]) * sp[0]) ** 2 + ((Y - c[1]) * sp[1]) ** 2 + ((X - c[2]) * sp[2]) ** 2 <= r * r * (1 + 1e-9)
        ref[m] = np.maximum(ref[m], r)
    ref[~pore] = 0
    np.testing.assert_allclose(lt, ref, atol=1e-12)


def test_percolating_fraction():
    s = np.zeros((10, 6, 6), bool)
    s[:, 1, 1] = True              # 10 voxels through z
    s[2:5, 4, 4] = True            # 3 voxels isolated
    assert ms.percolating_fraction(s, "z") == pytest.approx(10 / 13)
    assert ms.percolating_fraction(s, "x") == 0.0
    assert ms.percolating_fraction(~s, "x") == 1.0
    assert ms.percolating_fraction(np.zeros((3, 3, 3), bool), "z") == 0.0


# ------------------------------------------------------------------ transport
@pytest.mark.parametrize("batch", [True, False])
def test_rve_uniform_tau_one(solver, batch):
    img = VoxelImage(np.ones((16, 16, 16), np.uint8), (1e-6, 2e-6, 0.5e-6))
    out = ms.rve_tortuosity(img, grid=(2, 2, 2), batch=batch)
    assert out["batched"] is batch
    for a in "xyz":
        assert out["tau_map"][a].shape == (2, 2, 2)
        np.testing.assert_allclose(out["tau_map"][a], 1.0, atol=solver)
        assert out["tau_mean"][a] == pytest.approx(1.0, abs=solver)
        assert out["tau_std"][a] == pytest.approx(0.0, abs=solver)
        assert out["n_nonpercolating"][a] == 0
    assert out["tau_inplane"] == pytest.approx(1.0, abs=solver)
    assert out["tau_throughplane"] == pytest.approx(1.0, abs=solver)


@pytest.mark.parametrize("batch", [True, False])
def test_rve_blocked_subvolume_counted(solver, batch):
    ph = np.ones((16, 16, 16), np.uint8)
    ph[3, :8, :8] = 0               # pore sheet across block (0, 0, 0): blocks z only
    img = VoxelImage(ph, 1e-6)
    out = ms.rve_tortuosity(img, grid=2, batch=batch)
    assert out["n_nonpercolating"] == {"x": 0, "y": 0, "z": 1}
    assert np.isinf(out["tau_map"]["z"][0, 0, 0])
    assert np.isinf(out["tau_mean"]["z"]) and np.isinf(out["tau_throughplane"])   # never averaged away
    assert out["tau_mean_conducting"]["z"] == pytest.approx(1.0, abs=solver)     # the 7 others
    assert out["tau_mean"]["x"] == pytest.approx(1.0, abs=solver) and out["n_subvolumes"] == 8
    # x/y in the blocked block: 7 of 8 layers conduct → σ_eff = 7/8, ε = 7/8 → τ = 1
    assert out["tau_map"]["x"][0, 0, 0] == pytest.approx(1.0, abs=solver)
    assert out["porosity_map"][0, 0, 0] == pytest.approx(1 / 8)


def test_analyze_reports_blocked_subvolumes(solver, capsys):
    """A pore layer across a quarter of the sub-volumes (16 of 64 blocked along z): τ_z is inf with
    the count, not the mean ≈ 1 of the 48 that conduct (issue 15)."""
    ph = np.ones((16, 16, 16), np.uint8)
    ph[1] = 0                                   # pore layer inside the bottom row of sub-volumes
    summ = ms.analyze_image(VoxelImage(ph, 1e-6), rve_grid=4, contact_fraction=None)
    assert summ["rve_n_nonpercolating"] == {"x": 0, "y": 0, "z": 16} and summ["rve_n_subvolumes"] == 64
    assert summ["tau_throughplane"] is None and summ["rve_tau_mean"]["z"] is None
    assert summ["rve_tau_mean_conducting"]["z"] == pytest.approx(1.0, abs=solver)
    assert summ["tau_inplane"] == pytest.approx(1.0, abs=solver)
    lines = ms.summary_lines(summ)
    assert "tau_throughplane = inf (16 of 64 sub-volumes do not conduct along z)" in lines
    assert any(ln.startswith("tau_inplane = 1.0") or ln.startswith("tau_inplane = 0.99") for ln in lines)


def test_rve_batched_equals_one_by_one(solver):
    rng = np.random.default_rng(11)
    f = ndi.gaussian_filter(rng.random((16, 20, 24)), 1.2)
    solid = f > np.quantile(f, 0.3)                      # porosity 0.3
    img = VoxelImage(solid.astype(np.uint8), (1e-6, 1.5e-6, 1e-6))
    a = ms.rve_tortuosity(img, grid=(2, 2, 3), batch=True)
    b = ms.rve_tortuosity(img, grid=(2, 2, 3), batch=False)
    for ax in "xyz":
        ta, tb = a["tau_map"][ax], b["tau_map"][ax]
        assert ta.shape == (2, 2, 3)
        np.testing.assert_array_equal(np.isfinite(ta), np.isfinite(tb))
        m = np.isfinite(tb)
        assert m.sum() >= 6 and np.ptp(tb[m]) > 0.05          # a heterogeneous, mostly percolating case
        np.testing.assert_allclose(ta[m], tb[m], rtol=max(solver, 1e-8))
    np.testing.assert_allclose(a["porosity_map"], b["porosity_map"])


def test_interface_full_contact_uniform(solver):
    img = VoxelImage(np.ones((8, 10, 12), np.uint8), 1e-6)
    out = ms.electrode_interface_current(img, contact_fraction=1.0, applied_current_A_per_m2=10.0)
    assert out["contact_fraction"] == 1.0
    assert np.all(np.isfinite(out["map_A_per_m2"]))
    np.testing.assert_allclose(out["map_A_per_m2"], 10.0, rtol=10 * solver)
    assert out["cv"] == pytest.approx(0.0, abs=10 * solver)
    assert out["max_over_mean"] == pytest.approx(1.0, abs=10 * solver)


def test_interface_partial_disc_hot_edges(solver):
    img = VoxelImage(np.ones((8, 16, 16), np.uint8), 1e-6)
    f = 0.5
    out = ms.electrode_interface_current(img, contact_fraction=f, pattern="disc", applied_current_A_per_m2=10.0)
    cm = out["contact_mask"]
    assert out["contact_fraction"] == pytest.approx(f)
    j = out["map_A_per_m2"]
    assert np.all(np.isnan(j[~cm])) and np.all(np.isfinite(j[cm]))
    assert out["mean_A_per_m2"] == pytest.approx(10.0 / f, rel=1e-9)
    assert out["max_over_mean"] > 1.2 and out["cv"] > 0.05
    # hot spots on the contact edge: the maximum sits next to an insulating face voxel
    edge = cm & ~ndi.binary_erosion(cm, border_value=1)
    iy, ix = np.unravel_index(np.nanargmax(j), j.shape)
    assert edge[iy, ix]
    assert np.nanmean(j[edge]) > np.nanmean(j[cm & ~edge])
    assert j[7, 7] < out["mean_A_per_m2"]


def test_interface_random_fraction_and_surface(solver):
    ph = np.ones((6, 12, 12), np.uint8)
    ph[-1, :3, :] = 0                 # a pore band in the top slab
    img = VoxelImage(ph, 1e-6)
    r = ms.electrode_interface_current(img, contact_fraction=0.9306, pattern="random", seed=1)
    assert r["contact_fraction"] <= 0.9306 * 0.75 + 1e-9 + 1 / 144
    assert r["mean_A_per_m2"] == pytest.approx(10.0 / r["contact_fraction"], rel=1e-9)
    s = ms.electrode_interface_current(img, pattern="from_surface")
    assert s["contact_fraction"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        ms.electrode_interface_current(img, contact_fraction=None, pattern="disc")


# ------------------------------------------------------------------ contacts
def test_dem_contact_radii_analytic_and_periodic():
    L, H = 10.0e-6, 20.0e-6
    r1, r2, d = 2.0e-6, 1.0e-6, 2.5e-6
    centres = np.array([
        [5.0e-6, 5.0e-6, 5.0e-6], [5.0e-6 + d, 5.0e-6, 5.0e-6],          # pair A (inside)
        [0.2e-6, 2.0e-6, 12.0e-6], [L - 1.3e-6, 2.0e-6, 12.0e-6],  # pair B across x = 0
        [8.0e-6, 8.0e-6, 0.5e-6], [8.0e-6, 8.0e-6, H - 0.5e-6],          # z is not periodic
    ])
    radii = np.array([r1, r2, 1.0e-6, 1.0e-6, 1.0e-6, 1.0e-6])
    out = ms.dem_contact_radii(Packing(centres, radii, np.array([L, L, H])))
    assert out["n_contacts"] == 2
    aA = np.sqrt(r1 * r2 / (r1 + r2) * (r1 + r2 - d))
    dB = 0.2e-6 + 1.3e-6
    aB = np.sqrt(0.5e-6 * (2.0e-6 - dB))
    pairs = [tuple(p) for p in out["pairs"]]
    assert pairs == [(0, 1), (2, 3)]
    np.testing.assert_allclose(out["contact_radius_m"], [aA, aB], rtol=1e-9)
    np.testing.assert_allclose(out["contact_area_m2"], np.pi * np.array([aA, aB]) ** 2, rtol=1e-9)
    assert out["coordination"] == pytest.approx(4 / 6)
    # without periodic x the cross-face pair disappears
    out2 = ms.dem_contact_radii(Packing(centres, radii, np.array([L, L, H]), periodic=(False, False, False)))
    assert out2["n_contacts"] == 1


def test_interface_area_from_labels():
    lab = -np.ones((4, 5, 6), np.int32)
    lab[:, :, :3] = 0
    lab[:, :, 3:] = 1                 # one x-normal interface plane: 4 × 5 faces of dz·dy
    lab[0, 0, :] = -1                 # pore removes one face
    vox = (1e-6, 2e-6, 3e-6)
    assert ms.interface_area_from_labels(lab, vox) == pytest.approx((20 - 1) * 1e-6 * 2e-6)
    assert ms.interface_area_from_labels(lab, vox, periodic=(True, False, False)) == pytest.approx(
        (2 * 20 - 2) * 1e-6 * 2e-6)


# ------------------------------------------------------------------ one call + figures
def test_analyze_image_json_and_plots(solver, tmp_path):
    rng = np.random.default_rng(7)
    solid = ndi.gaussian_filter(rng.random((16, 16, 16)), 1.5) > 0.42
    labels = np.where(solid, (np.arange(16)[None, None, :] // 4).repeat(16, 0).repeat(16, 1), -1).astype(np.int32)
    img = VoxelImage(solid.astype(np.uint8), 0.5e-6, labels=labels)
    pk = Packing(np.array([[1e-6, 1e-6, 1e-6], [2.5e-6, 1e-6, 1e-6]]), np.array([1e-6, 1e-6]),
                 np.array([8e-6, 8e-6, 8e-6]))
    summ, arrays = ms.analyze_image(img, rve_grid=(2, 2, 2), packing=pk, return_arrays=True)
    need = ["porosity", "porosity_profile_z", "inplane_rms", "pore_size_mean_m", "pore_size_hist", "rve_grid",
            "rve_tau_mean", "rve_tau_std", "tau_inplane", "tau_throughplane", "interface_contact_fraction",
            "interface_current_max_over_mean", "interface_current_cv"]
    for k in need:
        assert k in summ, k
    text = json.dumps(summ, allow_nan=False)
    back = json.loads(text)
    assert back["porosity"] == pytest.approx(1 - solid.mean())
    assert len(back["porosity_profile_z"]) == 16
    assert set(back["rve_tau_mean"]) == {"x", "y", "z"} and set(back["rve_tau_std"]) == {"x", "y", "z"}
    assert back["pore_size_hist"]["edges_m"] and len(back["pore_size_hist"]["counts"]) == len(
        back["pore_size_hist"]["edges_m"]) - 1
    assert back["interface_contact_fraction"] <= 0.9306 + 1e-9
    assert back["rve_grid"] == [2, 2, 2]
    assert back["dem_contacts"]["n_contacts"] == 1
    assert back["interface_area_m2"] > 0
    paths = ms.plot_microstructure(summ, arrays, tmp_path / "figs")
    names = {p.name for p in paths}
    assert {"porosity_profile.png", "inplane_map.png", "pore_size_hist.png", "rve_tau.png",
            "interface_current.png", "interface_current.vti"} <= names
    for p in paths:
        assert p.exists() and p.stat().st_size > 0
    assert not list((tmp_path / "figs").glob(".*tmp*"))


def test_analyze_without_transport_keys_none():
    img = VoxelImage(np.ones((8, 8, 8), np.uint8), 1e-6)
    summ = ms.analyze_image(img, transport=False)
    assert summ["porosity"] == 0.0 and summ["rve_tau_mean"] is None and summ["pore_size_mean_m"] is None
    json.dumps(summ, allow_nan=False)


def test_interface_vti_voxel_lands_where_it_should(tmp_path):
    import pyvista as pv

    ny, nx, nz, vox = 5, 7, 4, (1e-6, 2e-6, 3e-6)
    j = np.full((ny, nx), 10.0)
    j[0, 0] = np.nan                   # off contact
    j[3, 5] = 99.0                     # a hot spot at y = 3, x = 5
    summ = dict(voxel_m=list(vox), shape_zyx=[nz, ny, nx], interface_contact_fraction=34 / 35,
                interface_current_max_over_mean=1.0)
    arrays = dict(voxel_m=np.array(vox), interface_current_map_A_per_m2=j)
    paths = ms.plot_microstructure(summ, arrays, tmp_path)
    vti = [p for p in paths if p.suffix == ".vti"][0]
    g = pv.read(vti)
    cid = g.find_containing_cell(((5 + 0.5) * 3e-6, (3 + 0.5) * 2e-6, (nz - 0.5) * 1e-6))
    assert g.cell_data["interface_current_A_per_m2"][cid] == 99.0
    cid0 = g.find_containing_cell((0.5 * 3e-6, 0.5 * 2e-6, (nz - 0.5) * 1e-6))
    assert g.cell_data["contact"][cid0] == 0

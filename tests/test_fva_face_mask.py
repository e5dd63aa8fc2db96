"""Face masks (fva.face_mask): the fine level of a one-σ image without table gathers agrees with the id tables."""
import numpy as np
import pytest

from fva.face_mask import face_mask, mask_table, row_segments, single_sigma
from fva.fine_kernels import MASK_SIGMA, NTAB
from fva.types import VoxelImage


def test_single_sigma_decides_the_mask_path():
    assert single_sigma([0.0, 1.0]) == 1.0
    assert single_sigma([0.0, 2.5, 0.0, 2.5]) == 2.5     # insulating labels beside one conducting σ
    assert single_sigma([0.0, 1.0, 2.0]) is None          # two conducting σ: harmonic means need the table
    assert single_sigma([0.0, 0.0]) is None


def _mask_by_loops(ids, cond, em, p1, p2):
    """The face mask cell by cell (the definition, for the vectorised builder)."""
    n = ids.shape
    per = (False, p1, p2)
    out = np.zeros(n, np.uint8)
    for i, j, k in np.ndindex(*n):
        if not cond[ids[i, j, k]]:
            continue
        for ax in range(3):
            for side, step in ((0, -1), (1, 1)):
                idx = [i, j, k]
                idx[ax] += step
                if not 0 <= idx[ax] < n[ax]:
                    if not (per[ax] and n[ax] > 1):
                        continue
                    idx[ax] %= n[ax]
                if cond[ids[tuple(idx)]]:
                    out[i, j, k] |= 1 << (2 * ax + side)
        if i == 0:
            out[i, j, k] |= 1 << 6
        if i == n[0] - 1 and em[j, k]:
            out[i, j, k] |= 1 << 7
    return out


@pytest.mark.parametrize("shape,p1,p2", [((5, 4, 3), True, True), ((3, 2, 5), True, False), ((1, 1, 4), True, True),
                                         ((4, 3, 1), False, True)])
def test_face_mask_bits_match_the_definition(shape, p1, p2):
    rng = np.random.default_rng(sum(shape))
    ids = rng.integers(0, 3, shape).astype(np.uint8)
    sig_of_id = np.array([0.0, 2.0, 0.0])                   # id 2: an insulating label
    em = rng.random(shape[1:]) < 0.7
    got = face_mask(ids, sig_of_id, em, p1, p2)
    assert np.array_equal(got, _mask_by_loops(ids, sig_of_id > 0, em, p1, p2))
    T = mask_table(2.0, (1.0, 0.5, 0.25))
    assert T[MASK_SIGMA] == 2.0 and T[0] == 0.0 and T[NTAB] == 0.0
    assert T[0b11000001] == pytest.approx(2.0 * (1.0 + 4.0 * 1.0))      # i− face and both electrode faces
    assert T[NTAB + 0b110000] == pytest.approx(1.0 / (2.0 * 0.25 * 2))


@pytest.mark.parametrize("shape,periodic,em_frac,frac", [((13, 11, 9), (True, True, False), 1.0, 0.7),
                                                         ((8, 2, 7), (True, True, True), 1.0, 0.7),
                                                         ((6, 1, 5), (True, True, False), 1.0, 0.7),
                                                         ((10, 9, 12), (False, False, False), 0.6, 0.7),
                                                         ((14, 13, 15), (True, True, True), 1.0, 0.45),
                                                         ((12, 11, 16), (False, False, False), 0.8, 0.4)])
def test_mask_path_agrees_with_the_id_tables(taichi_runtime, monkeypatch, shape, periodic, em_frac, frac):
    """Same σ_eff (1e-9) and fields from the face-mask kernels as from the id-table kernels, on every axis, with
    odd periodic sides, sides of one and two cells, a partial outlet electrode, and sparse images (``frac``
    conducting: most rows visited run by run, :func:`fva.face_mask.row_segments`)."""
    import fva.face_mask as fm
    from fva.conduction import solve_conductivity

    rng = np.random.default_rng(len(shape) + shape[0])
    img = VoxelImage((rng.random(shape) < frac).astype(np.uint8), 1e-6, periodic=periodic)
    for axis in "xyz":
        face = tuple(n for a, n in enumerate(shape) if a != "zyx".index(axis))
        em = rng.random(face) < em_frac if em_frac < 1 else None
        kw = dict(flux_tol=1e-10, rtol=1e-10, return_fields=True, electrode_mask=em)
        r_mask = solve_conductivity(img, axis, **kw)
        monkeypatch.setattr(fm, "single_sigma", lambda s: None)
        r_tab = solve_conductivity(img, axis, **kw)
        monkeypatch.undo()
        assert r_mask.sigma_eff_S_per_m == pytest.approx(r_tab.sigma_eff_S_per_m, rel=1e-9, abs=1e-300)
        assert r_mask.converged and r_tab.converged
        np.testing.assert_allclose(r_mask.potential_V, r_tab.potential_V, rtol=0, atol=1e-7)
        np.testing.assert_allclose(r_mask.current_density_A_per_m2, r_tab.current_density_A_per_m2,
                                   rtol=0, atol=1e-7 * np.abs(r_tab.current_density_A_per_m2).max())


@pytest.mark.parametrize("dense_row", [0.5, 2.0])
def test_row_segments_cover_the_conducting_cells(dense_row):
    """Every conducting cell in exactly one run, no removed cell in a run (but in a whole row: at least half
    conducting, or more than n2/8 runs), runs sorted; chunks of a few rows give the same array as one chunk."""
    rng = np.random.default_rng(3)
    mask = (rng.random((6, 5, 23)) < rng.random((6, 5, 1))).astype(np.uint8) * 7
    rs = row_segments(mask, dense_row=dense_row)
    assert np.array_equal(rs, row_segments(mask, dense_row=dense_row, chunk_cells=50))
    assert rs.size - 31 <= 2 * 30 * (23 // 8)                       # ≤ n2/8 runs per row: ≤ 1 B/voxel
    rows = mask.reshape(30, 23) != 0
    h = 31
    for r in range(30):
        runs = [(rs[h + 2 * s], rs[h + 2 * s + 1]) for s in range(rs[r], rs[r + 1])]
        cover = np.zeros(23, int)
        for a, b in runs:
            cover[a:b] += 1
        if rows[r].mean() >= dense_row or np.count_nonzero(np.diff(np.r_[0, rows[r], 0].astype(int)) == 1) > 23 / 8:
            assert runs == [(0, 23)]
        else:
            assert np.array_equal(cover, rows[r].astype(int))
            assert all(b1 < a2 for (_, b1), (a2, _) in zip(runs, runs[1:]))   # separate, ascending

"""Particle-size sampling: truncated gamma (number / volume), histogram CSV, monodisperse, statistics."""
import numpy as np
import pytest
from scipy import special

from dem.sizes import (ks_test_gamma, read_histogram_csv, sample_diameters, size_stats,
                       truncated_gamma_cdf, truncated_gamma_mean)

UM = 1e-6
A, B = 1.94431, 7.04802 * UM          # the study's <50 µm powder (schneider2023.toml)
LO, HI = 1.0 * UM, 50.0 * UM


def study(n=5000, **kw):
    kw.setdefault("seed", 3)
    return sample_diameters(n, shape=A, scale_m=B, d_min_m=LO, d_max_m=HI, **kw)


def test_truncated_gamma_passes_ks_and_stays_in_window():
    d = study(5000)
    assert d.shape == (5000,) and d.dtype == np.float64
    assert d.min() >= LO and d.max() <= HI
    stat, p = ks_test_gamma(d, A, B, LO, HI)
    assert p > 0.01, (stat, p)
    # and the test has power: the untruncated-mean-shifted model is rejected
    assert ks_test_gamma(d, A, 1.2 * B, LO, HI)[1] < 1e-6


def test_mean_matches_analytic_truncated_mean():
    d = study(20000)
    m = truncated_gamma_mean(A, B, LO, HI)
    assert abs(d.mean() / m - 1) < 0.02
    # the truncation at 1 and 50 µm moves the mean only slightly below a·b = 13.70 µm
    assert 13.0 * UM < m < A * B


def test_far_tail_window_is_exact():
    # a window deep in the upper tail (P(d > 60 µm) ~ 1e-4) is sampled by the complementary function
    d = sample_diameters(3000, shape=A, scale_m=B, d_min_m=60 * UM, d_max_m=80 * UM, seed=1)
    assert d.min() >= 60 * UM and d.max() <= 80 * UM
    assert ks_test_gamma(d, A, B, 60 * UM, 80 * UM)[1] > 0.01


def test_volume_weighting_shifts_volume_d50_to_the_gamma_median():
    # a > 3: number distribution is gamma(a-3) analytically
    a = 5.0
    dv = sample_diameters(20000, shape=a, scale_m=B, d_min_m=LO, d_max_m=80 * UM, weighting="volume", seed=2)
    dn = sample_diameters(20000, shape=a, scale_m=B, d_min_m=LO, d_max_m=80 * UM, seed=2)
    pl, ph = special.gammainc(a, LO / B), special.gammainc(a, 80 * UM / B)
    median_v = B * special.gammaincinv(a, 0.5 * (pl + ph))
    sv, sn = size_stats(dv), size_stats(dn)
    assert abs(sv["D50v_m"] / median_v - 1) < 0.03
    assert sn["D50v_m"] > sn["D50_m"]            # volume-based D50 lies above the number-based D50
    assert sn["D50_m"] > sv["D50_m"]             # a volume-weighted gamma holds more small particles
    assert ks_test_gamma(dv, a, B, LO, 80 * UM, weighting="volume")[1] > 0.01


def test_volume_weighting_numeric_branch_for_study_shape():
    # a = 1.944 <= 3: numeric inverse CDF; the volume median needs many particles (few large ones carry it)
    dv = study(200000, weighting="volume", seed=5)
    pl, ph = special.gammainc(A, LO / B), special.gammainc(A, HI / B)
    median_v = B * special.gammaincinv(A, 0.5 * (pl + ph))
    assert abs(size_stats(dv)["D50v_m"] / median_v - 1) < 0.04
    assert ks_test_gamma(dv[:5000], A, B, LO, HI, weighting="volume")[1] > 0.01
    c = truncated_gamma_cdf(np.array([LO, HI]), A, B, LO, HI, weighting="volume")
    assert c[0] == pytest.approx(0.0) and c[1] == pytest.approx(1.0)


def test_seeded_reproducibility():
    assert np.array_equal(study(1000, seed=7), study(1000, seed=7))
    assert not np.array_equal(study(1000, seed=7), study(1000, seed=8))


def test_monodisperse():
    d = sample_diameters(10, distribution="monodisperse", diameter_m=20 * UM)
    assert np.all(d == 20 * UM)


def _csv(tmp_path, text, name="h.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_histogram_reproduces_bin_fractions(tmp_path):
    p = _csv(tmp_path, "# sieve fractions\nd_low_um,d_high_um,count\n"
                       "1,5,100\n5,10,300\n10,20,500\n20,40,100\n")
    d = sample_diameters(4000, distribution="histogram", histogram_csv=p, seed=1)
    counts, _ = np.histogram(d / UM, bins=[1, 5, 10, 20, 40])
    assert np.allclose(counts / 4000, [0.1, 0.3, 0.5, 0.1], atol=1e-3)
    # uniform within a bin
    inbin = d[(d >= 10 * UM) & (d < 20 * UM)] / UM
    assert abs(inbin.mean() - 15) < 0.3
    assert np.array_equal(d, sample_diameters(4000, distribution="histogram", histogram_csv=p, seed=1))


def test_histogram_volume_counts(tmp_path):
    p = _csv(tmp_path, "d_low_m,d_high_m,fraction\n1e-6,2e-6,0.5\n10e-6,11e-6,0.5\n")
    d = sample_diameters(20000, distribution="histogram", histogram_csv=p, weighting="volume", seed=1)
    vol_small = np.sum(d[d < 5 * UM] ** 3) / np.sum(d ** 3)
    assert abs(vol_small - 0.5) < 0.02          # equal volumes → ~1000× more small particles
    assert np.mean(d < 5 * UM) > 0.99


def test_size_stats_keys_and_values():
    d = np.array([1.0, 2.0, 3.0, 4.0, 10.0]) * UM
    s = size_stats(d)
    for k in ("n", "mean_m", "D10_m", "D50_m", "D90_m", "D10v_m", "D50v_m", "D90v_m", "d_min_m", "d_max_m"):
        assert k in s
    assert s["n"] == 5 and s["D50_m"] == pytest.approx(3 * UM) and s["d_max_m"] == pytest.approx(10 * UM)
    assert s["D50v_m"] > s["D50_m"]


@pytest.mark.parametrize("kw, field", [
    (dict(shape=-1.0), "shape"),
    (dict(shape=0.0), "shape"),
    (dict(scale_m=0.0), "scale_m"),
    (dict(scale_m=-1e-6), "scale_m"),
    (dict(d_min_m=-1e-6), "d_min_m"),
    (dict(d_min_m=50e-6, d_max_m=10e-6), "d_min_m"),
    (dict(d_min_m=10e-3, d_max_m=11e-3), "probability mass"),    # window in the far tail (mm, not µm)
    (dict(weighting="mass"), "weighting"),
    (dict(distribution="lognormal"), "distribution"),
    (dict(weighting="volume", d_min_m=0.0), "d_min_m"),
])
def test_bad_gamma_input_names_the_field(kw, field):
    args = dict(shape=A, scale_m=B, d_min_m=LO, d_max_m=HI)
    args.update(kw)
    with pytest.raises(ValueError, match=field):
        sample_diameters(100, **args)


def test_bad_n_and_monodisperse():
    with pytest.raises(ValueError, match="n"):
        sample_diameters(0, shape=A, scale_m=B)
    with pytest.raises(ValueError, match="diameter_m"):
        sample_diameters(5, distribution="monodisperse", diameter_m=-1e-6)
    with pytest.raises(ValueError, match="histogram_csv"):
        sample_diameters(5, distribution="histogram")


@pytest.mark.parametrize("text, match", [
    ("lo,d_high_um,count\n1,2,3\n", "d_low_um"),
    ("d_low_um,hi,count\n1,2,3\n", "d_high_um"),
    ("d_low_um,d_high_um,n_particles\n1,2,3\n", "count"),
    ("d_low_um,d_high_um,count\n1,2,3\n2,x,4\n", "row 3.*d_high_um"),
    ("d_low_um,d_high_um,count\n1,2,-3\n", "row 2.*count"),
    ("d_low_um,d_high_um,count\n3,2,3\n", "row 2.*d_high_um"),
    ("d_low_um,d_high_um,count\n-1,2,3\n", "row 2.*d_low_um"),
    ("d_low_um,d_high_um,count\n1,2,0\n", "sums to zero"),
])
def test_bad_csv_names_column_and_row(tmp_path, text, match):
    p = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=match):
        read_histogram_csv(p)
    with pytest.raises(ValueError, match=match):
        sample_diameters(10, distribution="histogram", histogram_csv=p)

"""Heckel analysis on synthetic curves with a known K and A, regime I curvature and regime III flattening."""
import warnings

import numpy as np
import pytest

from dem.heckel import elastic_recovery, heckel_fit, heckel_y
from dem.heckel_cycles import find_cycles, in_die_and_out_of_die, loading_branch

GPa = 1e9
PY_TRUE = 0.95 * GPa          # the study's in-die Py of the <50 µm powder
K_TRUE = 1.0 / PY_TRUE
A_TRUE = 0.9
B, P0 = 0.3, 0.1 * GPa        # regime I: y = A + K p − B·exp(−p/p0)  (slope excess < 10 % above 0.34 GPa)
P3, W = 1.4 * GPa, 0.2 * GPa  # regime III: slope decays as exp(−(p − p3)/w) above p3


def heckel_curve(p):
    p = np.asarray(p, dtype=float)
    y = A_TRUE + K_TRUE * p - B * np.exp(-p / P0)
    m = p > P3
    y[m] = A_TRUE + K_TRUE * P3 - B * np.exp(-p[m] / P0) + K_TRUE * W * (1 - np.exp(-(p[m] - P3) / W))
    return 1.0 - np.exp(-y)


def synth(n=80, pmax=1.7 * GPa, noise=0.0, seed=0):
    p = np.linspace(0.01 * GPa, pmax, n)
    rho = heckel_curve(p) + np.random.default_rng(seed).normal(0.0, noise, n)
    return p, rho


def test_noise_free_recovers_py_and_regimes():
    p, rho = synth()
    h = heckel_fit(p, rho)
    assert h.method == "auto"
    assert h.Py_Pa == pytest.approx(PY_TRUE, rel=0.02)
    assert h.A == pytest.approx(A_TRUE, abs=0.02)
    assert h.Py_Pa == pytest.approx(1.0 / h.K_per_Pa)
    lo, hi = h.fit_range_Pa
    assert 0.34 * GPa <= lo <= 0.6 * GPa          # regime I excluded
    assert 1.2 * GPa <= hi <= P3 + 0.1 * GPa      # regime III excluded (gradual bend)
    assert h.regime_I_upper_Pa == lo
    assert h.regime_III_onset_Pa is not None and P3 <= h.regime_III_onset_Pa <= 1.65 * GPa
    assert h.r2 > 0.999 and h.n_points >= 40
    # the flattening region has densities above 0.9, as in regime III
    assert heckel_curve([h.regime_III_onset_Pa])[0] > 0.9


def test_without_regime_iii_onset_is_none():
    p, rho = synth(pmax=1.3 * GPa, n=60)
    h = heckel_fit(p, rho)
    assert h.regime_III_onset_Pa is None
    assert h.fit_range_Pa[1] == pytest.approx(1.3 * GPa)
    assert h.Py_Pa == pytest.approx(PY_TRUE, rel=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_noise_robustness(seed):
    p, rho = synth(noise=0.002, seed=seed)     # ±0.2 % in relative density
    h = heckel_fit(p, rho)
    assert h.method == "auto"
    assert h.Py_Pa == pytest.approx(PY_TRUE, rel=0.02)
    assert abs(h.Py_Pa - PY_TRUE) < 4 * h.Py_stderr_Pa + 0.005 * PY_TRUE
    assert 0.2 * GPa <= h.fit_range_Pa[0] and h.fit_range_Pa[1] <= 1.65 * GPa


def test_long_history_is_binned_and_fast():
    p, rho = synth(n=3000, noise=0.002, seed=9)
    h = heckel_fit(p, rho)
    assert h.Py_Pa == pytest.approx(PY_TRUE, rel=0.02)
    assert h.n_points > 1000


def test_manual_range():
    p, rho = synth()
    h = heckel_fit(p, rho, p_min_Pa=0.6 * GPa, p_max_Pa=1.3 * GPa, auto=False)
    assert h.method == "manual"
    assert h.Py_Pa == pytest.approx(PY_TRUE, rel=0.005)
    assert 0.6 * GPa <= h.fit_range_Pa[0] and h.fit_range_Pa[1] <= 1.3 * GPa
    assert h.rho_rel(1.0 * GPa) == pytest.approx(heckel_curve([1.0 * GPa])[0], abs=2e-3)


def test_fallback_is_flagged():
    p = np.linspace(0.1, 1.0, 30) * GPa
    rho = 1 - np.exp(-(0.5 + 3 * (p / GPa) ** 2))       # curved everywhere: no regime II
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = heckel_fit(p, rho)
    assert h.method == "auto-fallback" and any("regime II" in str(x.message) for x in w)


@pytest.mark.parametrize("p, rho, match", [
    ([1e8, 2e8, 3e8], [0.5, 0.6, 0.7], "at least 4"),
    ([1e8, 2e8, 3e8, 4e8], [0.5, 0.6, 1.0, 0.8], r"\(0, 1\)"),
    ([1e8, 2e8, 3e8, 4e8], [0.0, 0.6, 0.7, 0.8], r"\(0, 1\)"),
    ([1e8, 2e8, 3e8, 4e8], [0.5, 0.6, np.nan, 0.8], r"\(0, 1\)"),
    ([1e8, 3e8, 2e8, 4e8], [0.5, 0.6, 0.7, 0.8], "non-decreasing"),
    ([-1e8, 2e8, 3e8, 4e8], [0.5, 0.6, 0.7, 0.8], "p_Pa"),
    ([1e8, 2e8, 3e8], [0.5, 0.6, 0.7, 0.8], "same length"),
])
def test_bad_input(p, rho, match):
    with pytest.raises(ValueError, match=match):
        heckel_fit(p, rho)


def test_bad_range():
    p, rho = synth()
    with pytest.raises(ValueError, match="p_min_Pa"):
        heckel_fit(p, rho, p_min_Pa=1e9, p_max_Pa=5e8)
    with pytest.raises(ValueError, match="need at least 4"):
        heckel_fit(p, rho, p_min_Pa=1.0e9, p_max_Pa=1.03e9)


def test_elastic_recovery():
    assert elastic_recovery(0.92, 0.92 * 0.96) == pytest.approx(0.04)
    with pytest.raises(ValueError):
        elastic_recovery(1.2, 0.9)


def _cyclic_history(peaks_GPa, stack_GPa=0.01, rec_at_max=0.04, pts=12):
    """Load to each peak along the virgin curve, release to the stack pressure (density drops by
    rec_at_max·p_peak/1.7 GPa), reload elastically to the previous peak, continue."""
    P, R = [0.0], [heckel_curve([0.005 * GPa])[0]]
    prev_peak, prev_rho_peak = 0.0, None
    pmax_all = 1.7 * GPa
    for pk in np.asarray(peaks_GPa) * GPa:
        if prev_rho_peak is not None:  # elastic reload back to the previous peak
            pr = np.linspace(stack_GPa * GPa, prev_peak, pts)[1:]
            P += list(pr)
            R += list(R[-1] + (prev_rho_peak - R[-1]) * (pr - pr[0]) / (prev_peak - pr[0]))
        pv = np.linspace(max(prev_peak, 0.01 * GPa), pk, pts)[1:]
        P += list(pv)
        R += list(heckel_curve(pv))
        rho_pk = R[-1]
        rho_rel = rho_pk * (1 - rec_at_max * pk / pmax_all)
        pu = np.linspace(pk, stack_GPa * GPa, pts)[1:]
        P += list(pu)
        R += list(rho_pk + (rho_rel - rho_pk) * (pk - pu) / (pk - pu[-1]))
        prev_peak, prev_rho_peak = pk, rho_pk
    return dict(p_Pa=np.array(P), rho_rel=np.array(R))


def test_in_die_and_out_of_die_from_time_series():
    peaks = np.round(np.arange(0.1, 1.75, 0.1), 2)
    hist = _cyclic_history(peaks)
    cyc = find_cycles(hist["p_Pa"], hist["rho_rel"])
    assert len(cyc) == len(peaks)
    assert [c["p_max_Pa"] for c in cyc] == pytest.approx(list(peaks * GPa))
    assert cyc[-1]["elastic_recovery"] == pytest.approx(0.04, rel=1e-6)
    lp, lr = loading_branch(hist["p_Pa"], hist["rho_rel"])
    assert np.all(np.diff(lp) > 0)
    res = in_die_and_out_of_die(hist)
    assert res["in_die"].Py_Pa == pytest.approx(PY_TRUE, rel=0.03)
    assert res["out_of_die"] is not None
    assert res["out_of_die"].Py_Pa > res["in_die"].Py_Pa      # elastic recovery raises the out-of-die Py
    assert res["elastic_recovery"] == pytest.approx(0.04, rel=1e-6)
    # the history dict of the engine uses p_top_Pa / relative_density
    res2 = in_die_and_out_of_die(dict(p_top_Pa=hist["p_Pa"], relative_density=hist["rho_rel"]))
    assert res2["in_die"].Py_Pa == pytest.approx(res["in_die"].Py_Pa)


def test_low_pressure_collapses_are_not_cycles():
    hist = _cyclic_history([0.5, 1.0, 1.7])
    # DEM-like start: contact with the punch made and lost, force chains collapsing at a few MPa
    p0 = np.array([0.0, 0.0, 2e6, 0.5e6, 3e6, 1e6, 5e6]) + 0.0
    r0 = np.linspace(0.45, hist["rho_rel"][0], p0.size)
    h = dict(p_Pa=np.concatenate([p0, hist["p_Pa"] + 5e6]), rho_rel=np.concatenate([r0, hist["rho_rel"]]))
    cyc = find_cycles(h["p_Pa"], h["rho_rel"])
    assert len(cyc) == 3


def test_in_die_and_out_of_die_explicit_points():
    p, rho = synth()
    pm = np.array([0.5, 0.8, 1.1, 1.4, 1.7]) * GPa
    ra = heckel_curve(pm) * 0.97
    res = in_die_and_out_of_die({"load": (p, rho), "release": (pm, ra)})
    assert res["out_of_die"] is not None and res["out_of_die"].n_points >= 4
    assert res["elastic_recovery"] == pytest.approx(0.03, abs=2e-3)
    few = in_die_and_out_of_die({"load": (p, rho), "release": (pm[:2], ra[:2])})
    assert few["out_of_die"] is None and few["notes"]
    with pytest.raises(ValueError, match="p_Pa"):
        in_die_and_out_of_die({"pressure": p})


def test_heckel_y():
    assert heckel_y(0.5) == pytest.approx(np.log(2))


def test_cycles_from_stages_ignore_relaxation_between_loading_stages():
    from dem.heckel_cycles import cycles_from_stages, find_cycles

    # approach to 20 MPa, relaxation to 5 MPa, load to 500 MPa, unload to 0: one real cycle
    p = np.array([0, 10, 20, 5, 6, 100, 300, 500, 200, 50, 0], float) * 1e6
    rho = np.array([.40, .45, .50, .50, .50, .60, .70, .80, .79, .78, .77])
    stage = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    cyc = cycles_from_stages(p, rho, stage, ["load", "load", "unload"])
    assert len(cyc) == 1
    assert cyc[0]["p_max_Pa"] == 500e6 and cyc[0]["rho_after_release"] == 0.77
    assert cyc[0]["elastic_recovery"] == pytest.approx((0.80 - 0.77) / 0.80)
    assert len(find_cycles(p, rho)) == 2  # peak detection alone is fooled by the relaxation

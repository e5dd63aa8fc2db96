"""Heckel analysis of die compaction: ln(1/(1 − ρ_rel)) = K·p + A, mean yield pressure Py = 1/K.

Regimes of an in-die Heckel plot (Schneider et al. 2023, Fig. 2f and S9a): I — rearrangement and
fragmentation, the curve is concave (steep at low pressure, slope falling); II — plastic deformation, a
straight line whose slope is K; III — the compact behaves as one elastic body, the line bends away at high
relative density (ρ ≳ 0.9–0.95).

Automatic detection of regime II (``heckel_fit(..., auto=True)``)
-----------------------------------------------------------------
On the loading branch (pressure non-decreasing; long histories are first averaged into ≤ 200 equal-count
pressure bins), every contiguous window of at least ``max(5, 20 % of the points)`` points is fitted by
least squares twice: a line, and a quadratic in the centred pressure. A window is *linear* when

1. the line has r² ≥ ``r2_min`` (0.995) and a positive slope, and
2. its residuals show no curvature: the relative slope change that the quadratic term implies across
   the window, |2·c₂·Δp / K|, is ≤ ``slope_tol`` (4 %), **or** c₂ is not significant
   (|t| < ``t_crit`` = 2.5, which is what decides for noisy data).

The widest linear window wins (ties: the smallest |t| of c₂, then the highest r²). Regime I is whatever
lies below it (``regime_I_upper_Pa`` = its lowest pressure); regime III starts at the first point above it
whose residual from the extrapolated line exceeds max(3·s_res, 2·10⁻³) and stays beyond it for the next
point too (``regime_III_onset_Pa``; None when the data end inside regime II). The final K, A and their
standard errors come from an ordinary least-squares fit of the raw points inside the window; Py's
standard error is s_K/K². When no window qualifies, the most linear window of minimum width is used and
``method`` says "auto-fallback" (a warning is issued) so a pipeline still produces a number to inspect.

Out-of-die Heckel and load/release cycles: :mod:`dem.heckel_cycles` (``loading_branch``, ``find_cycles``,
``cycles_from_stages``, ``in_die_and_out_of_die``).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["HeckelResult", "heckel_fit", "heckel_y", "elastic_recovery"]


@dataclass(frozen=True)
class HeckelResult:
    """Result of a Heckel fit ln(1/(1−ρ)) = K p + A.

    K_per_Pa, K_stderr_per_Pa : slope and its standard error (1/Pa).
    A, A_stderr : intercept and its standard error.
    Py_Pa, Py_stderr_Pa : mean yield pressure 1/K and its standard error s_K/K² (Pa).
    r2 : coefficient of determination of the fit inside fit_range_Pa.
    fit_range_Pa : (lo, hi) pressures of the first and last fitted point.
    n_points : number of raw points fitted.
    regime_I_upper_Pa : pressure below which the data leave the line (the fit's lower end).
    regime_III_onset_Pa : first pressure above the fit where the data leave the line, or None.
    method : "auto", "auto-fallback" or "manual".
    """

    K_per_Pa: float
    A: float
    Py_Pa: float
    Py_stderr_Pa: float
    A_stderr: float
    r2: float
    fit_range_Pa: tuple
    n_points: int
    regime_I_upper_Pa: float
    regime_III_onset_Pa: float | None
    K_stderr_per_Pa: float = float("nan")
    method: str = "auto"

    def rho_rel(self, p_Pa):
        """Relative density on the fitted line at pressure(s) p_Pa."""
        return 1.0 - np.exp(-(self.K_per_Pa * np.asarray(p_Pa, dtype=np.float64) + self.A))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fit_range_Pa"] = [float(v) for v in self.fit_range_Pa]
        return d


def heckel_y(rho_rel):
    """ln(1/(1 − ρ_rel))."""
    return -np.log1p(-np.asarray(rho_rel, dtype=np.float64))


def _check(p_Pa, rho_rel, need=4):
    p = np.asarray(p_Pa, dtype=np.float64).ravel()
    r = np.asarray(rho_rel, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError(f"p_Pa and rho_rel must have the same length, got {p.size} and {r.size}")
    if p.size < need:
        raise ValueError(f"Heckel fit needs at least {need} points, got {p.size}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("p_Pa must be finite and >= 0 (pascals)")
    if not np.all(np.isfinite(r)) or np.any(r <= 0) or np.any(r >= 1):
        bad = np.flatnonzero(~((r > 0) & (r < 1)))
        raise ValueError(f"rho_rel must lie strictly inside (0, 1); index {bad[0] if bad.size else '?'} "
                         f"is {r[bad[0]] if bad.size else 'not finite'}")
    if np.any(np.diff(p) < 0):
        k = int(np.flatnonzero(np.diff(p) < 0)[0])
        raise ValueError(f"p_Pa must be non-decreasing (the loading branch): p[{k + 1}] = {p[k + 1]:.4g} "
                         f"Pa < p[{k}] = {p[k]:.4g} Pa; extract the loading branch with loading_branch() or "
                         "in_die_and_out_of_die()")
    if not p[-1] > p[0]:
        raise ValueError("p_Pa spans no pressure range")
    return p, r


def _ols(x, y, w=None):
    """(Weighted) line fit → (K, A, sK, sA, r2, s_res); s_res is the residual scale in units of 1/√w."""
    n = x.size
    w = np.ones_like(x) if w is None else w
    sw = w.sum()
    xm, ym = np.sum(w * x) / sw, np.sum(w * y) / sw
    sxx = np.sum(w * (x - xm) ** 2)
    sxy = np.sum(w * (x - xm) * (y - ym))
    syy = np.sum(w * (y - ym) ** 2)
    K = sxy / sxx
    A = ym - K * xm
    sse = max(float(np.sum(w * (y - (K * x + A)) ** 2)), 0.0)
    dof = max(n - 2, 1)
    s2 = sse / dof
    sK = np.sqrt(s2 / sxx)
    sA = np.sqrt(s2 * (1.0 / sw + xm ** 2 / sxx))
    r2 = 1.0 - sse / syy if syy > 0 else 1.0
    return float(K), float(A), float(sK), float(sA), float(r2), float(np.sqrt(s2))


def _bin(*arrays, nmax=200):
    """Average consecutive points into ≤ nmax equal-count bins (arrays of equal length)."""
    n = arrays[0].size
    if n <= nmax:
        return arrays
    edges = np.linspace(0, n, nmax + 1).astype(int)
    return tuple(np.add.reduceat(a, edges[:-1]) / np.diff(edges) for a in arrays)


def _seg_slope(x, y, w):
    """Row-wise weighted least-squares slopes and their variance factors 1/Sxx (multiply by s²)."""
    sw = np.sum(w, axis=1, keepdims=True)
    xc = x - np.sum(w * x, axis=1, keepdims=True) / sw
    yc = y - np.sum(w * y, axis=1, keepdims=True) / sw
    sxx = np.sum(w * xc * xc, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(w * xc * yc, axis=1) / sxx, 1.0 / sxx


def _scan(x, y, w, *, r2_min, slope_tol, t_crit, min_points):
    """Widest linear window (weighted fits); returns (i, j_inclusive, ok)."""
    n = x.size
    Lmin = max(5, min_points)
    if n < Lmin:
        return 0, n - 1, False
    fallback = None
    for L in range(n, Lmin - 1, -1):
        idx = np.arange(n - L + 1)[:, None] + np.arange(L)[None, :]
        X, Y, W = x[idx], y[idx], w[idx]
        sw = np.sum(W, axis=1, keepdims=True)
        xc = X - np.sum(W * X, axis=1, keepdims=True) / sw
        yc = Y - np.sum(W * Y, axis=1, keepdims=True) / sw
        q = xc ** 2
        q = q - np.sum(W * q, axis=1, keepdims=True) / sw
        sxx = np.sum(W * xc * xc, axis=1)
        sxy = np.sum(W * xc * yc, axis=1)
        syy = np.sum(W * yc * yc, axis=1)
        sxq = np.sum(W * xc * q, axis=1)
        sqq = np.sum(W * q * q, axis=1)
        sqy = np.sum(W * q * yc, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            K = sxy / sxx
            r2 = np.where(syy > 0, 1.0 - (syy - K * sxy) / syy, 1.0)
            det = sxx * sqq - sxq ** 2
            b1 = (sqq * sxy - sxq * sqy) / det
            c2 = (sxx * sqy - sxq * sxy) / det
            sse_q = np.maximum(syy - b1 * sxy - c2 * sqy, 0.0)
            s2 = sse_q / max(L - 3, 1)
            se_c2 = np.sqrt(s2 * sxx / det)
            t = np.where(se_c2 > 0, np.abs(c2) / se_c2, np.where(np.abs(c2) > 0, np.inf, 0.0))
            span = X[:, -1] - X[:, 0]
            rel = np.abs(2.0 * c2 * span / b1)
        rel = np.nan_to_num(rel, nan=np.inf)
        t = np.nan_to_num(t, nan=np.inf)
        # end segments: curvature concentrated at one end (regime I knee, regime III bend) is diluted in
        # a long window's quadratic, so also compare the slopes of its first and last thirds
        m = max(3, L // 3)
        kh, vh = _seg_slope(xc[:, :m], yc[:, :m], W[:, :m])
        kt, vt = _seg_slope(xc[:, -m:], yc[:, -m:], W[:, -m:])
        with np.errstate(divide="ignore", invalid="ignore"):
            dk = np.abs(kh - kt)
            t_seg = np.where(s2 > 0, dk / np.sqrt(s2 * (vh + vt)), np.where(dk > 0, np.inf, 0.0))
            rel_seg = dk / np.abs(K)
        t_seg = np.nan_to_num(t_seg, nan=np.inf)
        rel_seg = np.nan_to_num(rel_seg, nan=np.inf)
        straight = ((rel <= slope_tol) | (t < t_crit)) & ((rel_seg <= slope_tol) | (t_seg < t_crit))
        ok = (r2 >= r2_min) & (K > 0) & straight
        t = np.maximum(t, t_seg)
        if np.any(ok):
            cand = np.flatnonzero(ok)
            best = cand[np.lexsort((-r2[cand], t[cand]))[0]]
            return int(best), int(best + L - 1), True
        if L == Lmin:
            good = np.flatnonzero(K > 0)
            if good.size:
                fallback = int(good[np.argmax(r2[good])])
    if fallback is None:
        fallback = 0
    return fallback, fallback + Lmin - 1, False


def heckel_fit(p_Pa, rho_rel, *, p_min_Pa=None, p_max_Pa=None, auto=True, weights="density", r2_min=0.995,
               slope_tol=0.04, t_crit=2.5, min_fraction=0.2) -> HeckelResult:
    """Fit the Heckel line to a loading branch.

    Parameters
    ----------
    p_Pa : (n,) pressures in pascals, non-decreasing (loading branch).
    rho_rel : (n,) relative densities in (0, 1).
    p_min_Pa, p_max_Pa : restrict the data to this pressure range first.
    auto : detect regime II inside the range (module docstring); False fits every point in the range.
    weights : "density" (default) weights each point by (1 − ρ)², i.e. assumes a constant error in ρ,
        which becomes an error σ_ρ/(1 − ρ) in ln(1/(1 − ρ)); "none" for ordinary least squares.
    r2_min, slope_tol, t_crit, min_fraction : detection controls (module docstring).

    Raises
    ------
    ValueError for fewer than 4 points, ρ outside (0, 1), decreasing pressure, or an empty range.
    """
    p, r = _check(p_Pa, rho_rel)
    y = heckel_y(r)
    lo = -np.inf if p_min_Pa is None else float(p_min_Pa)
    hi = np.inf if p_max_Pa is None else float(p_max_Pa)
    if lo >= hi:
        raise ValueError(f"p_min_Pa ({lo:g}) must be smaller than p_max_Pa ({hi:g})")
    sel = (p >= lo) & (p <= hi)
    if np.count_nonzero(sel) < 4:
        raise ValueError(f"only {np.count_nonzero(sel)} points between p_min_Pa and p_max_Pa; "
                         "need at least 4")
    if weights not in ("density", "none"):
        raise ValueError(f"weights must be 'density' or 'none', got {weights!r}")
    ps, ys = p[sel], y[sel]
    ws = (1.0 - r[sel]) ** 2 if weights == "density" else np.ones_like(ps)
    ws = ws / ws.mean()
    if not ps[-1] > ps[0]:
        raise ValueError("the selected points span no pressure range")
    method = "manual"
    if auto:
        pscale = float(ps[-1])
        pb, yb, wb = _bin(ps, ys, ws)
        min_points = int(np.ceil(min_fraction * pb.size))
        i, j, ok = _scan(pb / pscale, yb, wb, r2_min=r2_min, slope_tol=slope_tol, t_crit=t_crit,
                         min_points=min_points)
        method = "auto" if ok else "auto-fallback"
        if not ok:
            warnings.warn("Heckel: no linear regime II met the criteria (r² ≥ %g, no curvature); using the "
                          "most linear window of minimum width — inspect the Heckel plot or pass "
                          "p_min_Pa/p_max_Pa" % r2_min, RuntimeWarning, stacklevel=2)
        plo, phi = pb[i], pb[j]
        if pb.size < ps.size:  # bin means → raw points inside the bins' span
            edges = np.linspace(0, ps.size, pb.size + 1).astype(int)
            plo, phi = ps[edges[i]], ps[edges[j + 1] - 1]
        inwin = (ps >= plo) & (ps <= phi)
        if np.count_nonzero(inwin) < 3:
            inwin = np.ones_like(ps, dtype=bool)
    else:
        inwin = np.ones_like(ps, dtype=bool)
    xf, yf, wf = ps[inwin], ys[inwin], ws[inwin]
    K, A, sK, sA, r2, s_res = _ols(xf, yf, wf)
    if not K > 0:
        raise ValueError("the Heckel slope K is not positive in the fitted range; is this a loading branch?")
    # regime III onset: first sustained departure above the fitted range (all data, not just the selection)
    onset = None
    above = np.flatnonzero(p > xf[-1])
    if above.size:
        res = np.abs(y[above] - (K * p[above] + A))
        w_above = (1.0 - r[above]) ** 2 / ((1.0 - r[sel]) ** 2).mean() if weights == "density" else 1.0
        out = (res * np.sqrt(w_above) > 3.0 * s_res) & (res > 2e-3)
        for k in range(above.size):
            if out[k] and (k + 1 == above.size or out[k + 1]):
                onset = float(p[above[k]])
                break
    return HeckelResult(K_per_Pa=K, A=A, Py_Pa=1.0 / K, Py_stderr_Pa=sK / K ** 2, A_stderr=sA, r2=r2,
                        fit_range_Pa=(float(xf[0]), float(xf[-1])), n_points=int(xf.size),
                        regime_I_upper_Pa=float(xf[0]), regime_III_onset_Pa=onset, K_stderr_per_Pa=sK,
                        method=method)


def elastic_recovery(rho_max_load, rho_after_release) -> float:
    """Fractional density drop on release: (ρ_max,load − ρ_released)/ρ_max,load (0.04 = 4 %)."""
    a, b = float(rho_max_load), float(rho_after_release)
    if not (0 < a <= 1) or not (0 < b <= 1):
        raise ValueError(f"relative densities must be in (0, 1], got rho_max_load={a}, rho_after_release={b}")
    return (a - b) / a

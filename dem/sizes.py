"""Particle diameters: truncated gamma, measured histogram or monodisperse; size statistics.

Quick start
-----------
>>> from dem.sizes import sample_diameters, size_stats
>>> d = sample_diameters(9591, shape=1.94431, scale_m=7.04802e-6, d_min_m=1e-6, d_max_m=50e-6, seed=1)
>>> size_stats(d)["mean_m"]          # ≈ 13.4e-6 m (a·b = 13.70 µm before truncation)

Distributions
-------------
``"gamma"``
    pdf f(d) ∝ d^(a−1) e^(−d/b), truncated to [d_min, d_max] and sampled *exactly* by inverse CDF on the
    truncated interval: u ~ U(F(d_min), F(d_max)), d = F⁻¹(u), with F the regularised lower incomplete
    gamma function (its complement is used in the upper tail, so far-tail windows keep their precision).
    No rejection loop.
``weighting="volume"``
    The *volume* distribution is the given one (what laser diffraction reports): the number pdf is
    f(d)/d³ ∝ d^(a−4) e^(−d/b). For a > 3 that is again a gamma (shape a − 3) and is sampled exactly;
    for a ≤ 3 (the study's a = 1.944) it is not normalisable at d → 0, so d_min > 0 is required and the
    truncated CDF is integrated numerically on a fine logarithmic grid (trapezoid rule in ln d, 8193
    nodes, relative CDF error < 1e-7) and inverted by monotone interpolation.
``"histogram"``
    A CSV file (or the same bins as rows ``(d_low_m, d_high_m, weight)``, ``histogram_bins_m``) with a
    header row and one row per bin::

        # comment lines start with '#'
        d_low_um,d_high_um,count
        1,2,120
        2,3,310

    Columns: bin edges ``d_low_um``/``d_high_um`` (or ``d_low_m``/``d_high_m`` in metres) and one weight
    column named ``count``, ``fraction``, ``frequency``, ``percent`` or ``number``. Weights are number
    based with ``weighting="number"`` and volume based with ``weighting="volume"`` (a volume weight is
    converted to a number weight by dividing by the bin's mean d³ under a uniform-in-bin density, i.e.
    (d_hi⁴ − d_lo⁴)/(4(d_hi − d_lo))). Bins are clipped to [d_min, d_max] when given. Particles are
    allocated to bins by largest remainder (each bin gets round(n·fraction) particles, so the sample
    reproduces the bin fractions to within 1/n) and placed uniformly within their bin; the result is
    shuffled.
``"monodisperse"``
    ``diameter_m`` for every particle.

All sampling uses ``numpy.random.default_rng(numpy.random.SeedSequence(seed))``: the same seed gives the
same diameters on every platform.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import special, stats

__all__ = ["sample_diameters", "size_stats", "ks_test_gamma", "truncated_gamma_cdf",
           "truncated_gamma_mean", "read_histogram_csv"]

_GRID_NODES = 8193
_MIN_MASS = 1e-12


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def _check_gamma_params(shape, scale_m, d_min_m, d_max_m, weighting):
    if shape is None or not np.isfinite(shape) or shape <= 0:
        raise ValueError(f"shape (gamma shape a) must be a positive number, got {shape}")
    if scale_m is None or not np.isfinite(scale_m) or scale_m <= 0:
        raise ValueError(f"scale_m (gamma scale b, metres) must be a positive number, got {scale_m}")
    lo = 0.0 if d_min_m is None else float(d_min_m)
    hi = np.inf if d_max_m is None else float(d_max_m)
    if lo < 0 or not np.isfinite(lo):
        raise ValueError(f"d_min_m must be >= 0 metres, got {d_min_m}")
    if hi <= 0:
        raise ValueError(f"d_max_m must be > 0 metres, got {d_max_m}")
    if lo >= hi:
        raise ValueError(f"d_min_m ({lo:g} m) must be smaller than d_max_m ({hi:g} m)")
    if weighting not in ("number", "volume"):
        raise ValueError(f"weighting must be 'number' or 'volume', got {weighting!r}")
    if weighting == "volume" and shape <= 3.0 and lo <= 0.0:
        raise ValueError(f"weighting='volume' with shape a = {shape:g} <= 3 needs d_min_m > 0: the number "
                         "distribution d^(a-4)·e^(-d/b) is not normalisable at d -> 0")
    return float(shape), float(scale_m), lo, hi


def _gamma_cdf_pair(a, x):
    """(P(a, x), Q(a, x)) with P + Q = 1, each computed directly for precision in both tails."""
    return special.gammainc(a, x), special.gammaincc(a, x)


def _number_model(shape, scale_m, lo, hi, weighting):
    """Return (cdf(d), inv(u)) of the truncated *number* distribution, u in [0, 1]."""
    a, b = shape, scale_m
    if weighting == "volume":
        # the volume distribution over the window must carry mass, as stated in the contract
        Pl, Ql = _gamma_cdf_pair(a, lo / b)
        Ph, Qh = _gamma_cdf_pair(a, hi / b) if np.isfinite(hi) else (1.0, 0.0)
        if max(Ph - Pl, Ql - Qh) < _MIN_MASS:
            raise ValueError(f"the truncation window [d_min_m, d_max_m] = [{lo:g}, {hi:g}] m holds "
                             f"~zero probability mass of the volume-weighted gamma(a={a:g}, b={b:g} m)")
        if a > 3.0:
            a = a - 3.0
        else:
            return _numeric_model(a - 4.0, b, lo, hi)
    Pl, Ql = _gamma_cdf_pair(a, lo / b)
    Ph, Qh = _gamma_cdf_pair(a, hi / b) if np.isfinite(hi) else (1.0, 0.0)
    upper = Pl > 0.5  # work with the complement in the upper tail
    mass = (Ql - Qh) if upper else (Ph - Pl)
    if not mass > _MIN_MASS:
        raise ValueError(f"the truncation window [d_min_m, d_max_m] = [{lo:g}, {hi:g}] m holds ~zero "
                         f"probability mass ({mass:.3g}) of gamma(a={a:g}, b={b:g} m); check the units "
                         "(metres) and the window")

    def cdf(d):
        d = np.clip(np.asarray(d, dtype=np.float64), lo, hi)
        if upper:
            return np.clip((Ql - special.gammaincc(a, d / b)) / mass, 0.0, 1.0)
        return np.clip((special.gammainc(a, d / b) - Pl) / mass, 0.0, 1.0)

    def inv(u):
        u = np.asarray(u, dtype=np.float64)
        if upper:
            d = b * special.gammainccinv(a, np.clip(Ql - u * mass, 0.0, 1.0))
        else:
            d = b * special.gammaincinv(a, np.clip(Pl + u * mass, 0.0, 1.0))
        return np.clip(d, lo, hi)

    return cdf, inv


def _numeric_model(power, b, lo, hi):
    """Truncated pdf ∝ d^power e^(−d/b) on [lo, hi] (lo > 0): CDF on a log grid, trapezoid in ln d."""
    if not np.isfinite(hi):
        hi = max(lo, b) * 1e3 + 60.0 * b  # e^(−60) tail is negligible
    t = np.linspace(np.log(lo), np.log(hi), _GRID_NODES)
    d = np.exp(t)
    # integrand in ln d: d^(power+1) e^(−d/b), scaled by its max to avoid under/overflow
    logh = (power + 1.0) * t - d / b
    h = np.exp(logh - logh.max())
    c = np.concatenate([[0.0], np.cumsum(0.5 * (h[1:] + h[:-1]) * np.diff(t))])
    if not c[-1] > 0 or not np.isfinite(c[-1]):
        raise ValueError(f"the truncation window [d_min_m, d_max_m] = [{lo:g}, {hi:g}] m holds ~zero "
                         "probability mass of the volume-weighted distribution")
    c /= c[-1]
    # strictly increasing for interpolation (flat stretches only where the pdf underflows)
    keep = np.concatenate([[True], np.diff(c) > 0])
    ck, tk = c[keep], t[keep]
    if ck[-1] < 1.0:
        ck = np.append(ck, 1.0)
        tk = np.append(tk, t[-1])

    def cdf(x):
        x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
        return np.interp(np.log(x), t, c)

    def inv(u):
        return np.clip(np.exp(np.interp(np.asarray(u, dtype=np.float64), ck, tk)), lo, hi)

    return cdf, inv


def truncated_gamma_cdf(d_m, shape, scale_m, d_min_m=None, d_max_m=None, weighting="number"):
    """CDF of the *number* distribution of diameters at ``d_m`` (metres) for the truncated gamma model.

    With ``weighting="volume"`` the gamma is the volume distribution (see the module docstring).
    """
    a, b, lo, hi = _check_gamma_params(shape, scale_m, d_min_m, d_max_m, weighting)
    cdf, _ = _number_model(a, b, lo, hi, weighting)
    return cdf(d_m)


def truncated_gamma_mean(shape, scale_m, d_min_m=None, d_max_m=None) -> float:
    """Analytic number mean (metres) of gamma(a, b) truncated to [d_min, d_max]:
    a·b·[P(a+1, hi/b) − P(a+1, lo/b)] / [P(a, hi/b) − P(a, lo/b)]."""
    a, b, lo, hi = _check_gamma_params(shape, scale_m, d_min_m, d_max_m, "number")
    xh = hi / b if np.isfinite(hi) else np.inf
    num = special.gammainc(a + 1, xh) - special.gammainc(a + 1, lo / b)
    den = special.gammainc(a, xh) - special.gammainc(a, lo / b)
    if not den > _MIN_MASS:
        raise ValueError("the truncation window holds ~zero probability mass")
    return float(a * b * num / den)


def read_histogram_csv(path, unit="m"):
    """Read a size histogram CSV → (d_low, d_high, weight) arrays, the edges in ``unit`` ("m" or "um"; an
    edge given in that unit is returned as written). See the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"histogram_csv: file not found: {path}")
    with path.open(newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        rows = list(csv.reader(lines))
    if len(rows) < 2:
        raise ValueError(f"histogram_csv {path}: needs a header row and at least one bin row")
    header = [h.strip().lower() for h in rows[0]]

    def col(*names):
        for nm in names:
            if nm in header:
                return header.index(nm), nm
        return None, None

    ilo, nlo = col("d_low_um", "d_low_m", "d_lo_um", "d_lo_m", "d_min_um", "d_min_m")
    ihi, nhi = col("d_high_um", "d_high_m", "d_hi_um", "d_hi_m", "d_max_um", "d_max_m")
    iw, nw = col("count", "fraction", "frequency", "percent", "number", "weight")
    if ilo is None:
        raise ValueError(f"histogram_csv {path}: missing column 'd_low_um' (or 'd_low_m'); "
                         f"header is {header}")
    if ihi is None:
        raise ValueError(f"histogram_csv {path}: missing column 'd_high_um' (or 'd_high_m'); "
                         f"header is {header}")
    if iw is None:
        raise ValueError(f"histogram_csv {path}: missing weight column 'count' (or fraction/frequency/"
                         f"percent/number/weight); header is {header}")
    if unit not in ("m", "um"):
        raise ValueError(f"unit must be 'm' or 'um', got {unit!r}")
    to_unit = {("_um", "m"): 1e-6, ("_m", "um"): 1e6}
    f_lo = to_unit.get(("_um" if nlo.endswith("_um") else "_m", unit), 1.0)
    f_hi = to_unit.get(("_um" if nhi.endswith("_um") else "_m", unit), 1.0)
    lo, hi, w = [], [], []
    for k, r in enumerate(rows[1:], start=2):
        vals = []
        for i, nm in ((ilo, nlo), (ihi, nhi), (iw, nw)):
            try:
                v = float(r[i])
            except (IndexError, ValueError):
                raise ValueError(f"histogram_csv {path}: row {k}: column '{nm}' is not a number "
                                 f"({r[i] if i < len(r) else 'missing'!r})") from None
            if not np.isfinite(v):
                raise ValueError(f"histogram_csv {path}: row {k}: column '{nm}' is not finite")
            vals.append(v)
        a, bb, c = vals
        if a < 0:
            raise ValueError(f"histogram_csv {path}: row {k}: column '{nlo}' is negative ({a})")
        if bb <= a:
            raise ValueError(f"histogram_csv {path}: row {k}: '{nhi}' ({bb}) must exceed '{nlo}' ({a})")
        if c < 0:
            raise ValueError(f"histogram_csv {path}: row {k}: column '{nw}' is negative ({c})")
        lo.append(a * f_lo)
        hi.append(bb * f_hi)
        w.append(c)
    lo, hi, w = map(np.asarray, (lo, hi, w))
    if not np.sum(w) > 0:
        raise ValueError(f"histogram_csv {path}: column '{nw}' sums to zero")
    return lo, hi, w


def _largest_remainder(n, p, rng):
    raw = n * p
    k = np.floor(raw).astype(np.int64)
    rest = n - int(k.sum())
    if rest > 0:
        frac = raw - k
        # random tie-break among equal remainders; draw the remaining ones by weight, no replacement
        if np.count_nonzero(frac > 0) >= rest:
            idx = rng.choice(p.size, size=rest, replace=False, p=frac / frac.sum())
        else:  # only through round-off
            idx = rng.choice(p.size, size=rest, replace=True, p=p)
        np.add.at(k, idx, 1)
    return k


def _sample_histogram(n, bins_m, weighting, d_min_m, d_max_m, rng):
    lo, hi, w = bins_m
    if d_min_m is not None and d_max_m is not None and d_min_m >= d_max_m:
        raise ValueError(f"d_min_m ({d_min_m:g} m) must be smaller than d_max_m ({d_max_m:g} m)")
    if d_min_m is not None and d_min_m < 0:
        raise ValueError(f"d_min_m must be >= 0 metres, got {d_min_m}")
    # clip bins to the window, keeping the weight per unit width
    clo = lo if d_min_m is None else np.maximum(lo, d_min_m)
    chi = hi if d_max_m is None else np.minimum(hi, d_max_m)
    valid = chi > clo
    w = np.where(valid, w * np.where(valid, (chi - clo) / (hi - lo), 0.0), 0.0)
    lo, hi = np.where(valid, clo, lo), np.where(valid, chi, hi)
    if weighting == "volume":
        mean_d3 = (hi ** 4 - lo ** 4) / (4.0 * (hi - lo))
        w = np.where(w > 0, w / mean_d3, 0.0)
    if not np.sum(w) > 0:
        raise ValueError("histogram_csv: no bin weight inside the window [d_min_m, d_max_m]")
    p = w / w.sum()
    k = _largest_remainder(n, p, rng)
    bins = np.repeat(np.arange(p.size), k)
    d = lo[bins] + rng.random(n) * (hi[bins] - lo[bins])
    rng.shuffle(d)
    return d


def sample_diameters(n, *, distribution="gamma", shape=None, scale_m=None, d_min_m=None, d_max_m=None,
                     weighting="number", histogram_csv=None, histogram_bins_m=None, diameter_m=None,
                     seed=0) -> np.ndarray:
    """Draw ``n`` particle diameters (metres, float64, shape (n,)).

    Parameters
    ----------
    n : number of particles (> 0).
    distribution : "gamma" | "histogram" | "monodisperse".
    shape, scale_m : gamma shape a (dimensionless) and scale b (metres); mean a·b before truncation.
    d_min_m, d_max_m : truncation window in metres (gamma: optional but recommended, an untruncated gamma
        draws 0.1 µm and 80 µm particles; histogram: optional clipping).
    weighting : "number" (the distribution counts particles) or "volume" (it weights by particle volume).
    histogram_csv : path of the bin CSV (see module docstring).
    histogram_bins_m : the bins themselves instead of a CSV, rows (d_low_m, d_high_m, weight).
    diameter_m : the diameter of a monodisperse powder.
    seed : int or sequence for ``numpy.random.SeedSequence``.

    Raises
    ------
    ValueError naming the offending argument (or CSV column and row).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n (number of particles) must be a positive integer, got {n!r}")
    n = int(n)
    if weighting not in ("number", "volume"):
        raise ValueError(f"weighting must be 'number' or 'volume', got {weighting!r}")
    rng = _rng(seed)
    if distribution == "gamma":
        a, b, lo, hi = _check_gamma_params(shape, scale_m, d_min_m, d_max_m, weighting)
        _, inv = _number_model(a, b, lo, hi, weighting)
        d = inv(rng.random(n))
    elif distribution == "histogram":
        if histogram_bins_m is not None:
            bins = tuple(np.ascontiguousarray(c) for c in np.asarray(histogram_bins_m, np.float64).reshape(-1, 3).T)
        elif histogram_csv is not None:
            bins = read_histogram_csv(histogram_csv)
        else:
            raise ValueError("histogram_csv (or histogram_bins_m) is required for distribution='histogram'")
        d = _sample_histogram(n, bins, weighting, d_min_m, d_max_m, rng)
    elif distribution == "monodisperse":
        if diameter_m is None or not np.isfinite(diameter_m) or diameter_m <= 0:
            raise ValueError(f"diameter_m must be a positive number of metres for distribution="
                             f"'monodisperse', got {diameter_m}")
        d = np.full(n, float(diameter_m))
    else:
        raise ValueError(f"distribution must be 'gamma', 'histogram' or 'monodisperse', got {distribution!r}")
    d = np.asarray(d, dtype=np.float64)
    if not np.all(np.isfinite(d)) or not np.all(d > 0):
        raise ValueError("sampled diameters are not all positive and finite: set d_min_m > 0")
    return d


def _weighted_quantile(x, w, q):
    order = np.argsort(x)
    xs, ws = x[order], w[order]
    cw = np.cumsum(ws)
    # midpoint rule: the i-th value sits at the centre of its weight
    pos = (cw - 0.5 * ws) / cw[-1]
    return np.interp(q, pos, xs)


def size_stats(d_m) -> dict:
    """Statistics of a diameter sample (metres).

    Keys: n, mean_m (number mean D[1,0]), d_min_m, d_max_m, D10_m/D50_m/D90_m (number based),
    D10v_m/D50v_m/D90v_m (volume based: quantiles weighted by d³), D32_m (Sauter), D43_m
    (De Brouckere, volume-weighted mean), std_m.
    """
    d = np.asarray(d_m, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("d_m is empty")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("d_m must contain positive, finite diameters (metres)")
    q = np.array([0.1, 0.5, 0.9])
    dn = np.quantile(d, q)
    dv = _weighted_quantile(d, d ** 3, q)
    return dict(n=int(d.size), mean_m=float(d.mean()), std_m=float(d.std()), d_min_m=float(d.min()),
                d_max_m=float(d.max()), D10_m=float(dn[0]), D50_m=float(dn[1]), D90_m=float(dn[2]),
                D10v_m=float(dv[0]), D50v_m=float(dv[1]), D90v_m=float(dv[2]),
                D32_m=float(np.sum(d ** 3) / np.sum(d ** 2)), D43_m=float(np.sum(d ** 4) / np.sum(d ** 3)))


def ks_test_gamma(d_m, shape, scale_m, d_min_m=None, d_max_m=None, weighting="number"):
    """One-sample Kolmogorov–Smirnov test of ``d_m`` against the truncated gamma number CDF.

    Returns (statistic, pvalue).
    """
    d = np.asarray(d_m, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("d_m is empty")
    a, b, lo, hi = _check_gamma_params(shape, scale_m, d_min_m, d_max_m, weighting)
    cdf, _ = _number_model(a, b, lo, hi, weighting)
    res = stats.kstest(d, cdf)
    return float(res.statistic), float(res.pvalue)

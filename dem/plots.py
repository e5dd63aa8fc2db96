"""Figures of a run (matplotlib, Agg, atomic saves) in the field's units: pressure in GPa, sizes in µm,
conductivity in mS/cm (1 S/m = 10 mS/cm, as the studies and the summary report it).

``plot_run(outdir)`` redraws every figure from ``results.json``, ``history.csv`` and ``packings/*.npz``
(``pelletsim plot OUTDIR``); each ``plot_*`` function draws one figure from plain data.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fva.activation import R_J_PER_MOL_K  # noqa: E402
from fva.figures import save_png  # noqa: E402
from fva.metrics.porosity import porosity_profile  # noqa: E402
from fva.types import Packing  # noqa: E402
from fva.voxelise import voxelise  # noqa: E402

__all__ = ["plot_run", "read_history", "plot_size_histogram", "plot_density", "plot_heckel",
           "plot_conductivity", "plot_porosity_profile", "porosity_profile_z", "EXPECTED_SHAPES"]

EXPECTED_SHAPES = {
    "variable_pressure": "study (Fig. 6b, orange): rises through regime I, maximum near 0.5 GPa, "
                         "then ln σ falls about linearly",
    "stack_pressure": "study (Fig. 6b, blue): rises monotonically with compaction, flattens at high pressure",
}
MS_PER_CM_PER_S_PER_M = 10.0   # 1 S/m = 1000 mS / 100 cm
_COLORS = {"variable_pressure": "tab:orange", "stack_pressure": "tab:blue", "all": "tab:gray"}
_SPARE_COLORS = ["tab:green", "tab:purple", "tab:brown", "tab:red", "tab:olive", "tab:cyan"]


def _finish(ax, xlabel: str, ylabel: str, title: str, *, fontsize: float = 8, **legend_kw) -> None:
    """Axis labels, title, a light grid and the legend: the last touches every figure of a run shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize, **legend_kw)


def read_history(path) -> dict:
    """history.csv → dict column → float array (the 'stage' and 'step' columns as ints)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    head, body = rows[0], rows[1:]
    out = {}
    for j, c in enumerate(head):
        vals = []
        for r in body:
            try:
                vals.append(float(r[j]))
            except (ValueError, IndexError):
                vals.append(float("nan"))
        a = np.asarray(vals, float)
        out[c] = a.astype(int) if c in ("step", "stage") and np.all(np.isfinite(a)) else a
    return out


# --------------------------------------------------------------------------------------------- figures
def plot_size_histogram(d_m, particles: dict, path) -> Path:
    """Histogram of the sampled diameters (number density, 1/m) with the truncated gamma pdf."""
    d = np.asarray(d_m, float)
    fig, ax = plt.subplots(figsize=(6, 4))
    nb = int(np.clip(np.sqrt(d.size) * 1.5, 10, 60))
    ax.hist(d * 1e6, bins=nb, density=True, color="0.75", edgecolor="0.4", label=f"sampled (n = {d.size})")
    if particles.get("distribution") == "gamma" and particles.get("shape") and particles.get("scale_um"):
        from scipy.stats import gamma
        a, b = float(particles["shape"]), float(particles["scale_um"])
        lo = particles.get("d_min_um") or 0.0
        hi = particles.get("d_max_um") or float(gamma.ppf(0.9999, a, scale=b))
        x = np.linspace(max(lo, 1e-3), hi, 400)
        norm = gamma.cdf(hi, a, scale=b) - gamma.cdf(lo, a, scale=b)
        lab = f"gamma a = {a:g}, b = {b:g} µm" + (" (number)" if particles.get("weighting", "number") == "number"
                                                  else " (volume-weighted input)")
        if particles.get("weighting", "number") == "number":
            ax.plot(x, gamma.pdf(x, a, scale=b) / norm, "C0-", lw=2, label=lab + ", truncated")
        else:
            ax.text(0.98, 0.95, lab, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.set_xlabel("particle diameter d (µm)")
    ax.set_ylabel("number density (1/µm)")
    ax.set_title("Particle size distribution")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _load_release(history: dict, stage_kinds: list[str] | None):
    p = np.asarray(history.get("p_top_Pa", []), float)
    n = p.size
    if stage_kinds and "stage" in history:
        st = np.asarray(history["stage"]).astype(int)
        kinds = np.array([stage_kinds[s] if 0 <= s < len(stage_kinds) else "" for s in st])
        load = kinds == "load"
        rel = kinds == "unload"
    else:
        k = int(np.nanargmax(p)) if n else 0
        load = np.arange(n) <= k
        rel = ~load
    return load, rel


def plot_density(history: dict, captures: list[dict], path, stage_kinds=None) -> Path:
    """Relative density (mass based) and geometric solid fraction vs punch pressure, load and release."""
    p = np.asarray(history.get("p_top_Pa", []), float) / 1e9
    rho = np.asarray(history.get("relative_density", np.full(p.size, np.nan)), float)
    load, rel = _load_release(history, stage_kinds)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(p[load], rho[load], "-", color="C3", lw=1.5, label="load (in die)")
    if rel.any():
        ax.plot(p[rel], rho[rel], "--", color="C0", lw=1.5, label="release")
    if "solid_fraction" in history:
        sf = np.asarray(history["solid_fraction"], float)
        ok = np.isfinite(sf)          # the Monte-Carlo fraction is on every tenth row and at captures
        ax.plot(p[ok], sf[ok], ":", color="0.5", lw=1, label="solid fraction (union of spheres)")
    caps = [c for c in captures if c.get("relative_density") is not None]
    if caps:
        ax.plot([c["pressure_Pa"] / 1e9 for c in caps], [c["relative_density"] for c in caps], "ko", ms=4,
                label="captured packings")
    ax.set_ylim(top=1.0)
    _finish(ax, "punch pressure p (GPa)", "relative density ρ_rel (–)", "Compaction curve")
    return save_png(fig, path)


def plot_heckel(history: dict, heckel: dict, path, stage_kinds=None) -> Path:
    """ln(1/(1−ρ_rel)) vs pressure, the fitted line over its range, regimes I/II/III shaded."""
    p = np.asarray(history.get("p_top_Pa", []), float)
    rho = np.asarray(history.get("relative_density", np.full(p.size, np.nan)), float)
    load, rel = _load_release(history, stage_kinds)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(1.0 / (1.0 - rho))
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = load & (p > 0) & np.isfinite(y)
    ax.plot(p[ok] / 1e9, y[ok], "-", color="C3", lw=1.5, label="in die (load)")
    okr = rel & (p > 0) & np.isfinite(y)
    if okr.any():
        ax.plot(p[okr] / 1e9, y[okr], "--", color="C0", lw=1.2, label="release")
    pmax = float(np.nanmax(p[ok])) / 1e9 if ok.any() else 1.0
    h = heckel or {}
    r1 = h.get("regime_I_upper_Pa")
    r3 = h.get("regime_III_onset_Pa")
    if r1:
        ax.axvspan(0, r1 / 1e9, color="0.85", alpha=0.6, lw=0, label="regime I (rearrangement)")
    if r3 and r3 / 1e9 < pmax:
        ax.axvspan(r3 / 1e9, pmax, color="tab:purple", alpha=0.12, lw=0, label="regime III")
    K, A = h.get("K_per_Pa"), h.get("A")
    fr = h.get("fit_range_Pa")
    if K and A is not None and fr:
        x = np.linspace(fr[0], fr[1], 50)
        py = h.get("Py_Pa") or (1 / K)
        err = h.get("Py_stderr_Pa")
        lab = f"fit: Py = {py / 1e9:.3f}" + (f" ± {err / 1e9:.3f}" if err else "") + f" GPa, A = {A:.3f}"
        ax.plot(x / 1e9, K * x + A, "k--", lw=1.5, label=lab)
        ax.axvspan(fr[0] / 1e9, fr[1] / 1e9, color="tab:green", alpha=0.08, lw=0, label="regime II (fit range)")
    elif h.get("error"):
        ax.text(0.02, 0.95, f"no Heckel fit: {h['error']}"[:90], transform=ax.transAxes, fontsize=7, va="top")
    _finish(ax, "punch pressure p (GPa)", "ln(1/(1 − ρ_rel)) (–)", "Heckel plot", fontsize=7)
    return save_png(fig, path)


def plot_conductivity(runs: list[dict], path) -> Path:
    """Normalised σ_eff vs pressure (Fig. 6b style) and absolute σ_eff, one curve per run/protocol.

    ``runs``: dicts with ``analysed`` (results.json entries), ``protocol``, ``x_key``, ``name``,
    ``normalise_at_Pa``.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    protos = []
    used: set = set()   # two runs of one protocol (e.g. two sieve fractions, --compare) get distinct colours
    for run in runs:
        an = [a for a in run.get("analysed", []) if a.get("sigma_eff_S_per_m") is not None]
        if not an:
            continue
        proto = run.get("protocol", "all")
        protos.append(proto)
        xk = run.get("x_key", "pressure_Pa")
        x = np.array([a.get(xk) if a.get(xk) is not None else a["pressure_Pa"] for a in an], float) / 1e9
        order = np.argsort(x)
        col = _COLORS.get(proto, None)
        if col in used:
            col = next(c for c in _SPARE_COLORS + [None] if c not in used)
        used.add(col)
        mk = "v" if proto == "variable_pressure" else "^"
        label = f"{run.get('name', '')} ({proto.replace('_', ' ')})"
        ns = [a.get("normalised_sigma") for a in an]
        if any(v is not None for v in ns):
            ax.plot(x[order], np.array([np.nan if v is None else v for v in ns], float)[order], mk + "-",
                    color=col, label=label)
        ax2.plot(x[order], MS_PER_CM_PER_S_PER_M * np.array([a["sigma_eff_S_per_m"] for a in an])[order],
                 mk + "-", color=col, label=label + " σ_eff")
        ax2.plot(x[order], MS_PER_CM_PER_S_PER_M * np.array([a["sigma_bulk_S_per_m"] for a in an])[order], ":",
                 color=col, label=label + " σ_bulk(p)")
        na = run.get("normalise_at_Pa")
        if na:
            ax.axvline(na / 1e9, color="0.6", lw=0.8, ls="--")
        dv, T = run.get("dV_m3_per_mol"), run.get("temperature_K")
        if proto == "variable_pressure" and na and dv and T and x.max() > na / 1e9 and "slope" not in used:
            used.add("slope")  # one activation-volume line per figure
            # the study: above the maximum ln σ falls linearly with the activation-volume slope
            xs = np.linspace(na / 1e9, x.max(), 30)
            ax.plot(xs, np.exp(-dv * (xs - na / 1e9) * 1e9 / (R_J_PER_MOL_K * T)), "--", color="0.45", lw=1,
                    label=f"activation-volume slope, ΔV = {dv * 1e6:g} cm³/mol")
    ax.axhline(1.0, color="0.6", lw=0.8)
    nas = [r.get("normalise_at_Pa") for r in runs if r.get("normalise_at_Pa")]
    _finish(ax, "pelletizing pressure p (GPa)",
            f"σ_eff / σ_eff({nas[0] / 1e9:g} GPa) (–)" if nas else "normalised σ_eff (–)",
            "Normalised conductivity (cf. Schneider 2023, Fig. 6b)", fontsize=7, loc="upper right")
    txt = "\n".join(EXPECTED_SHAPES[p] for p in dict.fromkeys(protos) if p in EXPECTED_SHAPES)
    if txt:
        import textwrap
        txt = "\n".join(textwrap.fill(t, 75) for t in txt.splitlines())
        ax.text(0.0, -0.17, "Expected shape — " + txt, transform=ax.transAxes, fontsize=7, va="top",
                color="0.25")
    _finish(ax2, "pelletizing pressure p (GPa)", "conductivity σ (mS/cm)", "Effective and bulk conductivity",
            fontsize=7)
    return save_png(fig, path)


def porosity_profile_z(centers_m, radii_m, box_m, *, max_cells: int = 2_000_000):
    """Porosity of each z slice of a sphere packing (periodic x, y), voxelised by :func:`fva.voxelise.voxelise`.

    The voxel edge is the larger of (box volume / ``max_cells``)^(1/3) and a third of the smallest radius.
    Returns (z_m, porosity) with z the slice centres (metres)."""
    c = np.asarray(centers_m, float)
    r = np.asarray(radii_m, float)
    box = np.array(box_m, float)
    if r.size:  # after release the punch may sit above the pellet: profile up to the top particle
        box[2] = min(box[2], float(np.max(c[:, 2] + r)))
    h = max((np.prod(box) / max_cells) ** (1 / 3), float(r.min()) / 3 if r.size else 1e-9)
    img = voxelise(Packing(c, r, box, periodic=(True, True, False)), h)
    return (np.arange(img.shape[0]) + 0.5) * img.voxel_m[0], porosity_profile(img, "z")


def plot_porosity_profile(z_m, porosity, path, title="Porosity profile of the final pellet") -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 5))
    ax.plot(np.asarray(porosity), np.asarray(z_m) * 1e6, "C0-")
    ax.axvline(float(np.mean(porosity)), color="0.5", ls="--", lw=0.8, label=f"mean {np.mean(porosity):.3f}")
    ax.set_xlim(0, 1)
    _finish(ax, "porosity (–)", "height z (µm)", title)
    ax.title.set_fontsize(10)
    return save_png(fig, path)


# --------------------------------------------------------------------------------------------- redraw
def _stage_kinds(results: dict) -> list[str] | None:
    try:
        from dem.scenario import expand_protocol, parse_scenario
        scen = parse_scenario(results["scenario"])
        return [e.kind for e in expand_protocol(scen)]
    except Exception:
        return None


def _conductivity_run(results: dict) -> dict:
    c = results.get("conductivity") or {}
    cs = (results.get("scenario") or {}).get("conductivity") or {}
    return {"analysed": results.get("analysed") or [], "protocol": c.get("protocol", "all"),
            "x_key": c.get("x_key", "pressure_Pa"), "normalise_at_Pa": c.get("normalise_at_Pa"),
            "name": results.get("name", ""),
            "dV_m3_per_mol": (cs.get("activation_volume_cm3_per_mol") or 0) * 1e-6 or None,
            "temperature_K": cs.get("temperature_K")}


def plot_run(outdir, *, compare=()) -> list[Path]:
    """Redraw every figure of a finished (or interrupted) run into ``outdir``; return the files written.

    ``compare``: other run folders whose conductivity curves are overlaid on the Fig. 6b plot (e.g. the
    stack-pressure run next to the variable-pressure one)."""
    outdir = Path(outdir)
    rpath = outdir / "results.json"
    if not rpath.is_file():
        raise FileNotFoundError(f"{rpath}: not found; is {outdir} a pelletsim run folder?")
    results = json.loads(rpath.read_text())
    written: list[Path] = []
    scen = results.get("scenario") or {}
    loose = outdir / "packings" / "loose.npz"
    if loose.is_file():
        with np.load(loose) as z:
            d = z["diameters_sampled_m"] if "diameters_sampled_m" in z.files else 2 * z["radii_m"]
        written.append(plot_size_histogram(d, scen.get("particles", {}), outdir / "size_distribution.png"))
    hist_path = outdir / "history.csv"
    if hist_path.is_file():
        hist = read_history(hist_path)
        kinds = _stage_kinds(results)
        if hist.get("p_top_Pa") is not None and len(hist["p_top_Pa"]):
            written.append(plot_density(hist, results.get("captures") or [], outdir / "relative_density.png",
                                        stage_kinds=kinds))
            written.append(plot_heckel(hist, results.get("heckel") or {}, outdir / "heckel.png", stage_kinds=kinds))
    runs = [_conductivity_run(results)]
    for other in compare:
        op = Path(other) / "results.json"
        if not op.is_file():
            raise FileNotFoundError(f"{op}: not found (--compare expects a run folder)")
        runs.append(_conductivity_run(json.loads(op.read_text())))
    if any(r["analysed"] for r in runs):
        written.append(plot_conductivity(runs, outdir / "conductivity.png"))
    final = outdir / "packings" / "final.npz"
    if final.is_file():
        with np.load(final) as z:
            zc, por = porosity_profile_z(z["centers_m"], z["radii_m"], z["box_m"])
        written.append(plot_porosity_profile(zc, por, outdir / "porosity_profile_z.png"))
    return written

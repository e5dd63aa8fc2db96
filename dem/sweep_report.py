"""Results of a sweep (:mod:`dem.sweep`): ``sweep.csv``, overlay figures and the sensitivity table.

Everything here reads the point folders (``OUTDIR/points/<id>/results.json``, ``history.csv``) and
``OUTDIR/sweep.json``, so ``pelletsim plot OUTDIR`` redraws it all after the sweep.

Sensitivity of an output y to an input x (a small table, ``sensitivity.csv``): the normalised slope of a
least-squares line through the complete points, S = (dy/dx)·x̄/ȳ (an elasticity: 1 % more x gives S % more
y, other inputs averaged over). The ``seed_cv`` column is the spread between seeds of otherwise equal
points (mean of std/|mean|), the noise against which S is read.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from dem.pipeline import slug
from fva.atomic import write_text

__all__ = ["read_point_record", "write_sweep_csv", "plot_sweep", "sensitivity"]

_HEAD = ["status", "exit_status", "wall_time_s"]
_SUMMARY = ["Py_Pa", "heckel_A", "rho_rel_max", "rho_rel_after_release", "rho_rel_final"]


def read_point_record(point_dir) -> dict:
    """The sweep.csv outputs of one point from its results.json (empty dict if unreadable)."""
    try:
        d = json.loads((Path(point_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    h = d.get("heckel") or {}
    rd = d.get("relative_density") or {}
    cyc = ((d.get("elastic_recovery") or {}).get("cycles") or [])
    out = {"status": d.get("status"), "wall_time_s": d.get("wall_time_s"), "Py_Pa": h.get("Py_Pa"),
           "heckel_A": h.get("A"), "rho_rel_max": rd.get("max"),
           "rho_rel_after_release": cyc[-1].get("rho_after_release") if cyc else None,
           "rho_rel_final": rd.get("final")}
    if d.get("error"):
        out["error"] = d["error"]
    for c in d.get("captures") or []:
        out[f"rho_rel_{slug(c.get('label'))}"] = c.get("relative_density")
    for a in d.get("analysed") or []:
        s = slug(a.get("label"))
        out[f"sigma_eff_S_per_m_{s}"] = a.get("sigma_eff_S_per_m")
        out[f"tau_{s}"] = a.get("tau")
        out[f"normalised_sigma_{s}"] = a.get("normalised_sigma")
    return out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def write_sweep_csv(outdir, spec, records: dict) -> Path:
    """One row per point (in sweep order): id, the varied parameters, status, exit status, wall time, outputs,
    error. Numbers at full precision (``repr``); written atomically."""
    rows = [records[p.id] for p in spec.points]
    outs = []
    for r in rows:
        outs += [k for k in r if k not in outs and k not in ("id", "error", *_HEAD)]
    outs = [k for k in _SUMMARY if k in outs] + [k for k in outs if k not in _SUMMARY]
    cols = ["id", *spec.varied, *_HEAD, *outs, "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for p, r in zip(spec.points, rows):
        vals = {**p.params, **r}
        w.writerow([_cell(vals.get(c)) for c in cols])
    path = Path(outdir) / "sweep.csv"
    write_text(path, buf.getvalue())
    return path


def read_sweep_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------- sensitivity
def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def sensitivity(rows: list[dict], inputs: list[str], outputs: list[str]) -> list[dict]:
    """One dict per output: {output, <input>: S or None, seed_cv} over the complete rows (see module doc)."""
    ok = [r for r in rows if r.get("status") == "complete"]
    table = []
    for y in outputs:
        row = {"output": y}
        for x in inputs:
            pts = [(_num(r.get(x)), _num(r.get(y))) for r in ok]
            pts = [(a, b) for a, b in pts if a is not None and b is not None]
            xs = np.array([a for a, _ in pts])
            ys = np.array([b for _, b in pts])
            S = None
            if len(pts) >= 2 and np.ptp(xs) > 0 and np.ptp(ys) == 0:
                S = 0.0                                  # the output does not move (e.g. σ at the normalising p)
            elif len(pts) >= 2 and np.ptp(xs) > 0 and ys.mean() != 0 and xs.mean() != 0:
                slope = np.polyfit(xs, ys, 1)[0]
                S = float(slope * xs.mean() / ys.mean())
            row[x] = S
        groups: dict = {}
        for r in ok:
            v = _num(r.get(y))
            if v is not None:
                groups.setdefault(tuple(str(r.get(x)) for x in inputs), []).append(v)
        cvs = [np.std(g) / abs(np.mean(g)) for g in groups.values() if len(g) > 1 and np.mean(g) != 0]
        row["seed_cv"] = float(np.mean(cvs)) if cvs else None
        table.append(row)
    return table


def _write_sensitivity(outdir: Path, table: list[dict], inputs: list[str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["output", *inputs, "seed_cv"])
    for r in table:
        w.writerow([r["output"]] + [("" if r[k] is None else f"{r[k]:.4g}") for k in (*inputs, "seed_cv")])
    path = outdir / "sensitivity.csv"
    write_text(path, buf.getvalue())
    return path


def format_sensitivity(table: list[dict], inputs: list[str]) -> str:
    """The table as aligned text (for the terminal and the README)."""
    head = ["output", *[i.rsplit(".", 1)[-1] for i in inputs], "seed_cv"]
    body = [[r["output"]] + [("–" if r[k] is None else f"{r[k]:+.3f}") for k in (*inputs, "seed_cv")]
            for r in table]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(c).ljust(wd) for c, wd in zip(line, widths)) for line in [head, *body])


# --------------------------------------------------------------------------------------------- figures
def _colour_key(varied: list[str], points: list[dict]) -> str | None:
    """The first varied input with numeric values (seeds last), for colouring the overlays."""
    for k in [v for v in varied if v != "run.seed"] + (["run.seed"] if "run.seed" in varied else []):
        if all(_num(p["params"].get(k)) is not None for p in points):
            return k
    return None


def plot_sweep(outdir) -> list[Path]:
    """Redraw the sweep figures and the sensitivity table of OUTDIR from sweep.json and the point folders.
    Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dem.plots import read_history
    from fva.figures import save_png as _save

    outdir = Path(outdir)
    meta = json.loads((outdir / "sweep.json").read_text())
    varied, points = meta["varied"], meta["points"]
    recs, res = {}, {}
    for p in points:
        pdir = outdir / "points" / p["id"]
        recs[p["id"]] = {"id": p["id"], **p["params"], **read_point_record(pdir)}
        try:
            res[p["id"]] = json.loads((pdir / "results.json").read_text())
        except (OSError, ValueError):
            pass
    done = [p for p in points if recs[p["id"]].get("status") == "complete"]
    files = []
    ckey = _colour_key(varied, done)
    vals = sorted({_num(p["params"][ckey]) for p in done}) if ckey else []
    cmap = plt.get_cmap("viridis")

    def colour(p):
        if not ckey or len(vals) < 2:
            return "tab:blue"
        return cmap((_num(p["params"][ckey]) - vals[0]) / (vals[-1] - vals[0]) * 0.9)

    def label(p):
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in p["params"].items())

    # 1. relative density vs punch pressure, every point
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for p in done:
        hp = outdir / "points" / p["id"] / "history.csv"
        if hp.is_file():
            h = read_history(hp)
            if "p_top_Pa" in h and "relative_density" in h:
                ax.plot(h["p_top_Pa"] / 1e9, h["relative_density"], color=colour(p), lw=1.1, label=label(p))
    ax.set_xlabel("punch pressure p (GPa)")
    ax.set_ylabel("relative density ρ_rel")
    ax.set_title(f"sweep {meta['name']}: ρ_rel–p of {len(done)} point(s)" + (f", colour: {ckey}" if ckey else ""))
    if 0 < len(done) <= 12:
        ax.legend(fontsize=7)
    files.append(_save(fig, outdir / "sweep_density.png"))

    # 2. Heckel Py vs each varied input
    inputs = [k for k in varied if all(_num(p["params"].get(k)) is not None for p in points)]
    xin = [k for k in inputs if k != "run.seed"] or inputs
    if xin:
        fig, axes = plt.subplots(1, len(xin), figsize=(4.2 * len(xin), 3.8), squeeze=False)
        for ax, k in zip(axes[0], xin):
            xs = [_num(p["params"][k]) for p in done]
            ys = [_num(recs[p["id"]].get("Py_Pa")) for p in done]
            pts = [(a, b / 1e9) for a, b in zip(xs, ys) if b is not None]
            if pts:
                ax.plot(*zip(*pts), "o", color="tab:blue", ms=5)
                means = {}
                for a, b in pts:
                    means.setdefault(a, []).append(b)
                mx = sorted(means)
                ax.plot(mx, [np.mean(means[a]) for a in mx], "-", color="tab:gray", lw=1)
            ax.set_xlabel(k)
            ax.set_ylabel("in-die Heckel Py (GPa)")
        fig.suptitle(f"sweep {meta['name']}: Heckel yield pressure (points; line: mean over the rest)")
        files.append(_save(fig, outdir / "sweep_heckel_Py.png"))

    # 3. normalised conductivity vs pressure, coloured by the first input
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drawn = 0
    for p in done:
        r = res.get(p["id"], {})
        xk = (r.get("conductivity") or {}).get("x_key", "pressure_Pa")
        an = [a for a in r.get("analysed") or [] if a.get("normalised_sigma") is not None]
        if an:
            xs = [(a.get(xk) or a["pressure_Pa"]) / 1e9 for a in an]
            ax.plot(xs, [a["normalised_sigma"] for a in an], "o-", color=colour(p), lw=1.1, ms=4, label=label(p))
            drawn += 1
    ax.set_xlabel("pressure (GPa; pelletizing pressure for the stack-pressure protocol)")
    ax.set_ylabel("normalised σ_eff")
    ax.set_title(f"sweep {meta['name']}: normalised conductivity" + (f", colour: {ckey}" if ckey else ""))
    if 0 < drawn <= 12:
        ax.legend(fontsize=7)
    files.append(_save(fig, outdir / "sweep_normalised_sigma.png"))

    # 4. sweep.csv (from the folders) and the sensitivity table
    rows = [recs[p["id"]] for p in points]
    outs = []
    for r in rows:
        outs += [k for k in r if k not in outs and k not in ("id", "error", "status", "exit_status",
                                                             "wall_time_s", *varied)]
    outs = [k for k in outs if any(_num(r.get(k)) is not None for r in rows)]
    sin = [k for k in inputs if k != "run.seed"]
    table = sensitivity(rows, sin, outs)
    files.append(_write_sensitivity(outdir, table, sin))
    write_text(outdir / "sensitivity.txt", format_sensitivity(table, sin) + "\n")
    files.append(outdir / "sensitivity.txt")
    return files

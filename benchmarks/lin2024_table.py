"""Lin et al. 2024 (ACS Energy Lett. 9, 2387) table for simulated pellets: one row per powder and pressure.

    pelletsim run scenarios/lin2024_fine.toml -o out/lin2024_fine
    pelletsim run scenarios/lin2024_regular.toml -o out/lin2024_regular
    python benchmarks/lin2024_table.py out/lin2024_fine out/lin2024_regular [--out table.json] [--md table.md]

Reads each run's ``results.json`` (every ``analysed`` packing with a ``microstructure`` object, i.e. a run
with ``[microstructure] enabled = true``), prints a markdown table and writes JSON (atomically, with
``fva.atomic.write_json``). Per row: image porosity, whole-sample τ (solve axis), τ mean ± std over the
sub-volumes (64 for the study's 4×4×4 grid) per axis and the relative std along z, in-plane (mean of x, y)
vs through-plane (z) τ, the interface current at the electrode contact (actual contact fraction, max/mean,
max in mA/cm² at 1 mA/cm² applied), the number-mean pore size and 1 − the DEM's mass-based relative density
(the voxelised union of the volume-corrected spheres can differ from it at high density); beside them the
study's figures (``REFERENCE`` below, from the paper; ``docs/references.md``), or a TOML of the same keys
given with ``--reference``.

The powder label of a run is taken from ``--labels`` or else from its run name (without ``lin2024_``);
labels containing "fine" / "regular" get that powder's study figures, others none. The pressure of a row is
the nominal capture pressure of a loaded packing, or the pelletizing pressure of a released one (``state``
says which). The JSON also holds the study's qualitative findings checked on the rows (``trends``: fine vs
regular at each pressure, each powder with rising pressure), on the powders labelled exactly "fine" and
"regular", averaged over their runs (e.g. several seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "lin2024_table.json"

# The study's figures (Lin et al. 2024; docs/references.md lists where each comes from).
REFERENCE = {
    "porosity": {"regular": [0.139, 0.179], "fine": [0.061, 0.095], "fine_100MPa": 0.095},
    "tortuosity_factor": {"regular": [1.17, 1.30], "fine": [1.05, 1.13], "fine_100MPa_relative_std": [0.04, 0.08]},
    "interface_current": {"applied_mA_per_cm2": 1.0, "initial_contact_fraction": 0.9306,
                          "mean_for_dense_smooth_mA_per_cm2": 1.07, "max_fine_100MPa_mA_per_cm2": 2.4},
    "powders": {"regular_particle_um": [3.0, 5.0], "fine_particle_um": 1.0, "pressing_pressures_MPa": [100, 300, 500]},
}

AXES = ("x", "y", "z")


# --------------------------------------------------------------------------------------------- inputs
def load_reference(path: Path | None) -> tuple[dict, str]:
    """The study's figures: ``REFERENCE``, or a TOML file of the same keys, and where they came from."""
    if not path:
        return REFERENCE, "Lin et al. 2024 (docs/references.md)"
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"lin2024_table: reference file not found: {p}")
    with open(p, "rb") as fh:
        return tomllib.load(fh), str(p)


def load_results(outdir: Path) -> dict:
    p = Path(outdir)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise SystemExit(f"lin2024_table: {p}: no results.json (give a `pelletsim run` OUTDIR)")
    return json.loads(p.read_text())


def powder_of(name: str, label: str | None) -> str:
    """The powder label of a run: ``label`` if given, else the run name without its ``lin2024_`` prefix."""
    if label:
        return label
    name = name or "?"
    return name[len("lin2024_"):] if name.startswith("lin2024_") else name


def study_class(powder: str) -> str | None:
    """Which of the study's powders a label stands for ("fine", "regular" or None)."""
    text = powder.lower()
    return "fine" if "fine" in text else "regular" if "regular" in text else None


# --------------------------------------------------------------------------------------------- rows
def _num(x):
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _study(ref: dict, powder: str, p_MPa: float) -> dict:
    """The study's figures for one powder and pressure (ranges over its three pressures where that is all
    the paper gives)."""
    por = ref.get("porosity", {})
    tau = ref.get("tortuosity_factor", {})
    ic = ref.get("interface_current", {})
    out = {"porosity": None, "tau": None, "tau_rel_std": None, "current_max_mA_per_cm2": None,
           "current_max_over_mean": None}
    powder = study_class(powder)
    if powder is None:
        return out
    at100 = p_MPa is not None and abs(p_MPa - 100.0) < 5.0
    out["porosity"] = por.get(f"{powder}_100MPa") if (at100 and f"{powder}_100MPa" in por) else por.get(powder)
    out["tau"] = tau.get(powder)
    if at100:
        out["tau_rel_std"] = tau.get(f"{powder}_100MPa_relative_std")
        jmax = ic.get(f"max_{powder}_100MPa_mA_per_cm2")
        mean = ic.get("mean_for_dense_smooth_mA_per_cm2")
        if jmax is not None:
            out["current_max_mA_per_cm2"] = jmax
            if mean:
                out["current_max_over_mean"] = jmax / mean
    return out


def _per_mA_applied(j, applied):
    """A current density at 1 mA/cm² (= 10 A/m²) applied over the whole face: j / applied, in mA/cm²."""
    return None if (j is None or not applied) else j / applied * 1.0


def rows_of_run(res: dict, powder: str, ref: dict) -> list[dict]:
    rows = []
    sizes = res.get("sizes") or {}
    for a in res.get("analysed") or []:
        m = a.get("microstructure")
        if not m:
            continue
        released = (a.get("stage_kind") or "load") != "load"
        p_Pa = a.get("pelletizing_pressure_Pa") if released else a.get("nominal_pressure_Pa", a.get("pressure_Pa"))
        p_MPa = _num(p_Pa) / 1e6 if _num(p_Pa) is not None else None
        tmean = m.get("rve_tau_mean") or {}
        tstd = m.get("rve_tau_std") or {}
        nnp = m.get("rve_n_nonpercolating") or {}
        rel = {}
        for ax in AXES:
            mu, sd = _num(tmean.get(ax)), _num(tstd.get(ax))
            rel[ax] = sd / mu if (mu and sd is not None) else None
        applied = _num(m.get("interface_applied_A_per_m2"))
        jmax = _num(m.get("interface_current_max_A_per_m2"))
        jmean = _num(m.get("interface_current_mean_A_per_m2"))
        pore = _num(m.get("pore_size_mean_m"))
        grid = m.get("rve_grid")
        rows.append({
            "run": res.get("name"), "seed": res.get("seed"), "powder": powder,
            "state": "released" if released else "loaded",
            "pressure_MPa": p_MPa, "measured_pressure_MPa": (_num(a.get("pressure_Pa")) or 0.0) / 1e6,
            "label": a.get("label"),
            "d50_um": (_num(sizes.get("D50_m")) or 0.0) * 1e6 or None,
            "voxel_um": (_num(a.get("voxel_m")) or 0.0) * 1e6 or None,
            "image_shape_zyx": a.get("image_shape"),
            "porosity": _num(m.get("porosity", a.get("porosity"))),
            "relative_density_dem": _num(a.get("relative_density")),
            "tau_sample": _num(a.get("tau")), "tau_sample_axis": a.get("axis"),
            "rve_grid": grid, "rve_n": int(math.prod(grid)) if isinstance(grid, list) and grid else None,
            "rve_tau_mean": {ax: _num(tmean.get(ax)) for ax in AXES},
            "rve_tau_std": {ax: _num(tstd.get(ax)) for ax in AXES},
            "rve_tau_rel_std": rel,
            "rve_n_nonpercolating": {ax: nnp.get(ax) for ax in AXES},
            "rve_porosity_std": _num(m.get("rve_porosity_std")),
            "tau_inplane": _num(m.get("tau_inplane")), "tau_throughplane": _num(m.get("tau_throughplane")),
            "inplane_rms": _num(m.get("inplane_rms")),
            "interface_contact_fraction_requested": _num(m.get("interface_contact_fraction_requested")),
            "interface_contact_fraction": _num(m.get("interface_contact_fraction")),
            "interface_current_max_over_mean": _num(m.get("interface_current_max_over_mean")),
            "interface_current_cv": _num(m.get("interface_current_cv")),
            "interface_current_mean_mA_per_cm2": _per_mA_applied(jmean, applied),
            "interface_current_max_mA_per_cm2": _per_mA_applied(jmax, applied),
            "pore_size_mean_um": pore * 1e6 if pore is not None else None,
            "study": _study(ref, powder, p_MPa),
        })
    return rows


# --------------------------------------------------------------------------------------------- trends
_TREND_KEYS = ("porosity", "tau_sample", "tau_throughplane", "rve_tau_std_z", "inplane_rms",
               "interface_current_max_over_mean")


def _value(r: dict, key: str):
    return r["rve_tau_std"]["z"] if key == "rve_tau_std_z" else r[key]


def trend_checks(rows: list[dict]) -> list[dict]:
    """The study's qualitative findings, checked on the rows of the powders labelled exactly "fine" and
    "regular" (values averaged over the runs of one powder, e.g. several seeds; None where missing)."""
    groups: dict = {}
    for r in rows:
        if r["pressure_MPa"] is not None:
            groups.setdefault((r["powder"], r["state"], round(r["pressure_MPa"])), []).append(r)
    by = {}
    for k, rs in groups.items():
        vals = {}
        for key in _TREND_KEYS:
            v = [_value(r, key) for r in rs]
            vals[key] = None if any(x is None for x in v) else sum(v) / len(v)
        vals["n_runs"] = len(rs)
        by[k] = vals
    out = []
    states = sorted({k[1] for k in by})
    pressures = sorted({k[2] for k in by})
    for st in states:
        for p in pressures:
            f, g = by.get(("fine", st, p)), by.get(("regular", st, p))
            if not (f and g):
                continue
            for key, what in (("porosity", "finer → denser (lower porosity)"),
                              ("tau_throughplane", "finer → lower through-plane τ (RVE mean)"),
                              ("tau_sample", "finer → lower whole-sample τ")):
                if f[key] is not None and g[key] is not None:
                    out.append({"check": what, "state": st, "pressure_MPa": p, "fine": f[key], "regular": g[key],
                                "n_runs": [f["n_runs"], g["n_runs"]], "holds": f[key] < g[key]})
        for powder in ("fine", "regular"):
            seq = [(p, by[(powder, st, p)]) for p in pressures if (powder, st, p) in by]
            if len(seq) < 2:
                continue
            for key, what in (("porosity", "higher pressure → lower porosity"),
                              ("tau_throughplane", "higher pressure → lower τ"),
                              ("rve_tau_std_z", "higher pressure → more uniform (lower RVE τ std, z)"),
                              ("inplane_rms", "higher pressure → more uniform in-plane (lower RMS)"),
                              ("interface_current_max_over_mean", "higher pressure → more uniform interface current")):
                vals = [v[key] for _, v in seq]
                if any(v is None for v in vals):
                    continue
                out.append({"check": what, "state": st, "powder": powder,
                            "pressures_MPa": [p for p, _ in seq], "values": vals,
                            "n_runs": [v["n_runs"] for _, v in seq],
                            "holds": all(b < a for a, b in zip(vals, vals[1:]))})
    return out


# --------------------------------------------------------------------------------------------- markdown
def _f(x, nd=3):
    return "–" if x is None else f"{x:.{nd}f}"


def _rng(v, nd=3):
    if v is None:
        return "–"
    if isinstance(v, (list, tuple)):
        return "–".join(f"{float(x):.{nd}g}" for x in v)
    return f"{float(v):.{nd}g}"


def markdown(rows: list[dict]) -> str:
    head = ["powder", "seed", "P (MPa)", "state", "porosity", "1 − ρ_rel (DEM)", "study porosity", "τ sample (z)",
            "τ RVE x", "τ RVE y", "τ RVE z", "rel. std z", "study τ", "study rel. std",
            "τ in-plane", "τ through-plane", "contact (actual)", "j max/mean", "j max (mA/cm²)",
            "study j max (mA/cm²)", "pore size mean (µm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["study"]
        tm, ts = r["rve_tau_mean"], r["rve_tau_std"]
        cells = [
            r["powder"], str(r["seed"]), _f(r["pressure_MPa"], 0), r["state"], _f(r["porosity"]),
            _f(None if r["relative_density_dem"] is None else 1.0 - r["relative_density_dem"]), _rng(s["porosity"]),
            _f(r["tau_sample"]),
            *[f"{_f(tm[ax])} ± {_f(ts[ax])}" if tm[ax] is not None else "–" for ax in AXES],
            _f(r["rve_tau_rel_std"]["z"], 3), _rng(s["tau"]), _rng(s["tau_rel_std"]),
            _f(r["tau_inplane"]), _f(r["tau_throughplane"]),
            _f(r["interface_contact_fraction"], 3) + (f" (of {r['interface_contact_fraction_requested']:.4g})"
                                                     if r["interface_contact_fraction_requested"] else ""),
            _f(r["interface_current_max_over_mean"], 2),
            _f(r["interface_current_max_mA_per_cm2"], 2),
            (_rng(s["current_max_mA_per_cm2"], 3) + (f" (max/mean {s['current_max_over_mean']:.2f})"
                                                     if s["current_max_over_mean"] else "")),
            _f(r["pore_size_mean_um"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main
def build(outdirs, labels=None, reference=None) -> dict:
    ref, ref_src = load_reference(reference)
    if labels and len(labels) != len(outdirs):
        raise SystemExit(f"lin2024_table: --labels has {len(labels)} entries for {len(outdirs)} OUTDIRs")
    rows, runs = [], []
    for i, od in enumerate(outdirs):
        res = load_results(Path(od))
        powder = powder_of(res.get("name", ""), labels[i] if labels else None)
        rr = rows_of_run(res, powder, ref)
        runs.append({"outdir": str(od), "name": res.get("name"), "powder": powder, "status": res.get("status"),
                     "wall_time_s": res.get("wall_time_s"), "seed": res.get("seed"), "sizes": res.get("sizes"),
                     "n_rows": len(rr)})
        rows += rr
    order = {"fine": 0, "regular": 1}
    rows.sort(key=lambda r: (order.get(r["powder"], 2), r["powder"], r["state"], r["pressure_MPa"] or 0.0,
                             str(r["seed"])))
    return {"study": "Lin et al. 2024, ACS Energy Lett. 9, 2387", "reference_source": ref_src,
            "reference": {k: ref.get(k) for k in ("porosity", "tortuosity_factor", "interface_current")},
            "runs": runs, "rows": rows, "trends": trend_checks(rows)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdirs", nargs="+", help="`pelletsim run` output folders (or their results.json)")
    ap.add_argument("--labels", default=None, help="comma-separated powder per OUTDIR (fine,regular); "
                                                   "default: from the run name")
    ap.add_argument("--reference", default=None,
                    help="study figures TOML (default: the built-in REFERENCE, docs/references.md)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON path (default %(default)s)")
    ap.add_argument("--md", default=None, help="also write the markdown table to this path")
    args = ap.parse_args(argv)
    from fva.atomic import write_json, write_text

    data = build(args.outdirs, args.labels.split(",") if args.labels else None, args.reference)
    if not data["rows"]:
        raise SystemExit("lin2024_table: no analysed packing with a microstructure object in "
                         + ", ".join(args.outdirs) + " (enable [microstructure] in the scenario)")
    md = markdown(data["rows"])
    data["markdown"] = md
    print(md, end="")
    for t in data["trends"]:
        where = f"{t['pressure_MPa']:g} MPa" if "pressure_MPa" in t else t["powder"]
        print(f"- {t['check']} [{t['state']}, {where}]: {'yes' if t['holds'] else 'NO'}")
    write_json(Path(args.out), data)
    if args.md:
        write_text(Path(args.md), md)
    print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()

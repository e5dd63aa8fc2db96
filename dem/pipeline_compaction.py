"""The compaction's outputs in the run folder and results.json (complete or stopped): history.csv, the captured
packings with their densities, the Heckel fits and release densities (:mod:`dem.heckel`), ParaView frames."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from dem.history_csv import write_history_csv
from dem.pipeline_common import _Results, slug, write_packing_npz
from dem.scenario import CaptureSpec, Scenario
from fva.report import json_safe


def _write_compaction(scen: Scenario, outdir: Path, res: _Results, result, stages, say):
    """Write what a compaction produced (complete or partial, ``result.info["completed"]``): history.csv,
    the captured packings, the Heckel analysis and the ParaView frames. Returns (history, capture metadata)."""
    data = res.data
    T = data["timings_s"]
    data["compaction"] = json_safe(result.info)
    for w in result.info.get("warnings") or []:      # e.g. a hold that did not settle: said where users look
        if w not in data.setdefault("warnings", []):
            data["warnings"].append(w)
    history = {k: np.asarray(v) for k, v in result.history.items()}
    cols = write_history_csv(outdir / "history.csv", history)
    data.setdefault("files", {})["history"] = "history.csv"
    data["history_columns"] = cols

    # packings
    cap_meta = []
    for i, (pk, sp) in enumerate(zip(result.packings, result.captures, strict=True)):
        label = pk.label or f"{pk.pressure_Pa / 1e9:.3f} GPa"
        if sp.kind != "load" and "after" not in label:
            label = f"{label} after {sp.pelletizing_Pa / 1e9:g} GPa"
        if label != pk.label:
            pk = dataclasses.replace(pk, label=label)
            result.packings[i] = pk
        name = f"{i:02d}_{slug(label)}.npz"
        meta = {"index": i, "label": pk.label, "pressure_Pa": float(pk.pressure_Pa),
                "nominal_pressure_Pa": sp.pressure_Pa, "stage_kind": sp.kind, "stage_index": sp.stage_index,
                "pelletizing_pressure_Pa": sp.pelletizing_Pa, "cycle": sp.cycle, "protocol": sp.protocol,
                "relative_density": _history_value_at(history, sp, float(pk.pressure_Pa), "relative_density"),
                "solid_fraction": _history_value_at(history, sp, float(pk.pressure_Pa), "solid_fraction"),
                "thickness_m": float(pk.box_m[2]), "file": f"packings/{name}"}
        cap_meta.append(meta)
        if scen.run.write_packings:
            write_packing_npz(outdir / "packings" / name, pk,
                              pelletizing_pressure_Pa=np.float64(sp.pelletizing_Pa), stage_kind=np.str_(sp.kind))
    if result.final is not None and scen.run.write_packings:
        write_packing_npz(outdir / "packings" / "final.npz", result.final)
    data["captures"] = cap_meta
    data["relative_density"] = _density_summary(history, cap_meta)
    data["heckel"], extra = _heckel(history, stages, scen)
    data.update(extra)
    rdm = data["relative_density"]
    done = "done" if result.info.get("completed", True) else "stopped"
    say(f"[pelletsim] compaction {done} in {T['compaction']:.1f} s ({result.info.get('n_steps', '?')} steps): "
        f"ρ_rel max {rdm.get('max', float('nan')):.4f}, final {rdm.get('final', float('nan')):.4f}, "
        f"{len(result.packings)} capture(s)")
    if data["heckel"].get("Py_Pa"):
        say(f"[pelletsim] Heckel: Py = {data['heckel']['Py_Pa'] / 1e9:.3f} GPa, A = {data['heckel'].get('A'):.3f}")

    if scen.run.write_frames and result.frames:
        try:
            from dem.paraview import write_particle_frames
            t = time.perf_counter()
            pvd = write_particle_frames(outdir, result.frames)
            T["paraview"] = time.perf_counter() - t
            data["files"]["particles"] = str(Path(pvd).relative_to(outdir)) if Path(pvd).is_absolute() \
                else str(pvd)
        except ImportError as exc:
            data.setdefault("warnings", []).append(f"ParaView frames not written: {exc}")
    res.flush()
    return history, cap_meta


def _history_value_at(history: dict, spec: CaptureSpec, p_Pa: float, key: str):
    if key not in history or "p_top_Pa" not in history or not len(history["p_top_Pa"]):
        return None
    p = np.asarray(history["p_top_Pa"], float)
    mask = np.isfinite(np.asarray(history[key], float))     # a column may be sampled on some rows only
    if not mask.any():
        return None
    if "stage" in history:
        m2 = mask & (np.asarray(history["stage"]) == spec.stage_index)
        if m2.any():
            mask = m2
    if not math.isfinite(p_Pa):
        idx = np.flatnonzero(mask)[-1]
    else:
        cand = np.flatnonzero(mask)
        idx = cand[np.argmin(np.abs(p[cand] - p_Pa))]
    return float(np.asarray(history[key], float)[idx])


def _density_summary(history: dict, cap_meta: list[dict]) -> dict:
    out = {"per_capture": [{"label": m["label"], "pressure_Pa": m["pressure_Pa"],
                            "relative_density": m["relative_density"]} for m in cap_meta]}
    if "relative_density" in history and len(history["relative_density"]):
        rho = np.asarray(history["relative_density"], float)
        out["final"] = float(rho[-1])
        out["max"] = float(np.nanmax(rho))
        if "p_top_Pa" in history:
            p = np.asarray(history["p_top_Pa"], float)
            k = int(np.nanargmax(p))
            out["at_max_pressure"] = float(rho[k])
            out["max_pressure_Pa"] = float(p[k])
    if "solid_fraction" in history and len(history["solid_fraction"]):
        sf = np.asarray(history["solid_fraction"], float)
        sf = sf[np.isfinite(sf)]
        if len(sf):
            out["final_solid_fraction"] = float(sf[-1])
    return out


def _heckel(history: dict, stages, scen: Scenario) -> tuple[dict, dict]:
    """In-die Heckel fit of the loading branch, out-of-die fit and elastic recovery (dem.heckel, dem.heckel_cycles)."""
    extra = {}
    if "p_top_Pa" not in history or "relative_density" not in history:
        return {"error": "history lacks p_top_Pa or relative_density"}, extra
    try:
        from dem import heckel as hk
        from dem import heckel_cycles as hkc
    except ImportError as exc:
        return {"error": f"dem.heckel not available: {exc}"}, extra
    p = np.asarray(history["p_top_Pa"], float)
    rho = np.asarray(history["relative_density"], float)
    ok = np.isfinite(p) & np.isfinite(rho) & (rho > 0) & (rho < 1)
    h = {"p_top_Pa": p[ok], "relative_density": rho[ok]}
    kinds = None
    if "stage" in history:
        h["stage"] = np.asarray(history["stage"])[ok]
        kinds = [st.kind for st in stages]
    hc = scen.heckel
    fit_kwargs = {}
    if hc.fit_range_GPa is not None:
        fit_kwargs = dict(p_min_Pa=hc.fit_range_GPa[0] * 1e9, p_max_Pa=hc.fit_range_GPa[1] * 1e9, auto=False)
    try:
        both = hkc.in_die_and_out_of_die(h, stage_kinds=kinds, **fit_kwargs)
        out = json_safe(both["in_die"])
        extra["heckel_out_of_die"] = json_safe(both["out_of_die"])
        extra["elastic_recovery"] = {"fraction": json_safe(both["elastic_recovery"]),
                                     "cycles": json_safe(both["cycles"]), "notes": both["notes"]}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
        extra["elastic_recovery"] = {"error": out["error"]}
    if fit_kwargs:
        out["fit_window"] = "heckel.fit_range_GPa"
        try:   # the automatic regime-II fit, for comparison
            lp_, lr_ = hkc.loading_branch(p[ok], rho[ok])
            extra["heckel_auto"] = json_safe(hk.heckel_fit(lp_, lr_))
        except Exception as exc:
            extra["heckel_auto"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "error" not in extra["elastic_recovery"]:
        extra["elastic_recovery"]["at_stack_pressures"] = release_densities(history, stages, hc.stack_pressures_GPa)
    lp, _ = hkc.loading_branch(p[ok], rho[ok])
    out["in_die_points"] = int(lp.size)
    out["points_rho_ge_1_excluded"] = int(np.count_nonzero(np.isfinite(rho) & (rho >= 1)))
    return out, extra


def release_densities(history: dict, stages, stack_GPa) -> list[dict]:
    """Relative density on the last release branch at the given stack pressures (linear interpolation in p)
    and its drop from the density at the preceding peak pressure, (ρ_peak − ρ(p_s))/ρ_peak — the quantity the
    study reports as the density drop on release (measured down to 0.01 GPa). Empty without an unload stage."""
    if "stage" not in history:
        return []
    st = np.asarray(history["stage"], int)
    p = np.asarray(history["p_top_Pa"], float)
    rho = np.asarray(history["relative_density"], float)
    unload = [i for i, s in enumerate(stages) if s.kind == "unload" and np.any(st == i)]
    if not unload:
        return []
    rows = np.flatnonzero(st == unload[-1])
    before = np.arange(rows[0])
    if before.size == 0:
        return []
    k_peak = int(before[np.nanargmax(p[before])])
    pr, rr = p[rows], rho[rows]
    order = np.argsort(pr)
    pr, rr = pr[order], rr[order]
    out = []
    for s_gpa in stack_GPa:
        ps = s_gpa * 1e9
        if not (pr.size >= 2 and pr[0] <= ps <= max(pr[-1], p[k_peak])):
            continue
        rs = float(np.interp(ps, np.append(pr, p[k_peak]), np.append(rr, rho[k_peak])))
        out.append({"p_Pa": ps, "relative_density": rs, "peak_pressure_Pa": float(p[k_peak]),
                    "relative_density_at_peak": float(rho[k_peak]), "drop_fraction": (rho[k_peak] - rs) / rho[k_peak]})
    return out

"""Fig. 6b of Schneider et al. 2023 from finished runs: tables, shape checks and Heckel figures.

    pelletsim run scenarios/schneider2023_variable_pressure.toml -o out/var
    pelletsim run scenarios/schneider2023_stack_pressure.toml -o out/stack
    python benchmarks/fig6b_table.py out/var out/stack [--out fig6b.json]

Reads each run's ``results.json`` and prints, per run, one row per analysed packing (x = the nominal capture
pressure for the variable-pressure protocol, the pelletizing pressure for the stack-pressure one; mass-based
ρ_rel; σ_eff/σ_bulk; σ_eff normalised at the scenario's ``normalise_at_GPa``; τ) and the run's compaction
figures (in-die Heckel Py over the scenario's window and the automatic one, out-of-die Py, ρ_rel at 0.5 and
1.7 GPa, density drop at the stack pressures on the final release). The study's expected shapes
(Schneider et al. 2023, Fig. 6b; ``docs/references.md#schneider-2023-protocols-fig-5-and-fig-6b``) are checked on
the rows:

* variable pressure — "rises through regime I, maximum near 0.5 GPa, then ln σ falls about linearly":
  the pressure of the maximum, and the least-squares slope of ln σ over the points at and above 0.5 GPa
  (GPa⁻¹) beside the activation-volume term alone, −ΔV/(RT);
* stack pressure — "rises monotonically with compaction, flattens at high pressure": the fraction of steps
  that rise (within 1 %), and the relative change over the last two pelletizing pressures.

Writes JSON (``--out``, default ``benchmarks/results/fig6b_table.json``) atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fva.activation import R_J_PER_MOL_K as R_GAS  # noqa: E402  (J/(mol K))


def rows_of(res: dict) -> list[dict]:
    """One row per analysed packing, sorted by x (Pa)."""
    xk = res.get("conductivity", {}).get("x_key", "nominal_pressure_Pa")
    rows = []
    for a in res.get("analysed", []):
        x = a.get(xk) if a.get(xk) is not None else a.get("pressure_Pa")
        rows.append(dict(x_Pa=x, pressure_Pa=a.get("pressure_Pa"), relative_density=a.get("relative_density"),
                         sigma_eff_over_bulk=a.get("sigma_eff_over_bulk"), normalised_sigma=a.get("normalised_sigma"),
                         tau=a.get("tau"), label=a.get("label")))
    return sorted((r for r in rows if r["x_Pa"] is not None), key=lambda r: r["x_Pa"])


def shape_checks(protocol: str, rows: list[dict], scenario: dict) -> dict:
    """The study's expected shape, measured on the rows (module docstring)."""
    x = np.array([r["x_Pa"] for r in rows], float) / 1e9
    s = np.array([r["normalised_sigma"] if r["normalised_sigma"] is not None else np.nan for r in rows], float)
    ok = np.isfinite(s) & (s > 0)
    x, s = x[ok], s[ok]
    if x.size < 3:
        return {"note": "fewer than 3 analysed packings"}
    if protocol == "variable_pressure":
        cond = scenario.get("conductivity", {})
        dv = float(cond.get("activation_volume_cm3_per_mol", 0.0)) * 1e-6
        T = float(cond.get("temperature_K", 298.15))
        hi = x >= 0.5 - 1e-9
        slope = float(np.polyfit(x[hi], np.log(s[hi]), 1)[0]) if hi.sum() >= 2 else None
        return dict(p_of_maximum_GPa=float(x[int(np.argmax(s))]), expected_p_of_maximum_GPa=0.5,
                    dln_sigma_dp_above_0p5_per_GPa=slope, activation_term_per_GPa=-dv * 1e9 / (R_GAS * T))
    steps = np.diff(s) / s[:-1]
    return dict(rising_steps_fraction=float(np.mean(steps > -0.01)), last_step_change=float(steps[-1]),
                rise_to_0p5_GPa=float(np.interp(0.5, x, s) / s[0]) if x[0] <= 0.5 <= x[-1] else None)


def _gpa(d: dict, key: str):
    """d[key] (Pa) in GPa, None when absent or zero."""
    return d[key] / 1e9 if d.get(key) else None


def summary(res: dict) -> dict:
    """Compaction figures of one run (module docstring)."""
    per = {round(c["pressure_Pa"] / 1e8) / 10: c["relative_density"]
           for c in res.get("relative_density", {}).get("per_capture", []) if c.get("relative_density")}
    h, ha, ho = res.get("heckel", {}), res.get("heckel_auto", {}), res.get("heckel_out_of_die") or {}
    rec = res.get("elastic_recovery", {})
    return dict(
        Py_in_die_GPa=_gpa(h, "Py_Pa"), Py_in_die_stderr_GPa=_gpa(h, "Py_stderr_Pa"),
        Py_fit_range_GPa=[v / 1e9 for v in h.get("fit_range_Pa", [])],
        Py_auto_GPa=_gpa(ha, "Py_Pa"), Py_out_of_die_GPa=_gpa(ho, "Py_Pa"),
        rho_at_0p5_GPa=per.get(0.5), rho_at_1p7_GPa=per.get(1.7),
        rho_max=res.get("relative_density", {}).get("max"), rho_final=res.get("relative_density", {}).get("final"),
        release=[dict(p_GPa=r["p_Pa"] / 1e9, rho=r["relative_density"], drop=r["drop_fraction"])
                 for r in rec.get("at_stack_pressures", [])],
        recovery_to_contact_loss=rec.get("fraction"),
        n_particles=res.get("sizes", {}).get("n"), wall_time_s=res.get("wall_time_s"),
        compaction_s=res.get("timings_s", {}).get("compaction"), n_steps=res.get("compaction", {}).get("n_steps"),
        backend=res.get("backend", {}).get("backend"), device=res.get("backend", {}).get("device"),
        status=res.get("status"))


def table(runs: list[dict]) -> str:
    out = []
    for r in runs:
        sm = r["summary"]
        out.append(f"### {r['name']} ({r['protocol']}, {sm['n_particles']} particles, {sm['status']}, "
                   f"{sm['device']}, {sm['wall_time_s'] or float('nan'):.0f} s)\n")
        out.append("| x (GPa) | ρ_rel | σ_eff/σ_bulk | normalised σ | τ |\n|---|---|---|---|---|")
        for w in r["rows"]:
            f = (lambda v, fmt: "—" if v is None else format(v, fmt))
            out.append(f"| {w['x_Pa'] / 1e9:.3g} | {f(w['relative_density'], '.4f')} | "
                       f"{f(w['sigma_eff_over_bulk'], '.4f')} | {f(w['normalised_sigma'], '.3f')} | "
                       f"{f(w['tau'], '.3f')} |")
        out.append("")
        out.append("shape: " + ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                                         for k, v in r["shape"].items()))
        out.append("compaction: " + ", ".join(
            f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sm.items()
            if k in ("Py_in_die_GPa", "Py_fit_range_GPa", "Py_auto_GPa", "Py_out_of_die_GPa", "rho_at_0p5_GPa",
                     "rho_at_1p7_GPa", "rho_final", "recovery_to_contact_loss", "n_steps", "compaction_s")))
        if sm["release"]:
            out.append("release: " + ", ".join(f"ρ({x['p_GPa']:g} GPa) = {x['rho']:.4f} (drop {100 * x['drop']:.1f} %)"
                                               for x in sm["release"]))
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (each with results.json)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fig6b_table.json"))
    a = ap.parse_args(argv)
    runs = []
    for d in a.runs:
        p = Path(d) / "results.json"
        if not p.is_file():
            ap.error(f"{p}: not found (give the output folder of a pelletsim run)")
        res = json.loads(p.read_text())
        proto = res.get("conductivity", {}).get("protocol", "variable_pressure")
        rows = rows_of(res)
        runs.append(dict(name=res.get("name", Path(d).name), folder=str(d), protocol=proto, rows=rows,
                         shape=shape_checks(proto, rows, res.get("scenario", {})), summary=summary(res)))
    from fva.atomic import write_json

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, json.loads(json.dumps(dict(runs=runs), default=lambda v: None if v is None else float(v))))
    print(table(runs))
    print(f"written {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

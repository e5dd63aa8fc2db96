"""Calibrate the Thornton–Ning limiting contact pressure p_y against the study's in-die Heckel Py.

Schneider et al. 2023 (t-Li7SiPS8, <50 µm sieve fraction) report an in-die Heckel mean yield pressure
Py = 0.95 ± 0.03 GPa (``docs/references.md#schneider-2023-heckel``). The DEM contact parameter that
sets it is the Thornton–Ning p_y (``Material.yield_stress_Pa``); the two are not the same number (Py is a
property of the packing's densification, p_y the limiting pressure of one contact). This script sweeps p_y
on a reduced study-like set-up, fits the in-die Heckel line of each loading branch with ``dem.heckel`` and
interpolates the p_y whose simulated Py equals the target (linear in log p_y – log Py between the two
bracketing runs).

Set-up of each run: ``benchmarks/reduced_study.toml`` through the set-up path of ``pelletsim run``
(:mod:`dem.setup`), with the options below as overrides (defaults: N = 450 spheres, number-weighted gamma
a = 1.94431, b = 7.04802 µm truncated to [8, 40] µm, 80 × 80 µm periodic die (2·d_max), random loose fill at
a solid fraction of 0.35; E = 22 GPa, ν = 0.3, ρ = 1900 kg/m³, μ = 0.3 (walls 0.1), e = 0.5; mass scaling
1e5, dt = 0.1 t_Rayleigh(r_min); approach to 20 MPa at 0.1 m/s, load to 1.7 GPa at 0.02 m/s, release to
contact loss at 0.02 m/s; volume correction on (irreversible, MDR-like, with its bulk response)).
Results and discussion: docs/calibration.md.

Usage (from the repository root)::

    python benchmarks/calibrate_yield.py                           # p_y = 0.3, 0.47, 0.6, 1.2 GPa, 2 processes
    python benchmarks/calibrate_yield.py --yield-gpa 0.47,0.9 --bulk-response 1.0 --dt-safety 0.05 --history-every 40
    python benchmarks/calibrate_yield.py --quick                   # smoke test (tiny, seconds)
    # the pore-collapse bulk model of the study scenarios (solid's bulk modulus, p_c = 1.5 GPa):
    python benchmarks/calibrate_yield.py --yield-gpa 0.42 --bulk-response 1.0 --dt-safety 0.05 --pore-collapse-gpa 1.5

``--pore-collapse-gpa yield`` ties p_c to each run's p_y; ``--growth-cap`` changes the volume correction's radius
cap; ``--threads`` sets Taichi's CPU threads per run.

Writes ``benchmarks/results/calibration.json`` (``--out``) atomically and prints a markdown table.
Runs are independent processes with one Taichi CPU thread each (one runtime per process).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_PY_GPA = 0.95          # Schneider 2023, in-die Heckel Py of the <50 µm fraction (± 0.03)
TARGET_RECOVERY = 0.04        # measured density drop on release
SETUP = ROOT / "benchmarks" / "reduced_study.toml"


def _interp_at(p, rho, p_at):
    """ρ on the loading branch at pressure p_at (linear interpolation; NaN outside the data)."""
    if p.size < 2 or p_at < p[0] or p_at > p[-1]:
        return float("nan")
    return float(np.interp(p_at, p, rho))


def scenario_overrides(cfg: dict) -> list[str]:
    """The run's differences from ``reduced_study.toml`` as ``--set`` overrides (the pore-collapse p_c: a
    number in GPa, or "yield" for p_c = the run's p_y)."""
    sets = [f"particles.count={cfg['n']}", f"particles.shape={cfg['shape']!r}",
            f"particles.scale_um={cfg['scale_um']!r}",
            f"particles.d_min_um={cfg['d_min_um']!r}", f"particles.d_max_um={cfg['d_max_um']!r}",
            f"die.base_x_um={cfg['die_um']!r}", f"die.base_y_um={cfg['die_um']!r}",
            f"die.loose_fraction={cfg['loose_fraction']!r}", f"material.density_kg_m3={cfg['density_kg_m3']!r}",
            f"material.youngs_modulus_GPa={cfg['E_GPa']!r}", f"material.poisson_ratio={cfg['nu']!r}",
            f"material.yield_stress_MPa={cfg['p_y_GPa'] * 1e3!r}", f"material.friction={cfg['friction']!r}",
            f"material.wall_friction={cfg['wall_friction']!r}", f"numerics.mass_scaling={cfg['mass_scaling']!r}",
            f"numerics.dt_safety={cfg.get('dt_safety', 0.2)!r}",
            f"numerics.volume_correction={'true' if cfg.get('vc', True) else 'false'}",
            f"protocol.0.punch_speed_m_per_s={cfg['approach_speed']!r}",
            f"protocol.1.punch_speed_m_per_s={cfg['speed']!r}", f"protocol.2.punch_speed_m_per_s={cfg['speed']!r}",
            f"protocol.1.target_pressure_GPa={cfg['p_max_GPa']!r}", f"run.history_every={cfg['history_every']}",
            f"run.seed={cfg['seed']}"]
    if cfg.get("bulk_response") is not None:
        sets.append(f"numerics.bulk_stiffness_fraction={cfg['bulk_response']!r}")
    pc = cfg.get("pore_collapse_GPa")
    if pc is not None:
        pc_MPa = cfg["p_y_GPa"] * 1e3 if pc == "yield" else float(pc) * 1e3
        sets += ['numerics.bulk_model="pore_collapse"', f"numerics.pore_collapse_MPa={pc_MPa!r}"]
    return sets


def run_one(cfg: dict) -> dict:
    """One compaction run (in its own process). Returns the figures of the run."""
    from fva.backend import ensure_init

    ensure_init("cpu", "f64", cpu_max_num_threads=cfg["threads"])
    import dem.simulation as _sim

    if cfg.get("growth_cap") is not None:         # radius growth cap g_max of the volume correction
        _sim.MAX_RADIUS_GROWTH = float(cfg["growth_cap"])
    from dem import heckel as hk
    from dem import heckel_cycles as hkc
    from dem.scenario import load_scenario
    from dem.setup import compact, prepare
    from dem.simulation import SimulationError

    t0 = time.perf_counter()
    um = 1e-6
    # max_overlap_fraction is passed to the engine apart: the scenario schema caps it at 1
    case = prepare(load_scenario(SETUP, scenario_overrides(cfg)), backend="cpu", solid_fraction_points=4000,
                   max_overlap_fraction=cfg["max_overlap_fraction"])
    d, loose = case.diameters_m, case.loose
    out = dict(p_y_GPa=cfg["p_y_GPa"], n=int(d.size), d_min_sampled_um=float(d.min() / um),
               d_max_sampled_um=float(d.max() / um), loose_height_um=float(loose.box_m[2] / um))
    try:
        res = compact(case)
    except SimulationError as exc:
        out.update(error=str(exc), wall_s=time.perf_counter() - t0)
        return out
    h = res.history
    p, rho, st = h["p_top_Pa"], h["relative_density"], h["stage"].astype(int)
    kinds = [s.kind for s in case.stages]
    load = np.isin(st, [0, 1])
    k_max = int(np.nanargmax(p))
    mask = load.copy()
    mask[k_max + 1:] = False
    mask &= (p > 0) & np.isfinite(p) & (rho > 0) & (rho < 1)
    lp, lr = hkc.loading_branch(p[mask], rho[mask])
    ok = np.isfinite(p) & np.isfinite(rho) & (rho > 0) & (rho < 1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = hkc.in_die_and_out_of_die({"p_top_Pa": p[ok], "relative_density": rho[ok], "stage": st[ok]},
                                         stage_kinds=kinds)
    auto = both["in_die"]
    try:
        fixed = hk.heckel_fit(lp, lr, p_min_Pa=min(0.5e9, 0.5 * cfg["p_max_GPa"] * 1e9),
                              p_max_Pa=cfg["p_max_GPa"] * 1e9, auto=False)
    except ValueError:
        try:
            fixed = hk.heckel_fit(lp, lr, p_min_Pa=0.3 * float(lp[-1]), auto=False)
        except ValueError:
            fixed = auto
    # released pellet: the last row of the release stage
    rel = np.flatnonzero(st == 2)
    rho_rel = float(rho[rel[-1]]) if rel.size else float("nan")
    rho_max = float(rho[k_max])
    inert = h["inertial_number"]
    lsel = load & (p >= 0.05e9) & np.isfinite(inert)
    out.update(
        Py_auto_GPa=auto.Py_Pa / 1e9, Py_auto_stderr_GPa=auto.Py_stderr_Pa / 1e9,
        Py_auto_fit_range_GPa=[v / 1e9 for v in auto.fit_range_Pa], Py_auto_method=auto.method,
        Py_auto_r2=auto.r2,
        Py_fixed_GPa=fixed.Py_Pa / 1e9, Py_fixed_stderr_GPa=fixed.Py_stderr_Pa / 1e9, Py_fixed_r2=fixed.r2,
        A_fixed=fixed.A,
        rho_at_0p1GPa=_interp_at(lp, lr, 0.1e9), rho_at_0p5GPa=_interp_at(lp, lr, 0.5e9),
        rho_at_1p0GPa=_interp_at(lp, lr, 1.0e9), rho_at_pmax=rho_max, p_max_reached_GPa=float(p[k_max] / 1e9),
        solid_fraction_at_pmax=float(h["solid_fraction"][k_max]),
        rho_released=rho_rel, recovery_fraction=(rho_max - rho_rel) / rho_max,
        thickness_released_um=float(h["thickness_m"][rel[-1]] / um) if rel.size else float("nan"),
        punch_z_released_um=float(h["punch_z_m"][rel[-1]] / um) if rel.size else float("nan"),
        max_inertial_number_load_above_50MPa=float(np.max(inert[lsel])) if lsel.any() else float("nan"),
        median_ke_ratio_load=float(np.nanmedian(h["ke_ratio"][load & (p >= 0.05e9)])) if lsel.any() else None,
        max_radius_growth=float(res.info["max_radius_growth"]), n_steps=int(res.info["n_steps"]),
        neighbour_builds=int(res.info.get("neighbour_builds", -1)),
        dt_s=float(res.info["dt_s"]), wall_s=time.perf_counter() - t0, warnings=res.info["warnings"],
        load_curve=dict(p_GPa=(lp / 1e9).round(5).tolist(), rho=np.round(lr, 5).tolist()),
        release_curve=dict(p_GPa=(p[st == 2] / 1e9).round(5).tolist(), rho=np.round(rho[st == 2], 5).tolist()),
    )
    return out


def interpolate_py(runs, key="Py_auto_GPa", target=TARGET_PY_GPA):
    """p_y at which the simulated Py equals ``target``: linear in (log p_y, log Py) between the bracketing
    runs (extrapolated from the two nearest when the target is outside the sweep; flagged)."""
    pts = sorted((r["p_y_GPa"], r[key]) for r in runs if r.get(key) and np.isfinite(r[key]))
    if len(pts) < 2:
        return None, "fewer than two successful runs"
    x = np.log([a for a, _ in pts])
    y = np.log([b for _, b in pts])
    lt = math.log(target)
    for k in range(len(pts) - 1):
        if (y[k] - lt) * (y[k + 1] - lt) <= 0 and y[k + 1] != y[k]:
            f = (lt - y[k]) / (y[k + 1] - y[k])
            return float(math.exp(x[k] + f * (x[k + 1] - x[k]))), "interpolated"
    k = 0 if lt < y.min() else len(pts) - 2
    if y[k + 1] == y[k]:
        return None, "flat"
    f = (lt - y[k]) / (y[k + 1] - y[k])
    return float(math.exp(x[k] + f * (x[k + 1] - x[k]))), "extrapolated"


def markdown(runs, cal) -> str:
    lines = ["| p_y (GPa) | Py in-die auto (GPa) | fit range (GPa) | Py 0.5–1.7 GPa (GPa) | ρ 0.5 GPa | "
             "ρ 1.7 GPa | ρ released | drop on release | max I (p ≥ 50 MPa) | steps | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['p_y_GPa']:.3g} | failed: {r['error'][:80]} |||||||||| ")
            continue
        fr = r["Py_auto_fit_range_GPa"]
        lines.append(f"| {r['p_y_GPa']:.3g} | {r['Py_auto_GPa']:.3f} ± {r['Py_auto_stderr_GPa']:.3f} | "
                     f"{fr[0]:.2f}–{fr[1]:.2f} | {r['Py_fixed_GPa']:.3f} ± {r['Py_fixed_stderr_GPa']:.3f} | "
                     f"{r['rho_at_0p5GPa']:.4f} | {r['rho_at_pmax']:.4f} | {r['rho_released']:.4f} | "
                     f"{100 * r['recovery_fraction']:.2f} % | {r['max_inertial_number_load_above_50MPa']:.2g} | "
                     f"{r['n_steps']} | {r['wall_s']:.0f} |")
    lines.append("")
    for key, name in (("Py_auto_GPa", "auto regime II"), ("Py_fixed_GPa", "fixed 0.5–1.7 GPa")):
        v, how = cal[key]
        lines.append(f"p_y for Py = {TARGET_PY_GPA} GPa ({name}): "
                     + (f"{v:.3f} GPa ({how})" if v else f"n/a ({how})"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--yield-gpa", default="0.3,0.47,0.6,1.2", help="comma-separated p_y values (GPa)")
    ap.add_argument("--n", type=int, default=450, help="particles per run")
    ap.add_argument("--d-min-um", type=float, default=8.0)
    ap.add_argument("--d-max-um", type=float, default=40.0)
    ap.add_argument("--die-um", type=float, default=None, help="die side (default 2·d_max)")
    ap.add_argument("--E-gpa", type=float, default=22.0)
    ap.add_argument("--nu", type=float, default=0.3)
    ap.add_argument("--density", type=float, default=1900.0, help="kg/m3")
    ap.add_argument("--friction", type=float, default=0.3)
    ap.add_argument("--wall-friction", type=float, default=0.1)
    ap.add_argument("--mass-scaling", type=float, default=1e5)
    ap.add_argument("--dt-safety", type=float, default=0.1, help="dt = dt_safety × Rayleigh time of r_min")
    ap.add_argument("--bulk-response", type=float, default=None,
                    help="K_eff/K of the volume-correction bulk response (default: dem.types.BULK_RESPONSE)")
    ap.add_argument("--pore-collapse-gpa", default=None,
                    help="p_c (GPa) of the plastic pore collapse p_f = p_c ln(φ_c/φ), or 'yield' for p_c = p_y of "
                         "each run (default: elastic bulk response)")
    ap.add_argument("--growth-cap", type=float, default=None,
                    help="radius growth cap g_max (r ≤ g_max r0) of the volume correction (default: dem.simulation)")
    ap.add_argument("--speed", type=float, default=0.02, help="load/release punch speed (m/s)")
    ap.add_argument("--approach-speed", type=float, default=0.1, help="approach punch speed to 20 MPa (m/s)")
    ap.add_argument("--p-max-gpa", type=float, default=1.7)
    ap.add_argument("--max-overlap-fraction", type=float, default=1.0)
    ap.add_argument("--history-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (one Taichi thread each)")
    ap.add_argument("--threads", type=int, default=None, help="Taichi CPU threads per run (default: 1 when "
                                                              "--jobs > 1, else every core)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 120 particles, two p_y, 0.5 GPa")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration.json"))
    a = ap.parse_args(argv)
    ys = [float(v) for v in a.yield_gpa.split(",") if v.strip()]
    if a.quick:
        ys, a.n, a.d_min_um, a.d_max_um, a.p_max_gpa = ys[:2] or [0.3, 0.6], 120, 8.0, 25.0, 0.6
    base = dict(n=a.n, shape=1.94431, scale_um=7.04802, d_min_um=a.d_min_um, d_max_um=a.d_max_um,
                die_um=a.die_um or 2.0 * a.d_max_um, loose_fraction=0.35, density_kg_m3=a.density,
                E_GPa=a.E_gpa, nu=a.nu, friction=a.friction, wall_friction=a.wall_friction,
                mass_scaling=a.mass_scaling, dt_safety=a.dt_safety, bulk_response=a.bulk_response,
                pore_collapse_GPa=a.pore_collapse_gpa, growth_cap=a.growth_cap, speed=a.speed,
                approach_speed=a.approach_speed,
                p_max_GPa=a.p_max_gpa, max_overlap_fraction=a.max_overlap_fraction,
                history_every=a.history_every, seed=a.seed,
                threads=a.threads or (1 if a.jobs > 1 else os.cpu_count() or 1))
    cfgs = [dict(base, p_y_GPa=y) for y in ys]
    t0 = time.perf_counter()
    if a.jobs > 1 and len(cfgs) > 1:
        with ProcessPoolExecutor(max_workers=a.jobs, mp_context=get_context("spawn")) as ex:
            runs = list(ex.map(run_one, cfgs))
    else:
        runs = [run_one(c) for c in cfgs]
    cal = {k: interpolate_py([r for r in runs if "error" not in r], key=k) for k in ("Py_auto_GPa", "Py_fixed_GPa")}
    setup = {k: v for k, v in base.items() if k != "threads"}
    doc = dict(target=dict(Py_in_die_GPa=TARGET_PY_GPA, density_drop_on_release=TARGET_RECOVERY,
                           source="Schneider et al. 2023, docs/references.md#schneider-2023-heckel"),
               setup=setup, runs=runs,
               calibrated_p_y_GPa={k: dict(value=v, how=how) for k, (v, how) in cal.items()},
               wall_s=time.perf_counter() - t0)
    from fva.atomic import write_json

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, json.loads(json.dumps(doc, default=float)))
    print(markdown(runs, cal))
    print(f"\nwritten {a.out} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

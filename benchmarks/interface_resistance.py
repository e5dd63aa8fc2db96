"""Grain-boundary interface resistance R_i on the study scenario (issue #17 part 3): figure + JSON.

    pelletsim run scenarios/schneider2023_variable_pressure.toml -o out/fine [--set particles.count=…]
    pelletsim run scenarios/schneider2023_gt50_variable_pressure.toml -o out/coarse
    python benchmarks/interface_resistance.py out/fine out/coarse [--r-ohm-m2 3e-6 1e-5 2e-5 3e-5 1e-4]
    python benchmarks/interface_resistance.py - - --replot          # redraw the figure from the JSON

For every packing captured on loading (both runs) it voxelises with particle labels at the run's voxel size
and solves σ_eff along z with σ_bulk(p) of the run's scenario (activation volume), for R_i = 0 and each R_i
of the scan (the coarse run: 0 and the chosen R_i). Reported:

* normalised σ (at the scenario's ``normalise_at_GPa``) in regime I (0.05–0.3 GPa) per R_i, beside the
  study's measured normalised values (0.01 GPa loose powder / 0.5 GPa maximum; Schneider et al. 2023,
  ``docs/references.md#schneider-2023-conductivity``);
* the least-squares slope of ln σ_norm above 0.5 GPa per R_i, beside −ΔV/(RT);
* the chosen R_i: the largest of the scan whose slope stays within ``--slope-tol`` (fraction of −ΔV/RT)
  of the R_i = 0 slope;
* fine vs coarse σ_eff at equal pressure, R_i = 0 and the chosen R_i;
* a resolution study: σ_eff of one fine packing (``--res-pressure-GPa``) at three voxel sizes with and
  without R_i, and the interface part of the resistance L/σ(R_i) − L/σ(0).

Writes ``--out`` (JSON, default benchmarks/results/interface_resistance.json) and ``--fig`` (PNG, default
docs/interface_resistance.png).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fva.activation import R_J_PER_MOL_K, sigma_bulk_at_pressure  # noqa: E402

# The study's measured conductivity (mS/cm) of the two sieve fractions: loose powder at 0.01 GPa and the
# maximum on loading at 0.5 GPa (Schneider et al. 2023, docs/references.md#schneider-2023-conductivity).
MEASURED_MS_PER_CM = {"fine": {0.01: 0.3, 0.5: 4.1}, "coarse": {0.01: 0.7, 0.5: 5.7}}
REGIME_I_GPA = (0.05, 0.3)
MS = 10.0  # mS/cm per S/m


def load_run(outdir: Path) -> dict:
    import tomllib
    from types import SimpleNamespace

    from dem.pipeline import read_packing_npz
    from dem.scenario import ConductivitySection

    res = json.loads((outdir / "results.json").read_text())
    # only [conductivity] and [particles] are needed: a histogram scenario's CSV path would not resolve here
    raw = tomllib.loads((outdir / "scenario.resolved.toml").read_text())
    scen = SimpleNamespace(conductivity=ConductivitySection(**raw["conductivity"]),
                           particles=SimpleNamespace(**raw["particles"]))
    caps = [c for c in res.get("captures", []) if c.get("stage_kind") == "load"]
    voxel = (res.get("conductivity") or {}).get("voxel_m") or scen.conductivity.voxel_um * 1e-6
    return dict(name=res.get("name", outdir.name), scen=scen, voxel_m=float(voxel),
                caps=[(c, read_packing_npz(outdir / c["file"])) for c in caps])


def solve_run(run: dict, r_values, voxel_m=None, only=None) -> list[dict]:
    """σ_eff (S/m) along z of every load capture for each R_i (one voxelisation per packing)."""
    from fva.conduction import solve_conductivity
    from fva.voxelise import voxelise

    cfg = run["scen"].conductivity
    rows = []
    for cap, pk in run["caps"]:
        p_nom = float(cap["nominal_pressure_Pa"])
        if only is not None and abs(p_nom - only) > 1e-3 * only:
            continue
        p = float(pk.pressure_Pa) if np.isfinite(pk.pressure_Pa) else p_nom
        s_bulk = float(sigma_bulk_at_pressure(p, cfg.sigma_ref_mS_per_cm * 0.1,
                                              cfg.activation_volume_cm3_per_mol * 1e-6, cfg.p_ref_GPa * 1e9,
                                              cfg.temperature_K))
        img = voxelise(pk, voxel_m or run["voxel_m"], labels=True)
        row = dict(nominal_GPa=p_nom / 1e9, pressure_GPa=p / 1e9, sigma_bulk_S_per_m=s_bulk,
                   relative_density=cap.get("relative_density"), shape=list(img.shape), sigma={}, faces={},
                   iterations={}, wall_s={})
        for r in r_values:
            t = time.perf_counter()
            res = solve_conductivity(img, "z", sigma_bulk_S_per_m=s_bulk, interface_resistance_ohm_m2=r)
            if not res.converged:
                raise RuntimeError(f"{run['name']} at {p_nom / 1e9:g} GPa, R_i = {r:g}: the solve did not converge")
            key = f"{r:g}"
            row["sigma"][key] = res.sigma_eff_S_per_m
            row["faces"][key] = res.interface_faces
            row["iterations"][key] = res.iterations
            row["wall_s"][key] = time.perf_counter() - t
        rows.append(row)
        print(f"  {run['name']} {p_nom / 1e9:.2f} GPa {img.shape}: "
              + ", ".join(f"R_i={k}: {v * MS:.4g} mS/cm" for k, v in row["sigma"].items()), flush=True)
    return rows


def normalised(rows, key: str, at_GPa: float) -> np.ndarray:
    x = np.array([r["nominal_GPa"] for r in rows])
    s = np.array([r["sigma"][key] for r in rows])
    return s / np.interp(at_GPa, x, s)


def slope_above(rows, key: str, at_GPa: float) -> float:
    x = np.array([r["nominal_GPa"] for r in rows])
    s = normalised(rows, key, at_GPa)
    hi = x >= at_GPa - 1e-9
    return float(np.polyfit(x[hi], np.log(s[hi]), 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fine")
    ap.add_argument("coarse")
    ap.add_argument("--r-ohm-m2", type=float, nargs="+", default=[3e-6, 1e-5, 2e-5, 3e-5, 1e-4])
    ap.add_argument("--slope-tol", type=float, default=0.1, help="allowed slope change / |ΔV/RT| (default 0.1)")
    ap.add_argument("--res-pressure-GPa", type=float, default=0.1)
    ap.add_argument("--res-voxels-per-dmin", type=float, nargs=3, default=[3.0, 5.0, 7.0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interface_resistance.json"))
    ap.add_argument("--fig", default=str(ROOT / "docs" / "interface_resistance.png"))
    ap.add_argument("--replot", action="store_true", help="redraw --fig from the JSON at --out (no solves)")
    a = ap.parse_args(argv)
    if a.replot:
        figure(json.loads(Path(a.out).read_text()), Path(a.fig))
        return 0
    from fva.atomic import write_json
    from fva.backend import ensure_init

    ensure_init("cpu", "f64")
    t0 = time.perf_counter()
    fine, coarse = load_run(Path(a.fine)), load_run(Path(a.coarse))
    cf = fine["scen"].conductivity
    at = cf.normalise_at_GPa
    act = -cf.activation_volume_cm3_per_mol * 1e-6 * 1e9 / (R_J_PER_MOL_K * cf.temperature_K)
    scan = [0.0] + sorted(a.r_ohm_m2)
    print(f"fine run {fine['name']}: R_i scan {scan}", flush=True)
    f_rows = solve_run(fine, scan)
    x = np.array([r["nominal_GPa"] for r in f_rows])
    reg = (x >= REGIME_I_GPA[0] - 1e-9) & (x <= REGIME_I_GPA[1] + 1e-9)
    per_r = {}
    for r in scan:
        k = f"{r:g}"
        per_r[k] = dict(slope_above_per_GPa=slope_above(f_rows, k, at),
                        regime_I_normalised=dict(zip([f"{v:g}" for v in x[reg]], normalised(f_rows, k, at)[reg])))
    s0 = per_r["0"]["slope_above_per_GPa"]
    ok = [r for r in scan[1:] if abs(per_r[f"{r:g}"]["slope_above_per_GPa"] - s0) <= a.slope_tol * abs(act)]
    chosen = max(ok) if ok else None
    print(f"chosen R_i = {chosen} Ω·m²", flush=True)
    rc = [0.0] + ([chosen] if chosen else [])
    c_rows = solve_run(coarse, rc)
    # resolution study on one fine packing
    d_min = fine["scen"].particles.d_min_um * 1e-6
    res_rows = []
    for v in a.res_voxels_per_dmin:
        rr = solve_run(fine, rc, voxel_m=d_min / v, only=a.res_pressure_GPa * 1e9)
        if rr:
            row = rr[0]
            row["voxels_per_dmin"], row["voxel_m"] = v, d_min / v
            if chosen:
                L = row["shape"][0] * row["voxel_m"]   # slab thickness of the image (z)
                k = f"{chosen:g}"
                row["interface_resistance_area_ohm_m2"] = L / row["sigma"][k] - L / row["sigma"]["0"]
            res_rows.append(row)
    meas = {f: {f"{p:g}": v / MEASURED_MS_PER_CM[f][at] for p, v in m.items()} for f, m in MEASURED_MS_PER_CM.items()}
    out = dict(benchmark="interface_resistance", fine_run=str(a.fine), coarse_run=str(a.coarse),
               fine_particles=fine["scen"].particles.count, coarse_particles=coarse["scen"].particles.count,
               fine_voxel_m=fine["voxel_m"], coarse_voxel_m=coarse["voxel_m"], normalise_at_GPa=at,
               activation_term_per_GPa=act, slope_tol=a.slope_tol, scan_ohm_m2=scan, per_r=per_r,
               chosen_ohm_m2=chosen, measured_normalised=meas, measured_mS_per_cm=MEASURED_MS_PER_CM,
               fine=f_rows, coarse=c_rows, resolution=res_rows, wall_s=time.perf_counter() - t0)
    # fine vs coarse at equal pressure
    xc = np.array([r["nominal_GPa"] for r in c_rows])
    common = [p for p in x if np.any(np.isclose(xc, p))]
    out["fine_over_coarse"] = {
        f"{r:g}": {f"{p:g}": f_rows[int(np.argmin(abs(x - p)))]["sigma"][f"{r:g}"]
                   / c_rows[int(np.argmin(abs(xc - p)))]["sigma"][f"{r:g}"] for p in common} for r in rc}
    out["measured_fine_over_coarse"] = {f"{p:g}": MEASURED_MS_PER_CM["fine"][p] / MEASURED_MS_PER_CM["coarse"][p]
                                        for p in MEASURED_MS_PER_CM["fine"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(a.out), out)
    figure(out, Path(a.fig))
    print(f"→ {a.out}, {a.fig} ({out['wall_s']:.0f} s)")
    return 0


def figure(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fva.figures import save_png

    at, ch = out["normalise_at_GPa"], out["chosen_ohm_m2"]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.3))
    fx = np.array([r["nominal_GPa"] for r in out["fine"]])
    for r in out["scan_ohm_m2"]:
        k = f"{r:g}"
        bold = r == 0 or r == ch
        ax.plot(fx, normalised(out["fine"], k, at), "v-" if bold else ".-", lw=1.6 if bold else 0.8,
                alpha=1 if bold else 0.45, label=f"< 50 µm, R_i = {k} Ω·m²" + (" (chosen)" if r == ch else ""))
    m = out["measured_normalised"]["fine"]
    ax.plot([float(p) for p in m], list(m.values()), "ko", ms=7, mfc="none", label="measured < 50 µm (0.01, 0.5 GPa)")
    xs = np.linspace(at, fx.max(), 20)
    ax.plot(xs, np.exp(out["activation_term_per_GPa"] * (xs - at)), "k--", lw=0.8, label="activation-volume slope")
    ax.axvspan(*REGIME_I_GPA, color="0.9", zorder=0)
    ax.set_xlabel("pelletizing pressure p (GPa)")
    ax.set_ylabel(f"σ_eff / σ_eff({at:g} GPa)")
    ax.set_title("Normalised σ, fine fraction (regime I shaded)")
    ax.legend(fontsize=7)
    for r in sorted({0.0, ch or 0.0}):
        k = f"{r:g}"
        ratio = out["fine_over_coarse"][k]
        bx.plot([float(p) for p in ratio], list(ratio.values()), "o-" if r == 0 else "v--",
                label=f"model, R_i = {k} Ω·m²" + (" (chosen)" if r == ch else ""))
    mr = out["measured_fine_over_coarse"]
    bx.plot([float(p) for p in mr], list(mr.values()), "ks", mfc="none", ms=8, label="measured (0.01, 0.5 GPa)")
    bx.axhline(1.0, color="0.6", lw=0.8)
    bx.set_xlabel("pelletizing pressure p (GPa)")
    bx.set_ylabel("σ_eff(< 50 µm) / σ_eff(> 50 µm, approx. PSD)")
    bx.set_title("Fine vs coarse fraction at equal pressure")
    bx.legend(fontsize=7)
    res = out["resolution"]
    if res and ch:
        v = np.array([q["voxel_m"] * 1e6 for q in res])
        fin = int(np.argmin(v))
        part = np.array([q["interface_resistance_area_ohm_m2"] for q in res])
        cx.plot(v, part / part[fin], "o-", label="interface part L/σ(R_i) − L/σ(0)")
        for k, mk in (("0", "s--"), (f"{ch:g}", "^--")):
            sv = np.array([q["sigma"][k] for q in res])
            cx.plot(v, sv / sv[fin], mk, label=f"σ_eff(R_i = {k} Ω·m²)")
        cx.plot(v, v[fin] / v, "k:", lw=1, label="∝ 1/Δ (what a per-voxel term would do)")
        cx.set_ylim(0.3, 1.2)
        cx.set_ylabel("relative to the finest voxel")
        cx.set_xlabel("voxel size Δ (µm)")
        cx.set_title(f"Resolution, < 50 µm packing at {res[0]['nominal_GPa']:g} GPa")
        cx.legend(fontsize=7)
    for a_ in (ax, bx, cx):
        a_.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    sys.exit(main())

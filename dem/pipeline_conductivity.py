"""The conductivity stage of a run: which captured packings are analysed (:func:`select_captures`), voxels,
σ_bulk at each packing's pressure, the finite-volume solve per axis, microstructure metrics and the Fig. 6b
normalisation (:func:`normalise`)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from dem.pipeline_common import PipelineError, _fmt_s, _Results, slug
from dem.scenario import CaptureSpec, Scenario
from fva.report import fmt_tau as _fmt_tau, json_safe


def select_captures(scen: Scenario, packings, captures) -> list[tuple[int, object, CaptureSpec]]:
    """The (index, packing, spec) triples the [conductivity] section asks to analyse: the captures of its
    protocol (``CaptureSpec.protocol``), at ``pressures_GPa`` (nominal or pelletizing) when given."""
    cfg = scen.conductivity
    sel = []
    for i, (pk, sp) in enumerate(zip(packings, captures, strict=True)):
        if sp.protocol != cfg.protocol:
            continue
        if cfg.pressures_GPa and not any(math.isclose(c, g * 1e9, rel_tol=1e-6) for c in (sp.pressure_Pa,
                                                                                         sp.pelletizing_Pa)
                                         for g in cfg.pressures_GPa):
            continue
        sel.append((i, pk, sp))
    return sel


def normalise(analysed: list[dict], at_Pa: float, x_key: str) -> float | None:
    """σ_eff at ``at_Pa`` (exact within 2 %, else log-linear interpolation between neighbours)."""
    pts = sorted((a.get(x_key) if a.get(x_key) is not None else a["pressure_Pa"], a["sigma_eff_S_per_m"])
                 for a in analysed if a.get("sigma_eff_S_per_m"))
    if not pts:
        return None
    for x, s in pts:
        if math.isclose(x, at_Pa, rel_tol=0.02):
            return s
    for (x0, s0), (x1, s1) in zip(pts, pts[1:]):
        if x0 <= at_Pa <= x1 and s0 > 0 and s1 > 0 and x1 > x0:
            w = (at_Pa - x0) / (x1 - x0)
            return float(math.exp((1 - w) * math.log(s0) + w * math.log(s1)))
    return None


def _conductivity_stage(scen: Scenario, outdir: Path, res: _Results, result, cap_meta, d, say) -> None:
    """Voxelise the selected captured packings, solve σ_eff with σ_bulk at each packing's pressure, normalise
    (Fig. 6b) and, when enabled, the microstructure metrics; results.json is flushed after every packing."""
    data = res.data
    T = data["timings_s"]
    # 4. conductivity --------------------------------------------------------------------------------
    cfg = scen.conductivity
    data["analysed"] = []
    if not cfg.enabled:
        return
    sel = select_captures(scen, result.packings, result.captures)
    # x of the Fig. 6b curves: the protocol's nominal pressures (a capture overshoots its nominal pressure a
    # little, by up to one check interval); the measured pressure is kept in pressure_Pa and sets σ_bulk
    x_key = "pelletizing_pressure_Pa" if cfg.protocol == "stack_pressure" else "nominal_pressure_Pa"
    data["conductivity"] = {"protocol": cfg.protocol, "x_key": x_key, "normalise_at_Pa": cfg.normalise_at_GPa * 1e9,
                            "n_selected": len(sel)}
    if not sel:
        data.setdefault("warnings", []).append("conductivity: no captured packing matched the selection")
        return
    from fva.activation import sigma_bulk_at_pressure
    from fva.conduction import solve_conductivity
    from fva.voxelise import voxelise
    save_vti = None
    if scen.run.write_vti:
        from fva.io import save_vti
    d_min = (scen.particles.d_min_um * 1e-6) if scen.particles.d_min_um else float(d.min())
    voxel_m = cfg.voxel_um * 1e-6 if cfg.voxel_um else d_min / (cfg.voxels_per_dmin or 4.0)
    data["conductivity"]["voxel_m"] = voxel_m
    r_i = cfg.interface_resistance_ohm_m2
    data["conductivity"]["interface_resistance_ohm_m2"] = r_i
    sigma_ref = cfg.sigma_ref_mS_per_cm * 0.1
    axes = ["x", "y", "z"] if cfg.axis == "all" else [cfg.axis]
    ms = scen.microstructure
    tc = time.perf_counter()
    for n_done, (i, pk, sp) in enumerate(sel):
        meta = cap_meta[i]
        nvox = np.prod(np.ceil(pk.box_m / voxel_m))
        if nvox > cfg.max_voxels:
            raise PipelineError(f"conductivity.voxel_um: {pk.label!r} would need {nvox:.3g} voxels "
                                f"(> conductivity.max_voxels = {cfg.max_voxels:.3g}); use a larger voxel")
        t = time.perf_counter()
        image = voxelise(pk, voxel_m, labels=ms.enabled or r_i > 0)  # particle labels: R_i's grain boundaries
        p_eval = float(pk.pressure_Pa) if math.isfinite(float(pk.pressure_Pa)) else sp.pressure_Pa
        s_bulk = float(sigma_bulk_at_pressure(p_eval, sigma_ref, cfg.activation_volume_cm3_per_mol * 1e-6,
                                              cfg.p_ref_GPa * 1e9, cfg.temperature_K))
        per_axis = {}
        fields = None
        for ax in axes:
            want = save_vti is not None and (ax == axes[-1])
            r = solve_conductivity(image, ax, sigma_bulk_S_per_m=s_bulk, sigma_pore_S_per_m=cfg.sigma_pore_S_per_m,
                                   preconditioner=cfg.preconditioner, flux_tol=cfg.flux_tol, return_fields=want,
                                   interface_resistance_ohm_m2=r_i)
            per_axis[ax] = json_safe(r.figures())
            if want:
                fields = r
        main = per_axis["z"] if "z" in per_axis else per_axis[axes[-1]]
        entry = {
            "index": i, "label": pk.label, "pressure_Pa": p_eval,
            "nominal_pressure_Pa": sp.pressure_Pa, "pelletizing_pressure_Pa": sp.pelletizing_Pa,
            "stage_kind": meta["stage_kind"], "cycle": meta["cycle"],
            "relative_density": meta["relative_density"], "thickness_m": meta["thickness_m"],
            "voxel_m": voxel_m, "image_shape": list(image.shape), "porosity": image.porosity(),
            "sigma_bulk_S_per_m": s_bulk,
            "sigma_eff_S_per_m": main["sigma_eff_S_per_m"],
            "sigma_eff_mS_per_cm": None if main["sigma_eff_S_per_m"] is None else main["sigma_eff_S_per_m"] * 10,
            "sigma_eff_over_bulk": main["sigma_eff_over_bulk"], "tau": main["tau"],
            "eps_total": main["eps_total"], "eps_percolating": main["eps_percolating"],
            "interface_faces": main.get("interface_faces"),
            "iterations": main["iterations"], "flux_spread": main["flux_spread"],
            "residual": main.get("residual"), "current_imbalance": main.get("current_imbalance"),
            "converged": main.get("converged"), "percolating": main.get("percolating"),
            "axis": main.get("axis"), "axes": per_axis if len(axes) > 1 else None,
            "normalised_sigma": None,
        }
        for ax, fig in per_axis.items():
            if not fig.get("converged", True):
                data.setdefault("warnings", []).append(
                    f"conductivity of {pk.label!r} along {ax} did NOT converge (residual {fig.get('residual')}, "
                    f"flux spread {fig.get('flux_spread')}): its sigma_eff is not reliable")
        if fields is not None:
            vti = outdir / "fields" / f"{i:02d}_{slug(pk.label or 'packing')}.vti"
            vti.parent.mkdir(parents=True, exist_ok=True)
            save_vti(vti, image, potential=fields.potential_V, current=fields.current_density_A_per_m2)  # atomic
            entry["vti"] = str(vti.relative_to(outdir))
        if ms.enabled:
            from fva.microstructure import analyze_image, plot_microstructure
            grid = ms.rve_grid if isinstance(ms.rve_grid, int) else tuple(ms.rve_grid)
            summary, arrays = analyze_image(image, rve_grid=grid, contact_fraction=ms.contact_fraction,
                                            solver_kw=dict(preconditioner=cfg.preconditioner, flux_tol=cfg.flux_tol),
                                            packing=pk, return_arrays=True)
            mdir = outdir / "microstructure" / f"{i:02d}_{slug(pk.label or 'packing')}"
            try:
                plot_microstructure(summary, arrays, mdir)
            except Exception as exc:
                data.setdefault("warnings", []).append(f"microstructure plots for {pk.label!r}: {exc}")
            entry["microstructure"] = json_safe(summary)
        entry["wall_s"] = time.perf_counter() - t
        data["analysed"].append(entry)
        ref = normalise(data["analysed"], cfg.normalise_at_GPa * 1e9, x_key)
        for a in data["analysed"]:
            a["normalised_sigma"] = (a["sigma_eff_S_per_m"] / ref) if (ref and a["sigma_eff_S_per_m"] is not None) \
                else None
        data["conductivity"]["sigma_eff_at_normalise_S_per_m"] = ref
        el = time.perf_counter() - tc
        eta = el / (n_done + 1) * (len(sel) - n_done - 1)
        s_eff = entry["sigma_eff_S_per_m"] or 0.0
        say(f"[pelletsim] conductivity {n_done + 1}/{len(sel)} at {p_eval / 1e9:.3f} GPa ({pk.label}): "
            f"σ_eff = {s_eff * 10:.3g} mS/cm, σ_eff/σ_bulk = {entry['sigma_eff_over_bulk'] or 0:.3f}, "
            f"τ = {_fmt_tau(entry['tau'])}, {entry['wall_s']:.1f} s, "
            f"ETA {_fmt_s(eta)}")
        res.flush()
    T["conductivity"] = time.perf_counter() - tc

"""The ``pelletsim`` subcommands on voxel images: conductivity (finite-volume solve per axis, with a progress
line for long solves) and analyze (microstructure metrics)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from dem.cli_common import EXIT_FAIL, EXIT_OK, UsageError, _check_backend, _err
from fva.report import versions as _versions

VTI_DEFAULT_MAX_VOXELS = 2 ** 24   # fields (potential, current density) are written by default up to ~256³


def _load_image(args):
    path = Path(args.image)
    if not path.is_file():
        raise UsageError(f"{path}: image file not found")
    from fva.io import load_image
    kw = {}
    if args.key is not None:
        kw["key"] = args.key
    if args.voxel_size is not None:
        kw["voxel_m"] = args.voxel_size
    if getattr(args, "grain_labels", False):
        if args.phase is not None or args.phase_conductivity:
            raise UsageError("--grain-labels: every grain conducts with σ_bulk; drop --phase / --phase-conductivity")
        kw["grains"] = args.pore_label
    elif getattr(args, "interface_resistance", 0.0) > 0:
        raise UsageError("--interface-resistance needs --grain-labels: a phase image has no particles; give a grain "
                         "label image (one label per grain, pore 0 or --pore-label N)")
    elif args.phase is not None:
        kw["phase"] = args.phase
    elif getattr(args, "phase_conductivity", None):  # σ_bulk (for τ) from the most conductive label given
        kw["phase"] = max(args.phase_conductivity, key=lambda lv: lv[1])[0]
    return load_image(path, **kw)


def _image_outdir(args, what: str) -> Path:
    return Path(args.outdir) if args.outdir else Path("out") / f"{Path(args.image).stem}_{what}"


def _start_image_command(args, what: str):
    """Shared start of the image subcommands: load the image, make OUTDIR, start the clock, init the backend."""
    from fva.backend import ensure_init

    from dem.outdir import ensure_writable_dir

    image = _load_image(args)
    outdir = ensure_writable_dir(_image_outdir(args, what))
    t0 = time.perf_counter()
    _check_backend(args.backend)
    return image, outdir, t0, ensure_init(args.backend, "f64")


def cmd_conductivity(args) -> int:
    from fva.report import json_safe
    from fva.atomic import write_json
    from fva.conduction import solve_conductivity

    image, outdir, t0, info = _start_image_command(args, "conductivity")
    sigma_bulk = args.sigma_bulk_mS_per_cm * 0.1
    axes = ["x", "y", "z"] if args.axis == "all" else [args.axis]
    data = {"status": "running", "command": "conductivity", "image": str(Path(args.image).resolve()),
            "versions": _versions(), "backend": {"backend": info.backend, "device": info.device_name},
            "image_shape": list(image.shape), "voxel_m": list(image.voxel_m), "porosity": image.porosity(),
            "conducting_phase": image.conducting_phase, "sigma_bulk_S_per_m": sigma_bulk, "analysed": [],
            "grain_labels_pore": args.pore_label if args.grain_labels else None,
            "interface_resistance_ohm_m2": args.interface_resistance}
    write_vti = not args.no_vti and (args.vti or image.phase.size <= VTI_DEFAULT_MAX_VOXELS)
    if not args.no_vti and not write_vti:
        print(f"note: {image.phase.size:.3g} voxels: the .vti field files are not written by default above "
              f"{VTI_DEFAULT_MAX_VOXELS:.3g} voxels (pass --vti to write them)", file=sys.stderr)
    phase_sig = None
    if args.phase_conductivity:
        phase_sig = _phase_conductivities(image, args.phase_conductivity)
        data["phase_conductivities_S_per_m"] = {str(k): v for k, v in phase_sig.items()}
    try:
        for ax in axes:
            r = solve_conductivity(image, ax, sigma_bulk_S_per_m=sigma_bulk, preconditioner=args.preconditioner,
                                   phase_conductivities=phase_sig, flux_tol=args.flux_tol, rtol=args.rtol,
                                   return_fields=write_vti, interface_resistance_ohm_m2=args.interface_resistance,
                                   progress=None if args.quiet else SolveProgress(ax, rtol=args.rtol))
            entry = {"pressure_Pa": None, "label": f"{Path(args.image).name} axis {ax}", **json_safe(r.figures())}
            if write_vti:
                from fva.io import save_vti
                vti = outdir / f"fields_{ax}.vti"
                save_vti(vti, image, potential=r.potential_V, current=r.current_density_A_per_m2)  # atomic
                entry["vti"] = vti.name
            data["analysed"].append(entry)
            print(f"axis {ax}: σ_eff = {r.sigma_eff_S_per_m:.6g} S/m, σ_eff/σ_bulk = {r.sigma_eff_over_bulk:.4f}, "
                  f"τ = {r.tau:.4g}, ε = {r.eps_total:.4f} (percolating {r.eps_percolating:.4f}), "
                  f"{r.iterations} iterations, residual {r.residual:.1e}, inlet/outlet {r.current_imbalance:.1e}"
                  + ("" if r.converged else " — NOT CONVERGED, σ unreliable"))
            data["wall_time_s"] = time.perf_counter() - t0
            write_json(outdir / "results.json", json_safe(data))
        unconverged = [e["axis"] for e in data["analysed"] if not e.get("converged", True)]
        data["status"] = "unconverged" if unconverged else "complete"
        for k in ("sigma_eff_S_per_m", "sigma_eff_over_bulk", "tau", "eps_total", "eps_percolating"):
            data[k] = data["analysed"][-1][k] if len(axes) == 1 else {e["axis"]: e[k] for e in data["analysed"]}
    except KeyboardInterrupt:
        data["status"] = "interrupted"
        raise
    except Exception as exc:
        data["status"] = "failed"
        data["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        data["wall_time_s"] = time.perf_counter() - t0
        write_json(outdir / "results.json", json_safe(data))
    print(f"→ {outdir}/results.json")
    if data["status"] == "unconverged":
        _err(f"the solve along {', '.join(unconverged)} did not converge (see 'residual' in results.json): "
             "raise the iteration limit or check the image")
        return EXIT_FAIL
    return EXIT_OK


def _phase_conductivities(image, given) -> dict:
    """{label: S/m} from repeated --phase-conductivity; every other label present is insulating."""
    from fva.conduction import labels_text, present_labels

    present = present_labels(image.phase)
    table = {}
    for lab, v in given:
        if lab not in present:
            raise UsageError(f"--phase-conductivity {lab}=…: label {lab} is not in the image "
                             f"(labels present: {labels_text(present)})")
        table[lab] = v
    if not any(v > 0 for v in table.values()):
        raise UsageError("--phase-conductivity: at least one label must conduct (σ > 0)")
    for lab in present:
        table.setdefault(lab, 0.0)
    return table


class SolveProgress:
    """Progress of one conduction solve on stderr: iteration, residual, current balance, ETA.

    Silent for the first ``after_s`` seconds (small solves print nothing), then a line every ``every_s``.
    The ETA extrapolates the geometric decrease of the true residual towards its tolerance.
    """

    def __init__(self, axis: str, after_s: float = 3.0, every_s: float = 5.0, rtol: float | None = None):
        from fva.conduction import DEFAULT_RTOL

        self.axis, self.after_s, self.every_s = axis, after_s, every_s
        self.rtol = DEFAULT_RTOL if rtol is None else rtol
        self.t0 = time.perf_counter()
        self.last = -1.0
        self.first = None

    def __call__(self, it: int, st: dict) -> None:
        import math

        now = time.perf_counter() - self.t0
        res = st.get("residual", float("nan"))
        if self.first is None and res > 0:
            self.first = (it, res, now)
        if now < self.after_s or now - self.last < self.every_s:
            return
        self.last = now
        eta = ""
        if self.first is not None and it > self.first[0] and 0 < res < self.first[1]:
            rate = math.log(res / self.first[1]) / (it - self.first[0])      # log decrease per iteration
            left = max(0.0, math.log(self.rtol / res) / rate) if res > self.rtol else 0.0
            eta = f", ETA {left * now / max(it, 1):.0f} s"
        print(f"  solve {self.axis}: iteration {it}, residual {res:.2e}, plane-current spread "
              f"{st.get('spread', float('nan')):.2e}, inlet/outlet {st.get('imbalance', float('nan')):.1e}, "
              f"{now:.0f} s{eta}", file=sys.stderr, flush=True)


def cmd_analyze(args) -> int:
    from fva.report import json_safe
    from fva.atomic import write_json
    from fva.microstructure import analyze_image, plot_microstructure, summary_lines

    grid = args.rve_grid
    if len(grid) not in (1, 3) or any(g < 1 for g in grid):
        raise UsageError(f"--rve-grid: one or three integers ≥ 1, got {grid}")
    grid = grid[0] if len(grid) == 1 else tuple(grid)
    if not args.contact_fraction <= 1:
        raise UsageError(f"--contact-fraction: must be in (0, 1], got {args.contact_fraction}")
    image, outdir, t0, info = _start_image_command(args, "analyze")
    summary, arrays = analyze_image(image, rve_grid=grid, contact_fraction=args.contact_fraction,
                                    solver_kw=dict(preconditioner=args.preconditioner), packing=None,
                                    return_arrays=True)
    figs = plot_microstructure(summary, arrays, outdir)
    data = {"status": "complete", "command": "analyze", "image": str(Path(args.image).resolve()),
            "versions": _versions(), "backend": {"backend": info.backend, "device": info.device_name},
            "image_shape": list(image.shape), "voxel_m": list(image.voxel_m),
            "microstructure": json_safe(summary), "wall_time_s": time.perf_counter() - t0,
            "figures": [Path(f).name for f in (figs or [])] if isinstance(figs, (list, tuple)) else None}
    write_json(outdir / "results.json", json_safe(data))
    print("\n".join(summary_lines(summary)))
    print(f"→ {outdir}/results.json")
    return EXIT_OK

"""``pelletsim`` command line: run / validate / conductivity / analyze / plot / sweep.

Bad input → one line on stderr and exit status 2 (no traceback; set PELLETSIM_DEBUG=1 to see one);
a simulation failure → exit 1; Ctrl-C → exit 130 with the finished outputs left valid.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fva.report import fmt_tau as _fmt_tau, versions as _versions

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPT, EXIT_TERM = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``timeout``, ``kill``): handled as Ctrl-C, so that what was
    finished is written before the process ends (exit 143)."""


def _on_sigterm(signum, frame):
    raise Terminated(f"signal {signum}")

VTI_DEFAULT_MAX_VOXELS = 2 ** 24   # fields (potential, current density) are written by default up to ~256³

IMAGE_HELP = ("IMAGE is a .npy, .npz (--key), TIFF stack (.tif/.tiff) or .vti file. Arrays are indexed "
              "[z, y, x] (slice, row, column, as tifffile reads a stack); z is the through-plane axis. "
              "Phase 1 conducts by default (--phase to choose another label; 0 is pore).")


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


def _err(msg: str) -> None:
    lines = str(msg).strip().splitlines() or ["unknown error"]
    for line in lines:
        print(f"pelletsim: error: {line}", file=sys.stderr)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _unit_interval(text: str) -> float:
    """A solver tolerance: 0 < value < 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must satisfy 0 < value < 1, got {text}")
    return v


def _resistance(text: str) -> float:
    """R_i in Ω·m² for --interface-resistance: a finite number >= 0."""
    from fva.interface import check_interface_resistance
    try:
        return check_interface_resistance(text, "OHM_M2")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_conductivity(text: str) -> tuple[int, float]:
    """LABEL=S_PER_M for --phase-conductivity."""
    label, sep, value = text.partition("=")
    try:
        lab, v = int(label), float(value)
    except ValueError:
        lab, v = None, float("nan")
    if not sep or lab is None or not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected LABEL=S_PER_M with an integer label and a finite "
                                         f"conductivity >= 0 in S/m, e.g. 85=0.12; got {text!r}")
    return lab, v


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with one line, like every other bad input
        self.print_usage(sys.stderr)
        _err(message)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pelletsim",
                description="DEM die compaction of solid-electrolyte powders and finite-volume ionic "
                            "conductivity of the pellets.",
                epilog="Examples:\n  pelletsim run scenarios/quickstart.toml -o out/quickstart\n"
                       "  pelletsim validate scenarios/quickstart.toml --set particles.count=500\n"
                       "  pelletsim conductivity pellet.tif --voxel-size 0.92e-6 --axis all\n"
                       "  pelletsim plot out/quickstart",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    import dem
    p.add_argument("--version", action="version", version=f"pelletsim {dem.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("run", help="run a scenario end to end (compaction, conductivity, figures)",
                       description="Run SCENARIO.toml: sizes → loose packing → compaction → conductivity of the "
                                   "captured packings → results.json, history.csv, packings/, PNGs, ParaView files.")
    r.add_argument("scenario", metavar="SCENARIO", nargs="?",
                   help="scenario TOML file (optional with --resume: the checkpoint holds it)")
    r.add_argument("-o", "--outdir", metavar="OUTDIR", help="output folder (default: out/<run.name>)")
    r.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"],
                   help="override run.backend (auto: CUDA, then Vulkan, then CPU)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a scenario value with TOML syntax, e.g. --set particles.count=500 "
                        "--set protocol.0.target_pressure_GPa=0.8 (repeatable)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.add_argument("--overwrite", action="store_true",
                   help="OUTDIR may hold an earlier run: remove pelletsim's outputs there first (other files "
                        "are kept)")
    r.add_argument("--resume", metavar="OUTDIR",
                   help="continue the interrupted run in OUTDIR from its checkpoint.npz (written every "
                        "run.checkpoint_every_s and on SIGTERM/Ctrl-C)")

    v = sub.add_parser("validate", help="check a scenario and print it with every default filled in",
                       description="Validate SCENARIO.toml (after --set overrides) and print the resolved "
                                   "scenario. Exit 0 if valid, 2 otherwise.")
    v.add_argument("scenario", metavar="SCENARIO")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    c = sub.add_parser("conductivity", help="finite-volume conductivity of a voxel image",
                       description="Solve steady conduction through IMAGE and write results.json (+ .vti). "
                                   + IMAGE_HELP)
    _image_args(c)
    c.add_argument("--axis", choices=["x", "y", "z", "all"], default="z", help="transport direction (default z)")
    c.add_argument("--sigma-bulk-mS-per-cm", type=_positive_float, default=10.0, metavar="S",
                   help="conductivity of the conducting phase in mS/cm (default 10 = 1 S/m)")
    c.add_argument("--phase-conductivity", dest="phase_conductivity", action="append", default=[],
                   type=_label_conductivity, metavar="LABEL=S_PER_M",
                   help="conductivity of one label in S/m (repeatable, multi-phase images); labels not "
                        "given are insulating; --phase (or the most conductive label) sets σ_bulk for τ")
    c.add_argument("--grain-labels", dest="grain_labels", action="store_true",
                   help="IMAGE is a grain label image (one label per grain, e.g. a watershed segmentation): every "
                        "label but --pore-label conducts with σ_bulk")
    c.add_argument("--pore-label", dest="pore_label", type=int, default=0, metavar="N",
                   help="pore value of a --grain-labels image (default 0)")
    c.add_argument("--interface-resistance", dest="interface_resistance", type=_resistance, default=0.0,
                   metavar="OHM_M2", help="specific resistance R_i (Ω·m²) of every face between two different "
                                          "grains (needs --grain-labels; default 0)")
    c.add_argument("--flux-tol", type=_unit_interval, default=1e-4,
                   help="spread of the plane currents, inlet/outlet included (0 < tol < 1, default 1e-4)")
    c.add_argument("--rtol", type=_unit_interval, default=None,
                   help="relative true residual ‖b − Ax‖/‖b‖ (0 < tol < 1, default 1e-6: σ within 1e-4)")
    vti = c.add_mutually_exclusive_group()
    vti.add_argument("--no-vti", action="store_true", help="do not write the .vti field files")
    vti.add_argument("--vti", action="store_true",
                     help=f"write the .vti field files also for images above {VTI_DEFAULT_MAX_VOXELS:.3g} voxels "
                          "(about 20 B/voxel more memory and disk)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    a = sub.add_parser("analyze", help="microstructure metrics of a voxel image (porosity profiles, pore "
                                       "sizes, sub-volume tortuosity, interface current)",
                       description="Microstructure heterogeneity of IMAGE: results.json with a "
                                   "'microstructure' object and PNG maps. " + IMAGE_HELP)
    _image_args(a)
    a.add_argument("--rve-grid", type=int, nargs="+", default=[4], metavar="N",
                   help="sub-volume grid, one number or three (default 4 → 4×4×4 = 64)")
    a.add_argument("--contact-fraction", type=_positive_float, default=0.9306,
                   help="electrode contact fraction for the interface current (default 0.9306)")

    ra = sub.add_parser("reanalyse", help="redo the conductivity stage of a run from its saved captures",
                        description="Voxelise and solve again every captured packing of OUTDIR (packings/*.npz) with "
                                    "its resolved scenario — e.g. after a compaction that stopped near its last "
                                    "pressure — and update results.json and the figures.")
    ra.add_argument("outdir", metavar="OUTDIR")
    ra.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"], default=None)
    ra.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    pl = sub.add_parser("plot", help="(re)draw the figures of a finished run",
                        description="Redraw every PNG of OUTDIR from results.json, history.csv and packings/.")
    pl.add_argument("outdir", metavar="OUTDIR")
    pl.add_argument("--compare", nargs="+", default=[], metavar="OTHER",
                    help="overlay the conductivity curves of other runs (e.g. the other Fig. 6b protocol)")
    from dem.sweep_args import add_parser as add_sweep_parser
    add_sweep_parser(sub)
    return p


def _image_args(sp) -> None:
    sp.add_argument("image", metavar="IMAGE", help="voxel image [z, y, x]: .npy, .npz, .tif/.tiff or .vti")
    sp.add_argument("--voxel-size", type=_positive_float, metavar="METRES",
                    help="voxel edge in metres (required unless the file carries it, e.g. .vti)")
    sp.add_argument("--phase", type=int, default=None, metavar="N",
                    help="label of the conducting phase (default 1; 0 is pore)")
    sp.add_argument("--key", default=None, metavar="K", help="array name inside an .npz file")
    sp.add_argument("-o", "--outdir", metavar="OUTDIR", help="output folder (default: out/<image stem>_<command>)")
    sp.add_argument("--preconditioner", default="mg", help="CG preconditioner (default mg)")
    sp.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"], default="cpu")


# --------------------------------------------------------------------------------------------- commands
def cmd_validate(args) -> int:
    from dem.preflight import preflight
    from dem.scenario import load_scenario, resolved_dict, to_toml
    from dem.sweep import cmd_validate_sweep, is_sweep_file
    if is_sweep_file(args.scenario):
        return cmd_validate_sweep(args.scenario)
    scen = load_scenario(args.scenario, args.overrides)
    preflight(scen)
    try:
        _check_backend(scen.run.backend)
    except UsageError as exc:
        raise UsageError(f"run.backend: {exc}") from None
    print(f"# {args.scenario}: valid", file=sys.stderr)
    print(to_toml(resolved_dict(scen)), end="")
    return EXIT_OK


def cmd_run(args) -> int:
    from dem.checkpoint import read_resume
    from dem.pipeline import run_scenario
    from dem.scenario import load_scenario
    tree = None
    if args.resume:
        if args.overwrite:
            raise UsageError("--resume continues a run, --overwrite replaces it: give one of them")
        outdir = Path(args.resume)
        if args.outdir and Path(args.outdir).resolve() != outdir.resolve():
            raise UsageError(f"--resume {outdir} writes into that folder; leave out -o {args.outdir}")
        given = load_scenario(args.scenario, args.overrides) if args.scenario else None
        if given is None and args.overrides:
            raise UsageError("--set cannot change a resumed run (its checkpoint fixes the scenario)")
        scen, tree = read_resume(outdir, given)
    else:
        if not args.scenario:
            raise UsageError("run: give a SCENARIO file (or --resume OUTDIR)")
        scen = load_scenario(args.scenario, args.overrides)
        outdir = Path(args.outdir) if args.outdir else Path("out") / scen.run.name
    _check_backend(args.backend or scen.run.backend)
    t = time.perf_counter()
    try:
        data = run_scenario(scen, outdir, backend=args.backend, progress=not args.quiet,
                            overwrite=args.overwrite, resume=tree)
    except KeyboardInterrupt as exc:
        why = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        ck = outdir / "checkpoint.npz"
        more = f"; continue with: pelletsim run --resume {outdir}" if ck.is_file() else ""
        print(f"pelletsim: {why}; finished outputs are in {outdir} (results.json status 'interrupted'){more}",
              file=sys.stderr)
        return EXIT_TERM if isinstance(exc, Terminated) else EXIT_INTERRUPT
    if not args.quiet:
        print(f"[pelletsim] done in {time.perf_counter() - t:.1f} s → {outdir}", file=sys.stderr)
    _print_summary(data, outdir)
    return EXIT_OK


def _print_summary(data: dict, outdir: Path) -> None:
    rd = data.get("relative_density") or {}
    h = data.get("heckel") or {}
    print(f"run '{data.get('name')}' ({data.get('status')}) in {data.get('wall_time_s', 0):.1f} s "
          f"on {(data.get('backend') or {}).get('backend')}: {outdir}/results.json")
    if rd:
        print(f"  relative density: max {rd.get('max', float('nan')):.4f}, final {rd.get('final', float('nan')):.4f}")
    if h.get("Py_Pa"):
        fr = h.get("fit_range_Pa") or []
        over = f" over {fr[0] / 1e9:.2f}–{fr[1] / 1e9:.2f} GPa" if len(fr) == 2 else ""
        err = f" ± {h['Py_stderr_Pa'] / 1e9:.3f}" if h.get("Py_stderr_Pa") else ""
        print(f"  Heckel: Py = {h['Py_Pa'] / 1e9:.3f}{err} GPa{over}, A = {h.get('A', float('nan')):.3f}")
    er = data.get("elastic_recovery") or {}
    rel = [f"{r['relative_density']:.4f} at {r['p_Pa'] / 1e9:g} GPa (−{100 * r['drop_fraction']:.1f} %)"
           for r in sorted(er.get("at_stack_pressures") or [], key=lambda r: -r.get("p_Pa", 0))
           if r.get("relative_density") is not None and r.get("drop_fraction") is not None]
    if rel:
        tail = (f", {rd['final']:.4f} at contact loss (−{100 * er['fraction']:.1f} %)"
                if er.get("fraction") is not None and rd.get("final") is not None else "")
        print("  release: " + ", ".join(rel) + tail)
    holds = (data.get("compaction") or {}).get("holds") or []
    if holds:
        worst = max(abs(h["off_target"]) for h in holds)
        print(f"  holds: {sum(bool(h['settled']) for h in holds)} of {len(holds)} settled at their target "
              f"(largest end offset {worst:.1%}, longest extension {max(h['extended_s'] for h in holds):.3g} s)")
    for w in data.get("warnings") or []:
        print(f"  warning: {w}")
    for a in data.get("analysed") or []:
        s = a.get("sigma_eff_S_per_m")
        ns = a.get("normalised_sigma")
        where = f"{a.get('pressure_Pa', 0) / 1e9:6.3f} GPa"
        print(f"  {where}  {str(a.get('label'))[:30]:30s} "
              f"σ_eff = {'–' if s is None else f'{s * 10:.3g} mS/cm'}"
              f"  σ_eff/σ_bulk = {a.get('sigma_eff_over_bulk') or 0:.3f}  τ = {_fmt_tau(a.get('tau'))}"
              + (f"  normalised = {ns:.3f}" if ns is not None else ""))


def _check_backend(name: str) -> None:
    from fva.backend import resolve_backend
    try:
        resolve_backend(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


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


def cmd_plot(args) -> int:
    from dem.plots import plot_run
    outdir = Path(args.outdir)
    if (outdir / "sweep.json").is_file():
        from dem.sweep_report import plot_sweep
        files = plot_sweep(outdir)
    elif not (outdir / "results.json").is_file():
        raise UsageError(f"{outdir}: no results.json here; give the folder of a pelletsim run")
    else:
        files = plot_run(outdir, compare=args.compare)
    for f in files:
        print(f)
    return EXIT_OK


def cmd_reanalyse(args) -> int:
    from dem.pipeline import reanalyse
    from dem.plots import plot_run
    outdir = Path(args.outdir)
    for need in ("results.json", "scenario.resolved.toml"):
        if not (outdir / need).is_file():
            raise UsageError(f"{outdir}: no {need} here; give the folder of a pelletsim run")
    data = reanalyse(outdir, backend=args.backend, progress=not args.quiet)
    plot_run(outdir)
    print(f"{len(data.get('analysed', []))} packing(s) analysed: {outdir / 'results.json'}")
    return EXIT_OK


def cmd_sweep(args) -> int:
    from dem.sweep import cmd_sweep as run
    return run(args)


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "conductivity": cmd_conductivity,
            "analyze": cmd_analyze, "plot": cmd_plot, "reanalyse": cmd_reanalyse,
            "sweep": cmd_sweep}


def main(argv=None) -> int:
    """Entry point of the ``pelletsim`` console script; returns the exit status."""
    os.environ.setdefault("TI_LOG_LEVEL", "warn")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    debug = bool(os.environ.get("PELLETSIM_DEBUG"))
    import signal

    old = None
    try:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:          # not the main thread: leave the default
        pass
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"pelletsim: {'terminated (SIGTERM)' if term else 'interrupted'}", file=sys.stderr)
        return EXIT_TERM if term else EXIT_INTERRUPT
    except (UsageError, FileNotFoundError, IsADirectoryError, ValueError) as exc:   # ScenarioError is a ValueError
        if debug:
            raise
        _err(exc)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            raise
        try:
            from dem.simulation import SimulationError
        except Exception:  # pragma: no cover
            SimulationError = ()  # noqa: N806
        from dem.pipeline import PipelineError
        if SimulationError and isinstance(exc, SimulationError):
            _err(f"compaction failed: {exc}")
            return EXIT_FAIL
        if isinstance(exc, PipelineError):
            _err(exc)
            return EXIT_FAIL
        if isinstance(exc, RuntimeError) and "backend" in str(exc):
            _err(exc)
            return EXIT_USAGE
        _err(f"{type(exc).__name__}: {exc} (PELLETSIM_DEBUG=1 shows the traceback)")
        return EXIT_FAIL
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())

"""The ``pelletsim`` subcommands on scenarios and run folders: run, validate, plot, reanalyse, sweep. Heavy
modules (pydantic, Taichi, the pipeline) are imported inside each handler."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from dem.cli_common import EXIT_INTERRUPT, EXIT_OK, EXIT_TERM, Terminated, UsageError, _check_backend
from fva.report import fmt_tau as _fmt_tau


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

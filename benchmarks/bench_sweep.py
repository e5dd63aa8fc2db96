"""Benchmark of ``pelletsim sweep``: a 2 × 2 sweep of a reduced quick start on N local workers vs the same
points run one after the other with one Taichi thread.

    python benchmarks/bench_sweep.py                     # quick start at 120 particles, 2 workers
    python benchmarks/bench_sweep.py --count 200 --workers 2
    python benchmarks/bench_sweep.py --quick             # tests/data/tiny.toml (smoke run)

Points: material.yield_stress_MPa ∈ {400, 600} × run.seed ∈ {1, 2}, no microstructure, ParaView frames,
.vti files or figures (the numbers only). One untimed run first warms Taichi's offline cache, so no arm pays
the first compilation. A control without Dask times one point alone and N copies at once as plain
processes: the parallelism the machine gives at that moment (a shared machine gives less than N). The arms
are timed end to end as fresh processes, interpreter start included: serial = one process running the four
points in order (start-up and compilation paid once: the strongest baseline); serial_cli = four
``pelletsim run`` processes one after the other (what a user does by hand: start-up paid per point);
sweep = ``pelletsim sweep --workers N --threads-per-worker 1`` (cluster start, N worker processes each
loading Taichi, figures). The sweep's sweep.csv must equal the serial results (same seeds):
``identical_to_serial`` in the JSON. Writes ``benchmarks/results/sweep_cpu.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIGHT = {"microstructure.enabled": False, "run.write_frames": False, "run.write_vti": False, "run.plots": False}


def _sweep_toml(base: Path, count: int | None) -> str:
    fixed = dict(LIGHT)
    if count:
        fixed["particles.count"] = count
    else:                                   # the tiny scenario: a looser fill that every seed reaches
        fixed["die.loose_fraction"] = 0.3
    lines = ["[sweep]", f'base = "{base}"', 'name = "bench"', "seeds = [1, 2]", "", "[sweep.set]"]
    lines += [f'"{k}" = {json.dumps(v)}' for k, v in fixed.items()]
    lines += ["", "[sweep.grid]", '"material.yield_stress_MPa" = [400.0, 600.0]', ""]
    return "\n".join(lines)


def _serial(sweep_file: str, outdir: str) -> None:
    """The serial arm (run in its own process): every point in order, one Taichi thread."""
    os.environ["TI_CPU_MAX_NUM_THREADS"] = "1"
    from dem.pipeline import run_scenario
    from dem.scenario import parse_scenario
    from dem.sweep import load_sweep, point_data

    spec = load_sweep(sweep_file)
    walls = {}
    for p in spec.points:
        t = time.perf_counter()
        run_scenario(parse_scenario(point_data(spec, p), source_dir=spec.base.parent), Path(outdir) / p.id,
                     progress=False)
        walls[p.id] = time.perf_counter() - t
    (Path(outdir) / "walls.json").write_text(json.dumps(walls))


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return wall


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=120, help="particles of the reduced quick start (default 120)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tests/data/tiny.toml instead (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_cpu.json"))
    ap.add_argument("--workdir", default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--serial", nargs=2, metavar=("SWEEP", "OUTDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serial:
        _serial(*args.serial)
        return {}

    from dem.pipeline import _versions
    from dem.sweep import load_sweep
    from dem.sweep_report import read_point_record
    from fva.atomic import write_json
    from fva.backend import _device_name

    base = ROOT / ("tests/data/tiny.toml" if args.quick else "scenarios/quickstart.toml")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    sweep_file = work / "bench_sweep.toml"
    sweep_file.write_text(_sweep_toml(base, None if args.quick else args.count))
    spec = load_sweep(sweep_file)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TI_LOG_LEVEL": "warn"}
    py = sys.executable

    # warm Taichi's offline cache (untimed): one point, one thread
    warm = work / "warm.toml"
    warm.write_text(_sweep_toml(base, None if args.quick else args.count).replace("seeds = [1, 2]", "seeds = [1]")
                    .replace("[400.0, 600.0]", "[400.0]"))
    _timed([py, str(Path(__file__).resolve()), "--serial", str(warm), str(work / "warm")], env)

    # control: what parallelism the machine gives right now, without Dask (one point alone, then two at once)
    one = [py, str(Path(__file__).resolve()), "--serial", str(warm)]
    t_alone = _timed(one + [str(work / "alone")], env)
    t = time.perf_counter()
    procs = [subprocess.Popen(one + [str(work / f"pair{k}")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for k in range(args.workers)]
    if any(p.wait() for p in procs):
        raise RuntimeError("the control runs failed")
    t_pair = time.perf_counter() - t

    load_before = os.getloadavg()
    t_serial = _timed([py, str(Path(__file__).resolve()), "--serial", str(sweep_file), str(work / "serial")], env)
    t_cli = 0.0          # what a user does by hand today: one `pelletsim run` after the other, one thread
    for p in spec.points:
        sets = [a for o in p.overrides(spec.fixed) for a in ("--set", o)]
        t_cli += _timed([py, "-m", "dem.cli", "run", str(base), "-o", str(work / "cli" / p.id), "-q", *sets],
                        {**env, "TI_CPU_MAX_NUM_THREADS": "1"})
    t_sweep = _timed([py, "-m", "dem.cli", "sweep", str(sweep_file), "-o", str(work / "sweep"), "-q",
                      "--workers", str(args.workers), "--threads-per-worker", "1"], env)
    load_after = os.getloadavg()

    walls = json.loads((work / "serial" / "walls.json").read_text())
    identical, compared = True, 0
    for p in spec.points:
        a = read_point_record(work / "serial" / p.id)
        b = read_point_record(work / "sweep" / "points" / p.id)
        for k, v in a.items():
            if k not in ("wall_time_s", "status") and v is not None:
                compared += 1
                identical &= b.get(k) == v
    data = {
        "benchmark": "sweep", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device_name": _device_name("cpu"), "cores": os.cpu_count(), "versions": _versions(),
        "git_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() or None,
        "scenario": str(base.relative_to(ROOT)), "particles": None if args.quick else args.count,
        "points": [p.params for p in spec.points], "workers": args.workers, "threads_per_worker": 1,
        "serial_wall_s": t_serial, "serial_point_wall_s": walls, "sweep_wall_s": t_sweep,
        "serial_cli_wall_s": t_cli, "ratio_sweep_over_serial_cli": t_sweep / t_cli,
        "ratio_sweep_over_serial": t_sweep / t_serial, "target_ratio": 0.65, "ideal_ratio": 1 / args.workers,
        "control_one_point_alone_s": t_alone, "control_points_at_once_s": t_pair,
        "control_ratio": t_pair / (args.workers * t_alone),
        "identical_to_serial": bool(identical), "values_compared": compared,
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "note": "serial arm: one process, points in order, TI_CPU_MAX_NUM_THREADS=1; sweep arm: pelletsim sweep "
                "with a LocalCluster; both timed as whole processes after an untimed cache warm-up. control_ratio: "
                "N plain processes of one point at once over N times one alone (no Dask): the parallelism the "
                "machine gave at the time (ideal 1/N); a shared, loaded machine gives less",
    }
    write_json(Path(args.out), data)
    print(f"| arm | wall (s) |\n|---|---|\n| serial, 1 thread | {t_serial:.1f} |\n"
          f"| serial, 4 × `pelletsim run`, 1 thread | {t_cli:.1f} |\n"
          f"| sweep, {args.workers} workers × 1 thread | {t_sweep:.1f} |\n"
          f"| control: 1 point alone / {args.workers} at once | {t_alone:.1f} / {t_pair:.1f} |\n"
          f"ratio {t_sweep / t_serial:.3f} vs one process, {t_sweep / t_cli:.3f} vs separate runs (target ≤ 0.65; "
          f"the machine's own control ratio "
          f"{t_pair / (args.workers * t_alone):.3f}), identical: {identical} ({compared} values), "
          f"load average {load_before[0]:.1f} → {load_after[0]:.1f} on {os.cpu_count()} cores → {args.out}")
    return data


if __name__ == "__main__":
    main()

"""Running a sweep (:mod:`dem.sweep`) on dask.distributed: one task per point, each an ordinary run
(:func:`dem.pipeline.run_scenario`) in a worker process with its own Taichi runtime.

A local cluster has ``processes=True`` and one Dask thread per worker (Taichi keeps one runtime per
process, so points never share a process concurrently); Taichi's CPU thread count is set per worker
(``TI_CPU_MAX_NUM_THREADS``, read by every ``ti.init`` there), and workers × threads ≤ cores. On a CUDA
machine each worker sees one device. ``--scheduler`` connects to any running scheduler instead
(dask-jobqueue, Kubernetes, ``dask scheduler``). A point's failure is caught in the task and recorded;
a worker that dies is replaced by its nanny and Dask reruns the point elsewhere (up to
``distributed.scheduler.allowed-failures`` = 3 lost workers, then the point is recorded as failed, 137).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path

from dem.scenario import ScenarioError, parse_scenario, resolved_dict
from dem.sweep import SweepSpec, point_data, validate_points

__all__ = ["run_sweep", "run_point", "plan_workers", "point_status", "EXIT_KILLED"]

EXIT_KILLED = 137          # exit status recorded for a point whose worker kept dying (Dask gave up)


# --------------------------------------------------------------------------------------------- one point
def run_point(task: dict) -> dict:
    """Run one point in this (worker) process; never raises for a failed run: returns its record.

    ``task``: id, outdir, data (scenario TOML data), source_dir, threads, backend. Taichi is initialised
    here with ``threads`` CPU threads (one runtime per worker process, reused by the next point)."""
    from dem.pipeline import PipelineError, run_scenario
    from dem.simulation import SimulationError

    t0 = time.perf_counter()
    outdir = Path(task["outdir"])
    outdir.mkdir(parents=True, exist_ok=True)
    if task.get("threads"):     # read by ti.init (every init in this worker, whoever calls it)
        os.environ["TI_CPU_MAX_NUM_THREADS"] = str(int(task["threads"]))
    from fva.atomic import write_json
    write_json(outdir / "sweep_point.json", {"id": task["id"], "params": task["params"], "host": socket.gethostname(),
                                             "pid": os.getpid(), "threads": task.get("threads"),
                                             "overrides": task["overrides"]})
    rec = {"id": task["id"], "status": "failed", "exit_status": 1, "error": None}
    try:
        scen = parse_scenario(task["data"], source_dir=task["source_dir"])
        from fva.backend import ensure_init
        ensure_init(task.get("backend") or scen.run.backend, scen.run.default_fp)
        tree = None
        if (outdir / "checkpoint.npz").is_file():  # a worker lost mid-point: continue from its checkpoint
            from dem.checkpoint import CheckpointError, read_resume
            try:
                _, tree = read_resume(outdir, scen)
            except CheckpointError:
                tree = None                         # another version or scenario: start the point again
        # the point folder belongs to the sweep: an earlier attempt's outputs are replaced (sweep_point.json stays)
        data = run_scenario(scen, outdir, backend=task.get("backend"), progress=False,
                            overwrite=tree is None, resume=tree)
        rec.update(status=data.get("status", "complete"), exit_status=0)
    except (ScenarioError, ValueError) as exc:
        rec.update(exit_status=2, error=f"{type(exc).__name__}: {exc}")
    except (SimulationError, PipelineError) as exc:
        rec.update(exit_status=1, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a point's failure must stay local
        rec.update(exit_status=1, error=f"{type(exc).__name__}: {exc}")
    rec["wall_time_s"] = time.perf_counter() - t0
    return rec


def point_status(outdir: Path, scen) -> str | None:
    """The status in a point folder's results.json, or None (missing, unreadable, other scenario)."""
    try:
        data = json.loads((outdir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if scen is not None and data.get("scenario") != json.loads(json.dumps(resolved_dict(scen))):
        return "stale"
    return data.get("status")


# --------------------------------------------------------------------------------------------- the sweep
def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    return f"{s:.0f} s" if s < 90 else (f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h")


def plan_workers(workers: int | None, threads: int, cores: int | None = None) -> int:
    """Workers for a LocalCluster: ``workers × threads ≤ cores``; raises ScenarioError (exit 2) otherwise."""
    cores = cores or os.cpu_count() or 1
    if threads < 1:
        raise ScenarioError(f"--threads-per-worker: must be ≥ 1, got {threads}")
    if workers is None:
        return max(1, cores // threads)
    if workers < 1:
        raise ScenarioError(f"--workers: must be ≥ 1, got {workers}")
    if workers * threads > cores:
        raise ScenarioError(f"--workers {workers} × --threads-per-worker {threads} = {workers * threads} > {cores} "
                            "cores here; lower one of them")
    return workers


def _cuda_devices(scens: dict, backend: str | None) -> int:
    """How many CUDA devices the points will use (0 when they run on the CPU or Vulkan)."""
    from fva.backend import resolve_backend

    arches = set()
    for scen in scens.values():
        try:
            arches.add(resolve_backend(backend or scen.run.backend))
        except (RuntimeError, ValueError) as exc:
            raise ScenarioError(f"run.backend: {exc}") from None
    if "cuda" not in arches:
        return 0
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        return max(1, sum(line.startswith("GPU ") for line in out.splitlines()))
    except (OSError, subprocess.SubprocessError):
        return 1


def _one_device_per_worker(n_devices: int):
    """A Dask worker plugin: worker ``k`` of a LocalCluster sees only CUDA device ``k mod n`` (set before the
    first point initialises Taichi in that process; a restarted worker keeps its name, so its device)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class OneDevicePerWorker(WorkerPlugin):
        name = "pelletsim-one-device-per-worker"

        def setup(self, worker):
            try:
                k = int(worker.name)
            except (TypeError, ValueError):
                k = 0
            os.environ["CUDA_VISIBLE_DEVICES"] = str(k % n_devices)

    return OneDevicePerWorker()


@contextlib.contextmanager
def _client(scheduler: str | None, n_workers: int, n_devices: int = 0):
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    # Dask's own log lines (a worker restarted, a heartbeat lost while the cluster closes) stay quiet: the
    # sweep reports every point, failed or retried, itself
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        if n_devices:
            client.register_plugin(_one_device_per_worker(n_devices))
        yield client


def run_sweep(spec: SweepSpec, outdir, *, workers: int | None = None, threads_per_worker: int = 1,
              scheduler: str | None = None, resume: bool = False, backend: str | None = None,
              progress: bool = True) -> list[dict]:
    """Run every point not yet complete; returns one record per point (as the rows of sweep.csv)."""
    from dem import sweep_report as rep
    from fva.atomic import write_json

    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    outdir = Path(outdir)
    scens = validate_points(spec)
    if resume and not (outdir / "sweep.json").is_file():
        raise ScenarioError(f"--resume: {outdir} holds no sweep (no sweep.json); run without --resume to start it")
    n_devices = 0 if scheduler else _cuda_devices(scens, backend)
    if n_devices:               # a GPU machine: one worker process per device
        if workers is not None and workers > n_devices:
            raise ScenarioError(f"--workers {workers}: the points run on CUDA and this machine has {n_devices} "
                                f"device(s); use at most one worker per device")
        n_workers = workers or n_devices
    else:
        n_workers = plan_workers(workers, threads_per_worker) if not scheduler else None
    outdir.mkdir(parents=True, exist_ok=True)
    write_json(outdir / "sweep.json", {"name": spec.name, "sweep_file": str(spec.path), "base": str(spec.base),
                                       "set": spec.fixed, "varied": spec.varied,
                                       "points": [{"id": p.id, "params": p.params,
                                                   "overrides": p.overrides(spec.fixed)} for p in spec.points]})
    records = {p.id: {"id": p.id, "status": "pending", "exit_status": None, "error": None, "wall_time_s": None}
               for p in spec.points}
    todo, stale = [], 0
    for p in spec.points:
        st = point_status(outdir / "points" / p.id, scens[p.id])
        if st == "complete":
            records[p.id].update(rep.read_point_record(outdir / "points" / p.id), status="complete", exit_status=0)
        else:
            todo.append(p)
            stale += st == "stale"
    if stale:
        say(f"[sweep] {stale} point folder(s) hold a run of another scenario (the base file changed): run again")
    rep.write_sweep_csv(outdir, spec, records)
    skipped = len(spec.points) - len(todo)
    say(f"[sweep] {spec.name}: {len(spec.points)} point(s), {skipped} already complete, {len(todo)} to run "
        f"→ {outdir}")
    if todo:
        with _client(scheduler, n_workers, n_devices) as client:
            slots = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
            link = getattr(client, "dashboard_link", None) if (scheduler or n_workers) else None
            where = (f"scheduler {scheduler}" if scheduler else f"{n_workers} local worker process(es)"
                     + (f" on {n_devices} CUDA device(s)" if n_devices else ""))
            say(f"[sweep] {where} × {threads_per_worker} Taichi thread(s)"
                + (f"; dashboard {link}{_bokeh_note()}" if link and _has_dashboard(client) else ""))
            futs = {}
            for p in todo:
                task = {"id": p.id, "params": p.params, "overrides": p.overrides(spec.fixed),
                        "outdir": str((outdir / "points" / p.id).resolve()), "data": point_data(spec, p),
                        "source_dir": str(spec.base.parent), "threads": threads_per_worker, "backend": backend}
                futs[client.submit(run_point, task, key=f"pelletsim-point-{spec.name}-{p.id}", pure=False)] = p
                records[p.id]["status"] = "queued"
            try:
                _collect(futs, spec, outdir, records, slots, say)
            except KeyboardInterrupt:          # Ctrl-C / SIGTERM: the finished points stay; rerun to continue
                for r in records.values():
                    if r["status"] in ("pending", "queued"):
                        r["status"] = "interrupted"
                rep.write_sweep_csv(outdir, spec, records)
                say(f"[sweep] interrupted: finished points are in {outdir / 'sweep.csv'}; rerun the same command "
                    "to run the rest")
                raise
    rows = [records[p.id] for p in spec.points]
    try:
        files = rep.plot_sweep(outdir)
        say(f"[sweep] figures: {', '.join(Path(f).name for f in files)}")
    except Exception as exc:  # noqa: BLE001 - figures must never hide the numbers
        say(f"[sweep] warning: figures failed: {type(exc).__name__}: {exc}")
    return rows


def _collect(futs: dict, spec: SweepSpec, outdir: Path, records: dict, slots: int, say,
             heartbeat_s: float = 60.0) -> None:
    """Wait for the points, updating ``records`` and sweep.csv as each finishes; a progress line per finished
    point and, while none finishes, one every ``heartbeat_s``."""
    from distributed import wait

    from dem import sweep_report as rep

    t0, done, failed, n = time.perf_counter(), 0, 0, len(futs)
    pending = set(futs)

    def line(tail: str) -> None:
        left = n - done
        el = time.perf_counter() - t0
        eta = el / done * left if done else float("nan")
        say(f"[sweep] {done}/{n} done ({failed} failed), {min(left, slots)} running, {max(left - slots, 0)} queued, "
            f"{_fmt_s(el)} elapsed, ETA {_fmt_s(eta)}{tail}")

    while pending:
        try:
            finished = wait(list(pending), timeout=heartbeat_s, return_when="FIRST_COMPLETED").done
        except (TimeoutError, asyncio.TimeoutError):   # nothing finished for a while: say where the sweep stands
            line("")
            continue
        for fut in finished:
            pending.discard(fut)
            p = futs[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker after Dask's retries, or a lost scheduler
                rec = {"id": p.id, "status": "failed", "exit_status": EXIT_KILLED,
                       "error": f"{type(exc).__name__}: {exc}", "wall_time_s": None}
            if rec["status"] == "complete":
                rec.update(rep.read_point_record(outdir / "points" / p.id), status="complete",
                           wall_time_s=rec["wall_time_s"])
            records[p.id].update(rec)
            done += 1
            failed += rec["status"] != "complete"
            rep.write_sweep_csv(outdir, spec, records)
            line(f" — {p.label() or p.id}: {rec['status']}" + (f" ({rec['error'][:160]})" if rec.get("error") else ""))


def _bokeh_note() -> str:
    try:
        import bokeh  # noqa: F401
        return ""
    except ImportError:
        return " (its pages need bokeh: pip install bokeh)"


def _has_dashboard(client) -> bool:
    try:
        return bool(client.scheduler_info().get("services", {}).get("dashboard"))
    except Exception:  # noqa: BLE001
        return False

"""One scenario, end to end: sizes → loose packing → die compaction → per captured packing:
voxels, σ_bulk(p), finite-volume solve, microstructure → results.json, history.csv, packings, PNGs, ParaView.

Every output is written atomically (temp file + rename) and ``results.json`` is rewritten after each
finished step, so an interrupted run (Ctrl-C) leaves valid files of what was finished, with
``"status": "interrupted"``.

Stages: set-up and compaction driving here; the compaction's outputs :mod:`dem.pipeline_compaction`; the
conductivity stage :mod:`dem.pipeline_conductivity`; shared files and errors :mod:`dem.pipeline_common`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from dem.history_csv import HistoryAppender, write_history_csv  # noqa: F401 (re-exported)
from dem.pipeline_common import (  # noqa: F401 (re-exported)
    PipelineError, _fmt_s, _Results, read_packing_npz, slug, write_packing_npz)
from dem.pipeline_compaction import _write_compaction, release_densities  # noqa: F401 (re-exported)
from dem.pipeline_conductivity import _conductivity_stage, normalise, select_captures  # noqa: F401 (re-exported)
from dem.scenario import CaptureSpec, Scenario, load_scenario, resolved_dict, to_toml
from dem.setup import compact, make_loose, make_sizes, prepare
from dem.types import CompactionResult
from fva.atomic import write_text
from fva.report import json_safe, versions as _versions  # noqa: F401 (json_safe re-exported)
from fva.types import Packing

__all__ = ["run_scenario", "PipelineError", "json_safe", "select_captures", "normalise"]


def _eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Progress:
    """Turns the engine's progress dicts into one throttled line on stderr: stage, pressure, steps/s, ETA.

    The ETA is the engine's own (``eta_s``): the steps left of a hold, and on a load stage an upper bound
    from the punch travel left to full density (printed "≤"); none for an unload stage. An earlier version
    extrapolated the pressure in time, which read "30 s" for minutes: the pressure is not linear in time.
    """

    def __init__(self, enabled: bool, stages, every_s: float = 2.0):
        self.enabled = enabled
        self.stages = stages
        self.every_s = every_s
        self._last = 0.0

    @staticmethod
    def format_eta(info: dict) -> str:
        eta = info.get("eta_s")
        if eta is None or not math.isfinite(float(eta)):
            return "stage ETA ?"
        return f"stage ETA {'≤ ' if info.get('eta_is_bound') else ''}{_fmt_s(float(eta))}"

    def __call__(self, *args, **kw):
        if not self.enabled:
            return
        info = {}
        if args and isinstance(args[0], dict):
            info.update(args[0])
        elif args:
            info["message"] = " ".join(str(a) for a in args)
        info.update(kw)
        now = time.perf_counter()
        if now - self._last < self.every_s:
            return
        self._last = now
        si = info.get("stage_index")
        name = info.get("stage")
        if si is None and isinstance(name, (int, np.integer)):
            si, name = int(name), None
        parts = []
        if si is not None and 0 <= int(si) < len(self.stages):
            parts.append(f"stage {int(si) + 1}/{len(self.stages)} {name or self.stages[int(si)].name}")
        elif name:
            parts.append(f"stage {name}")
        p = info.get("p_top_Pa", info.get("pressure_Pa"))
        if p is not None:
            parts.append(f"p = {float(p) / 1e6:8.2f} MPa")
        if info.get("step") is not None:
            parts.append(f"step {int(info['step'])}")
        if info.get("steps_per_s") is not None:
            parts.append(f"{float(info['steps_per_s']):,.0f} steps/s")
        parts.append(self.format_eta(info))
        if "message" in info:
            parts.append(str(info["message"]))
        _eprint("[pelletsim] " + ", ".join(parts))


def run_scenario(scenario: Scenario, outdir, *, backend: str | None = None, progress: bool = True,
                 overwrite: bool = False, resume: dict | None = None) -> dict:
    """Run a validated scenario into ``outdir`` and return the results dict (also in results.json).

    Before anything is written the scenario passes :func:`dem.preflight.preflight` (ScenarioError) and the
    folder :func:`dem.outdir.prepare_outdir` (OutdirError: not empty without ``overwrite``, not writable).
    ``resume``: the checkpoint tree of an interrupted run in ``outdir`` (:func:`dem.checkpoint.read_resume`): the
    compaction continues from it (or, when it had finished, the later stages run again). The compaction checkpoints
    itself to ``outdir/checkpoint.npz`` every
    ``run.checkpoint_every_s`` and on SIGTERM/SIGINT; the file is removed when the run completes.
    Raises KeyboardInterrupt (after writing what was finished, status "interrupted"),
    ``dem.simulation.SimulationError`` or :class:`PipelineError` (status "failed").
    """
    from dem.outdir import pelletsim_run_info, prepare_outdir
    from dem.preflight import preflight

    outdir = Path(outdir)
    preflight(scenario, backend=backend)
    before = prepare_outdir(outdir, overwrite=overwrite, resume=resume is not None)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if resume is not None:
        data = pelletsim_run_info(outdir) or {}
        earlier = set(data.get("files_written") or [])
        before = {k: v for k, v in before.items() if k not in earlier}   # the earlier part's files are this run's
        data.pop("error", None)
        data.update(status="running", resumed_utc=now, resumed_from_step=int(resume["meta_step"]),
                    versions=_versions())
        data.setdefault("timings_s", {})
        from dem.checkpoint import engine_sha
        if (resume.get("meta") or {}).get("engine_sha256") != engine_sha():
            msg = ("resumed under engine code that differs from the checkpoint's (same pelletsim version): the "
                   "result is valid but not bitwise the uninterrupted run's")
            data.setdefault("warnings", []).append(msg)
            if progress:
                _eprint(f"[pelletsim] warning: {msg}")
        t0 = time.perf_counter() - float(data.get("wall_time_s") or 0.0)
    else:
        t0 = time.perf_counter()
        data = {
            "status": "running",
            "name": scenario.run.name,
            "started_utc": now,
            "versions": _versions(),
            "seed": scenario.run.seed,
            "scenario": resolved_dict(scenario),
            "timings_s": {},
        }
    res = _Results(outdir, data, t0, before)
    if resume is None:
        write_text(outdir / "scenario.resolved.toml", to_toml(resolved_dict(scenario)))
    try:
        _run(scenario, outdir, res, backend, progress, resume)
        data["status"] = "complete"
    except KeyboardInterrupt:
        data["status"] = "interrupted"
        _finish(scenario, outdir, res, progress, failed=True)
        raise
    except Exception as exc:
        data["status"] = "failed"
        data["error"] = f"{type(exc).__name__}: {exc}"
        _finish(scenario, outdir, res, progress, failed=True)
        raise
    from dem.checkpoint import CHECKPOINT_NAME
    (outdir / CHECKPOINT_NAME).unlink(missing_ok=True)     # complete: nothing left to resume
    _finish(scenario, outdir, res, progress, failed=False)
    return data


def _finish(scenario, outdir, res, progress, failed):
    res.flush()
    if scenario.run.plots:
        try:
            from dem.plots import plot_run
            t = time.perf_counter()
            files = plot_run(outdir)
            res.data["timings_s"]["plots"] = time.perf_counter() - t
            res.data.setdefault("files", {})["figures"] = [str(Path(f).name) for f in files]
        except KeyboardInterrupt:
            pass
        except Exception as exc:  # figures must never hide the numbers
            res.data.setdefault("warnings", []).append(f"plots failed: {type(exc).__name__}: {exc}")
            if progress:
                _eprint(f"[pelletsim] warning: plots failed: {exc}")
    res.flush()


def _resume_inputs(tree: dict):
    """(sampled diameters, loose packing) saved in a checkpoint."""
    pl = tree["pipeline"]
    loose = Packing(centers_m=pl["loose"]["centers_m"], radii_m=pl["loose"]["radii_m"], box_m=pl["loose"]["box_m"],
                    periodic=(True, True, False), pressure_Pa=0.0, label="loose")
    return np.asarray(pl["d"], float), loose


def _sizes_and_loose(scen: Scenario, outdir: Path, res: _Results, say):
    """Stages 1–2 (:func:`dem.setup.make_sizes`, :func:`dem.setup.make_loose`), timed, reported and written."""
    from dem.sizes import size_stats

    data = res.data
    T = data["timings_s"]
    t = time.perf_counter()
    d = make_sizes(scen)
    data["sizes"] = size_stats(d)
    T["sizes"] = time.perf_counter() - t
    say(f"[pelletsim] sizes: {d.size} particles, d = {d.min() * 1e6:.2f}–{d.max() * 1e6:.2f} µm, "
        f"mean {d.mean() * 1e6:.2f} µm")
    t = time.perf_counter()
    loose = make_loose(scen, d)
    T["loose"] = time.perf_counter() - t
    loose_frac = float(np.sum(np.pi / 6 * d ** 3) / (loose.box_m[0] * loose.box_m[1] * loose.box_m[2]))
    data["loose"] = {"height_m": float(loose.box_m[2]), "solid_fraction": loose_frac, "n": loose.n}
    if (scen.die.fill_height_um or scen.die.column_height_um) is None and loose_frac < 0.98 * scen.die.loose_fraction:
        data.setdefault("warnings", []).append(
            f"loose packing: solid fraction {loose_frac:.3f} below die.loose_fraction = {scen.die.loose_fraction:g} "
            f"(a column of {loose.n} particles this low jams the insertion; inserted taller and settled)")
    if scen.run.write_packings:
        write_packing_npz(outdir / "packings" / "loose.npz", dataclasses.replace(loose, label="loose",
                                                                                  pressure_Pa=0.0),
                          diameters_sampled_m=d)
    say(f"[pelletsim] loose packing: height {loose.box_m[2] * 1e6:.1f} µm, solid fraction {loose_frac:.3f}")
    res.flush()
    return d, loose


def _run(scen: Scenario, outdir: Path, res: _Results, backend: str | None, progress: bool,
         resume: dict | None = None) -> None:
    from fva.backend import ensure_init

    data = res.data
    T = data["timings_s"]
    say = _eprint if progress else (lambda *_: None)
    info = ensure_init(backend or scen.run.backend, scen.run.default_fp)
    data["backend"] = {"requested": info.requested, "backend": info.backend, "device": info.device_name,
                       "default_fp": info.default_fp, "taichi_version": info.taichi_version}
    say(f"[pelletsim] {scen.run.name}: backend {info.backend} ({info.device_name}), seed {scen.run.seed}")

    if resume is not None:
        d, loose = _resume_inputs(resume)
        where = ("after the compaction" if "completed" in resume
                 else f"the compaction at step {int(resume['meta_step'])}")
        say(f"[pelletsim] resuming {where} from {outdir}/checkpoint.npz")
    else:
        d, loose = _sizes_and_loose(scen, outdir, res, say)
    case = prepare(scen, d, loose, backend=info.backend)
    stages = case.stages

    # 3. compaction ----------------------------------------------------------------------------------
    from dem.checkpoint import CHECKPOINT_NAME, Checkpointer, checkpoint_meta
    t = time.perf_counter()
    ckpt = Checkpointer(outdir / CHECKPOINT_NAME, scen.run.checkpoint_every_s,
                        extra={"meta": checkpoint_meta(scen),
                               "pipeline": {"d": d, "loose": {"centers_m": loose.centers_m, "radii_m": loose.radii_m,
                                                              "box_m": np.asarray(loose.box_m, float)}}})
    initial = None
    if resume is not None:
        initial = (resume["driver"] if "driver" in resume else resume["completed"])["history"]
    rows = HistoryAppender(outdir / "history.csv", initial=initial)
    say(f"[pelletsim] compaction: {len(stages)} stage(s), max {max(s.target_pressure_Pa for s in stages) / 1e9:g} GPa")
    done = None if resume is None else resume.get("completed")
    try:
        if done is not None:       # interrupted after its compaction: only the later stages are redone
            from dem.protocol import result_from_tree
            result = result_from_tree(done)
        else:
            with ckpt.signals():
                result = compact(case, progress=_Progress(progress, stages), on_row=rows, checkpoint=ckpt,
                                 resume=resume)
    except BaseException as exc:
        # a failure or Ctrl-C during compaction: write the history, captures and frames finished so far
        partial = getattr(exc, "partial", None)
        T["compaction"] = time.perf_counter() - t
        if partial is not None:
            say(f"[pelletsim] compaction stopped after {partial.info['n_steps']} steps: writing the "
                f"{len(partial.history['step'])} history row(s) and {len(partial.packings)} capture(s) finished")
            try:
                _, cap_meta = _write_compaction(scen, outdir, res, partial, stages, say)
                # a failed compaction (not Ctrl-C): the captures it finished are still analysed
                if not isinstance(exc, KeyboardInterrupt) and partial.packings and scen.conductivity.enabled:
                    say(f"[pelletsim] analysing the {len(partial.packings)} capture(s) finished before the failure")
                    data["conductivity_on_partial_compaction"] = True
                    _conductivity_stage(scen, outdir, res, partial, cap_meta, d, say)
            except Exception as wexc:  # never mask the error that stopped the run
                res.data.setdefault("warnings", []).append(f"partial compaction output incomplete: {wexc}")
        raise
    if done is None:
        T["compaction"] = time.perf_counter() - t
        # the finished compaction is the checkpoint now: a run stopped later resumes at the conductivity stage
        from dem.protocol import result_tree
        ckpt.write({"completed": result_tree(result), "meta_step": int(result.info.get("n_steps", 0))})
    history, cap_meta = _write_compaction(scen, outdir, res, result, stages, say)
    _conductivity_stage(scen, outdir, res, result, cap_meta, d, say)


def reanalyse(outdir, *, backend: str | None = None, progress: bool = True) -> dict:
    """Redo the conductivity stage of a run from its saved captures (``packings/*.npz`` listed in results.json)
    with its resolved scenario, e.g. after a compaction that failed near its last pressure; results.json is
    updated in place (``analysed``, ``conductivity``) and its status kept."""
    from fva.backend import ensure_init

    outdir = Path(outdir)
    data = json.loads((outdir / "results.json").read_text())
    scen = load_scenario(outdir / "scenario.resolved.toml")
    ensure_init(backend or data.get("backend", {}).get("backend") or scen.run.backend, scen.run.default_fp)
    say = _eprint if progress else (lambda *_: None)
    cap_meta = data.get("captures", [])
    if any("nominal_pressure_Pa" not in m for m in cap_meta):
        raise PipelineError(f"{outdir}/results.json: its captures do not say which protocol stage took them "
                            "(a run of an earlier pelletsim); run the scenario again")
    captures = [CaptureSpec(m["stage_index"], m["stage_kind"], m["nominal_pressure_Pa"], m["pelletizing_pressure_Pa"],
                            m["cycle"]) for m in cap_meta]
    packings = [read_packing_npz(outdir / c["file"]) for c in cap_meta]
    res = _Results(outdir, data, time.perf_counter() - float(data.get("wall_time_s") or 0.0))
    data.setdefault("timings_s", {})
    loose = outdir / "packings" / "loose.npz"      # holds the sampled diameters (the d_min fallback)
    if loose.is_file():
        with np.load(loose) as z:
            d = z["diameters_sampled_m"] if "diameters_sampled_m" in z else 2.0 * z["radii_m"]
    else:
        d = np.concatenate([2.0 * p.radii_m for p in packings] or [np.array([1e-6])])
    _conductivity_stage(scen, outdir, res, CompactionResult(history={}, packings=packings, captures=captures),
                        cap_meta, d, say)
    res.flush()
    return data

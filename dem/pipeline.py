"""One scenario, end to end: sizes → loose packing → die compaction → per captured packing:
voxels, σ_bulk(p), finite-volume solve, microstructure → results.json, history.csv, packings, PNGs, ParaView.

Every output is written atomically (temp file + rename) and ``results.json`` is rewritten after each
finished step, so an interrupted run (Ctrl-C) leaves valid files of what was finished, with
``"status": "interrupted"``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from dem.scenario import CaptureSpec, Scenario, load_scenario, resolved_dict, to_toml
from dem.setup import compact, make_loose, make_sizes, prepare
from dem.types import CompactionResult
from fva.types import Packing
from fva.atomic import atomic_path, write_json, write_text
from fva.report import fmt_tau as _fmt_tau, json_safe, versions as _versions
from dem.history_csv import HistoryAppender, write_history_csv  # noqa: F401 (re-exported)

__all__ = ["run_scenario", "PipelineError", "json_safe", "select_captures", "normalise"]


class PipelineError(RuntimeError):
    """A run cannot go on (bad combination found at run time, e.g. an image too large)."""


# --------------------------------------------------------------------------------------------- helpers
def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_")
    return s[:60] or "packing"


def _eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


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


# --------------------------------------------------------------------------------------------- captures
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


def _history_value_at(history: dict, spec: CaptureSpec, p_Pa: float, key: str):
    if key not in history or "p_top_Pa" not in history or not len(history["p_top_Pa"]):
        return None
    p = np.asarray(history["p_top_Pa"], float)
    mask = np.isfinite(np.asarray(history[key], float))     # a column may be sampled on some rows only
    if not mask.any():
        return None
    if "stage" in history:
        m2 = mask & (np.asarray(history["stage"]) == spec.stage_index)
        if m2.any():
            mask = m2
    if not math.isfinite(p_Pa):
        idx = np.flatnonzero(mask)[-1]
    else:
        cand = np.flatnonzero(mask)
        idx = cand[np.argmin(np.abs(p[cand] - p_Pa))]
    return float(np.asarray(history[key], float)[idx])


# --------------------------------------------------------------------------------------------- writers
def write_packing_npz(path: Path, packing, **extra) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, centers_m=packing.centers_m, radii_m=packing.radii_m, box_m=packing.box_m,
                                pressure_Pa=np.float64(packing.pressure_Pa), label=np.str_(packing.label),
                                periodic=np.asarray(packing.periodic, bool),
                                **{k: np.asarray(v) for k, v in extra.items()})


class _Results:
    """results.json of a run, rewritten atomically; ``files_written`` lists exactly the files this run
    created or changed in its folder (``before``: the snapshot of the files that were there before it)."""

    def __init__(self, outdir: Path, data: dict, t0: float, before: dict | None = None):
        self.outdir, self.data, self.t0, self.before = outdir, data, t0, before

    def flush(self) -> None:
        self.data["wall_time_s"] = time.perf_counter() - self.t0
        if self.before is not None:
            from dem.outdir import files_written
            self.data["files_written"] = sorted(set(files_written(self.outdir, self.before)) | {"results.json"})
        write_json(self.outdir / "results.json", json_safe(self.data))


# --------------------------------------------------------------------------------------------- the run
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



def _write_compaction(scen: Scenario, outdir: Path, res: _Results, result, stages, say):
    """Write what a compaction produced (complete or partial, ``result.info["completed"]``): history.csv,
    the captured packings, the Heckel analysis and the ParaView frames. Returns (history, capture metadata)."""
    data = res.data
    T = data["timings_s"]
    data["compaction"] = json_safe(result.info)
    for w in result.info.get("warnings") or []:      # e.g. a hold that did not settle: said where users look
        if w not in data.setdefault("warnings", []):
            data["warnings"].append(w)
    history = {k: np.asarray(v) for k, v in result.history.items()}
    cols = write_history_csv(outdir / "history.csv", history)
    data.setdefault("files", {})["history"] = "history.csv"
    data["history_columns"] = cols

    # packings
    cap_meta = []
    for i, (pk, sp) in enumerate(zip(result.packings, result.captures, strict=True)):
        label = pk.label or f"{pk.pressure_Pa / 1e9:.3f} GPa"
        if sp.kind != "load" and "after" not in label:
            label = f"{label} after {sp.pelletizing_Pa / 1e9:g} GPa"
        if label != pk.label:
            pk = dataclasses.replace(pk, label=label)
            result.packings[i] = pk
        name = f"{i:02d}_{slug(label)}.npz"
        meta = {"index": i, "label": pk.label, "pressure_Pa": float(pk.pressure_Pa),
                "nominal_pressure_Pa": sp.pressure_Pa, "stage_kind": sp.kind, "stage_index": sp.stage_index,
                "pelletizing_pressure_Pa": sp.pelletizing_Pa, "cycle": sp.cycle, "protocol": sp.protocol,
                "relative_density": _history_value_at(history, sp, float(pk.pressure_Pa), "relative_density"),
                "solid_fraction": _history_value_at(history, sp, float(pk.pressure_Pa), "solid_fraction"),
                "thickness_m": float(pk.box_m[2]), "file": f"packings/{name}"}
        cap_meta.append(meta)
        if scen.run.write_packings:
            write_packing_npz(outdir / "packings" / name, pk,
                              pelletizing_pressure_Pa=np.float64(sp.pelletizing_Pa), stage_kind=np.str_(sp.kind))
    if result.final is not None and scen.run.write_packings:
        write_packing_npz(outdir / "packings" / "final.npz", result.final)
    data["captures"] = cap_meta
    data["relative_density"] = _density_summary(history, cap_meta)
    data["heckel"], extra = _heckel(history, stages, scen)
    data.update(extra)
    rdm = data["relative_density"]
    done = "done" if result.info.get("completed", True) else "stopped"
    say(f"[pelletsim] compaction {done} in {T['compaction']:.1f} s ({result.info.get('n_steps', '?')} steps): "
        f"ρ_rel max {rdm.get('max', float('nan')):.4f}, final {rdm.get('final', float('nan')):.4f}, "
        f"{len(result.packings)} capture(s)")
    if data["heckel"].get("Py_Pa"):
        say(f"[pelletsim] Heckel: Py = {data['heckel']['Py_Pa'] / 1e9:.3f} GPa, A = {data['heckel'].get('A'):.3f}")

    if scen.run.write_frames and result.frames:
        try:
            from dem.paraview import write_particle_frames
            t = time.perf_counter()
            pvd = write_particle_frames(outdir, result.frames)
            T["paraview"] = time.perf_counter() - t
            data["files"]["particles"] = str(Path(pvd).relative_to(outdir)) if Path(pvd).is_absolute() \
                else str(pvd)
        except ImportError as exc:
            data.setdefault("warnings", []).append(f"ParaView frames not written: {exc}")
    res.flush()
    return history, cap_meta


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


def read_packing_npz(path) -> Packing:
    """A packing written by :func:`write_packing_npz`."""
    with np.load(path) as z:
        return Packing(centers_m=z["centers_m"], radii_m=z["radii_m"], box_m=z["box_m"],
                       periodic=tuple(bool(v) for v in z["periodic"]), pressure_Pa=float(z["pressure_Pa"]),
                       label=str(z["label"]))


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


def _density_summary(history: dict, cap_meta: list[dict]) -> dict:
    out = {"per_capture": [{"label": m["label"], "pressure_Pa": m["pressure_Pa"],
                            "relative_density": m["relative_density"]} for m in cap_meta]}
    if "relative_density" in history and len(history["relative_density"]):
        rho = np.asarray(history["relative_density"], float)
        out["final"] = float(rho[-1])
        out["max"] = float(np.nanmax(rho))
        if "p_top_Pa" in history:
            p = np.asarray(history["p_top_Pa"], float)
            k = int(np.nanargmax(p))
            out["at_max_pressure"] = float(rho[k])
            out["max_pressure_Pa"] = float(p[k])
    if "solid_fraction" in history and len(history["solid_fraction"]):
        sf = np.asarray(history["solid_fraction"], float)
        sf = sf[np.isfinite(sf)]
        if len(sf):
            out["final_solid_fraction"] = float(sf[-1])
    return out


def _heckel(history: dict, stages, scen: Scenario) -> tuple[dict, dict]:
    """In-die Heckel fit of the loading branch, out-of-die fit and elastic recovery (dem.heckel)."""
    extra = {}
    if "p_top_Pa" not in history or "relative_density" not in history:
        return {"error": "history lacks p_top_Pa or relative_density"}, extra
    try:
        from dem import heckel as hk
    except ImportError as exc:
        return {"error": f"dem.heckel not available: {exc}"}, extra
    p = np.asarray(history["p_top_Pa"], float)
    rho = np.asarray(history["relative_density"], float)
    ok = np.isfinite(p) & np.isfinite(rho) & (rho > 0) & (rho < 1)
    h = {"p_top_Pa": p[ok], "relative_density": rho[ok]}
    kinds = None
    if "stage" in history:
        h["stage"] = np.asarray(history["stage"])[ok]
        kinds = [st.kind for st in stages]
    hc = scen.heckel
    fit_kwargs = {}
    if hc.fit_range_GPa is not None:
        fit_kwargs = dict(p_min_Pa=hc.fit_range_GPa[0] * 1e9, p_max_Pa=hc.fit_range_GPa[1] * 1e9, auto=False)
    try:
        both = hk.in_die_and_out_of_die(h, stage_kinds=kinds, **fit_kwargs)
        out = json_safe(both["in_die"])
        extra["heckel_out_of_die"] = json_safe(both["out_of_die"])
        extra["elastic_recovery"] = {"fraction": json_safe(both["elastic_recovery"]),
                                     "cycles": json_safe(both["cycles"]), "notes": both["notes"]}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
        extra["elastic_recovery"] = {"error": out["error"]}
    if fit_kwargs:
        out["fit_window"] = "heckel.fit_range_GPa"
        try:   # the automatic regime-II fit, for comparison
            lp_, lr_ = hk.loading_branch(p[ok], rho[ok])
            extra["heckel_auto"] = json_safe(hk.heckel_fit(lp_, lr_))
        except Exception as exc:
            extra["heckel_auto"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "error" not in extra["elastic_recovery"]:
        extra["elastic_recovery"]["at_stack_pressures"] = release_densities(history, stages, hc.stack_pressures_GPa)
    lp, _ = hk.loading_branch(p[ok], rho[ok])
    out["in_die_points"] = int(lp.size)
    out["points_rho_ge_1_excluded"] = int(np.count_nonzero(np.isfinite(rho) & (rho >= 1)))
    return out, extra


def release_densities(history: dict, stages, stack_GPa) -> list[dict]:
    """Relative density on the last release branch at the given stack pressures (linear interpolation in p)
    and its drop from the density at the preceding peak pressure, (ρ_peak − ρ(p_s))/ρ_peak — the quantity the
    study reports as the density drop on release (measured down to 0.01 GPa). Empty without an unload stage."""
    if "stage" not in history:
        return []
    st = np.asarray(history["stage"], int)
    p = np.asarray(history["p_top_Pa"], float)
    rho = np.asarray(history["relative_density"], float)
    unload = [i for i, s in enumerate(stages) if s.kind == "unload" and np.any(st == i)]
    if not unload:
        return []
    rows = np.flatnonzero(st == unload[-1])
    before = np.arange(rows[0])
    if before.size == 0:
        return []
    k_peak = int(before[np.nanargmax(p[before])])
    pr, rr = p[rows], rho[rows]
    order = np.argsort(pr)
    pr, rr = pr[order], rr[order]
    out = []
    for s_gpa in stack_GPa:
        ps = s_gpa * 1e9
        if not (pr.size >= 2 and pr[0] <= ps <= max(pr[-1], p[k_peak])):
            continue
        rs = float(np.interp(ps, np.append(pr, p[k_peak]), np.append(rr, rho[k_peak])))
        out.append({"p_Pa": ps, "relative_density": rs, "peak_pressure_Pa": float(p[k_peak]),
                    "relative_density_at_peak": float(rho[k_peak]), "drop_fraction": (rho[k_peak] - rs) / rho[k_peak]})
    return out

"""The protocol driver's state as plain data, for checkpoints and for finished runs: the driver's tree at a block
boundary (:func:`_driver_tree`, beside the engine's ``state_dict``) and its restore, a finished
:class:`CompactionResult` to and from such a tree (:func:`result_tree`, :func:`result_from_tree`). Used by
:func:`dem.protocol.run_compaction` and :mod:`dem.pipeline`; the format is :mod:`dem.checkpoint`'s."""
from __future__ import annotations

import dataclasses

import numpy as np

from fva.types import Packing
from dem.types import HISTORY_COLUMNS, CaptureSpec, CompactionResult, ParticleFrame

_STATE_KEYS = ("last_hist", "last_frame", "last_step", "p_peak", "rho_at_peak", "hold_end_step",
               "holds")
_FRAME_FIELDS = ("time_s", "step", "centers_m", "radii_m", "velocities_m_per_s", "forces_N", "contact_count",
                 "stress_Pa", "box_m")
_PACKING_FIELDS = ("centers_m", "radii_m", "box_m", "periodic", "pressure_Pa", "label")


def _driver_tree(sim, ds, state, hist, packings, captures, frames, warnings, load_track) -> dict:
    """Engine + driver state at a block boundary (see :mod:`dem.checkpoint`)."""
    return {
        "engine": sim.state_dict(),
        "driver": {"stage": json_ready(ds), "state": {k: state[k] for k in _STATE_KEYS if k in state},
                   "load_track": np.asarray(load_track, dtype=np.float64).reshape(-1, 2),
                   "warnings": list(warnings),
                   "history": {c: np.asarray(hist[c], dtype=np.int64 if c in ("step", "stage") else np.float64)
                               for c in HISTORY_COLUMNS},
                   "packings": [_packing_tree(pk) for pk in packings],
                   "captures": [dataclasses.asdict(c) for c in captures],
                   "frames": [{k: getattr(fr, k) for k in _FRAME_FIELDS} for fr in frames]},
        "meta_step": int(sim.step_count),
    }


def _packing_tree(p: Packing) -> dict:
    return {k: (np.asarray(getattr(p, k)) if k in ("centers_m", "radii_m", "box_m") else getattr(p, k))
            for k in _PACKING_FIELDS}


def result_tree(result: CompactionResult) -> dict:
    """A finished compaction as checkpoint data (history, captures and their specs, frames, final packing, info)."""
    return {"history": {c: np.asarray(v) for c, v in result.history.items()},
            "packings": [_packing_tree(p) for p in result.packings],
            "captures": [dataclasses.asdict(c) for c in result.captures],
            "frames": [{k: getattr(fr, k) for k in _FRAME_FIELDS} for fr in result.frames],
            "final": None if result.final is None else _packing_tree(result.final), "info": dict(result.info)}


def _packing_from(p: dict) -> Packing:
    return Packing(centers_m=p["centers_m"], radii_m=p["radii_m"], box_m=p["box_m"],
                   periodic=tuple(bool(b) for b in p["periodic"]), pressure_Pa=float(p["pressure_Pa"]),
                   label=str(p["label"]))


def result_from_tree(tree: dict) -> CompactionResult:
    """Inverse of :func:`result_tree`."""
    return CompactionResult(history={c: np.asarray(v) for c, v in tree["history"].items()},
                            packings=[_packing_from(p) for p in tree["packings"]],
                            captures=[CaptureSpec(**c) for c in tree["captures"]],
                            frames=[ParticleFrame(**{k: f[k] for k in _FRAME_FIELDS}) for f in tree["frames"]],
                            info=dict(tree["info"]),
                            final=None if tree["final"] is None else _packing_from(tree["final"]))


def json_ready(d: dict) -> dict:
    """A copy of a driver stage dict with plain Python numbers (lists copied)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, list):
            out[k] = [float(x) for x in v]
        elif isinstance(v, (bool, np.bool_)):
            out[k] = bool(v)
        elif isinstance(v, (int, np.integer)):
            out[k] = int(v)
        elif isinstance(v, (float, np.floating)):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def _restore_driver(sim, tree, state, hist, packings, captures, frames, warnings, load_track) -> dict:
    """Load a checkpoint tree into the engine and the driver's containers; returns the stage to resume."""
    sim.load_state_dict(tree["engine"])
    drv = tree["driver"]
    state.update(drv["state"])
    for c in HISTORY_COLUMNS:
        hist[c][:] = np.asarray(drv["history"][c]).tolist()
    packings[:] = [_packing_from(p) for p in drv["packings"]]
    captures[:] = [CaptureSpec(**c) for c in drv["captures"]]
    frames[:] = [ParticleFrame(**{k: f[k] for k in _FRAME_FIELDS}) for f in drv["frames"]]
    warnings[:] = list(drv["warnings"])
    load_track[:] = [tuple(row) for row in np.asarray(drv["load_track"]).tolist()]
    return dict(drv["stage"])

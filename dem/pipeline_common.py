"""What every stage of the pipeline shares: :class:`PipelineError`, the run folder's files (results.json via
:class:`_Results`, packings as .npz) and names and durations as text."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np

from fva.atomic import atomic_path, write_json
from fva.report import json_safe
from fva.types import Packing


class PipelineError(RuntimeError):
    """A run cannot go on (bad combination found at run time, e.g. an image too large)."""


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "_", str(text)).strip("_")
    return s[:60] or "packing"


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def write_packing_npz(path: Path, packing, **extra) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, centers_m=packing.centers_m, radii_m=packing.radii_m, box_m=packing.box_m,
                                pressure_Pa=np.float64(packing.pressure_Pa), label=np.str_(packing.label),
                                periodic=np.asarray(packing.periodic, bool),
                                **{k: np.asarray(v) for k, v in extra.items()})


def read_packing_npz(path) -> Packing:
    """A packing written by :func:`write_packing_npz`."""
    with np.load(path) as z:
        return Packing(centers_m=z["centers_m"], radii_m=z["radii_m"], box_m=z["box_m"],
                       periodic=tuple(bool(v) for v in z["periodic"]), pressure_Pa=float(z["pressure_Pa"]),
                       label=str(z["label"]))


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

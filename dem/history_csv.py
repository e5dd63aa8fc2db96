"""history.csv: the compaction history, one row every ``run.history_every`` steps, written as the run goes
(:class:`HistoryAppender`) and rewritten complete and atomically at the end (:func:`write_history_csv`)."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from dem.types import HISTORY_COLUMNS
from fva.atomic import write_text

__all__ = ["write_history_csv", "HistoryAppender"]


def _csv_value(v, is_int: bool) -> str:
    if is_int:
        return str(int(v))
    try:
        return f"{float(v):.10g}"
    except (TypeError, ValueError):
        return str(v)


def write_history_csv(path: Path, history: dict) -> list[str]:
    cols = [c for c in HISTORY_COLUMNS if c in history] + [c for c in history if c not in HISTORY_COLUMNS]
    n = min((len(np.atleast_1d(history[c])) for c in cols), default=0)
    buf = io.StringIO()
    buf.write(",".join(cols) + "\n")
    arrs = [np.asarray(history[c])[:n] for c in cols]
    ints = [c in ("step", "stage") or np.issubdtype(a.dtype, np.integer) for c, a in zip(cols, arrs)]
    for i in range(n):
        buf.write(",".join(_csv_value(a[i], is_int) for a, is_int in zip(arrs, ints)) + "\n")
    write_text(path, buf.getvalue())
    return cols


class HistoryAppender:
    """history.csv while the engine runs: the header at once, then each row appended as it comes, in whole
    lines (one ``write`` per batch of rows, at most ``every_s`` apart), so that ``tail -f`` or a reader of a
    running job sees complete rows. The finished file is rewritten atomically from the engine's history
    (:func:`write_history_csv`, same columns and format)."""

    def __init__(self, path: Path, every_s: float = 1.0, initial: dict | None = None):
        """``initial``: the rows a resumed run starts from (the file is rewritten with exactly those)."""
        self.path, self.every_s = Path(path), every_s
        self._buf: list[str] = []
        self._last = time.perf_counter()
        write_history_csv(self.path, initial if initial is not None else
                          {c: np.zeros(0, np.int64 if c in ("step", "stage") else float) for c in HISTORY_COLUMNS})

    def __call__(self, row: dict) -> None:
        self._buf.append(",".join(_csv_value(row[c], c in ("step", "stage")) for c in HISTORY_COLUMNS) + "\n")
        if time.perf_counter() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            with open(self.path, "a") as fh:
                fh.write("".join(self._buf))
            self._buf.clear()
        self._last = time.perf_counter()

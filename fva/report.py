"""What every results.json shares: a JSON sanitiser, the software versions, τ as text.

Used by the image commands (``conductivity``, ``analyze``) and by the DEM pipeline alike; ``fva``
never imports ``dem``, so these live here.
"""
from __future__ import annotations

import dataclasses
import math
import platform

import numpy as np

__all__ = ["json_safe", "versions", "fmt_tau"]

MAX_JSON_ARRAY = 10_000   # larger arrays are summarised (shape, dtype), not written element by element


def json_safe(obj):
    """Recursively turn ``obj`` into plain JSON data.

    numpy scalars and arrays → Python numbers and lists (arrays above ``MAX_JSON_ARRAY`` elements
    → a ``"<array shape dtype>"`` note), dataclasses → dicts, tuples → lists, non-finite floats →
    ``None`` (JSON has no NaN or inf; a ``None`` τ reads "does not conduct"), and any other object
    (``Path``, …) → its ``str``.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.size > MAX_JSON_ARRAY:
            return f"<array {obj.shape} {obj.dtype}>"
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, (int, str)):
        return obj
    return str(obj)          # Path, enums, anything else: its text


def versions() -> dict:
    """Versions of pelletsim, Python, numpy and Taichi (None where a package is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("pelletsim", "taichi"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def fmt_tau(t) -> str:
    """τ for a log line: three decimals, or ``inf (not percolating)`` for None / inf."""
    if t is None or not math.isfinite(float(t)):
        return "inf (not percolating)"
    return f"{float(t):.3f}"

"""Checkpoints of a compaction: the engine's state and the protocol driver's, saved atomically, resumed bitwise.

A checkpoint is one ``.npz``: every numpy array of a nested tree under its path (``engine/particles/x``), and
the rest of the tree (numbers, strings, lists, None) as JSON in ``__tree__.json`` (floats written with
``repr``, so they read back to the same bits). The tree's top-level parts:

- ``meta``: format, pelletsim version, the scenario (resolved TOML text and its SHA-256), the step;
- ``engine``: :meth:`dem.simulation.Simulation.state_dict` (named parts ``particles``, ``contacts``,
  ``control``) — the contract a later engine keeps to read old checkpoints;
- ``driver``: the protocol driver (current stage and its state, peak pressure, history rows, captures,
  frames, warnings);
- ``pipeline``: what the run needs before the compaction (the sampled diameters, the loose packing).

:class:`Checkpointer` decides when to write (every ``every_s`` seconds of wall time, and at the next block
of steps after SIGTERM/SIGINT, which it then passes on to the handler that was installed before it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import time
from pathlib import Path

import numpy as np

from fva.atomic import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpointer", "CheckpointError", "scenario_sha",
           "CHECKPOINT_NAME", "FORMAT", "checkpoint_meta", "read_resume"]

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT = 3                # 2: the captures carry their CaptureSpec; 3: the pore-collapse hardening Ctrl.PHI_MIN
_TREE = "__tree__.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (missing, unreadable, another version or scenario)."""


def scenario_sha(toml_text: str) -> str:
    return hashlib.sha256(toml_text.encode()).hexdigest()


ENGINE_FILES = ("simulation.py", "simulation_kernels.py", "protocol.py", "hold.py", "contact.py", "contact_kernels.py",
                "neighbours.py", "neighbours_kernels.py", "types.py")


def engine_sha() -> str:
    """SHA-256 of the engine's source files: a resume under other engine code is not bitwise (warned)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ENGINE_FILES:
        try:
            h.update((here / name).read_bytes())
        except OSError:
            pass
    return h.hexdigest()


def _split(node, path: str, arrays: dict):
    if isinstance(node, np.ndarray):
        key = path or "root"
        arrays[key] = node
        return {"__array__": key}
    if isinstance(node, dict):
        return {str(k): _split(v, f"{path}/{k}" if path else str(k), arrays) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_split(v, f"{path}/{i}", arrays) for i, v in enumerate(node)]
    if isinstance(node, (np.integer,)):
        return int(node)
    if isinstance(node, (np.floating,)):
        return float(node)
    if isinstance(node, (np.bool_,)):
        return bool(node)
    return node


def _join(node, arrays):
    if isinstance(node, dict):
        if set(node) == {"__array__"}:
            return arrays[node["__array__"]]
        return {k: _join(v, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_join(v, arrays) for v in node]
    return node


def save_checkpoint(path, tree: dict) -> None:
    """Write ``tree`` (nested dicts/lists of numpy arrays and JSON scalars) to ``path`` atomically."""
    arrays: dict = {}
    skeleton = _split(tree, "", arrays)
    text = json.dumps(skeleton, allow_nan=True)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{_TREE: np.frombuffer(text.encode(), dtype=np.uint8)}, **arrays)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        skeleton = json.loads(arrays.pop(_TREE).tobytes().decode())
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable pelletsim checkpoint ({exc})") from None
    return _join(skeleton, arrays)


class Checkpointer:
    """When and where to checkpoint a running compaction.

    ``due()`` is asked between blocks of steps; it is true every ``every_s`` seconds and after SIGTERM or
    SIGINT (while :meth:`signals` is active the first such signal is held; a second one acts at once).
    ``write(tree)`` saves ``{**extra, **tree}``; ``after_write()`` then passes a held signal on to the
    handler that was installed before (Ctrl-C → KeyboardInterrupt, the CLI's SIGTERM → exit 143).
    """

    def __init__(self, path, every_s: float, extra: dict | None = None):
        self.path, self.every_s, self.extra = Path(path), float(every_s), dict(extra or {})
        self._last = time.perf_counter()
        self.held = None
        self._old: dict = {}
        self.writes = 0

    def due(self) -> bool:
        return self.held is not None or time.perf_counter() - self._last >= self.every_s

    def write(self, tree: dict) -> None:
        save_checkpoint(self.path, {**self.extra, **tree})
        self.writes += 1
        self._last = time.perf_counter()

    def after_write(self) -> None:
        if self.held is not None:
            signum, frame = self.held
            self.held = None
            self._pass_on(signum, frame)

    def _pass_on(self, signum, frame):
        old = self._old.get(signum)
        self._restore()
        if callable(old):
            old(signum, frame)
        raise KeyboardInterrupt(f"signal {signum}")

    def _on_signal(self, signum, frame):
        if self.held is not None:          # a second signal: stop now
            self._pass_on(signum, frame)
        self.held = (signum, frame)
        try:
            import sys
            print("pelletsim: stopping after the current block of steps to write a checkpoint "
                  "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        except Exception:
            pass

    def _restore(self):
        for sig, h in self._old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, TypeError):
                pass
        self._old = {}

    @contextlib.contextmanager
    def signals(self):
        """Hold SIGTERM/SIGINT until the next block boundary (main thread only; elsewhere a no-op)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:              # not the main thread
                break
        try:
            yield self
        finally:
            held, self.held = self.held, None
            if held is not None:
                self._pass_on(*held)
            self._restore()


def checkpoint_meta(scen) -> dict:
    """The ``meta`` part of a run's checkpoints: format, pelletsim version, the resolved scenario and its hash."""
    from dem.scenario import resolved_dict, to_toml
    import dem
    text = to_toml(resolved_dict(scen))
    return {"format": FORMAT, "pelletsim": dem.__version__, "scenario_toml": text,
            "scenario_sha256": scenario_sha(text), "source_dir": scen.source_dir, "engine_sha256": engine_sha()}


def read_resume(outdir, scenario=None):
    """(scenario, checkpoint tree) of the interrupted run in ``outdir``. Raises
    :class:`dem.checkpoint.CheckpointError` (exit 2) without a checkpoint, for one written by another
    pelletsim version or format, or when ``scenario`` is given and differs from the checkpoint's."""
    import tomllib

    import dem
    from dem.scenario import parse_scenario, resolved_dict, to_toml

    outdir = Path(outdir)
    path = outdir / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"--resume {outdir}: no {CHECKPOINT_NAME} there (the run completed, or stopped "
                              "before its first checkpoint); run the scenario again with --overwrite")
    tree = load_checkpoint(path)
    meta = tree.get("meta") or {}
    version = dem.__version__
    if meta.get("pelletsim") != version or meta.get("format") != FORMAT:
        raise CheckpointError(f"--resume {outdir}: the checkpoint was written by pelletsim {meta.get('pelletsim')} "
                              f"(format {meta.get('format')}), this is pelletsim {version} (format {FORMAT}); "
                              "run it again with --overwrite")
    text = meta.get("scenario_toml") or ""
    if scenario_sha(text) != meta.get("scenario_sha256"):
        raise CheckpointError(f"--resume {outdir}: the checkpoint's scenario is damaged; run it again with "
                              "--overwrite")
    ck_scen = parse_scenario(tomllib.loads(text), source_dir=meta.get("source_dir"))
    if scenario is not None and to_toml(resolved_dict(scenario)) != text:
        raise CheckpointError(f"--resume {outdir}: the scenario given differs from the one the checkpoint was "
                              "written for; resume without a scenario, or start a new run (--overwrite or another -o)")
    return ck_scen, tree

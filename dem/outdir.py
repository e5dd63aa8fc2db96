"""A run's output folder: never mixed with an earlier run, and the exact list of files a run wrote.

``prepare_outdir`` is called before anything is written: a folder that does not exist or is empty is used;
a non-empty one is refused unless ``overwrite`` (pelletsim's own outputs there are removed first, every
other file is left alone) or ``resume`` (the same run continues from its checkpoint). It returns a
snapshot of the files already there, from which ``files_written`` lists what this run created or changed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["OutdirError", "prepare_outdir", "ensure_writable_dir", "files_written", "snapshot", "pelletsim_run_info",
           "OWN_FILES", "OWN_DIRS"]

# what a pelletsim run writes at the top of its folder (figures from dem.plots, ParaView, checkpoint)
OWN_FILES = ("results.json", "history.csv", "scenario.resolved.toml", "checkpoint.npz", "particles.pvd",
             "size_distribution.png", "relative_density.png", "heckel.png", "conductivity.png",
             "porosity_profile_z.png")
OWN_DIRS = ("packings", "fields", "microstructure", "particles")


class OutdirError(ValueError):
    """The output folder cannot be used (exit status 2); the message names it and the fix."""


def pelletsim_run_info(outdir: Path) -> dict | None:
    """The results.json of a pelletsim run in ``outdir`` (dict), or None when there is none."""
    p = Path(outdir) / "results.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and "status" in data and ("scenario" in data or "files_written" in data):
        return data
    return None


def snapshot(outdir: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under ``outdir``."""
    outdir = Path(outdir)
    out = {}
    for root, _dirs, files in os.walk(outdir):
        for f in files:
            p = Path(root) / f
            try:
                st = p.stat()
            except OSError:
                continue
            out[p.relative_to(outdir).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def files_written(outdir: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Files under ``outdir`` created or changed since ``before`` (temporary files excluded), sorted."""
    now = snapshot(outdir)
    return sorted(k for k, v in now.items() if before.get(k) != v and ".tmp" not in Path(k).name)


def _clear_own(outdir: Path, info: dict) -> int:
    """Remove what an earlier pelletsim run wrote in ``outdir``; returns the number of files removed."""
    listed = [f for f in (info.get("files_written") or []) if isinstance(f, str)]
    n = 0
    parents = set()
    for rel in listed:
        p = (outdir / rel)
        try:
            p.resolve().relative_to(outdir.resolve())
        except ValueError:            # never outside the folder
            continue
        if p.is_file():
            p.unlink()
            parents.add(p.parent)
            n += 1
    if not listed:                    # a run from before the manifest: its known names
        for name in OWN_FILES:
            if (outdir / name).is_file():
                (outdir / name).unlink()
                n += 1
        for name in OWN_DIRS:
            if (outdir / name).is_dir():
                n += sum(len(f) for _, _, f in os.walk(outdir / name))
                shutil.rmtree(outdir / name)
    # the folders the removal left empty, deepest first, up to the run folder
    for d in sorted(parents, key=lambda q: -len(q.parts)):
        while d != outdir and outdir in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent
    for stale in outdir.glob("checkpoint.npz*"):
        stale.unlink()
    return n


def prepare_outdir(outdir, *, overwrite: bool = False, resume: bool = False) -> dict[str, tuple[int, int]]:
    """Make ``outdir`` ready for a run; return the snapshot of the files that stay (see module docstring).

    Raises :class:`OutdirError` for a path that is a file, a folder that cannot be created or written, and
    a non-empty folder without ``overwrite``/``resume``.
    """
    outdir = Path(outdir)
    ensure_writable_dir(outdir)
    present = snapshot(outdir)
    if resume:
        return present
    if present:
        info = pelletsim_run_info(outdir)
        if not overwrite:
            what = (f"the outputs of run '{info.get('name')}' (status {info.get('status')})" if info else
                    f"{len(present)} file(s) not written by pelletsim")
            raise OutdirError(f"-o {outdir}: the folder is not empty ({what}); give --overwrite to replace "
                              "pelletsim's outputs there (other files are kept), --resume to continue an "
                              "interrupted run, or another -o")
        if info is not None:
            _clear_own(outdir, info)
        present = snapshot(outdir)
    return present


def ensure_writable_dir(outdir) -> Path:
    """Create ``outdir`` if needed and check that files can be written in it (OutdirError otherwise)."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutdirError(f"-o {outdir}: is a file, not a folder; give a folder for the outputs")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutdirError(f"-o {outdir}: cannot create the output folder ({exc.strerror or exc}); "
                          "give a writable place") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutdirError(f"-o {outdir}: the output folder is not writable; give a writable place")
    try:   # os.access trusts the mode bits; some places (/sys, read-only mounts) refuse the write itself
        probe = outdir / f".pelletsim-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutdirError(f"-o {outdir}: cannot write in the output folder ({exc.strerror or exc}); "
                          "give a writable place") from None
    return outdir

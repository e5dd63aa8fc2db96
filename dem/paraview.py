"""ParaView output for particles: one ``.vtp`` (VTK PolyData, points only) per frame, a ``.pvd`` collection.

Layout written by ``write_particle_frames(outdir, frames)``::

    outdir/particles.pvd                  ← open this in ParaView (a time series, timestep = time_s)
    outdir/particles/particles_000000.vtp
    outdir/particles/particles_000001.vtp …

Point data of every ``.vtp``: ``radius`` (m), ``diameter`` (m), ``velocity`` (m/s, 3-vector), ``force``
(N, 3-vector), ``contact_count`` (int32), ``id`` (int64, index in the frame), and ``stress`` (Pa) when the
frame carries one. Field data: ``time_s``, ``step`` and ``box_m`` (Lx, Ly, H) when known. Files use
binary appended data with lz4 compression when this VTK build has it (zlib otherwise).

Viewing in ParaView: File → Open ``particles.pvd`` → Apply; Filters → Glyph; Glyph Type = Sphere; Scale
Array = ``diameter``, Scale Factor = 1 (ParaView's sphere source has radius 0.5, so scaling it by the
diameter gives the true size; equivalently scale by ``radius`` with factor 2); Glyph Mode = "All Points";
Apply; colour by ``contact_count``, ``stress`` or the magnitude of ``force``. Positions are in metres.

Every file is written atomically (temporary file in the same folder, then rename).
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from fva.atomic import atomic_path, write_text

__all__ = ["write_particle_frames", "write_pvd", "frame_to_polydata"]


def _compression() -> str:
    try:
        import vtk  # noqa: F401  (pyvista's backend)
        from vtkmodules.vtkIOCore import vtkLZ4DataCompressor  # noqa: F401

        return "lz4"
    except Exception:
        return "zlib"


def _arr(a, shape, name, dtype=np.float64):
    a = np.asarray(a, dtype=dtype)
    if a.shape != shape:
        raise ValueError(f"ParticleFrame.{name} must have shape {shape}, got {a.shape}")
    if dtype is np.float64 and not np.all(np.isfinite(a)):
        raise ValueError(f"ParticleFrame.{name} holds non-finite values")
    return a


def frame_to_polydata(frame):
    """A ``pyvista.PolyData`` of the particle centres with the frame's arrays as point data."""
    import pyvista as pv

    c = np.asarray(frame.centers_m, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"ParticleFrame.centers_m must have shape (N, 3), got {c.shape}")
    n = c.shape[0]
    r = _arr(frame.radii_m, (n,), "radii_m")
    v = _arr(frame.velocities_m_per_s, (n, 3), "velocities_m_per_s")
    f = _arr(frame.forces_N, (n, 3), "forces_N")
    cc = _arr(frame.contact_count, (n,), "contact_count", dtype=np.int32)
    pd = pv.PolyData(c.copy()) if n else pv.PolyData()
    if n:
        pd.point_data["radius"] = r
        pd.point_data["diameter"] = 2.0 * r
        pd.point_data["velocity"] = v
        pd.point_data["force"] = f
        pd.point_data["contact_count"] = cc
        pd.point_data["id"] = np.arange(n, dtype=np.int64)
        if getattr(frame, "stress_Pa", None) is not None:
            pd.point_data["stress"] = _arr(frame.stress_Pa, (n,), "stress_Pa")
    pd.field_data["time_s"] = np.array([float(frame.time_s)])
    pd.field_data["step"] = np.array([int(frame.step)], dtype=np.int64)
    if getattr(frame, "box_m", None) is not None:
        pd.field_data["box_m"] = np.asarray(frame.box_m, dtype=np.float64).ravel()
    return pd


def write_pvd(path, entries) -> Path:
    """Write a ParaView collection file.

    entries : iterable of (time_s, relpath) — relpath relative to the .pvd's folder (forward slashes).
    """
    path = Path(path)
    lines = ['<?xml version="1.0"?>',
             '<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">',
             "  <Collection>"]
    for t, rel in entries:
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"write_pvd: time {t} of {rel} is not finite")
        rel = Path(rel).as_posix()
        lines.append(f'    <DataSet timestep="{t!r}" group="" part="0" file={quoteattr(rel)}/>')
    lines += ["  </Collection>", "</VTKFile>", ""]
    write_text(path, "\n".join(lines))
    return path


def write_particle_frames(outdir, frames, *, name="particles") -> Path:
    """Write each ``ParticleFrame`` to ``outdir/<name>/<name>_NNNNNN.vtp`` and ``outdir/<name>.pvd``.

    Returns the path of the ``.pvd``. Frames with equal times get distinct files (ParaView shows the last).
    """
    if not name or any(ch in name for ch in '/\\<>:"|?*'):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    frames = list(frames)
    if not frames:
        raise ValueError("frames is empty: nothing to write")
    outdir = Path(outdir)
    sub = outdir / name
    sub.mkdir(parents=True, exist_ok=True)
    comp = _compression()
    entries = []
    width = max(6, len(str(len(frames) - 1)))
    for k, fr in enumerate(frames):
        pd = frame_to_polydata(fr)
        target = sub / f"{name}_{k:0{width}d}.vtp"
        with atomic_path(target) as tmp:
            pd.save(str(tmp), binary=True, compression=comp)
        entries.append((float(fr.time_s), f"{name}/{target.name}"))
    return write_pvd(outdir / f"{name}.pvd", entries)

"""Figures of microstructure metrics (matplotlib, Agg) and the one PNG saver of the project.

``plot_microstructure(summary, arrays, outdir)`` draws what :func:`fva.microstructure.analyze_image`
returned; lengths on the axes in µm, current densities in mA/cm² (1 mA/cm² = 10 A/m²).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.atomic import atomic_path

__all__ = ["save_png", "plot_microstructure"]


def save_png(fig, path, *, dpi: int = 130) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (temp file + rename), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def _save_current_vti(jmap, voxel_m, nz, path: Path) -> Path:
    """(ny, nx) current map → one-voxel-thick ImageData at the top face (cell data, x-fastest)."""
    dz, dy, dx = voxel_m
    arr = np.nan_to_num(np.asarray(jmap, dtype=np.float64), nan=0.0)[None, :, :]   # [z, y, x]
    import pyvista as pv

    g = pv.ImageData(dimensions=(arr.shape[2] + 1, arr.shape[1] + 1, 2), spacing=(dx, dy, dz),
                     origin=(0.0, 0.0, (nz - 1) * dz))
    g.cell_data["interface_current_A_per_m2"] = np.transpose(arr, (2, 1, 0)).ravel(order="F")
    contact = np.isfinite(np.asarray(jmap))[None]
    g.cell_data["contact"] = np.transpose(contact, (2, 1, 0)).ravel(order="F").astype(np.uint8)
    with atomic_path(path) as tmp:
        g.save(str(tmp))
    return path


def plot_microstructure(summary: dict, arrays: dict, outdir) -> list:
    """PNG figures (and a ``.vti`` of the interface current) from :func:`analyze_image` output.

    Writes, when the data exist: ``porosity_profile.png``, ``inplane_map.png``,
    ``pore_size_hist.png``, ``rve_tau.png``, ``interface_current.png`` and
    ``interface_current.vti`` into ``outdir`` (atomically). Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    vox = tuple(arrays.get("voxel_m", summary.get("voxel_m")))
    dz, dy, dx = vox
    um = 1e6
    paths = []

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for a, d in (("z", dz), ("y", dy), ("x", dx)):
        p = arrays.get(f"porosity_profile_{a}")
        if p is not None:
            ax.plot((np.arange(p.size) + 0.5) * d * um, p, label=a, lw=1.6 if a == "z" else 1.0)
    if summary.get("porosity") is not None:
        ax.axhline(summary["porosity"], color="k", ls=":", lw=0.8, label="sample")
    ax.set_xlabel("position along axis (µm)")
    ax.set_ylabel("porosity (–)")
    ax.set_title("Porosity profile")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    paths.append(save_png(fig, out / "porosity_profile.png"))

    m = arrays.get("inplane_map")
    if m is not None:
        ny, nx = m.shape
        lim = float(np.nanmax(np.abs(m))) or 1e-12
        fig, ax = plt.subplots(figsize=(5, 4.3))
        im = ax.imshow(m, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(0, nx * dx * um, 0, ny * dy * um))
        fig.colorbar(im, ax=ax, label="column porosity − sample porosity (–)")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.set_title(f"In-plane structure map, RMS = {summary.get('inplane_rms') or 0:.4f}")
        fig.tight_layout()
        paths.append(save_png(fig, out / "inplane_map.png"))

    h = summary.get("pore_size_hist")
    if h and h.get("counts") is not None and len(h["edges_m"]) > 1:
        e = np.asarray(h["edges_m"], dtype=float) * um
        w = np.diff(e)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.bar(e[:-1], np.asarray(h["counts"], dtype=float), width=w, align="edge", alpha=0.6,
               label="by pore count (max inscribed)")
        if h.get("counts_by_volume") is not None:
            ax.step(e, np.r_[np.asarray(h["counts_by_volume"], dtype=float), 0], where="post", color="C3",
                    label="by volume (local thickness)")
        ax.set_xlabel("pore diameter (µm)")
        ax.set_ylabel("frequency (–)")
        ax.set_title("Pore-size distribution")
        ax.legend()
        fig.tight_layout()
        paths.append(save_png(fig, out / "pore_size_hist.png"))

    taus = {a: arrays.get(f"rve_tau_map_{a}") for a in ("x", "y", "z")}
    taus = {a: t for a, t in taus.items() if t is not None}
    if taus:
        tz = taus.get("z", next(iter(taus.values())))
        gz = tz.shape[0]
        fig, axs = plt.subplots(1, gz + 1, figsize=(3.2 * (gz + 1), 3.6), layout="constrained")
        axs = np.atleast_1d(axs)
        data = [t[np.isfinite(t)].ravel() for t in taus.values()]
        axs[0].boxplot(data)
        axs[0].set_xticks(range(1, len(taus) + 1), [f"τ_{a}" for a in taus])
        axs[0].set_ylabel("tortuosity factor τ (–)")
        blocked = sum(int(np.size(t) - np.isfinite(t).sum()) for t in taus.values())
        axs[0].set_title("RVE τ" + (f", {blocked} not conducting (τ = ∞)" if blocked else ""))
        fin = tz[np.isfinite(tz)]
        vmin, vmax = (float(fin.min()), float(fin.max())) if fin.size else (1.0, 1.0)
        vmax = vmax if vmax > vmin else vmin + 1e-9
        bz = summary.get("shape_zyx", [gz])[0] / gz * dz * um
        for iz in range(gz):
            ax = axs[iz + 1]
            im = ax.imshow(np.where(np.isfinite(tz[iz]), tz[iz], np.nan), origin="lower", vmin=vmin, vmax=vmax,
                           cmap="viridis")
            ax.set_title(f"τ_z, z ≈ {(iz + 0.5) * bz:.1f} µm")
            ax.set_xlabel("x block")
            ax.set_ylabel("y block")
        fig.colorbar(im, ax=list(axs[1:]), label="τ_z (–)")
        paths.append(save_png(fig, out / "rve_tau.png"))

    j = arrays.get("interface_current_map_A_per_m2")
    if j is not None and np.any(np.isfinite(j)):
        ny, nx = j.shape
        jm = j / 10.0   # A/m² → mA/cm²
        fig, axs = plt.subplots(1, 2, figsize=(10, 4.2))
        im = axs[0].imshow(jm, origin="lower", cmap="inferno", extent=(0, nx * dx * um, 0, ny * dy * um))
        fig.colorbar(im, ax=axs[0], label="interface current density (mA/cm²)")
        axs[0].set_xlabel("x (µm)")
        axs[0].set_ylabel("y (µm)")
        axs[0].set_title(f"contact {100 * (summary.get('interface_contact_fraction') or 0):.1f} %, "
                         f"max/mean = {summary.get('interface_current_max_over_mean') or float('nan'):.2f}")
        v = jm[np.isfinite(jm)]
        axs[1].hist(v, bins=30)
        axs[1].axvline(v.mean(), color="k", ls=":", label="mean")
        axs[1].set_xlabel("interface current density (mA/cm²)")
        axs[1].set_ylabel("contact voxels")
        axs[1].legend()
        fig.tight_layout()
        paths.append(save_png(fig, out / "interface_current.png"))
        nz = summary.get("shape_zyx", [1])[0]
        paths.append(_save_current_vti(j, vox, nz, out / "interface_current.vti"))
    return paths

"""Microstructure analysis of one voxel image: every metric of :mod:`fva.metrics` in one call.

The metrics follow Lin et al. 2024 (porosity profile along z, in-plane heterogeneity map, pore sizes,
tortuosity of 4×4×4 sub-volumes, current hot spots at a partially contacting electrode; see
``docs/references.md``). Images are indexed ``[z, y, x]``; lengths are metres, current densities
A/m² (1 mA/cm² = 10 A/m²).

Quick start::

    from fva.microstructure import analyze_image, plot_microstructure
    summary, arrays = analyze_image(image, return_arrays=True)
    plot_microstructure(summary, arrays, "out/")

The metric functions are re-exported here for convenience; they live one topic per module in
:mod:`fva.metrics`, the figures in :mod:`fva.figures`.
"""
from __future__ import annotations

import numpy as np

from fva.figures import plot_microstructure
from fva.metrics import (dem_contact_radii, electrode_interface_current, inplane_map, inplane_rms,
                         interface_area_from_labels, local_thickness, percolating_fraction,
                         pore_size_distribution, porosity_profile, radial_structure_factor, rve_tortuosity,
                         subvolume_porosity_std)
from fva.report import fmt_tau, json_safe
from fva.types import VoxelImage

__all__ = [
    "porosity_profile", "subvolume_porosity_std", "inplane_map", "inplane_rms",
    "radial_structure_factor", "local_thickness", "pore_size_distribution", "percolating_fraction",
    "rve_tortuosity", "electrode_interface_current", "dem_contact_radii",
    "interface_area_from_labels", "analyze_image", "plot_microstructure", "summary_lines",
]


def analyze_image(image: VoxelImage, *, rve_grid=(4, 4, 4), contact_fraction=0.9306, solver_kw=None,
                  packing=None, return_arrays=False, transport=True, contact_pattern="random",
                  applied_current_A_per_m2=10.0, pore_bins=20, lt_levels=25, seed=0):
    """All microstructure metrics of one image, as the ``microstructure`` object of results.json.

    Parameters
    ----------
    image : VoxelImage
    rve_grid : int or (gz, gy, gx), sub-volume grid for :func:`rve_tortuosity` and for the
        sub-volume porosity standard deviation.
    contact_fraction : float or None, electrode contact fraction (None: skip the interface current;
        the study's 0.9306 by default); ``contact_pattern`` picks "random", "disc" or "from_surface".
    solver_kw : dict for ``solve_conductivity``.
    packing : optional Packing: adds DEM contact statistics.
    return_arrays : also return a dict of arrays (maps, profiles) for :func:`plot_microstructure`.
    transport : False skips the solver-based metrics (their keys are then None).

    Returns
    -------
    summary : dict, JSON-serialisable (lists, floats, None for NaN/inf); lengths in m, currents A/m².
        ``rve_tau_mean``, ``tau_inplane`` and ``tau_throughplane`` are None (τ = inf) when a
        sub-volume does not conduct along that axis; ``rve_n_nonpercolating`` counts those and
        ``rve_tau_mean_conducting`` averages the others.
    arrays : dict of numpy arrays (only with ``return_arrays=True``).
    """
    if not isinstance(image, VoxelImage):
        raise ValueError("analyze_image needs a VoxelImage")
    solver_kw = dict(solver_kw or {})
    s = image.solid
    vox = image.voxel_m
    g = (int(rve_grid),) * 3 if np.isscalar(rve_grid) else tuple(int(x) for x in rve_grid)
    arrays = dict(voxel_m=np.array(vox))
    prof = {a: porosity_profile(s, a) for a in ("x", "y", "z")}
    arrays.update({f"porosity_profile_{a}": p for a, p in prof.items()})
    m = inplane_map(s)
    arrays["inplane_map"] = m
    k, S, Lc = radial_structure_factor(s, vox)
    arrays["structure_factor_k_per_m"], arrays["structure_factor_S"] = k, S
    pore = ~s
    lt = local_thickness(pore, vox, bins=lt_levels) if (pore.any() and s.any()) else np.zeros(s.shape)
    psd = pore_size_distribution(lt, bins=pore_bins, voxel_m=vox)
    arrays["local_thickness_m"] = lt
    arrays["pore_diameters_m"] = psd["pore_diameters_m"]
    block = [max(n // gi, 1) for n, gi in zip(s.shape, g)]
    sub_mean, sub_std, sub_n = subvolume_porosity_std(s, block)
    summ = dict(
        shape_zyx=list(image.shape), voxel_m=list(vox),
        porosity=image.porosity(),
        porosity_profile_z=prof["z"], porosity_profile_x=prof["x"], porosity_profile_y=prof["y"],
        porosity_subvolume_mean=sub_mean, porosity_subvolume_std=sub_std, porosity_subvolume_n=sub_n,
        porosity_subvolume_voxels=block,
        inplane_rms=inplane_rms(m), inplane_max_abs=float(np.abs(m).max()),
        structure_factor_length_m=Lc,
        pore_size_mean_m=psd["mean_m"], pore_size_volume_mean_m=psd["mean_volume_weighted_m"],
        n_pores=psd["n_pores"],
        pore_size_hist=dict(edges_m=psd["edges_m"], counts=psd["counts_by_number"],
                            counts_by_volume=psd["counts_by_volume"]),
        percolating_fraction_pore_z=percolating_fraction(pore, "z"),
        percolating_fraction_solid_z=percolating_fraction(s, "z"),
        rve_grid=list(g), rve_tau_mean=None, rve_tau_std=None, rve_n_nonpercolating=None,
        rve_n_subvolumes=None, rve_tau_mean_conducting=None, rve_tau_std_conducting=None,
        tau_inplane=None, tau_throughplane=None,
        interface_contact_fraction=None, interface_current_mean_A_per_m2=None,
        interface_current_max_A_per_m2=None, interface_current_max_over_mean=None,
        interface_current_cv=None, interface_current_hist=None,
    )
    if transport:
        rve = rve_tortuosity(image, grid=g, **solver_kw)
        summ.update(rve_tau_mean=rve["tau_mean"], rve_tau_std=rve["tau_std"],
                    rve_n_nonpercolating=rve["n_nonpercolating"], rve_n_subvolumes=rve["n_subvolumes"],
                    rve_tau_mean_conducting=rve["tau_mean_conducting"],
                    rve_tau_std_conducting=rve["tau_std_conducting"], tau_inplane=rve["tau_inplane"],
                    tau_throughplane=rve["tau_throughplane"],
                    rve_tau_rel_std={a: (rve["tau_std"][a] / rve["tau_mean"][a]
                                         if np.isfinite(rve["tau_mean"][a]) else None) for a in rve["axes"]},
                    rve_porosity_std=float(rve["porosity_map"].std()))
        for a in rve["axes"]:
            arrays[f"rve_tau_map_{a}"] = rve["tau_map"][a]
        arrays["rve_porosity_map"] = rve["porosity_map"]
        if contact_fraction is not None or contact_pattern == "from_surface":
            ic = electrode_interface_current(image, contact_fraction=contact_fraction, pattern=contact_pattern,
                                             applied_current_A_per_m2=applied_current_A_per_m2, seed=seed,
                                             **solver_kw)
            summ.update(interface_contact_fraction=ic["contact_fraction"],
                        interface_contact_fraction_requested=ic["contact_fraction_requested"],
                        interface_contact_pattern=ic["pattern"],
                        interface_applied_A_per_m2=ic["applied_A_per_m2"],
                        interface_current_mean_A_per_m2=ic["mean_A_per_m2"],
                        interface_current_max_A_per_m2=ic["max_A_per_m2"],
                        interface_current_max_over_mean=ic["max_over_mean"],
                        interface_current_cv=ic["cv"],
                        interface_current_hist=dict(edges_A_per_m2=ic["hist_edges_A_per_m2"],
                                                    counts=ic["hist_counts"]))
            arrays["interface_current_map_A_per_m2"] = ic["map_A_per_m2"]
    if packing is not None:
        dc = dem_contact_radii(packing)
        summ["dem_contacts"] = dict(n_contacts=dc["n_contacts"], coordination=dc["coordination"],
                                    mean_contact_radius_m=dc["mean_contact_radius_m"],
                                    mean_contact_area_m2=dc["mean_contact_area_m2"],
                                    total_contact_area_m2=dc["total_contact_area_m2"],
                                    area_hist=dict(edges_m2=dc["area_hist_edges_m2"], counts=dc["area_hist_counts"]))
        arrays["dem_contact_radius_m"] = dc["contact_radius_m"]
    if image.labels is not None:
        summ["interface_area_m2"] = interface_area_from_labels(image.labels, vox, periodic=image.periodic)
    summ = json_safe(summ)
    return (summ, arrays) if return_arrays else summ


def summary_lines(summary: dict) -> list[str]:
    """Key results of :func:`analyze_image` as ``key = value`` lines for a terminal.

    A tortuosity that is None (τ = inf) says how many sub-volumes do not conduct, e.g.
    ``tau_throughplane = inf (16 of 64 sub-volumes do not conduct along z)``.
    """
    n_sub = summary.get("rve_n_subvolumes")
    blocked = summary.get("rve_n_nonpercolating") or {}
    lines = []
    for k in ("porosity", "inplane_rms", "pore_size_mean_m", "tau_inplane", "tau_throughplane",
              "interface_current_max_over_mean"):
        if k not in summary:
            continue
        v = summary[k]
        if k.startswith("tau_") and summary.get("rve_tau_mean") is not None:
            axes = ("x", "y") if k == "tau_inplane" else ("z",)
            nb = {a: blocked.get(a) for a in axes if blocked.get(a)}
            if v is None or nb:
                why = ", ".join(f"{n} of {n_sub} sub-volumes do not conduct along {a}" for a, n in nb.items())
                lines.append(f"{k} = {fmt_tau(None).split()[0]}" + (f" ({why})" if why else ""))
                continue
        lines.append(f"{k} = {v}")
    return lines

"""Microstructure metrics of voxel images, one topic per module (PoreSpy's layout).

- :mod:`fva.metrics.porosity` — porosity profiles, sub-volume spread, in-plane map, structure factor,
  percolating fraction.
- :mod:`fva.metrics.pores` — local thickness and pore-size distributions.
- :mod:`fva.metrics.subvolumes` — tortuosity factor of sub-volumes (needs the conduction solver).
- :mod:`fva.metrics.interface` — current at an electrode in partial contact (needs the solver).
- :mod:`fva.metrics.contacts` — DEM contact radii and label-image interface areas.

Orchestration (:func:`fva.microstructure.analyze_image`) and figures (:mod:`fva.figures`) live apart.
"""
from fva.metrics.contacts import dem_contact_radii, interface_area_from_labels
from fva.metrics.interface import electrode_interface_current
from fva.metrics.pores import local_thickness, pore_size_distribution
from fva.metrics.porosity import (inplane_map, inplane_rms, percolating_fraction, porosity_profile,
                                  radial_structure_factor, subvolume_porosity_std)
from fva.metrics.subvolumes import rve_tortuosity

__all__ = ["porosity_profile", "subvolume_porosity_std", "inplane_map", "inplane_rms",
           "radial_structure_factor", "percolating_fraction", "local_thickness", "pore_size_distribution",
           "rve_tortuosity", "electrode_interface_current", "dem_contact_radii", "interface_area_from_labels"]

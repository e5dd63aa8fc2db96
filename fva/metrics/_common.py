"""Shared argument checks of the metric modules (private).

Images are indexed ``[z, y, x]``; ``solid`` masks are True where the conducting phase is.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from fva.types import VoxelImage

AXIS = {"z": 0, "y": 1, "x": 2}
STRUCT6 = ndi.generate_binary_structure(3, 1)   # 6-connectivity, the 7-point stencil's


def as_solid(image_or_solid) -> np.ndarray:
    """Boolean solid mask [z, y, x] from a VoxelImage or a 3-D bool/0-1 array."""
    if isinstance(image_or_solid, VoxelImage):
        return image_or_solid.solid
    a = np.asarray(image_or_solid)
    if a.ndim != 3 or a.size == 0:
        raise ValueError(f"expected a non-empty 3-D [z, y, x] array or a VoxelImage, got shape {a.shape}")
    if a.dtype != bool:
        u = np.unique(a)
        if not np.all(np.isin(u, (0, 1))):
            raise ValueError("a solid mask must be boolean (or 0/1); pass a VoxelImage for phase labels")
        a = a.astype(bool)
    return a


def axis_index(axis) -> int:
    if isinstance(axis, str):
        if axis not in AXIS:
            raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
        return AXIS[axis]
    if axis in (0, 1, 2):
        return int(axis)
    raise ValueError(f"axis must be 'x', 'y', 'z' (or array axis 0, 1, 2), got {axis!r}")


def spacing(voxel_m) -> tuple:
    """(dz, dy, dx) in metres from a scalar or a 3-sequence."""
    if np.isscalar(voxel_m):
        v = (float(voxel_m),) * 3
    else:
        v = tuple(float(x) for x in voxel_m)
    if len(v) != 3 or not all(np.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"voxel_m must be positive metres (scalar or (dz, dy, dx)), got {voxel_m}")
    return v


def solver():
    """The conduction solver the transport metrics call (looked up at call time so that tests can
    substitute the host reference solver)."""
    from fva.conduction import solve_conductivity

    return solve_conductivity

"""pelletsim.fva — voxel images, finite-volume conduction and microstructure metrics.

Never imports ``dem``: usable alone on a tomogram. Image arrays are indexed [z, y, x].
"""
from fva.types import ConductivityResult, Packing, VoxelImage  # noqa: F401

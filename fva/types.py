"""Frozen hand-off dataclasses shared by ``dem`` (producer) and ``fva`` (consumer).

They live in ``fva`` because the dependency is one-way (dem → fva): a user with a tomogram
never needs ``dem``. All arrays are numpy, SI units carried in the field names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Packing:
    """A sphere packing in a die.

    centers_m : (N, 3) float64, metres; x, y in [0, Lx), [0, Ly) when periodic, z from the bottom wall (z = 0).
    radii_m   : (N,) float64, metres (the current, possibly volume-corrected, radii).
    box_m     : (3,) float64, metres: Lx, Ly and the height H (bottom wall at z=0, punch face at z=H).
    periodic  : (px, py, pz) booleans; a die packing is (True, True, False).
    pressure_Pa : punch pressure the packing is under when it was captured (nan if unknown).
    label     : free text such as "load 0.50 GPa" or "release to 0.10 GPa after 0.80 GPa".
    """

    centers_m: np.ndarray
    radii_m: np.ndarray
    box_m: np.ndarray
    periodic: tuple = (True, True, False)
    pressure_Pa: float = float("nan")
    label: str = ""

    def __post_init__(self):
        c = np.asarray(self.centers_m, dtype=np.float64)
        r = np.asarray(self.radii_m, dtype=np.float64)
        b = np.asarray(self.box_m, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 3:
            raise ValueError(f"Packing.centers_m must have shape (N, 3), got {c.shape}")
        if r.shape != (c.shape[0],):
            raise ValueError(f"Packing.radii_m must have shape ({c.shape[0]},), got {r.shape}")
        if b.shape != (3,) or not np.all(b > 0):
            raise ValueError(f"Packing.box_m must be three positive lengths (Lx, Ly, H), got {b}")
        if r.size and not np.all(r > 0):
            raise ValueError("Packing.radii_m must all be positive")
        object.__setattr__(self, "centers_m", c)
        object.__setattr__(self, "radii_m", r)
        object.__setattr__(self, "box_m", b)
        object.__setattr__(self, "periodic", tuple(bool(p) for p in self.periodic))

    @property
    def n(self) -> int:
        return int(self.radii_m.shape[0])

    def solid_volume_m3(self) -> float:
        """Sum of sphere volumes (overlaps counted twice; see the geometric solid fraction)."""
        return float(np.sum(4.0 / 3.0 * np.pi * self.radii_m ** 3))


@dataclass(frozen=True)
class VoxelImage:
    """A voxel image, indexed ``[z, y, x]`` (slice, row, column, as tifffile reads a stack).

    phase   : (nz, ny, nx) integer array; ``conducting_phase`` marks the solid electrolyte.
    voxel_m : (dz, dy, dx) voxel edge lengths in metres (anisotropic spacing allowed).
    periodic: periodicity per physical axis as (px, py, pz) booleans (x, y, z, not array order).
    labels  : optional (nz, ny, nx) int32 particle index owning each voxel (-1 for pore).
    """

    phase: np.ndarray
    voxel_m: tuple
    periodic: tuple = (False, False, False)
    conducting_phase: int = 1
    labels: np.ndarray | None = None

    def __post_init__(self):
        ph = np.asarray(self.phase)
        if ph.ndim != 3 or ph.size == 0:
            raise ValueError(f"VoxelImage.phase must be a non-empty 3-D array [z, y, x], got shape {ph.shape}")
        if ph.dtype == bool:
            ph = ph.astype(np.uint8)
        if not np.issubdtype(ph.dtype, np.integer):
            raise ValueError(f"VoxelImage.phase must be integer or boolean (phase labels), got {ph.dtype}; "
                             "threshold a grey-scale image first")
        v = self.voxel_m
        v = (float(v),) * 3 if np.isscalar(v) else tuple(float(x) for x in v)
        if len(v) != 3 or not all(np.isfinite(x) and x > 0 for x in v):
            raise ValueError(f"VoxelImage.voxel_m must be positive (dz, dy, dx) in metres, got {self.voxel_m}")
        if self.labels is not None and np.shape(self.labels) != ph.shape:
            raise ValueError("VoxelImage.labels must have the same shape as phase")
        object.__setattr__(self, "phase", ph)
        object.__setattr__(self, "voxel_m", v)
        object.__setattr__(self, "periodic", tuple(bool(p) for p in self.periodic))

    @property
    def shape(self) -> tuple:
        return tuple(self.phase.shape)

    @property
    def solid(self) -> np.ndarray:
        """Boolean mask of the conducting phase."""
        return self.phase == self.conducting_phase

    def porosity(self) -> float:
        return 1.0 - float(np.mean(self.solid))


@dataclass(frozen=True)
class ConductivityResult:
    """Outcome of one steady conduction solve along one axis.

    sigma_eff_S_per_m : effective conductivity (0.0 for a non-percolating sample).
    sigma_bulk_S_per_m: conductivity of the conducting phase used in the solve.
    tau               : tortuosity factor ε·σ_bulk/σ_eff (inf when σ_eff = 0).
    eps_total         : volume fraction of the conducting phase.
    eps_percolating   : volume fraction connected to both electrodes.
    flux_spread       : (max − min)/mean of the current through every plane normal to the axis.
    iterations        : CG iterations (0 when no solve was needed).
    residual          : relative true residual ‖b − A x‖/‖b‖ recomputed from the returned potential.
    current_imbalance : |I_inlet − I_outlet| / I_mean of the returned potential.
    sigma_error       : bound on the relative error of the current, (|xᵀr| + ‖x* − x‖²_A estimate)/I.
    converged         : True only when residual, plane-current spread and sigma_error all met their
        tolerances at the returned potential.
    axis              : "x", "y" or "z".
    percolating       : False when no path joins the two electrodes.
    potential_V / current_density_A_per_m2 : optional fields [z, y, x] (and [z, y, x, 3], components
        ordered (jz, jy, jx) like the array axes).
    interface_resistance_ohm_m2 : specific grain-boundary resistance used (0: none, ``fva.interface``).
    interface_faces   : number of particle–particle faces of the conducting paths that carry it.
    electrode_current_A_per_m2 : optional 2-D map of the normal current density through the high-index
        electrode face (e.g. [y, x] for axis z), 0 where the face is insulating or pore.
    """

    sigma_eff_S_per_m: float
    sigma_bulk_S_per_m: float
    tau: float
    eps_total: float
    eps_percolating: float
    flux_spread: float
    iterations: int
    residual: float = float("nan")
    current_imbalance: float = float("nan")
    sigma_error: float = float("nan")
    converged: bool = True
    axis: str = "z"
    percolating: bool = True
    preconditioner: str = ""
    wall_s: float = float("nan")
    interface_resistance_ohm_m2: float = 0.0
    interface_faces: int = 0
    potential_V: np.ndarray | None = field(default=None, repr=False)
    current_density_A_per_m2: np.ndarray | None = field(default=None, repr=False)
    electrode_current_A_per_m2: np.ndarray | None = field(default=None, repr=False)

    @property
    def sigma_eff_over_bulk(self) -> float:
        return self.sigma_eff_S_per_m / self.sigma_bulk_S_per_m if self.sigma_bulk_S_per_m > 0 else float("nan")

    @property
    def macmullin(self) -> float:
        """MacMullin number N_M = σ_bulk/σ_eff = τ/ε (inf when σ_eff = 0)."""
        return self.sigma_bulk_S_per_m / self.sigma_eff_S_per_m if self.sigma_eff_S_per_m > 0 else float("inf")

    def figures(self) -> dict:
        """Scalar figures for results.json."""
        return dict(axis=self.axis, sigma_eff_S_per_m=self.sigma_eff_S_per_m,
                    sigma_bulk_S_per_m=self.sigma_bulk_S_per_m,
                    sigma_eff_over_bulk=self.sigma_eff_over_bulk, tau=self.tau,
                    macmullin=self.macmullin, eps_total=self.eps_total,
                    eps_percolating=self.eps_percolating, flux_spread=self.flux_spread,
                    iterations=self.iterations, residual=self.residual,
                    current_imbalance=self.current_imbalance, sigma_error=self.sigma_error,
                    converged=self.converged,
                    percolating=self.percolating, preconditioner=self.preconditioner, wall_s=self.wall_s,
                    interface_resistance_ohm_m2=self.interface_resistance_ohm_m2,
                    interface_faces=self.interface_faces)

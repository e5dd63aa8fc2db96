"""Inputs and outputs of the DEM engine: frozen dataclasses, SI units in the names.

The engine entry point is ``dem.simulation.run_compaction(packing, material, die, protocol,
params) -> CompactionResult``. The loose packing comes from ``dem.loose.run_loose_packing``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fva.types import Packing

ContactModel = Literal["hertz_mindlin", "thornton_ning"]


@dataclass(frozen=True)
class Material:
    """Particle material. ``yield_stress_Pa`` is used by Thornton–Ning only (limiting contact pressure p_y)."""

    density_kg_m3: float
    youngs_modulus_Pa: float
    poisson_ratio: float
    yield_stress_Pa: float | None = None
    friction: float = 0.3              # particle–particle Coulomb coefficient
    wall_friction: float = 0.0         # particle–punch/bottom/die coefficient
    restitution: float = 0.5           # coefficient of restitution (elastic damping model)
    rolling_friction: float = 0.0
    contact_model: ContactModel = "thornton_ning"
    # work of adhesion Δγ (J/m²) of plastically flattened contacts (Thornton–Ning only; 0: no bonding):
    # dem.contact_kernels.bonded_normal
    adhesion_J_per_m2: float = 0.0

    def __post_init__(self):
        if not (self.density_kg_m3 > 0):
            raise ValueError(f"material.density_kg_m3 must be > 0, got {self.density_kg_m3}")
        if not (self.youngs_modulus_Pa > 0):
            raise ValueError(f"material.youngs_modulus_Pa must be > 0, got {self.youngs_modulus_Pa}")
        if not (-1.0 < self.poisson_ratio < 0.5):
            raise ValueError(f"material.poisson_ratio must be in (-1, 0.5), got {self.poisson_ratio}")
        if self.contact_model not in ("hertz_mindlin", "thornton_ning"):
            raise ValueError(f"material.contact_model must be 'hertz_mindlin' or 'thornton_ning', "
                             f"got {self.contact_model!r}")
        if self.contact_model == "thornton_ning" and not (self.yield_stress_Pa and self.yield_stress_Pa > 0):
            raise ValueError("material.yield_stress_Pa must be > 0 for the thornton_ning contact model")
        if not (0.0 < self.restitution <= 1.0):
            raise ValueError(f"material.restitution must be in (0, 1], got {self.restitution}")
        if self.friction < 0 or self.wall_friction < 0:
            raise ValueError("material.friction and material.wall_friction must be >= 0")
        if not (self.adhesion_J_per_m2 >= 0):
            raise ValueError(f"material.adhesion_J_per_m2 must be >= 0, got {self.adhesion_J_per_m2}")
        if self.adhesion_J_per_m2 > 0 and self.contact_model != "thornton_ning":
            raise ValueError("material.adhesion_J_per_m2 bonds plastically flattened contacts: it needs "
                             "contact_model = 'thornton_ning' (Hertz–Mindlin has no plastic flattening)")


@dataclass(frozen=True)
class Die:
    """Square die: periodic in x and y, bottom wall at z = 0, top punch starting at ``fill_height_m``."""

    base_x_m: float
    base_y_m: float
    fill_height_m: float

    @property
    def area_m2(self) -> float:
        return self.base_x_m * self.base_y_m


@dataclass(frozen=True)
class Stage:
    """One protocol stage.

    kind: "load"   — move the punch down at ``punch_speed_m_per_s`` until p_top ≥ target_pressure_Pa;
          "hold"   — servo (PI) the punch to keep p_top = target_pressure_Pa for ``hold_time_s``;
          "unload" — move the punch up at ``punch_speed_m_per_s`` until p_top ≤ target_pressure_Pa
                     (0 means until contact with the punch is lost).
    capture_pressures_Pa: pressures crossed during this stage at which a Packing is captured
          (a "hold" stage captures once at its end if this is non-empty).
    """

    kind: Literal["load", "hold", "unload"]
    target_pressure_Pa: float
    punch_speed_m_per_s: float = 0.0
    hold_time_s: float = 0.0
    capture_pressures_Pa: tuple = ()
    name: str = ""
    cycle: int = 0                     # which repetition of the protocol (run.protocol_cycles) it belongs to


@dataclass(frozen=True)
class CaptureSpec:
    """The identity of a captured packing, carried from the request (a Stage's capture pressures) through the
    engine (``CompactionResult.captures``, checkpoints) to the results (results.json ``captures``)."""

    stage_index: int            # index in the protocol's Stage list
    kind: str                   # the stage's kind: "load", "unload" or "hold"
    pressure_Pa: float          # nominal pressure, the one asked for (the Packing's pressure_Pa is the measured one)
    pelletizing_Pa: float       # the highest load target reached before it (a load capture: its own pressure)
    cycle: int = 0

    @property
    def protocol(self) -> str:
        """Schneider et al. 2023's two protocols: "variable_pressure" (taken while loading, under the
        pelletizing pressure) or "stack_pressure" (after release: unload or hold stages)."""
        return "variable_pressure" if self.kind == "load" else "stack_pressure"


def capture_specs(protocol) -> list[CaptureSpec]:
    """The captures a Stage list asks for, in the order the driver takes them: a load stage's pressures
    rising, an unload stage's falling, one at the end of a hold (at its target)."""
    out, p_max = [], 0.0
    for si, st in enumerate(protocol):
        if st.kind == "load":
            p_max = max(p_max, float(st.target_pressure_Pa))
        caps = sorted(float(c) for c in st.capture_pressures_Pa)
        if st.kind == "hold":
            caps = [float(st.target_pressure_Pa)] if caps else []
        elif st.kind == "unload":
            caps.reverse()
        out += [CaptureSpec(si, st.kind, c, c if st.kind == "load" else p_max, st.cycle) for c in caps]
    return out


# K_eff / K of the volume correction's bulk response (< 1: a penalty softened so that dt from the Rayleigh time
# stays stable; the bulk term then limits ρ_rel to ≈ 0.95–0.98 at 1–2 GPa instead of ~1.0). Calibrated: in-die
# Py ≈ 0.95 GPa at p_y = 0.5 GPa (docs/calibration.md). The scenario schema takes its default from here.
BULK_RESPONSE = 0.23


@dataclass(frozen=True)
class SimParams:
    """Numerical controls.

    dt_safety: dt = dt_safety · t_Rayleigh(r_dt), t_R = π r √(ρ_s/G) / (0.1631 ν + 0.8766), r_dt = max(r_min,
        ``mass_scaling_min_diameter_m``/2).
    mass_scaling: density multiplier for quasi-static loading (reported).
    mass_scaling_min_diameter_m: size-dependent mass scaling (None: off). A particle smaller than this diameter
        d_ms gets the density ρ_s (d_ms/d)², so that its Rayleigh time — ∝ d √ρ — and the period of its contacts
        equal those of a d_ms particle: the fines no longer set dt, which follows from d_ms. Density scaling is
        valid only while the flow is quasi-static (Thornton 2000, Géotechnique 50, 43; inertial number
        I ≪ 1e-3, GDR MiDi 2004, Eur. Phys. J. E 14, 341): the history's inertial number and kinetic-energy
        ratio show that it stays so.
    damping: local (Cundall) non-viscous damping coefficient in [0, 1).
    skin_fraction: Verlet skin as a fraction of the mean diameter.
    volume_correction: grow radii so that the solid volume is conserved as overlaps grow (MDR-like).
    max_overlap_fraction: a pair overlap δ beyond this fraction of r_i + r_j (current, volume-corrected radii;
        for equal spheres the diameter) stops the run (walls: δ beyond this fraction of the particle's diameter);
        at 1.0 (the default) two centres meet (or a sphere lies behind a wall), which no packing reaches. A small
        particle flattened between large ones legitimately reaches δ ≥ its own diameter: it is then a film in
        their lens (δ/(r_i + r_j) ≈ 0.1–0.2 at size ratios of 10–25; docs/calibration.md, *Fines*). Blow-ups
        are caught on the dynamics first: a particle moving > MAX_STEP_MOTION of its radius in one step
        (``dem.engine_checks``), a NaN, or an escape from the die.
    servo_gain / servo_integral: hold-stage PI gains, v = −(A/k)(K_p e + K_i ∫e dt/τ)/τ with e = p_target − p_top,
        k a punch stiffness estimate from the end of the preceding ramp and τ = H/c one transit of the packing's
        compression wave (c = √(kH/(A ρ_bulk))), applied on the device at every step (:func:`dem.punch.servo_step`).
        K_p = 1 makes the proportional term v = −e/(ρ_bulk c): the punch then acts as the non-reflecting (viscous)
        boundary of the pellet's 1-D compression waves (Lysmer & Kuhlemeyer, J. Eng. Mech. Div. 95 (1969) 859),
        absorbing the ringing instead of sampling it.
    hold_tolerance / hold_max_extension: a hold ends once its time is over *and* p_top has stayed within
        ``hold_tolerance`` × target over the last settle window (one period 2H/c of the pellet's fundamental
        compression mode, c from the punch stiffness estimate); a pellet still ringing from the preceding ramp
        extends the hold, by at most ``hold_max_extension`` × max(hold time, window). A hold that does not
        settle ends there and is reported (``info["holds"]``, a warning).
    """

    dt_safety: float = 0.2
    dt_s: float | None = None          # explicit time step (checked against the stability bound)
    mass_scaling: float = 1.0
    mass_scaling_min_diameter_m: float | None = None
    damping: float = 0.3
    skin_fraction: float = 0.1
    volume_correction: bool = True
    max_overlap_fraction: float = 1.0
    servo_gain: float = 1.0            # proportional gain K_p (1: the punch impedance-matched to the pellet)
    servo_integral: float = 0.05
    hold_tolerance: float = 0.05       # relative |p_top − target| a hold must settle within
    hold_max_extension: float = 4.0    # bound of a hold's extension, × max(hold time, settle window)
    history_every: int = 100           # steps between history rows
    frames_every: int = 0              # steps between particle frames for ParaView (0: only at captures)
    max_steps: int = 50_000_000
    backend: str = "cpu"
    default_fp: str = "f64"
    # optional engine controls (added by the DEM engine; defaults keep earlier behaviour)
    gravity_m_s2: float = 0.0          # gravity magnitude along −z (0: off, the die default)
    block_steps: int = 64              # longest block of steps per host call (dem.block; ends early on the device)
    volume_correction_every: int = 10  # steps between volume-correction updates (2 fixed-point passes each)
    solid_fraction_points: int = 20000 # Monte-Carlo points for the union-of-spheres solid fraction (0: skip)
    servo_max_speed_m_per_s: float | None = None  # hold-stage punch speed cap (default: fastest stage speed)
    # bulk response of the volume correction, K_eff = bulk_stiffness_fraction · E/(3(1 − 2ν)) (None: BULK_RESPONSE);
    # pore_collapse_pressure_Pa: p_c of the plastic pore collapse of capped particles, p_f = p_c ln(φ_c/φ)
    # (None: purely elastic bulk response; dem.simulation_kernels)
    bulk_stiffness_fraction: float | None = BULK_RESPONSE
    pore_collapse_pressure_Pa: float | None = None


@dataclass(frozen=True)
class ParticleFrame:
    """One snapshot of particle state for ParaView (.vtu/.vtp + .pvd)."""

    time_s: float
    step: int
    centers_m: np.ndarray        # (N, 3)
    radii_m: np.ndarray          # (N,)
    velocities_m_per_s: np.ndarray   # (N, 3)
    forces_N: np.ndarray         # (N, 3) total contact force
    contact_count: np.ndarray    # (N,) int
    stress_Pa: np.ndarray | None = None   # (N,) mean stress of the particle (−tr σ/3 from contacts), optional
    box_m: np.ndarray | None = None


HISTORY_COLUMNS = ("step", "time_s", "punch_z_m", "thickness_m", "p_top_Pa", "p_bottom_Pa",
                   "p_stress_tensor_Pa", "relative_density", "solid_fraction", "coordination",
                   "ke_ratio", "inertial_number", "stage")


@dataclass(frozen=True)
class CompactionResult:
    """history: dict column → 1-D numpy array (columns HISTORY_COLUMNS; "stage" holds the stage index).
    packings: the Packings captured at the requested pressures, in capture order.
    captures: the CaptureSpec of each packing (same order): which stage took it at which nominal pressure.
    frames: particle frames for ParaView.
    info: dt_s, mass_scaling, n_steps, wall_s, backend, warnings, ...
    """

    history: dict
    packings: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    final: Packing | None = None
    captures: list = field(default_factory=list)

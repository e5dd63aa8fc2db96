"""Scenario schema: the pydantic model of each TOML section (keys with their units, defaults, bounds) and
:class:`ScenarioError`. Loading is :mod:`dem.scenario`, cross-field checks :mod:`dem.scenario_checks`, the SI
engine objects :mod:`dem.scenario_engine`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dem.types import BULK_RESPONSE, SimParams


HISTOGRAM_COLUMNS = "d_low_um, d_high_um, count (or d_low_m, d_high_m; fraction/percent for count)"


class ScenarioError(ValueError):
    """A scenario problem; the message names the key path and, where possible, the fix."""


class _Strict(BaseModel):
    # every number must be finite: no key gives ``inf`` or ``nan`` a meaning (TOML's inf/nan are refused)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------- sections
class RunSection(_Strict):
    name: str = "run"
    seed: int = Field(0, ge=0)
    backend: Literal["cpu", "cuda", "vulkan", "auto"] = "cpu"
    default_fp: Literal["f64", "f32"] = "f64"
    frames_every: int = Field(0, ge=0, description="steps between ParaView particle frames (0: captures only)")
    history_every: int = Field(100, ge=1, description="steps between history.csv rows")
    protocol_cycles: int = Field(1, ge=1, description="run the whole [[protocol]] list this many times")
    write_frames: bool = True
    write_vti: bool = True
    write_packings: bool = True
    plots: bool = True
    checkpoint_every_s: float = Field(300.0, gt=0, description="wall seconds between checkpoints of the engine "
                                                                 "state (checkpoint.npz; --resume continues)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if not v.strip() or v.strip() in (".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError("must be a plain folder name (no '/', '\\', '..'; it names out/<run.name>); "
                             "use -o to write elsewhere")
        return v


class ParticlesSection(_Strict):
    count: int = Field(..., gt=0)
    distribution: Literal["gamma", "histogram", "monodisperse"] = "gamma"
    shape: float | None = Field(None, gt=0, description="gamma shape a (dimensionless)")
    scale_um: float | None = Field(None, gt=0, description="gamma scale b")
    d_min_um: float | None = Field(None, gt=0)
    d_max_um: float | None = Field(None, gt=0)
    weighting: Literal["number", "volume"] = "number"
    histogram_csv: str | None = Field(None, description=f"CSV with columns {HISTOGRAM_COLUMNS}; relative to the "
                                                         "scenario file")
    histogram_bins_um: list[tuple[float, float, float]] | None = Field(
        None, description="the bins inline instead of histogram_csv, rows [d_low_um, d_high_um, weight]; a loaded "
                          "histogram_csv is read into this key (so a run folder's scenario.resolved.toml needs no CSV)")
    diameter_um: float | None = Field(None, gt=0, description="monodisperse diameter")


class MaterialSection(_Strict):
    density_kg_m3: float = Field(..., gt=0)
    youngs_modulus_GPa: float = Field(..., gt=0)
    poisson_ratio: float = Field(..., gt=-1.0, lt=0.5)
    yield_stress_MPa: float | None = Field(None, gt=0)
    friction: float = Field(0.3, ge=0)
    wall_friction: float = Field(0.0, ge=0)
    restitution: float = Field(0.5, gt=0, le=1)
    rolling_friction: float = Field(0.0, ge=0)
    contact_model: Literal["hertz_mindlin", "thornton_ning"] = "thornton_ning"
    adhesion_J_per_m2: float = Field(0.0, ge=0, description="work of adhesion of plastically flattened contacts "
                                                             "(Thornton–Ning only; 0: none)")


class DieSection(_Strict):
    base_x_um: float = Field(..., gt=0)
    base_y_um: float = Field(..., gt=0)
    fill_height_um: float | None = Field(None, gt=0, description="height of the loose column (punch start)")
    column_height_um: float | None = Field(None, gt=0, description="alias of fill_height_um")
    loose_fraction: float = Field(0.3, gt=0, lt=0.64, description="solid fraction of the loose fill "
                                                                   "when no height is given")


class NumericsSection(_Strict):
    dt_safety: float = Field(0.2, gt=0, le=0.5)
    dt_s: float | None = Field(None, gt=0)
    mass_scaling: float = Field(1.0, ge=1)
    mass_scaling_min_diameter_um: float | None = Field(
        None, gt=0, description="size-dependent mass scaling: particles smaller than this diameter d_ms get the "
                                "density ρ_s (d_ms/d)², so dt follows from d_ms, not from the smallest particle "
                                "(quasi-static runs only: check inertial_number and ke_ratio in history.csv)")
    damping: float = Field(0.3, ge=0, lt=1)
    skin_fraction: float = Field(0.1, gt=0)
    volume_correction: bool = True
    volume_correction_every: int = Field(
        SimParams.volume_correction_every, ge=1,
        description="steps between volume-correction updates: with the growth per update capped, the update rate "
                    "per simulated time sets how fast radii follow their caps (Py depends on it), so keep "
                    "dt_safety × volume_correction_every fixed when changing dt (docs/calibration.md, *Time step*)")
    max_overlap_fraction: float = Field(SimParams.max_overlap_fraction, gt=0, le=1)
    servo_gain: float = Field(1.0, gt=0)
    servo_integral: float = Field(0.05, ge=0)
    max_steps: int = Field(50_000_000, gt=0)
    bulk_model: Literal["elastic", "pore_collapse"] = Field(
        "elastic", description="high-density response of volume-capped particles: elastic bulk pressure only, "
                               "or plastic pore collapse p_f = p_c ln(φ_c/φ) with an elastic remainder")
    bulk_stiffness_fraction: float = Field(BULK_RESPONSE, gt=0, le=2, description="K_eff / K of the bulk response")
    pore_collapse_MPa: float | None = Field(None, gt=0, description="p_c of the pore collapse (required with "
                                                                    "bulk_model = \"pore_collapse\")")


class StageSection(_Strict):
    kind: Literal["load", "hold", "unload"]
    name: str = ""
    target_pressure_MPa: float | None = Field(None, ge=0)
    target_pressure_GPa: float | None = Field(None, ge=0)
    punch_speed_mm_per_s: float | None = Field(None, gt=0)
    punch_speed_m_per_s: float | None = Field(None, gt=0)
    hold_time_s: float = Field(0.0, ge=0)
    capture_pressures_MPa: list[float] | None = None
    capture_pressures_GPa: list[float] | None = None
    capture: bool = Field(False, description="hold stages: capture the packing at the end of the hold")
    repeat: int = Field(1, ge=1, description="run this stage this many times in a row")

    def target_Pa(self) -> float:
        return self.target_pressure_GPa * 1e9 if self.target_pressure_GPa is not None \
            else self.target_pressure_MPa * 1e6

    def speed_m_per_s(self) -> float:
        if self.punch_speed_m_per_s is not None:
            return self.punch_speed_m_per_s
        return (self.punch_speed_mm_per_s or 0.0) * 1e-3

    def captures_Pa(self) -> list[float]:
        if self.capture_pressures_GPa is not None:
            return [p * 1e9 for p in self.capture_pressures_GPa]
        if self.capture_pressures_MPa is not None:
            return [p * 1e6 for p in self.capture_pressures_MPa]
        return []


class ConductivitySection(_Strict):
    enabled: bool = True
    voxel_um: float | None = Field(None, gt=0)
    voxels_per_dmin: float | None = Field(None, gt=0, description="voxel = d_min / this (default 4)")
    sigma_ref_mS_per_cm: float = Field(2.0, gt=0, description="bulk conductivity at p_ref_GPa")
    p_ref_GPa: float = Field(0.0, ge=0)
    activation_volume_cm3_per_mol: float = Field(1.4, description="ΔV in σ(p)=σ_ref·exp(−ΔV(p−p_ref)/RT)")
    temperature_K: float = Field(298.15, gt=0)
    sigma_pore_S_per_m: float = Field(0.0, ge=0)
    interface_resistance_ohm_m2: float = Field(0.0, ge=0, allow_inf_nan=False,
                                               description="specific grain-boundary resistance R_i (Ω·m²) of every "
                                                           "voxel face between two particles (0: none, the study's "
                                                           "model; fva.interface)")
    axis: Literal["x", "y", "z", "all"] = "z"
    preconditioner: str = "mg"
    flux_tol: float = Field(1e-4, gt=0, lt=1)
    protocol: Literal["variable_pressure", "stack_pressure", "all"] = "variable_pressure"
    pressures_GPa: list[float] | None = Field(None, description="analyse only captures at these pressures "
                                                                "(default: every selected capture)")
    normalise_at_GPa: float = Field(0.5, gt=0)
    max_voxels: int = Field(400_000_000, gt=0)


class MicrostructureSection(_Strict):
    enabled: bool = False
    rve_grid: int | list[int] = 4
    contact_fraction: float = Field(0.9306, gt=0, le=1)


class HeckelSection(_Strict):
    """Heckel analysis of the loading branch (dem.heckel)."""

    fit_range_GPa: list[float] | None = Field(None, description="[p_min, p_max] of the in-die fit (GPa); "
                                                                "default: automatic regime-II detection")
    stack_pressures_GPa: list[float] = Field([0.01, 0.1], description="pressures on the final release where "
                                                                      "the density and its drop are reported")

    @field_validator("fit_range_GPa")
    @classmethod
    def _range(cls, v):
        if v is not None and (len(v) != 2 or not (0 <= v[0] < v[1])):
            raise ValueError("give two pressures [p_min, p_max] with 0 ≤ p_min < p_max (GPa), e.g. [0.5, 1.7]")
        return v

    @field_validator("stack_pressures_GPa")
    @classmethod
    def _stack(cls, v):
        if any(not (x > 0) for x in v):
            raise ValueError("stack pressures must be > 0 GPa")
        return sorted(v)


class Scenario(_Strict):
    run: RunSection = RunSection()
    particles: ParticlesSection
    material: MaterialSection
    die: DieSection
    numerics: NumericsSection = NumericsSection()
    protocol: list[StageSection] = Field(..., min_length=1)
    conductivity: ConductivitySection = ConductivitySection()
    microstructure: MicrostructureSection = MicrostructureSection()
    heckel: HeckelSection = HeckelSection()
    # where the file was read from (histogram paths resolve against it); not a TOML key
    source_dir: str | None = Field(None, exclude=True)

"""Scenario files: TOML in, validated pydantic models out, SI engine objects from :func:`to_engine`.

Every dimensional key carries its unit in its name (``_um``, ``_MPa``, ``_GPa``, ``_kg_m3`` …); where two
units are offered for one quantity (``target_pressure_MPa`` / ``target_pressure_GPa``) exactly one is
given. Unknown keys are errors. Every problem is raised as :class:`ScenarioError` whose message starts
with the key path, e.g. ``particles.d_min_um: must be < d_max_um (got 60 > 50)``.

    scen = load_scenario("scenarios/quickstart.toml", ["particles.count=200"])
    sizes, material, die, stages, params = to_engine(scen)
"""
from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dem.types import BULK_RESPONSE, CaptureSpec, Die, Material, SimParams, Stage, capture_specs

__all__ = ["ScenarioError", "Scenario", "load_scenario", "parse_scenario", "to_engine", "expand_protocol",
           "CaptureSpec", "resolved_dict"]


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


# --------------------------------------------------------------------------------------------- loading
def _loc_str(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(loc) -> type[BaseModel] | None:
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        ann = fields[part].annotation
        sub = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                sub = cand
        model = sub if sub is not None else ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = _loc_str(loc)
        typ = e["type"]
        if typ == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(k for k in (parent.model_fields if parent else {}) if k != "source_dir")
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            lines.append(f"{path}: unknown key{hint} (allowed: {', '.join(allowed)})")
        elif typ == "missing":
            lines.append(f"{path}: missing required key; add it to the scenario file")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{path}: {e['msg']}{got_s}")
    return "\n".join(lines)


def _parse_value(text: str):
    """TOML value syntax (``1.5``, ``true``, ``"gamma"``, ``[0.1, 0.2]``); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text and all(c.isalnum() or c in "_-./" for c in text):
            return text
        raise


def apply_override(data: dict, override: str) -> None:
    """Apply one ``a.b=value`` (or ``protocol.0.target_pressure_GPa=0.3``) override in place."""
    if "=" not in override:
        raise ScenarioError(f"--set {override!r}: expected key.path=value, e.g. particles.count=200")
    key, _, val = override.partition("=")
    key = key.strip()
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise ScenarioError(f"--set {override!r}: empty key path")
    try:
        value = _parse_value(val.strip())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{key}: cannot parse --set value {val!r} as TOML ({exc}); "
                            f"quote strings, e.g. {key}='\"text\"'") from None
    node: Any = data
    for i, p in enumerate(parts[:-1]):
        sub_path = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise ScenarioError(f"{sub_path}: no such list entry (there are {len(node)})")
            node = node[int(p)]
        else:
            if p not in node:
                node[p] = {}
            node = node[p]
        if not isinstance(node, (dict, list)):
            raise ScenarioError(f"{sub_path}: is a value, not a section; cannot set {key}")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ScenarioError(f"{key}: no such list entry (there are {len(node)})")
        node[int(last)] = value
    else:
        node[last] = value


def parse_scenario(data: dict, *, source_dir: str | Path | None = None) -> Scenario:
    """Validate a scenario dict (structure, then cross-field checks)."""
    if not isinstance(data, dict):
        raise ScenarioError("scenario: expected a TOML table")
    try:
        scen = Scenario.model_validate({**data, "source_dir": str(source_dir) if source_dir else None})
    except ValidationError as err:
        raise ScenarioError(_format_validation_error(err)) from None
    _inline_histogram(scen)
    check_scenario(scen)
    return scen


def load_scenario(path, overrides: list[str] | None = None) -> Scenario:
    """Read a TOML scenario, apply ``--set`` overrides (TOML value syntax) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: scenario file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text (UTF-8) file; give a TOML scenario such as "
                            "scenarios/quickstart.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from None
    for ov in overrides or []:
        apply_override(data, ov)
    return parse_scenario(data, source_dir=path.resolve().parent)


# --------------------------------------------------------------------------------------------- checks
def _one_of(section: str, obj, a: str, b: str, required: bool = True) -> None:
    va, vb = getattr(obj, a), getattr(obj, b)
    if va is not None and vb is not None:
        raise ScenarioError(f"{section}.{a}: give either {a} or {b}, not both")
    if required and va is None and vb is None:
        raise ScenarioError(f"{section}.{a}: missing; give {a} or {b}")


def histogram_path(scen: Scenario) -> Path | None:
    if scen.particles.histogram_csv is None:
        return None
    p = Path(scen.particles.histogram_csv)
    if not p.is_absolute() and scen.source_dir:
        p = Path(scen.source_dir) / p
    return p


def _inline_histogram(scen: Scenario) -> None:
    """Read a histogram scenario's ``histogram_csv`` into ``histogram_bins_um`` (edges in µm as written, or
    converted from metres; weights as written) and drop the path: the scenario then holds its sizes itself,
    and its resolved form loads anywhere (a run folder, a checkpoint, results.json)."""
    p = scen.particles
    if p.distribution != "histogram" or p.histogram_csv is None:
        return
    if p.histogram_bins_um is not None:
        raise ScenarioError("particles.histogram_csv: give either histogram_csv or histogram_bins_um, not both")
    hp = histogram_path(scen)
    if not hp.is_file():
        raise ScenarioError(f"particles.histogram_csv: file not found: {hp} (paths are relative to the scenario file)")
    from dem.sizes import read_histogram_csv
    try:
        lo, hi, w = read_histogram_csv(hp, unit="um")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        msg = str(exc).replace(f"histogram_csv {hp}: ", "").replace("histogram_csv: ", "")
        raise ScenarioError(f"particles.histogram_csv: {hp}: {msg} (columns: {HISTOGRAM_COLUMNS})") from None
    scen.particles = p.model_copy(update={"histogram_csv": None, "histogram_bins_um": [
        (float(a), float(b), float(c)) for a, b, c in zip(lo, hi, w)]})
    from dem.preflight import check_histogram
    check_histogram(scen, key=f"particles.histogram_csv: {hp}")


def d_max_estimate_um(scen: Scenario) -> float:
    """Largest diameter the sampler can draw (µm), for the die-width check and voxel choice."""
    p = scen.particles
    if p.distribution == "monodisperse":
        return float(p.diameter_um)
    if p.d_max_um is not None:
        return float(p.d_max_um)
    if p.distribution == "gamma":
        from scipy.stats import gamma
        return float(gamma.ppf(0.9999, p.shape, scale=p.scale_um))
    hi = [b for _, b, w in p.histogram_bins_um or () if w > 0]     # the largest bin edge with weight
    return float(max(hi)) if hi else float("nan")


# expected loose solid fraction above which a given fill height is refused (insertion jams near 0.35–0.4)
LOOSE_JAM_FRACTION = 0.45


def _mean_d3_um3(scen: Scenario) -> float | None:
    """E[d³] in µm³ of the untruncated size model (gamma: a(a+1)(a+2) b³), None for a histogram."""
    p = scen.particles
    if p.distribution == "monodisperse":
        return p.diameter_um ** 3
    if p.distribution == "gamma" and p.shape is not None and p.scale_um is not None:
        return p.shape * (p.shape + 1) * (p.shape + 2) * p.scale_um ** 3
    return None


def check_scenario(scen: Scenario) -> None:
    """Cross-field checks; raise ScenarioError naming the key path."""
    p = scen.particles
    if p.distribution == "gamma":
        for k in ("shape", "scale_um"):
            if getattr(p, k) is None:
                raise ScenarioError(f"particles.{k}: required for distribution = \"gamma\"")
    elif p.distribution == "histogram":
        if p.histogram_bins_um is None:
            raise ScenarioError("particles.histogram_csv: required for distribution = \"histogram\" "
                                f"(CSV with columns {HISTOGRAM_COLUMNS}; or the bins inline, histogram_bins_um)")
        from dem.preflight import check_histogram
        check_histogram(scen)
    elif p.distribution == "monodisperse":
        if p.diameter_um is None:
            raise ScenarioError("particles.diameter_um: required for distribution = \"monodisperse\"")
    if p.d_min_um is not None and p.d_max_um is not None and not p.d_min_um < p.d_max_um:
        raise ScenarioError(f"particles.d_min_um: must be < d_max_um (got {p.d_min_um:g} ≥ {p.d_max_um:g}); "
                            "lower d_min_um or raise d_max_um")

    m = scen.material
    if m.adhesion_J_per_m2 > 0 and m.contact_model != "thornton_ning":
        raise ScenarioError("material.adhesion_J_per_m2: bonds plastically flattened contacts; set contact_model = "
                            "\"thornton_ning\" or adhesion_J_per_m2 = 0")
    if m.contact_model == "thornton_ning" and m.yield_stress_MPa is None:
        raise ScenarioError("material.yield_stress_MPa: required for contact_model = \"thornton_ning\"")
    n = scen.numerics
    if n.bulk_model == "pore_collapse":
        if not n.volume_correction:
            raise ScenarioError("numerics.bulk_model: \"pore_collapse\" acts on volume-corrected particles; set "
                                "numerics.volume_correction = true or bulk_model = \"elastic\"")
        if n.pore_collapse_MPa is None:
            raise ScenarioError("numerics.pore_collapse_MPa: required for bulk_model = \"pore_collapse\" (calibrated "
                                "1500 with yield_stress_MPa = 420 for the study's powder, docs/calibration.md)")

    d = scen.die
    if d.fill_height_um is not None and d.column_height_um is not None:
        raise ScenarioError("die.fill_height_um: give either fill_height_um or column_height_um, not both")
    dmax = d_max_estimate_um(scen)
    if math.isfinite(dmax):
        for k in ("base_x_um", "base_y_um"):
            v = getattr(d, k)
            if v < 2 * dmax:
                raise ScenarioError(f"die.{k}: must be ≥ 2·d_max = {2 * dmax:g} µm for a periodic die "
                                    f"(got {v:g}); widen the die or set particles.d_max_um smaller")
    h = d.fill_height_um or d.column_height_um
    hkey = "die.fill_height_um" if d.fill_height_um is not None else "die.column_height_um"
    if h is not None and math.isfinite(dmax) and h < 2 * dmax:
        raise ScenarioError(f"{hkey}: must be ≥ 2·d_max = {2 * dmax:g} µm (got {h:g})")
    d3 = _mean_d3_um3(scen)
    if h is not None and d3 is not None:
        frac = p.count * math.pi / 6 * d3 / (d.base_x_um * d.base_y_um * h)
        if frac > LOOSE_JAM_FRACTION:
            need = p.count * math.pi / 6 * d3 / (0.3 * d.base_x_um * d.base_y_um)
            raise ScenarioError(f"{hkey}: {p.count} particles would fill {frac:.2f} of a {h:g} µm column; random "
                                f"insertion jams near 0.35–0.4: give {hkey} ≥ {need:.4g} µm (solid fraction "
                                "0.30), or leave it out and set die.loose_fraction")

    # protocol: stage by stage, tracking the pressure the punch is at
    p_now = 0.0
    for i, st in enumerate(scen.protocol):
        where = f"protocol[{i}]"
        _one_of(where, st, "target_pressure_MPa", "target_pressure_GPa")
        _one_of(where, st, "punch_speed_mm_per_s", "punch_speed_m_per_s", required=st.kind != "hold")
        _one_of(where, st, "capture_pressures_MPa", "capture_pressures_GPa", required=False)
        tgt = st.target_Pa()
        caps = st.captures_Pa()
        unit_key = "target_pressure_GPa" if st.target_pressure_GPa is not None else "target_pressure_MPa"
        cap_key = "capture_pressures_GPa" if st.capture_pressures_GPa is not None else "capture_pressures_MPa"
        if st.kind == "load":
            if not tgt > p_now:
                raise ScenarioError(f"{where}.{unit_key}: a load stage must go above the current pressure "
                                    f"{p_now / 1e9:g} GPa (got {tgt / 1e9:g} GPa); use kind = \"unload\" "
                                    "or a higher target")
            for c in caps:
                if not (p_now < c <= tgt):
                    raise ScenarioError(f"{where}.{cap_key}: capture pressure {c / 1e9:g} GPa is not crossed "
                                        f"while loading from {p_now / 1e9:g} to {tgt / 1e9:g} GPa")
            if caps != sorted(caps):
                raise ScenarioError(f"{where}.{cap_key}: list the capture pressures in increasing order")
        elif st.kind == "unload":
            if i == 0 or not tgt < p_now:
                raise ScenarioError(f"{where}.{unit_key}: an unload target must be below the previous "
                                    f"target {p_now / 1e9:g} GPa (got {tgt / 1e9:g} GPa)")
            for c in caps:
                if not (tgt <= c < p_now):
                    raise ScenarioError(f"{where}.{cap_key}: capture pressure {c / 1e9:g} GPa is not crossed "
                                        f"while unloading from {p_now / 1e9:g} to {tgt / 1e9:g} GPa")
            if caps != sorted(caps, reverse=True):
                raise ScenarioError(f"{where}.{cap_key}: list the capture pressures in decreasing order "
                                    "(the order they are crossed while unloading)")
        else:  # hold
            if i == 0:
                raise ScenarioError(f"{where}.kind: the protocol must start with a load stage")
            if not st.hold_time_s > 0:
                raise ScenarioError(f"{where}.hold_time_s: a hold stage needs hold_time_s > 0")
            for c in caps:
                if not math.isclose(c, tgt, rel_tol=1e-9):
                    raise ScenarioError(f"{where}.{cap_key}: a hold captures at its own target "
                                        f"({tgt / 1e9:g} GPa); use capture = true")
        if st.kind == "load" and st.repeat > 1:
            raise ScenarioError(f"{where}.repeat: a load stage cannot repeat (its second run would start "
                                "at its own target); repeat the load/unload pair with run.protocol_cycles")
        p_now = tgt
    if scen.run.protocol_cycles > 1 and scen.protocol[-1].kind == "load":
        raise ScenarioError("run.protocol_cycles: the protocol must end below its first load target to "
                            "repeat; end with an unload stage")
    if scen.run.protocol_cycles > 1 and scen.protocol[0].target_Pa() <= scen.protocol[-1].target_Pa():
        raise ScenarioError("run.protocol_cycles: the first load target must be above the last stage's "
                            "target for the cycle to repeat")

    c = scen.conductivity
    if c.enabled:
        if c.voxel_um is not None and c.voxels_per_dmin is not None:
            raise ScenarioError("conductivity.voxel_um: give either voxel_um or voxels_per_dmin, not both")
        caps_all = [cp for s in expand_protocol(scen) for cp in s.captures]
        if not caps_all:
            raise ScenarioError("conductivity.enabled: no packing is captured; add capture_pressures_GPa "
                                "to a [[protocol]] stage or set conductivity.enabled = false")
        if c.protocol == "stack_pressure" and not any(cp.kind != "load" for cp in caps_all):
            raise ScenarioError("conductivity.protocol: \"stack_pressure\" analyses packings captured after "
                                "release (unload/hold stages); none is captured")
        if c.protocol == "variable_pressure" and not any(cp.kind == "load" for cp in caps_all):
            raise ScenarioError("conductivity.protocol: \"variable_pressure\" analyses packings captured "
                                "while loading; no load stage has capture pressures")
        if c.pressures_GPa:
            avail = [cp.pressure_Pa / 1e9 for cp in caps_all] + [cp.pelletizing_Pa / 1e9 for cp in caps_all]
            for pg in c.pressures_GPa:
                if not any(math.isclose(pg, a, rel_tol=1e-6, abs_tol=1e-9) for a in avail):
                    raise ScenarioError(f"conductivity.pressures_GPa: {pg:g} GPa is not a capture pressure "
                                        "(nor a pelletizing pressure) of the protocol")
        from dem.preflight import check_conductivity_values
        check_conductivity_values(scen)
    ms = scen.microstructure
    if ms.enabled:
        grid = [ms.rve_grid] * 3 if isinstance(ms.rve_grid, int) else list(ms.rve_grid)
        if len(grid) != 3 or any(g < 1 for g in grid):
            raise ScenarioError(f"microstructure.rve_grid: an integer ≥ 1 or three of them (got {ms.rve_grid})")
        if not c.enabled:
            raise ScenarioError("microstructure.enabled: needs conductivity.enabled = true (it analyses the "
                                "same voxelised packings)")


# --------------------------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class ExpandedStage:
    stage: Stage
    kind: str
    captures: tuple             # CaptureSpec


def expand_protocol(scen: Scenario) -> list[ExpandedStage]:
    """[[protocol]] × repeat × run.protocol_cycles → engine Stages (SI) with their capture specs."""
    stages = []
    for cyc in range(scen.run.protocol_cycles):
        for st in scen.protocol:
            for r in range(st.repeat):
                tgt = st.target_Pa()
                caps = list(st.captures_Pa())
                if st.kind == "hold" and st.capture and not caps:
                    caps = [tgt]
                name = st.name or f"{st.kind} {tgt / 1e9:g} GPa"
                if scen.run.protocol_cycles > 1:
                    name += f" (cycle {cyc + 1})"
                if st.repeat > 1:
                    name += f" #{r + 1}"
                stages.append(Stage(kind=st.kind, target_pressure_Pa=tgt, punch_speed_m_per_s=st.speed_m_per_s(),
                                    hold_time_s=st.hold_time_s, capture_pressures_Pa=tuple(caps), name=name,
                                    cycle=cyc))
    specs = capture_specs(stages)
    return [ExpandedStage(stage, stage.kind, tuple(c for c in specs if c.stage_index == i))
            for i, stage in enumerate(stages)]


@dataclass(frozen=True)
class SizesConfig:
    """Keyword arguments of ``dem.sizes.sample_diameters`` (SI)."""

    n: int
    distribution: str
    shape: float | None
    scale_m: float | None
    d_min_m: float | None
    d_max_m: float | None
    weighting: str
    histogram_bins_m: tuple[tuple[float, float, float], ...] | None     # rows (d_low_m, d_high_m, weight)
    diameter_m: float | None

    def kwargs(self) -> dict:
        return dict(distribution=self.distribution, shape=self.shape, scale_m=self.scale_m,
                    d_min_m=self.d_min_m, d_max_m=self.d_max_m, weighting=self.weighting,
                    histogram_bins_m=self.histogram_bins_m, diameter_m=self.diameter_m)


def _um(x):
    return None if x is None else float(x) * 1e-6


def engine_material(m: MaterialSection) -> Material:
    """A [material] section (GPa, MPa) as the engine's :class:`dem.types.Material` (SI)."""
    try:
        return Material(density_kg_m3=m.density_kg_m3, youngs_modulus_Pa=m.youngs_modulus_GPa * 1e9,
                        poisson_ratio=m.poisson_ratio,
                        yield_stress_Pa=None if m.yield_stress_MPa is None else m.yield_stress_MPa * 1e6,
                        friction=m.friction, wall_friction=m.wall_friction, restitution=m.restitution,
                        rolling_friction=m.rolling_friction, contact_model=m.contact_model,
                        adhesion_J_per_m2=m.adhesion_J_per_m2)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None


def to_engine(scen: Scenario, *, backend: str | None = None):
    """Scenario → (SizesConfig, Material, Die, list[Stage], SimParams), all SI.

    ``Die.fill_height_m`` is the scenario's fill height or, when only a loose fraction is given, an
    estimate from the expected solid volume; the pipeline replaces it with the loose packing's height.
    """
    p = scen.particles
    bins = None if p.histogram_bins_um is None else tuple((_um(a), _um(b), float(w)) for a, b, w in p.histogram_bins_um)
    sizes = SizesConfig(n=p.count, distribution=p.distribution, shape=p.shape, scale_m=_um(p.scale_um),
                        d_min_m=_um(p.d_min_um), d_max_m=_um(p.d_max_um), weighting=p.weighting,
                        histogram_bins_m=bins, diameter_m=_um(p.diameter_um))
    material = engine_material(scen.material)
    d = scen.die
    h_um = d.fill_height_um or d.column_height_um
    if h_um is None:
        # expected solid volume from the mean cube of the diameters (gamma: E[d^3] = a(a+1)(a+2) b^3)
        if p.distribution == "monodisperse":
            d3 = p.diameter_um ** 3
        elif p.distribution == "gamma":
            d3 = p.shape * (p.shape + 1) * (p.shape + 2) * p.scale_um ** 3
        else:
            d3 = (d_max_estimate_um(scen) / 2) ** 3
        v_solid = p.count * math.pi / 6 * d3
        h_um = v_solid / (d.loose_fraction * d.base_x_um * d.base_y_um)
    die = Die(base_x_m=d.base_x_um * 1e-6, base_y_m=d.base_y_um * 1e-6, fill_height_m=h_um * 1e-6)
    stages = [e.stage for e in expand_protocol(scen)]
    n = scen.numerics
    params = SimParams(dt_safety=n.dt_safety, dt_s=n.dt_s, mass_scaling=n.mass_scaling,
                       mass_scaling_min_diameter_m=(None if n.mass_scaling_min_diameter_um is None else
                                                    n.mass_scaling_min_diameter_um * 1e-6), damping=n.damping,
                       skin_fraction=n.skin_fraction, volume_correction=n.volume_correction,
                       max_overlap_fraction=n.max_overlap_fraction, servo_gain=n.servo_gain,
                       servo_integral=n.servo_integral, history_every=scen.run.history_every,
                       frames_every=scen.run.frames_every if scen.run.write_frames else 0,
                       max_steps=n.max_steps, backend=backend or scen.run.backend,
                       bulk_stiffness_fraction=n.bulk_stiffness_fraction,
                       pore_collapse_pressure_Pa=(None if n.bulk_model != "pore_collapse" else
                                                  n.pore_collapse_MPa * 1e6),
                       default_fp=scen.run.default_fp)
    return sizes, material, die, stages, params


def resolved_dict(scen: Scenario) -> dict:
    """The scenario with every default filled in, as plain JSON/TOML-able data."""
    return scen.model_dump(mode="json", exclude={"source_dir"})


def to_toml(data: dict) -> str:
    """Minimal TOML writer for a resolved scenario (tables, arrays of tables, scalars, lists)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, list) and v and all(isinstance(x, list) for x in v):     # a table: one row a line
            return "[\n" + "".join(f"    {val(x)},\n" for x in v) + "]"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = []
    for sec, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{sec}]]")
                lines += [f"{k} = {val(v)}" for k, v in item.items() if v is not None]
                lines.append("")
        elif isinstance(body, dict):
            lines.append(f"[{sec}]")
            lines += [f"{k} = {val(v)}" for k, v in body.items() if v is not None]
            lines.append("")
    return "\n".join(lines)

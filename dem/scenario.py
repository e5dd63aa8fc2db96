"""Scenario files: TOML in, validated pydantic models out, SI engine objects from :func:`to_engine`.

Every dimensional key carries its unit in its name (``_um``, ``_MPa``, ``_GPa``, ``_kg_m3`` …); where two
units are offered for one quantity (``target_pressure_MPa`` / ``target_pressure_GPa``) exactly one is
given. Unknown keys are errors. Every problem is raised as :class:`ScenarioError` whose message starts
with the key path, e.g. ``particles.d_min_um: must be < d_max_um (got 60 > 50)``.

    scen = load_scenario("scenarios/quickstart.toml", ["particles.count=200"])
    sizes, material, die, stages, params = to_engine(scen)

This module reads and validates: ``--set`` overrides, pydantic errors as one line per key, a histogram CSV
read into the scenario. The sections are :mod:`dem.scenario_schema`, the cross-field checks
:mod:`dem.scenario_checks`, the derived SI values :mod:`dem.scenario_engine` (their names are re-exported here).
"""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from dem.scenario_checks import LOOSE_JAM_FRACTION, check_scenario  # noqa: F401 (re-exported)
from dem.scenario_engine import (  # noqa: F401 (re-exported)
    ExpandedStage, SizesConfig, _mean_d3_um3, d_max_estimate_um, engine_material, expand_protocol, resolved_dict,
    to_engine, to_toml)
from dem.scenario_schema import (  # noqa: F401 (re-exported)
    HISTOGRAM_COLUMNS, ConductivitySection, DieSection, HeckelSection, MaterialSection, MicrostructureSection,
    NumericsSection, ParticlesSection, RunSection, Scenario, ScenarioError, StageSection)
from dem.types import CaptureSpec  # noqa: F401 (re-exported)

__all__ = ["ScenarioError", "Scenario", "load_scenario", "parse_scenario", "to_engine", "expand_protocol",
           "CaptureSpec", "resolved_dict"]


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

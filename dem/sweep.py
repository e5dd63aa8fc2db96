"""Parameter sweeps: one ordinary run per point, fanned out over dask.distributed worker processes.

A sweep file (TOML) names a base scenario and the keys to vary, in the scenario's own key paths and units::

    [sweep]
    base = "../quickstart.toml"            # relative to the sweep file
    seeds = [1, 2]                         # run.seed values: every point runs once per seed
    [sweep.set]                            # fixed changes applied to every point (optional)
    "particles.count" = 200
    [sweep.grid]                           # full grid: every combination of these lists
    "material.yield_stress_MPa" = [300.0, 500.0, 700.0]
    [sweep.zip]                            # lists of equal length, varied together (optional)
    "protocol.3.target_pressure_GPa" = [0.05, 0.1]
    "protocol.4.target_pressure_GPa" = [0.05, 0.1]

Points = grid × zip rows × seeds. A point is exactly ``pelletsim run BASE --set key=value ...``; it runs in
``OUTDIR/points/<id>/`` (id: readable parameters + a hash of them, stable across invocations), in a worker
process of its own Taichi runtime (one runtime per process: processes, never threads). Dask retries a point
whose worker died; a point that fails records its error and exit status and the others go on. Points whose
``results.json`` says ``complete`` (for the same resolved scenario) are skipped, so rerunning resumes.
Results: ``sweep.csv`` rewritten atomically as points finish, figures and a sensitivity table
(:mod:`dem.sweep_report`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sys
from pathlib import Path

from dem.scenario import ScenarioError, apply_override, parse_scenario

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["SweepSpec", "Point", "load_sweep", "is_sweep_file", "validate_points", "point_data", "point_id"]
_SWEEP_KEYS = {"base", "name", "seeds", "set", "grid", "zip"}


@dataclasses.dataclass(frozen=True)
class Point:
    id: str
    params: dict           # varied key path → value (run.seed last when seeds are given)

    def overrides(self, fixed: dict) -> list[str]:
        """The ``--set`` arguments that make this point from the base scenario."""
        return [f"{k}={json.dumps(v)}" for k, v in {**fixed, **self.params}.items()]

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    path: Path             # the sweep file
    name: str
    base: Path             # the base scenario (absolute)
    fixed: dict            # [sweep.set]
    grid: dict             # key path → list
    zipped: dict           # key path → list (equal lengths)
    seeds: list | None
    points: tuple          # Point, in grid order

    @property
    def varied(self) -> list[str]:
        return list(self.grid) + list(self.zipped) + (["run.seed"] if self.seeds is not None else [])


def is_sweep_file(path) -> bool:
    """True for a TOML file with a top-level ``[sweep]`` table."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".toml":
        return False
    try:
        return isinstance(tomllib.loads(p.read_text()).get("sweep"), dict)
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return False


def _flatten(table: dict, where: str, prefix: str = "") -> dict:
    """``{"material": {"yield_stress_MPa": [..]}}`` or ``{"material.yield_stress_MPa": [..]}`` → dotted keys."""
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, where, key + "."))
        else:
            out[key] = v
    return out


def _check_lists(table: dict, where: str, unique: bool = True) -> None:
    for k, v in table.items():
        if not isinstance(v, list) or not v:
            raise ScenarioError(f"{where}.\"{k}\": expected a non-empty list of values, got {v!r}")
        if unique and len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            raise ScenarioError(f"{where}.\"{k}\": a value is listed twice ({v!r}); list each value once")


def _short(key: str, params: dict) -> str:
    """The shortest dotted suffix of ``key`` that no other parameter ends with
    (``protocol.2.target_…`` → ``2.target_…``)."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        suf = ".".join(parts[-n:])
        if not any(o != key and (o == suf or o.endswith("." + suf)) for o in params):
            return suf
    return key


def point_id(params: dict) -> str:
    """Stable folder name: the parameter values in words (≤ 60 characters) and 8 hex digits of their hash."""
    canon = json.dumps(sorted(params.items()), sort_keys=True, separators=(",", ":"))
    h = hashlib.sha1(canon.encode()).hexdigest()[:8]
    words = "__".join(f"{_short(k, params)}-{v}" for k, v in params.items())
    words = re.sub(r"[^A-Za-z0-9._\-]+", "_", words).strip("_")[:60].rstrip("_.-")
    return f"{words}__{h}" if words else h


def load_sweep(path) -> SweepSpec:
    """Read a sweep file and expand its points (the scenarios themselves: :func:`validate_points`)."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: sweep file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from None
    sw = raw.get("sweep")
    if not isinstance(sw, dict):
        raise ScenarioError(f"{path}: no [sweep] table; a sweep file names base = \"scenario.toml\" under [sweep]")
    extra = set(raw) - {"sweep"}
    if extra:
        raise ScenarioError(f"{sorted(extra)[0]}: unknown top-level table in a sweep file; put the varied keys "
                            "under [sweep.grid] or [sweep.zip] and fixed ones under [sweep.set]")
    unknown = set(sw) - _SWEEP_KEYS
    if unknown:
        raise ScenarioError(f"sweep.{sorted(unknown)[0]}: unknown key (allowed: {', '.join(sorted(_SWEEP_KEYS))})")
    if not isinstance(sw.get("base"), str):
        raise ScenarioError("sweep.base: missing; give the base scenario file, relative to the sweep file")
    base = (path.resolve().parent / sw["base"]).resolve()
    if not base.is_file():
        raise ScenarioError(f"sweep.base: scenario file not found: {base} (paths are relative to the sweep file)")
    tables = {}
    for key in ("set", "grid", "zip"):
        t = sw.get(key, {})
        if not isinstance(t, dict):
            raise ScenarioError(f"sweep.{key}: expected a table of \"key.path\" = value(s)")
        tables[key] = _flatten(t, f"sweep.{key}")
    fixed, grid, zipped = tables["set"], tables["grid"], tables["zip"]
    _check_lists(grid, "sweep.grid")
    _check_lists(zipped, "sweep.zip", unique=False)    # a zip column may repeat a value; rows may not
    lens = {len(v) for v in zipped.values()}
    if len(lens) > 1:
        raise ScenarioError("sweep.zip: the lists must have equal lengths, got "
                            + ", ".join(f"{k}: {len(v)}" for k, v in zipped.items()))
    seeds = sw.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise ScenarioError(f"sweep.seeds: expected a list of integers ≥ 0, got {seeds!r}")
        _check_lists({"seeds": seeds}, "sweep")
    keys = list(grid) + list(zipped) + (["run.seed"] if seeds is not None else [])
    dup = [k for k in keys if keys.count(k) > 1] + [k for k in fixed if k in keys]
    if dup:
        raise ScenarioError(f"sweep: key {dup[0]!r} is given twice (grid, zip, set or seeds); give it once")
    zip_rows = list(zip(*zipped.values())) if zipped else [()]
    points = []
    for combo in itertools.product(*grid.values(), zip_rows, seeds if seeds is not None else [None]):
        *gvals, zrow, seed = combo
        params = dict(zip(grid, gvals))
        params.update(zip(zipped, zrow))
        if seeds is not None:
            params["run.seed"] = seed
        points.append(Point(point_id(params), params))
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        twice = next(p for p in points if ids.count(p.id) > 1)
        raise ScenarioError(f"sweep.zip: the point {twice.label()} is listed twice; list each row once")
    name = sw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"sweep.name: expected a non-empty string, got {name!r}")
    return SweepSpec(path=path.resolve(), name=name, base=base, fixed=fixed, grid=grid, zipped=zipped,
                     seeds=seeds, points=tuple(points))


def point_data(spec: SweepSpec, point: Point) -> dict:
    """The base scenario's TOML data with the point's overrides applied (not yet validated)."""
    data = tomllib.loads(spec.base.read_text())
    for ov in point.overrides(spec.fixed):
        apply_override(data, ov)
    return data


def validate_points(spec: SweepSpec) -> dict:
    """Validate every point's scenario; returns {point id: Scenario}. Raises ScenarioError naming each bad
    point by its parameters (all of them, one per line), before anything runs."""
    from dem.scenario import to_engine

    good, bad = {}, []
    for pt in spec.points:
        try:
            scen = parse_scenario(point_data(spec, pt), source_dir=spec.base.parent)
            to_engine(scen)
            good[pt.id] = scen
        except ScenarioError as exc:
            why = "; ".join(str(exc).strip().splitlines())
            bad.append(f"point {pt.label() or pt.id}: {why}")
    if bad:
        raise ScenarioError("\n".join(bad + [f"{len(bad)} of {len(spec.points)} point(s) invalid; nothing was run"]))
    return good


# --------------------------------------------------------------------------------------------- command line
def cmd_sweep(args) -> int:
    from dem.sweep_run import run_sweep

    spec = load_sweep(args.sweep)
    outdir = Path(args.outdir) if args.outdir else Path("out") / spec.name
    rows = run_sweep(spec, outdir, workers=args.workers, threads_per_worker=args.threads_per_worker,
                     scheduler=args.scheduler, resume=args.resume, backend=args.backend, progress=not args.quiet)
    bad = [r for r in rows if r["status"] != "complete"]
    print(f"sweep '{spec.name}': {len(rows) - len(bad)}/{len(rows)} point(s) complete → {outdir}/sweep.csv")
    for r in bad:
        print(f"  {r['id']}: {r['status']} (exit {r.get('exit_status')}): {r.get('error')}")
    return 1 if bad else 0


def cmd_validate_sweep(path) -> int:
    spec = load_sweep(path)
    validate_points(spec)
    print(f"# {path}: valid sweep '{spec.name}', base {spec.base}", file=sys.stderr)
    for p in spec.points:
        print(f"{p.id}: {' '.join('--set ' + o for o in p.overrides(spec.fixed))}")
    return 0

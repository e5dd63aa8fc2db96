"""The one set-up path from a scenario to a compaction: sizes → loose packing → engine inputs → compaction.

``pelletsim run`` (:mod:`dem.pipeline`), the benchmarks and the calibration all call these functions and pass
only what differs (their scenario, or a few engine parameters the scenario does not hold), so that a benchmark
times, and a calibration fits, the packing a user's run produces::

    d = make_sizes(scen)                      # the sampled diameters (seeded by run.seed)
    loose = make_loose(scen, d)               # random insertion, renumbered in spatial order
    case = prepare(scen, d, loose)            # + Material, Die at the loose height, Stages, captures, SimParams
    result = compact(case)                    # dem.simulation.run_compaction; result.captures[i] is the
                                              # CaptureSpec of result.packings[i]
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from dem.scenario import Scenario, ScenarioError, to_engine
from dem.types import CaptureSpec, CompactionResult, Die, Material, SimParams, Stage, capture_specs
from fva.types import Packing

__all__ = ["CompactionCase", "make_sizes", "make_loose", "prepare", "compact", "packing_sha256"]


@dataclasses.dataclass(frozen=True)
class CompactionCase:
    """Everything :func:`dem.simulation.run_compaction` needs for one scenario (SI)."""

    scenario: Scenario
    diameters_m: np.ndarray     # (N,) as sampled (the loose packing holds them in spatial order)
    loose: Packing              # the loose fill, renumbered in spatial order
    material: Material
    die: Die                    # fill height = the loose packing's height
    stages: list[Stage]         # the expanded protocol
    captures: list[CaptureSpec]  # what the stages ask to capture, in the order the driver takes them
    params: SimParams

    @property
    def seed(self) -> int:
        return self.scenario.run.seed


def make_sizes(scen: Scenario) -> np.ndarray:
    """The particle diameters (m) of ``scen.particles``, seeded by ``run.seed`` (:func:`dem.sizes.sample_diameters`)."""
    from dem.sizes import sample_diameters

    sizes = to_engine(scen)[0]
    return np.asarray(sample_diameters(sizes.n, **sizes.kwargs(), seed=scen.run.seed), float)


def make_loose(scen: Scenario, diameters_m: np.ndarray) -> Packing:
    """The loose fill of ``scen.die`` (:func:`dem.loose.insert_loose`, seeded by ``run.seed``), renumbered in
    spatial order (the sampled order is random: contact partners then lie close in memory).
    Raises ScenarioError when the given column is too low for the particles."""
    from dem.loose import LooseInsertionError, in_spatial_order, insert_loose

    d = scen.die
    h_um = d.fill_height_um or d.column_height_um
    try:
        loose = insert_loose(diameters_m, d.base_x_um * 1e-6, d.base_y_um * 1e-6,
                             column_height_m=None if h_um is None else h_um * 1e-6,
                             target_fraction=d.loose_fraction, seed=scen.run.seed)
    except LooseInsertionError as exc:
        key = "die.fill_height_um" if d.fill_height_um is not None else "die.column_height_um"
        raise ScenarioError(f"{key}: the loose fill cannot be inserted: {exc.placed} of {exc.n} particles placed "
                            f"at solid fraction {exc.fraction:.3f} in a column {exc.height_m * 1e6:.4g} µm high "
                            f"(insertion jams near 0.35–0.4); give {key} ≥ {exc.need_height_m * 1e6:.4g} µm "
                            "(solid fraction 0.30), or leave it out and set die.loose_fraction") from None
    return in_spatial_order(loose)


def prepare(scen: Scenario, diameters_m: np.ndarray | None = None, loose: Packing | None = None, *,
            backend: str | None = None, **params) -> CompactionCase:
    """The engine inputs of ``scen``: sizes and loose packing (made here unless given, e.g. from a checkpoint),
    Material, Die (at the loose packing's height), Stages with their CaptureSpecs, SimParams. ``params``
    replace SimParams fields the scenario does not hold (``solid_fraction_points``) or holds within narrower
    bounds (``max_overlap_fraction``). Raises ScenarioError when an explicit ``numerics.dt_s`` is too large
    for the smallest particle drawn."""
    from dem.preflight import check_time_step

    _, material, die, stages, sim_params = to_engine(scen, backend=backend)
    d = make_sizes(scen) if diameters_m is None else np.asarray(diameters_m, float)
    loose = make_loose(scen, d) if loose is None else loose
    r_min = float(np.min(loose.radii_m))
    d_ms = scen.numerics.mass_scaling_min_diameter_um
    check_time_step(scen, max(r_min, 0.5e-6 * d_ms) if d_ms else r_min)
    return CompactionCase(scenario=scen, diameters_m=d, loose=loose, material=material,
                          die=dataclasses.replace(die, fill_height_m=float(loose.box_m[2])), stages=stages,
                          captures=capture_specs(stages), params=dataclasses.replace(sim_params, **params))


def compact(case: CompactionCase, **kw) -> CompactionResult:
    """:func:`dem.simulation.run_compaction` of ``case`` (seeded by ``run.seed``); ``kw``: progress, on_row,
    checkpoint, resume."""
    from dem.simulation import run_compaction      # looked up at call time (tests stand in for the engine)

    return run_compaction(case.loose, case.material, case.die, case.stages, case.params, seed=case.seed, **kw)


def packing_sha256(packing: Packing) -> str:
    """SHA-256 of a packing's centres, radii and box (float64 bytes): equal only for bitwise equal packings."""
    h = hashlib.sha256()
    for a in (packing.centers_m, packing.radii_m, packing.box_m):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()

"""DEM benchmark: throughput of the compaction engine on a packed state under load, the study case end to
end, and the same packing in LIGGGHTS (Hertz–Mindlin).

Run from the repository root::

    python benchmarks/bench_dem.py                              # CPU, 1k and 10k particles
    python benchmarks/bench_dem.py --backend cuda --sizes 1000,10000,100000,1000000 --liggghts \\
        --study --study-max-overlap 1.5
    python benchmarks/bench_dem.py --study --study-particles 1000 --study-max-overlap 1.5   # reduced, CPU
    python benchmarks/bench_dem.py --quick                          # smoke run (seconds)

What is timed
-------------
1. One small base packing (``benchmarks/bench_base.toml``: ``--base-particles``, default 1000, gamma PSD of
   the study truncated to a moderate window so that it compacts fast, Thornton–Ning material) is set up and
   compressed as ``pelletsim run`` would (``dem.setup``) to ``--base-pressure-mpa`` (default 150 MPa) and
   cached as .npz in ``--cache-dir`` (reruns and other backends reuse it).
2. The base is tiled kx × ky times in x and y (the die is periodic in x and y, so every contact of the base,
   including those across the periodic faces, is preserved) to reach each requested size N.
3. For each N a :class:`dem.simulation.Simulation` is built on the tiled state with the punch held at its
   loaded position; ``--warmup`` steps run first (compilation, settling after the restart), then
   ``--repeats`` runs of ``--steps`` steps through ``Simulation.advance`` (the engine's own loop:
   blocks of steps of dem.block, one host call and one record read each), each bracketed by
   ``fva.backend.sync()``. Reported: median wall time per step, particle-steps per second, neighbour
   rebuilds during the timed runs and their share of the time (rebuild count × the median time of
   separately timed forced rebuilds / timed wall time), and memory per particle (bytes of every Taichi
   ndarray the simulation and its neighbour list hold, at their capacities). The restart takes the
   captured, already volume-corrected radii as the original ones, so the volume correction is off in the
   timed loop and one call of it is timed on its own (its share at one call per 50 steps is reported).

``--study`` runs the study case (``scenarios/schneider2023_variable_pressure.toml``: 9591 particles,
gamma a = 1.94431, b = 7.04802 µm truncated to the scenario's window, 210 × 210 µm die, load to 1.7 GPa,
release) end to end through ``dem.setup``: sizes → loose packing → compaction, with wall time, steps and
the relative density at
0.5 GPa, 1.7 GPa and after release. ``--study-particles N`` keeps the die, PSD and protocol and uses N
particles (a thinner pellet): the cost grows about as N² (particles × column height), so use it on a CPU.
``--study-max-overlap`` replaces the scenario's ``max_overlap_fraction`` (the scenario schema caps it at 1;
with this wide PSD the engine needs more). When the engine stops, the row keeps the error and the figures
reached so far (from the progress reports).

``--liggghts`` runs the 10k-particle tiled packing in LIGGGHTS (``benchmarks.peers.liggghts``, 1 and 2 MPI
ranks) and in pelletsim, both with Hertz–Mindlin, the same dt, mass (density × mass scaling) and steps;
the ratio of particle-steps per second is the figure (pelletsim without volume correction, as LIGGGHTS).

Output: JSON (``--out``, default ``benchmarks/results/dem_<backend>.json``, ``..._quick.json`` with
``--quick``; written atomically) and a markdown table on stdout. A section that fails (engine error, out
of memory) becomes an ``error`` entry and the others still run. Figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fva.atomic import atomic_path, write_json  # noqa: E402
from fva.types import Packing  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STUDY_SCENARIO = ROOT / "scenarios" / "schneider2023_variable_pressure.toml"
QUICK_CACHE = Path(tempfile.gettempdir()) / "pelletsim_bench_dem"

TARGETS = {
    "dem_particle_steps_per_s_10k_H100": 2e8,
    "dem_particle_steps_per_s_1M_H100": 1e9,
    "study_end_to_end_s_H100": 60.0,
    "study_end_to_end_s_2core_cpu": 15 * 60.0,
    "cpu_ratio_vs_liggghts_2_cores": 1.0,
}

# Base packing: benchmarks/bench_base.toml (the study's gamma PSD in a moderate window, a soft Thornton–Ning
# material, one load stage), with these overrides under --quick
BASE_SCENARIO = ROOT / "benchmarks" / "bench_base.toml"
QUICK_SETS = ["particles.d_min_um=12.0", "particles.d_max_um=20.0", "die.base_x_um=60.0", "die.base_y_um=60.0",
              "protocol.0.punch_speed_m_per_s=0.5"]
MAX_OVERLAP = 1.5   # passed to the engine apart (the scenario schema caps it at 1; see bench_base.toml)


def _say(msg: str) -> None:
    print(f"[bench_dem] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- helpers
def engine():
    """Import the engine lazily (a clear message when it is missing)."""
    try:
        from dem import simulation
    except ImportError as exc:  # pragma: no cover - depends on the tree
        raise SystemExit(f"bench_dem: the DEM engine (dem.simulation) is not importable: {exc}") from exc
    return simulation


def material(contact_model: str = "thornton_ning"):
    """The base scenario's material, with another contact model (Hertz–Mindlin: no yield stress)."""
    from dem.scenario import MaterialSection, engine_material, load_scenario

    kw = dict(load_scenario(BASE_SCENARIO).material.model_dump(), contact_model=contact_model)
    if contact_model != "thornton_ning":
        kw["yield_stress_MPa"] = None
    return engine_material(MaterialSection(**kw))


def sim_params(backend: str, **over):
    """The base scenario's SimParams (f64, max_overlap_fraction = MAX_OVERLAP), with ``over`` replaced."""
    from dem.scenario import load_scenario, to_engine

    params = to_engine(load_scenario(BASE_SCENARIO), backend=backend)[4]
    return dataclasses.replace(params, max_overlap_fraction=MAX_OVERLAP, default_fp="f64", **over)


def tiles_for(n_target: int, n_base: int) -> tuple[int, int]:
    """(kx, ky) with kx·ky·n_base closest to n_target, then the squarest; kx ≤ ky."""
    best = None
    kmax = max(1, int(math.ceil(math.sqrt(n_target / n_base) * 2)) + 2)
    for kx in range(1, kmax + 1):
        for ky in range(kx, 4 * kmax + 1):
            err = abs(kx * ky * n_base - n_target) / n_target
            key = (round(err, 3), ky / kx)
            if best is None or key < best[0]:
                best = (key, (kx, ky))
    return best[1]


def tile(packing: Packing, kx: int, ky: int) -> Packing:
    """Periodic copies of ``packing`` kx times along x and ky times along y (contacts preserved), renumbered in
    spatial order (``dem.loose.in_spatial_order``, as ``pelletsim run`` numbers its loose packing; LIGGGHTS
    sorts its atoms spatially too)."""
    Lx, Ly, H = (float(b) for b in packing.box_m)
    ox, oy = np.meshgrid(np.arange(kx) * Lx, np.arange(ky) * Ly, indexing="ij")
    off = np.stack([ox.ravel(), oy.ravel(), np.zeros(kx * ky)], axis=1)  # (k, 3)
    c = (packing.centers_m[None, :, :] + off[:, None, :]).reshape(-1, 3)
    r = np.tile(packing.radii_m, kx * ky)
    from dem.loose import in_spatial_order

    return in_spatial_order(Packing(
        centers_m=c,
        radii_m=r,
        box_m=np.array([kx * Lx, ky * Ly, H]),
        periodic=(True, True, False),
        pressure_Pa=packing.pressure_Pa,
        label=f"{packing.label} tiled {kx}x{ky}",
    ))


def restartable(packing: Packing, punch_z: float) -> tuple[Packing, float]:
    """A loaded state the engine accepts as input: ``Simulation`` rejects particles that overlap the walls
    (z − r < 0 or z + r > H), which every particle touching a wall under load does. Translate the packing
    rigidly up by the largest bottom-wall overlap (interparticle contacts and the punch contacts are kept,
    the punch moves with it) and give a box tall enough to hold every sphere; the punch position is passed
    separately. Returns (packing, punch_z)."""
    c = packing.centers_m.copy()
    r = packing.radii_m
    shift = max(0.0, float(np.max(r - c[:, 2]))) * 1.001
    c[:, 2] += shift
    pz = float(punch_z) + shift
    H = max(pz, float(np.max(c[:, 2] + r))) * (1 + 1e-9)
    return dataclasses.replace(
        packing, centers_m=c, box_m=np.array([packing.box_m[0], packing.box_m[1], H])
    ), pz


def start_loaded(sim_mod, packing: Packing, punch_z: float, mat, params):
    """A Simulation on a loaded state with the punch at ``punch_z``. Engines that accept wall overlaps
    (up to max_overlap_fraction·r) take the state as it is; otherwise it is translated (``restartable``).
    Returns (sim, state, punch_z, how)."""
    from dem.types import Die

    state = dataclasses.replace(packing, box_m=np.array([packing.box_m[0], packing.box_m[1], punch_z]))
    how = "as captured"
    try:
        die = Die(float(state.box_m[0]), float(state.box_m[1]), float(punch_z))
        sim = sim_mod.Simulation(state, mat, die, params, punch_z=punch_z, solid_fraction_points=0)
    except ValueError as exc:
        if "outside the box" not in str(exc):
            raise
        state, punch_z = restartable(packing, punch_z)
        how = "translated up by the largest bottom-wall overlap"
        die = Die(float(state.box_m[0]), float(state.box_m[1]), float(state.box_m[2]))
        sim = sim_mod.Simulation(state, mat, die, params, punch_z=punch_z, solid_fraction_points=0)
    return sim, state, punch_z, how


def ndarray_bytes(*objs) -> tuple[int, dict]:
    """Bytes of every Taichi ndarray held as an attribute of ``objs`` (at their allocated capacity)."""
    from fva.backend import ti

    size = {"f64": 8, "f32": 4, "i32": 4, "i64": 8, "u32": 4, "u64": 8, "i16": 2, "u16": 2, "i8": 1, "u8": 1}
    total, by = 0, {}
    seen = set()
    for o in objs:
        for name, a in vars(o).items():
            if isinstance(a, ti.lang._ndarray.Ndarray) and id(a) not in seen:
                seen.add(id(a))
                b = int(np.prod(a.shape)) * size.get(str(a.dtype), 8)
                by[f"{type(o).__name__}.{name}"] = b
                total += b
    return total, by


def _load_avg():
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return None


def _git_commit():
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except Exception:  # pragma: no cover
        return None


# ----------------------------------------------------------------------------------------- base packing
def base_scenario(n: int, p_target_Pa: float, backend: str, sets: list[str] = ()):
    """The base packing's scenario: ``bench_base.toml`` with ``n`` particles, loaded to ``p_target_Pa``."""
    from dem.scenario import load_scenario

    return load_scenario(BASE_SCENARIO, [*sets, f"particles.count={int(n)}",
                                         f"protocol.0.target_pressure_MPa={p_target_Pa / 1e6!r}",
                                         f'run.backend="{backend}"'])


def _base_key(scen) -> str:
    """Cache name of a base packing: its particle count and a hash of its resolved scenario (backend aside)."""
    import hashlib

    from dem.scenario import resolved_dict, to_toml

    data = resolved_dict(scen)
    data["run"].pop("backend")
    return f"dem_base_n{scen.particles.count}_{hashlib.sha256(to_toml(data).encode()).hexdigest()[:12]}"


def build_base(scen, cache_dir: Path, rebuild: bool) -> dict:
    """The compressed base packing of ``scen`` (:func:`base_scenario`; cached), set up as ``pelletsim run`` does
    (:mod:`dem.setup`). Returns dict(packing, punch_z, info)."""
    from dem.setup import compact, prepare

    sim_mod = engine()
    n, p_target_Pa = scen.particles.count, scen.protocol[0].target_Pa()
    cache = Path(cache_dir) / (_base_key(scen) + ".npz")
    cache_name = (
        str(cache.resolve().relative_to(ROOT)) if cache.resolve().is_relative_to(ROOT) else str(cache)
    )
    if cache.exists() and not rebuild:
        base = _read_base(cache, cache_name, p_target_Pa, cached=True)
        if base["info"]["reached_target"]:
            _say(f"base packing from cache {cache.name} ({n} particles, {base['info']['pressure_Pa'] / 1e6:.0f} MPa)")
            return base
        _say(f"cached base {cache.name} did not reach the target pressure: compacting again")

    case = prepare(scen, max_overlap_fraction=MAX_OVERLAP)
    d, loose, L = case.diameters_m, case.loose, case.die.base_x_m
    v_solid = float(np.sum(np.pi / 6 * d**3))
    _say(
        f"base packing: {n} particles, d {d.min() * 1e6:.1f}–{d.max() * 1e6:.1f} µm, "
        f"die {L * 1e6:g} µm, "
        f"loose height {loose.box_m[2] * 1e6:.0f} µm; compacting to {p_target_Pa / 1e6:g} MPa ..."
    )
    t0 = time.perf_counter()
    error = None
    try:
        res = compact(case)
        fin = res.final
        punch_z = float(fin.box_m[2])
        p_reached = float(fin.pressure_Pa)
        steps = int(res.info.get("n_steps", 0))
        method = "run_compaction"
    except sim_mod.SimulationError as exc:
        # keep the last good loaded state so that the throughput figures can still be taken
        error = str(exc)
        _say(
            f"run_compaction failed ({error[:160]}...); falling back to the last good state of a "
            f"Simulation loop at the same settings"
        )
        fin, punch_z, p_reached, steps = _fallback_compaction(sim_mod, case)
        method = "Simulation loop (run_compaction failed)"
    wall = time.perf_counter() - t0
    rel = v_solid / (L * L * punch_z)
    reached = bool(p_reached >= 0.99 * p_target_Pa)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        np.savez_compressed(tmp, centers_m=fin.centers_m, radii_m=fin.radii_m, box_m=np.array([L, L, punch_z]),
                            punch_z=punch_z, pressure_Pa=p_reached, relative_density=rel, build_wall_s=wall,
                            build_steps=steps, reached_target=reached, method=np.str_(method))
    _say(
        f"base packing: {p_reached / 1e6:.1f} MPa, relative density {rel:.3f}, {steps} steps, {wall:.1f} s "
        f"-> {cache.name}"
    )
    base = _read_base(cache, cache_name, p_target_Pa, cached=False)
    base["info"]["engine_error"] = error
    return base


def _read_base(cache: Path, cache_name: str, p_target_Pa: float, cached: bool) -> dict:
    """dict(packing, punch_z, info) of a base packing saved by :func:`build_base`."""
    with np.load(cache, allow_pickle=False) as z:
        pk = Packing(centers_m=z["centers_m"], radii_m=z["radii_m"], box_m=z["box_m"],
                     pressure_Pa=float(z["pressure_Pa"]), label="bench base")
        info = dict(cache=cache_name, cached=cached, method=str(z["method"]), n=pk.n,
                    target_pressure_Pa=p_target_Pa, pressure_Pa=float(z["pressure_Pa"]),
                    relative_density=float(z["relative_density"]), build_wall_s=float(z["build_wall_s"]),
                    build_steps=int(z["build_steps"]), reached_target=bool(z["reached_target"]))
        return dict(packing=pk, punch_z=float(z["punch_z"]), info=info)


def _fallback_compaction(sim_mod, case):
    st = case.stages[0]
    p_target = st.target_pressure_Pa
    sim = sim_mod.Simulation(case.loose, case.material, case.die, case.params, solid_fraction_points=0)
    sim.set_punch_velocity(-st.punch_speed_m_per_s)
    good = [(sim.packing(0.0), sim.punch_z, 0.0, 0)]
    try:
        while True:
            sim.advance(200)
            p = sim.pressures()[0]
            good = (good + [(sim.packing(p), sim.punch_z, p, sim.step_count)])[-3:]
            if p >= p_target:
                return good[-1]
    except sim_mod.SimulationError as exc:
        # the last states before the failure already hold the offending contact: step back ~400 steps
        _say(f"fallback stopped at step {sim.step_count}: {exc}")
    _say(f"fallback: using the state at step {good[0][3]} ({good[0][2] / 1e6:.1f} MPa)")
    return good[0]


# ------------------------------------------------------------------------------------- throughput runs
def _timed(sim, nsteps: int) -> float:
    from fva.backend import sync

    sync()
    t = time.perf_counter()
    sim.advance(nsteps, "benchmark")
    sync()
    return time.perf_counter() - t


def _median_call_s(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` between two device synchronisations."""
    from fva.backend import sync

    ts = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _volume_correction_s(sim, repeats: int = 3):
    """Median time of one volume-correction call (the engine runs one every ``volume_every`` steps)."""
    return _median_call_s(sim.volume_correction, repeats) if hasattr(sim, "volume_correction") else None


def _forced_rebuild_s(sim, repeats: int = 3) -> float:
    return _median_call_s(sim._rebuild, repeats)


def _launch_overhead_s(sim, blocks: int = 20, repeats: int = 5) -> dict:
    """Fixed cost of one block of steps (:mod:`dem.block`): the engine's block graph replayed with zero particles
    and pairs (empty loops; the punch and clock words it advances are restored); the minimum over ``repeats``
    batches of ``blocks``. Per block and per step."""
    from fva.backend import sync

    if not hasattr(sim, "_dispatches"):
        return {}
    ctrl = sim.ctrl.to_numpy()
    k = int(sim.block_steps)
    vals = sim._values()
    vals.update(n=0, npairs=0, p_above=math.inf, p_below=-math.inf)
    key = ("empty block", k)

    def seq():
        return sim._dispatches(k, -1)
    try:
        sim._graph.run(key, seq, vals)
        best = math.inf
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            for _ in range(blocks):
                sim._graph.run(key, seq, vals)
            sync()
            best = min(best, (time.perf_counter() - t) / blocks)
    finally:
        sim.ctrl.from_numpy(ctrl)
        sim._measure()
    return dict(block_s=best, block_steps=k, per_step_s=best / k, graph=bool(sim._graph.use_graph))


def _overlaps(sim) -> np.ndarray:
    """Overlap fraction of every Verlet pair (public pair table)."""
    try:
        try:
            t = sim.pair_table(history=False)
        except TypeError:
            t = sim.pair_table()
        return np.asarray(t["overlap_fraction"])
    except Exception:  # a diagnostic figure only
        return np.zeros(0)


def bench_size(
    base: dict,
    n_target: int,
    backend: str,
    *,
    contact_model="thornton_ning",
    steps=None,
    repeats=5,
    warmup=50,
    target_s=2.0,
    params_over=None,
) -> dict:
    """Time the engine loop on the base tiled to about ``n_target`` particles."""
    sim_mod = engine()
    pk0 = base["packing"]
    kx, ky = tiles_for(n_target, pk0.n)
    tiled = tile(pk0, kx, ky)
    # The restart takes the captured (volume-corrected) radii as the engine's original radii, so a volume
    # correction in the timed loop would inflate them again: it is off there and timed on its own below.
    over = dict(volume_correction=False)
    over.update(params_over or {})
    params = sim_params(backend, **over)
    _say(f"N = {tiled.n} ({kx}x{ky} tiles), {contact_model}: building the simulation ...")
    t = time.perf_counter()
    sim, state, punch_z, restart = start_loaded(
        sim_mod, tiled, base["punch_z"], material(contact_model), params
    )
    from fva.backend import sync

    sync()
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    sim.advance(warmup, "warm-up")
    sync()
    warm_s = time.perf_counter() - t
    if steps is None:
        probe = max(10, min(200, warmup))
        tp = _timed(sim, probe)
        per = tp / probe
        steps = int(min(20000, max(20, math.ceil(target_s / max(per, 1e-9)))))
        steps = int(math.ceil(steps / 10.0) * 10)
    from fva.backend import host_traffic

    builds0 = sim.nlist.builds
    traffic0 = host_traffic()
    times = [_timed(sim, steps) for _ in range(repeats)]
    launches, syncs = (b - a for a, b in zip(traffic0, host_traffic()))
    builds = sim.nlist.builds - builds0
    med = statistics.median(times)
    # state figures first: a forced rebuild reorders the pairs and leaves the per-pair arrays stale
    npairs = int(sim.nlist.npairs)
    ov = _overlaps(sim)
    p_top, p_bot = sim.pressures()
    rebuild_s = _forced_rebuild_s(sim)
    vc_s = _volume_correction_s(sim)
    launch_s = _launch_overhead_s(sim)
    vc_every = int(getattr(sim, "volume_every", 50) or 50)
    mem, by = ndarray_bytes(sim, sim.nlist)
    row = dict(
        n_target=n_target,
        n=state.n,
        tiles=[kx, ky],
        box_m=[float(b) for b in state.box_m],
        punch_z_m=float(punch_z),
        restart=restart,
        contact_model=contact_model,
        dt_s=float(sim.dt),
        warmup_steps=warmup,
        warmup_s=warm_s,
        setup_s=setup_s,
        steps=steps,
        repeats=repeats,
        times_s=times,
        median_s=med,
        wall_per_step_s=med / steps,
        particle_steps_per_s=state.n * steps / med,
        # kernel launches and device-to-host reads/syncs the engine issued in the timed loop, per step
        host_launches_per_step=launches / (steps * repeats),
        host_syncs_per_step=syncs / (steps * repeats),
        neighbour_builds=builds,
        neighbour_builds_per_1000_steps=1000.0 * builds / (steps * repeats),
        rebuild_s=rebuild_s,
        launch_overhead_s=launch_s,
        rebuild_in_steps=rebuild_s / (med / steps),
        rebuild_share=min(1.0, builds * rebuild_s / sum(times)),
        volume_correction_in_timed_loop=bool(params.volume_correction),
        volume_correction_s=vc_s,
        volume_correction_every_steps=vc_every,
        volume_correction_share_if_on=(
            None if vc_s is None else (vc_s / vc_every) / (med / steps + vc_s / vc_every)
        ),
        memory_bytes=mem,
        bytes_per_particle=mem / state.n,
        memory_breakdown=by,
        pair_capacity=int(sim.nlist.capacity),
        pairs=npairs,
        pairs_per_particle=npairs / state.n,
        contacts_per_particle=2.0 * float(np.count_nonzero(ov > 0)) / state.n,
        p_top_Pa=float(p_top),
        p_bottom_Pa=float(p_bot),
    )
    _say(
        f"N = {state.n}: {row['particle_steps_per_s']:.3g} particle-steps/s, "
        f"{1e3 * row['wall_per_step_s']:.3g} ms/step, "
        f"{builds} rebuilds, {row['bytes_per_particle']:.0f} B/particle, p_top {p_top / 1e6:.0f} MPa"
    )
    del sim
    gc.collect()
    return row


# ------------------------------------------------------------------------------------------- study case
def _crossing(h: dict, p_Pa: float, stages, key: str):
    """``key`` at the first row of the ``stages`` (indices) where p_top reaches p_Pa (linear between rows)."""
    p, s, y = h["p_top_Pa"], h["stage"], h[key]
    idx = np.nonzero(np.isin(s, list(stages)))[0]
    if idx.size == 0:
        return None
    for a, b in zip(idx[:-1], idx[1:]):
        if p[a] < p_Pa <= p[b]:
            f = (p_Pa - p[a]) / (p[b] - p[a]) if p[b] != p[a] else 1.0
            return float(y[a] + f * (y[b] - y[a]))
    k = idx[np.argmin(np.abs(p[idx] - p_Pa))]
    return float(y[k]) if abs(p[k] - p_Pa) <= 0.02 * p_Pa else None


def run_study(backend: str, n_particles: int | None, overrides: list[str], max_overlap=None,
              scenario: Path = STUDY_SCENARIO) -> dict:
    """The study case end to end through the set-up path of ``pelletsim run`` (:mod:`dem.setup`): the same
    sizes, loose packing (in spatial order) and compaction; ``final_packing_sha256`` fingerprints the result."""
    from dem.scenario import load_scenario
    from dem.setup import compact, make_loose, make_sizes, packing_sha256, prepare

    sim_mod = engine()
    ov = list(overrides or [])
    if n_particles:
        ov.insert(0, f"particles.count={int(n_particles)}")
    scen = load_scenario(scenario, ov)
    # the scenario schema caps max_overlap_fraction at 1; the engine takes any value (~1.5 for wide PSDs)
    over = {} if max_overlap is None else dict(max_overlap_fraction=float(max_overlap))
    full = scen.particles.count == 9591
    modified = bool(overrides) or max_overlap is not None
    last = [0.0]
    seen = {}

    track = []  # (stage index, p_top, punch z) from the progress reports: figures of a failed run

    def progress(d):
        seen.update(d)
        track.append((d.get("stage_index", -1), d.get("p_top_Pa", np.nan), d.get("punch_z_m", np.nan)))
        now = time.perf_counter()
        if now - last[0] >= 15:
            last[0] = now
            _say(
                f"  study: {d['stage']}, step {d['step']}, p_top {d['p_top_Pa'] / 1e6:.1f} MPa, "
                f"{d['particle_steps_per_s']:.3g} particle-steps/s"
            )

    t0 = time.perf_counter()
    d = make_sizes(scen)
    t_sizes = time.perf_counter() - t0
    loose = make_loose(scen, d)
    t_loose = time.perf_counter() - t0 - t_sizes
    case = prepare(scen, d, loose, backend=backend, **over)
    die, stages, params = case.die, case.stages, case.params
    _say(
        f"study case: {d.size} particles ({'full' if full else 'reduced'}"
        f"{', modified' if modified else ''}), die "
        f"{die.base_x_m * 1e6:.0f}x{die.base_y_m * 1e6:.0f} µm, "
        f"{' → '.join(f'{s.kind} {s.target_pressure_Pa / 1e9:g} GPa' for s in stages)}"
    )
    row = dict(
        scenario=str(Path(scenario).resolve().relative_to(ROOT)) if Path(scenario).resolve().is_relative_to(ROOT)
        else str(scenario),
        overrides=ov,
        max_overlap_fraction=params.max_overlap_fraction,
        full_size=full,
        modified=modified,
        n=int(d.size),
        d_min_m=float(d.min()),
        d_max_m=float(d.max()),
        die_m=[die.base_x_m, die.base_y_m],
        loose_height_m=float(loose.box_m[2]),
        loose_solid_fraction=float(np.sum(np.pi / 6 * d**3) / (die.area_m2 * loose.box_m[2])),
        stages=[
            dict(
                kind=s.kind,
                target_pressure_Pa=s.target_pressure_Pa,
                punch_speed_m_per_s=s.punch_speed_m_per_s,
            )
            for s in stages
        ],
        sizes_s=t_sizes,
        loose_s=t_loose,
    )
    t1 = time.perf_counter()
    try:
        res = compact(case, progress=progress)
    except sim_mod.SimulationError as exc:
        row.update(
            ok=False,
            error=str(exc),
            wall_s=time.perf_counter() - t0,
            compaction_s=time.perf_counter() - t1,
            last_progress=dict(seen),
        )
        # the engine returns no partial history on failure: approximate figures from the progress reports
        # (every ~0.5 s), relative density = solid volume / (die area × punch position), as the engine's
        v_solid = float(np.sum(np.pi / 6 * d**3))
        if track:
            tr = np.array(track, dtype=float)
            rho = v_solid / (die.area_m2 * tr[:, 2])
            k = int(np.nanargmax(tr[:, 1]))
            hist = dict(p_top_Pa=tr[:, 1], relative_density=rho, stage=tr[:, 0].astype(int))
            load_idx = [i for i, st in enumerate(stages) if st.kind == "load"]
            row.update(
                from_progress=True,
                p_max_reached_Pa=float(tr[k, 1]),
                relative_density_at_p_max=float(rho[k]),
                relative_density_0_5GPa=_crossing(hist, 0.5e9, load_idx, "relative_density"),
                steps_done=int(seen.get("step", 0)),
            )
        _say(f"study case failed: {exc}")
        return row
    t_end = time.perf_counter()  # run_compaction ends with host reads: the device is idle here
    h = {k: np.asarray(v) for k, v in res.history.items()}
    # the load stages up to the highest target (a scenario may start with a gentle settling load)
    top = max(range(len(stages)), key=lambda k: (stages[k].kind == "load", stages[k].target_pressure_Pa))
    load = [k for k in range(top + 1) if stages[k].kind == "load"]
    at_max = np.nonzero(np.isin(h["stage"], load))[0]
    p_max = float(np.max(h["p_top_Pa"][at_max])) if at_max.size else float("nan")
    k_max = at_max[np.argmax(h["p_top_Pa"][at_max])] if at_max.size else -1
    row.update(
        ok=True,
        wall_s=t_end - t0,
        compaction_s=t_end - t1,
        steps=int(res.info.get("n_steps", 0)),
        dt_s=float(res.info.get("dt_s", float("nan"))),
        particle_steps_per_s=float(res.info.get("n_steps", 0)) * d.size / (t_end - t1),
        neighbour_builds=res.info.get("neighbour_builds"),
        host_launches_per_step=res.info.get("host_launches_per_step"),
        host_syncs_per_step=res.info.get("host_syncs_per_step"),
        relative_density_0_5GPa=_crossing(h, 0.5e9, load, "relative_density"),
        solid_fraction_0_5GPa=_crossing(h, 0.5e9, load, "solid_fraction"),
        p_max_Pa=p_max,
        relative_density_1_7GPa=float(h["relative_density"][k_max]) if k_max >= 0 else None,
        solid_fraction_1_7GPa=float(h["solid_fraction"][k_max]) if k_max >= 0 else None,
        relative_density_released=float(h["relative_density"][-1]),
        solid_fraction_released=float(h["solid_fraction"][-1]),
        p_released_Pa=float(h["p_top_Pa"][-1]),
        warnings=list(res.info.get("warnings", [])),
        final_packing_sha256=None if res.final is None else packing_sha256(res.final),
    )
    _say(
        f"study case: {row['wall_s']:.1f} s end to end, {row['steps']} steps, ρ_rel "
        f"{row['relative_density_0_5GPa']} @0.5 GPa, {row['relative_density_1_7GPa']} "
        f"@{p_max / 1e9:.2f} GPa, "
        f"{row['relative_density_released']:.4f} released"
    )
    return row


# ----------------------------------------------------------------------------------------------- peers
def run_liggghts(
    base: dict, backend: str, n_target: int, steps: int, warmup: int, nprocs_list=(1, 2), repeats: int = 3
) -> dict:
    from benchmarks.peers import liggghts

    out = dict(n_target=n_target, steps=steps, contact_model="hertz_mindlin", rows=[])
    exe = liggghts.available()
    if exe is None:
        out["skipped"] = "liggghts not installed (Debian: apt-get install liggghts); peer comparison skipped"
        _say(out["skipped"])
        return out
    mine = bench_size(
        base,
        n_target,
        backend,
        contact_model="hertz_mindlin",
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        params_over=dict(volume_correction=False),
    )
    out["pelletsim"] = mine
    pk0 = base["packing"]
    kx, ky = tiles_for(n_target, pk0.n)
    state = tile(pk0, kx, ky)
    if mine.get("restart", "").startswith("translated"):
        state, punch_z = restartable(state, base["punch_z"])
    else:
        punch_z = base["punch_z"]
    box = np.array([state.box_m[0], state.box_m[1], punch_z])
    m = material("hertz_mindlin")
    mass_scaling = sim_params(backend).mass_scaling
    for npr in nprocs_list:
        runs = []
        try:
            for _ in range(max(1, repeats)):
                runs.append(
                    liggghts.run(
                        state.centers_m,
                        state.radii_m,
                        box,
                        youngs_modulus_Pa=m.youngs_modulus_Pa,
                        poisson_ratio=m.poisson_ratio,
                        restitution=m.restitution,
                        friction=m.friction,
                        density_kg_m3=m.density_kg_m3 * mass_scaling,
                        dt_s=mine["dt_s"],
                        steps=steps,
                        nprocs=npr,
                    )
                )
        except Exception as exc:  # a failed peer is a line in the report, not a crash
            r = dict(tool="LIGGGHTS", procs=npr, error=str(exc)[:500])
            _say(f"LIGGGHTS on {npr} rank(s) failed: {str(exc)[:200]}")
        else:
            rates = [x["particle_steps_per_s"] for x in runs]
            r = dict(runs[0], loop_s=statistics.median(x["loop_s"] for x in runs))
            r.update(
                repeats=len(runs),
                particle_steps_per_s_runs=rates,
                particle_steps_per_s=statistics.median(rates),
            )
            r["pelletsim_over_peer"] = mine["particle_steps_per_s"] / r["particle_steps_per_s"]
            _say(
                f"LIGGGHTS {npr} rank(s): {r['particle_steps_per_s']:.3g} particle-steps/s (median of "
                f"{len(runs)}); pelletsim/LIGGGHTS = {r['pelletsim_over_peer']:.2f}"
            )
        out["rows"].append(r)
    return out


# ------------------------------------------------------------------------------------------------ report
def _one_line(text, limit: int = 300) -> str:
    t = " ".join(str(text or "?").split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def markdown(res: dict) -> str:
    L = [
        f"### DEM benchmark — {res['device']} ({res['backend']}), {res['date']}",
        "",
        "| N | tiles | model | steps × repeats | ms/step | particle-steps/s | rebuilds | rebuild share | "
        "B/particle | pairs/particle | contacts/particle |",
        "|---:|:---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["sizes"]:
        if "error" in r:
            L.append(f"| {r['n_target']:,} | – | – | – | – | failed: {_one_line(r['error'], 80)} | | | | | |")
            continue
        L.append(
            f"| {r['n']:,} | {r['tiles'][0]}×{r['tiles'][1]} | {r['contact_model']} "
            f"| {r['steps']} × {r['repeats']} "
            f"| {1e3 * r['wall_per_step_s']:.3g} | {r['particle_steps_per_s']:.3g} | {r['neighbour_builds']} "
            f"| {100 * r['rebuild_share']:.1f} % | {r['bytes_per_particle']:.0f} "
            f"| {r['pairs_per_particle']:.1f} | {r['contacts_per_particle']:.1f} |"
        )
    lo = [r for r in res["sizes"] if (r.get("launch_overhead_s") or {}).get("block_s")]
    if lo:
        r = lo[0]["launch_overhead_s"]
        L += ["", f"Fixed cost of one block of {r['block_steps']} steps with no particles: {1e6 * r['block_s']:.0f} µs "
                  f"({1e6 * r['per_step_s']:.0f} µs per step; {'graph replay' if r['graph'] else 'plain launches'})."]
    b = res.get("base") or {}
    if b:
        L += [
            "",
            f"Base: {b['n']} particles at {b['pressure_Pa'] / 1e6:.0f} MPa (relative density "
            f"{b['relative_density']:.3f}; {b['method']}{', cached' if b.get('cached') else ''}).",
        ]
    st = res.get("study")
    if st:
        L += [""]
        if st.get("ok"):

            def f(x):
                return "–" if x is None else f"{x:.4f}"

            L += [
                "| study case | N | wall s | steps | particle-steps/s | ρ_rel 0.5 GPa | ρ_rel max (p_max) | "
                "ρ_rel released |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
                f"| {'full' if st['full_size'] else 'reduced'} | {st['n']:,} | {st['wall_s']:.1f} "
                f"| {st['steps']:,} | "
                f"{st['particle_steps_per_s']:.3g} | {f(st['relative_density_0_5GPa'])} | "
                f"{f(st['relative_density_1_7GPa'])} ({st['p_max_Pa'] / 1e9:.2f} GPa) | "
                f"{f(st['relative_density_released'])} |",
            ]
        else:
            lp = st.get("last_progress") or {}
            st.setdefault("wall_s", 0.0)
            where = f" (last seen: step {lp['step']}, p_top {lp['p_top_Pa'] / 1e6:.1f} MPa)" if lp else ""
            if st.get("from_progress"):
                r05 = st.get("relative_density_0_5GPa")
                where += (
                    f"; up to then ρ_rel ≈ {'–' if r05 is None else f'{r05:.4f}'} at 0.5 GPa and "
                    f"{st['relative_density_at_p_max']:.4f} at {st['p_max_reached_Pa'] / 1e9:.2f} GPa "
                    f"(from the progress reports)"
                )
            L += [
                f"Study case ({st.get('n')} particles) failed after {st.get('wall_s', 0):.0f} s{where}: "
                f"{_one_line(st.get('error'))}"
            ]
    pe = res.get("peers") or {}
    if pe:
        L += [""]
        if pe.get("skipped"):
            L += [f"Peer: {pe['skipped']}"]
        elif "pelletsim" not in pe:
            L += [f"Peer comparison failed: {_one_line(pe.get('error'))}"]
        else:
            mine = pe["pelletsim"]
            L += [
                "| Hertz–Mindlin, same packing | N | steps | particle-steps/s | pelletsim / peer |",
                "|---|---:|---:|---:|---:|",
                f"| pelletsim ({res['backend']}) | {mine['n']:,} | {mine['steps']} | "
                f"{mine['particle_steps_per_s']:.3g} | 1 |",
            ]
            for r in pe["rows"]:
                if "error" in r:
                    L.append(f"| LIGGGHTS {r['procs']} rank(s) | – | – | failed | – |")
                else:
                    L.append(
                        f"| LIGGGHTS {str(r['version']).split(',')[0]}, {r['procs']} MPI rank(s) "
                        f"| {r['n_particles']:,} | "
                        f"{r['steps']} | {r['particle_steps_per_s']:.3g} | {r['pelletsim_over_peer']:.2f} |"
                    )
    return "\n".join(L)


# -------------------------------------------------------------------------------------------------- main
def _final_path(out: Path, res: dict) -> Path:
    """``out``, unless this run has no successful size row and ``out`` already holds figures: then
    ``<stem>_failed.json`` beside it (a broken engine never replaces good results)."""
    if not (res["sizes"] and all("error" in r for r in res["sizes"]) and out.exists()):
        return out
    try:
        old = json.loads(out.read_text())
        keep = any("error" not in r for r in old.get("sizes", []))
    except (OSError, ValueError):
        keep = False
    if not keep:
        return out
    failed = out.with_name(out.stem + "_failed.json")
    _say(f"every size failed: the figures in {out.name} are kept, this run goes to {failed.name}")
    return failed


def _guard(what: str, row: dict, fn, *args, **kw) -> dict:
    """Run one section; a failure (engine error, out of memory, ...) becomes an ``error`` entry."""
    try:
        return fn(*args, **kw)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        import traceback

        _say(f"{what} failed: {type(exc).__name__}: {str(exc).strip()[:300]}")
        gc.collect()
        return dict(
            row,
            error=f"{type(exc).__name__}: {str(exc).strip()}",
            traceback=traceback.format_exc(limit=4)[-2000:],
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "vulkan", "auto"])
    p.add_argument("--sizes", default="1000,10000", help="comma-separated particle counts (1e3 … 1e6)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per repeat (default: enough for ~--target-s seconds, 20 … 20000)",
    )
    p.add_argument(
        "--target-s", type=float, default=2.0, help="wall time per repeat when --steps is not given"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=100, help="untimed steps first (compilation, settling)")
    p.add_argument("--base-particles", type=int, default=1000)
    p.add_argument("--base-pressure-mpa", type=float, default=150.0)
    p.add_argument("--rebuild-base", action="store_true", help="ignore the cached base packing")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where the base packing .npz is cached (default benchmarks/results; --quick: a temp folder)",
    )
    p.add_argument("--study", action="store_true", help="run the study case end to end")
    p.add_argument("--study-particles", type=int, default=None, help="reduced study case (default 9591)")
    p.add_argument(
        "--study-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override for the study case (as `pelletsim run --set`), repeatable",
    )
    p.add_argument(
        "--study-max-overlap",
        type=float,
        default=None,
        help="params.max_overlap_fraction for the study case (default: the scenario's; the scenario schema "
        "caps it at 1, the engine advises ~1.5 for wide size distributions)",
    )
    p.add_argument("--liggghts", action="store_true", help="compare with LIGGGHTS (Hertz–Mindlin) at 10k")
    p.add_argument("--liggghts-particles", type=int, default=10000)
    p.add_argument("--liggghts-steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for Taichi (default: all cores)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (~500 particles, a few steps)")
    p.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/dem_<backend>[_quick].json)"
    )
    a = p.parse_args(argv)
    try:
        a.size_list = [int(float(s)) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {a.sizes!r}")
    if not a.size_list or min(a.size_list) < 1:
        p.error("--sizes needs at least one positive particle count")
    if a.repeats < 1 or (a.steps is not None and a.steps < 1) or a.warmup < 0:
        p.error("--repeats and --steps must be >= 1, --warmup >= 0")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    import scipy
    import taichi  # version only (fva.backend owns the runtime)

    from dem.scenario import resolved_dict
    from fva.backend import ensure_init

    info = ensure_init(a.backend, "f64", cpu_max_num_threads=a.threads)
    backend = info.backend
    if a.quick:
        base_sets, n_base, p_base = (
            QUICK_SETS,
            min(a.base_particles, 125),
            min(a.base_pressure_mpa, 20.0) * 1e6,
        )
        sizes = [4 * n_base]
        steps, repeats, warmup = (a.steps or 10), min(a.repeats, 2), min(a.warmup, 10)
    else:
        base_sets, n_base, p_base = [], a.base_particles, a.base_pressure_mpa * 1e6
        sizes, steps, repeats, warmup = a.size_list, a.steps, a.repeats, a.warmup
    # --quick never overwrites the real figures nor leaves its tiny base beside them
    out = Path(a.out) if a.out else RESULTS / f"dem_{backend}{'_quick' if a.quick else ''}.json"
    cache_dir = Path(a.cache_dir) if a.cache_dir else (QUICK_CACHE if a.quick else RESULTS)
    partial = out.with_name(out.stem + ".partial.json")
    res = dict(
        benchmark="dem",
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        device=info.device_name,
        device_name=info.device_name,
        backend=backend,
        requested_backend=a.backend,
        default_fp=info.default_fp,
        versions=dict(
            taichi=info.taichi_version,
            numpy=np.__version__,
            scipy=scipy.__version__,
            python=platform.python_version(),
        ),
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        taichi_threads=a.threads,
        git_commit=_git_commit(),
        load_avg_start=_load_avg(),
        quick=a.quick,
        args={k: v for k, v in vars(a).items() if k != "size_list"},
        targets=TARGETS,
        max_overlap_fraction=MAX_OVERLAP,
        sizes=[],
        study=None,
        peers=None,
    )
    del taichi
    t0 = time.perf_counter()
    base_scen = base_scenario(n_base, p_base, backend, base_sets)
    res["base_scenario"] = resolved_dict(base_scen)
    base = build_base(base_scen, cache_dir, a.rebuild_base)
    res["base"] = base["info"]
    for n in sizes:
        res["sizes"].append(
            _guard(
                f"N = {n}",
                dict(n_target=n),
                bench_size,
                base,
                n,
                backend,
                steps=steps,
                repeats=repeats,
                warmup=warmup,
                target_s=a.target_s,
            )
        )
        write_json(partial, res)  # partial results survive an interrupted large run
    if a.liggghts:
        res["peers"] = _guard(
            "LIGGGHTS comparison",
            dict(n_target=a.liggghts_particles),
            run_liggghts,
            base,
            backend,
            a.liggghts_particles,
            a.liggghts_steps,
            warmup,
        )
        write_json(partial, res)
    if a.study:
        res["study"] = _guard(
            "study case",
            dict(ok=False, n=a.study_particles or 9591),
            run_study,
            backend,
            a.study_particles,
            a.study_set,
            a.study_max_overlap,
        )
    res["load_avg_end"] = _load_avg()
    res["total_wall_s"] = time.perf_counter() - t0
    out = _final_path(out, res)
    write_json(out, res)
    partial.unlink(missing_ok=True)
    print(markdown(res))
    print(f"\nJSON: {out}")
    return res


if __name__ == "__main__":
    main()

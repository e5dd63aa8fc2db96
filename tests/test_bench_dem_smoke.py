"""Smoke run of benchmarks/bench_dem.py at a tiny size (JSON keys and positive throughput, never speed),
and the periodic tiling it relies on (every contact of the base packing survives the tiling)."""

import json

import numpy as np

from fva.types import Packing


def test_tiling_preserves_periodic_contacts(load_benchmark, rng):
    from dem.neighbours import brute_force_pairs

    bench = load_benchmark("bench_dem")
    L = 1.0
    c = rng.random((40, 3)) * np.array([L, L, 0.6])
    r = rng.uniform(0.08, 0.14, 40)
    base = Packing(centers_m=c, radii_m=r, box_m=np.array([L, L, 0.8]))
    n_base = len(brute_force_pairs(c, r, (L, L), 0.0))
    assert n_base > 0
    kx, ky = bench.tiles_for(240, 40)
    assert kx * ky == 6
    t = bench.tile(base, kx, ky)
    assert t.n == 240 and np.allclose(t.box_m, [kx * L, ky * L, 0.8])
    assert len(brute_force_pairs(t.centers_m, t.radii_m, t.box_m[:2], 0.0)) == kx * ky * n_base
    assert bench.tiles_for(10_000, 1000) in ((2, 5), (1, 10))
    assert bench.tiles_for(1_000_000, 1000)[0] * bench.tiles_for(1_000_000, 1000)[1] == 1000


def test_bench_dem_quick(load_benchmark, tmp_path, taichi_runtime):
    bench = load_benchmark("bench_dem")
    out_path = tmp_path / "dem_cpu.json"
    bench.main(["--quick", "--backend", "cpu", "--out", str(out_path), "--cache-dir", str(tmp_path)])
    data = json.loads(out_path.read_text())
    for key in (
        "benchmark",
        "date",
        "device",
        "device_name",
        "backend",
        "versions",
        "python",
        "cpu_count",
        "base",
        "sizes",
        "study",
        "peers",
        "targets",
    ):
        assert key in data, key
    assert data["backend"] == "cpu"
    assert {"taichi", "numpy", "python"} <= set(data["versions"])
    assert data["base"]["n"] > 0 and data["base"]["pressure_Pa"] > 0
    assert len(data["sizes"]) == 1
    row = data["sizes"][0]
    for key in (
        "n",
        "tiles",
        "steps",
        "repeats",
        "times_s",
        "median_s",
        "wall_per_step_s",
        "particle_steps_per_s",
        "neighbour_builds",
        "rebuild_s",
        "rebuild_share",
        "memory_bytes",
        "bytes_per_particle",
    ):
        assert key in row, key
    assert row["n"] == row["tiles"][0] * row["tiles"][1] * data["base"]["n"]
    assert row["particle_steps_per_s"] > 0 and row["wall_per_step_s"] > 0
    # blocks of steps: fewer host launches than steps, but at least one record read per block of ≤ 64 steps
    assert 1.0 / 64 <= row["host_launches_per_step"] < 1.0 and row["host_syncs_per_step"] >= 1.0 / 64
    assert 0.0 <= row["rebuild_share"] <= 1.0
    assert row["bytes_per_particle"] > 0
    assert list(tmp_path.glob("dem_base_*.npz")), "the base packing is cached"


def test_study_row_from_history(load_benchmark, monkeypatch):
    """The study figures (relative density at 0.5 GPa, at the maximum, after release) come from the history;
    the engine is replaced by a fake result so that this runs in milliseconds."""
    from dem import simulation
    from dem.types import CompactionResult

    bench = load_benchmark("bench_dem")
    seen = {}

    def fake_run_compaction(packing, material, die, stages, params, *, progress=None, seed=0):
        seen["stages"] = stages
        top = max(range(len(stages)), key=lambda k: (stages[k].kind == "load", stages[k].target_pressure_Pa))
        p = np.array([0.0, 0.2e9, 0.4e9, 0.6e9, 1.7e9, 0.8e9, 0.0])
        rho = np.array([0.5, 0.70, 0.80, 0.84, 0.95, 0.93, 0.90])
        stage = np.array([top, top, top, top, top, top + 1, top + 1])
        h = dict(p_top_Pa=p, relative_density=rho, solid_fraction=rho - 0.01, stage=stage)
        return CompactionResult(history=h, info=dict(n_steps=1234, dt_s=1e-8, neighbour_builds=3))

    monkeypatch.setattr(simulation, "run_compaction", fake_run_compaction)
    row = bench.run_study("cpu", 400, [])
    assert row["ok"] and row["n"] == 400 and row["steps"] == 1234
    assert abs(row["relative_density_0_5GPa"] - 0.82) < 1e-9  # between the 0.4 and 0.6 GPa rows
    assert row["relative_density_1_7GPa"] == 0.95 and row["p_max_Pa"] == 1.7e9
    assert row["relative_density_released"] == 0.90
    assert any(s.kind == "unload" for s in seen["stages"])


def test_study_row_when_the_engine_fails(load_benchmark, monkeypatch):
    """A failed study case is a row with the error and the figures reached so far, not a crash."""
    from dem import simulation

    bench = load_benchmark("bench_dem")

    def failing_run_compaction(packing, material, die, stages, params, *, progress=None, seed=0):
        for k, p in enumerate((0.1e9, 0.4e9, 0.6e9, 0.9e9)):
            progress(dict(stage_index=1, stage="load", step=100 * (k + 1), p_top_Pa=p,
                          punch_z_m=packing.box_m[2] * (0.5 - 0.02 * k), steps_per_s=1.0,
                          particle_steps_per_s=1.0))
        raise simulation.SimulationError("contact overlap too large (test)")

    monkeypatch.setattr(simulation, "run_compaction", failing_run_compaction)
    row = bench.run_study("cpu", 400, [])
    assert row["ok"] is False and "test" in row["error"]
    assert row["from_progress"] and row["p_max_reached_Pa"] == 0.9e9 and row["steps_done"] == 400
    assert row["relative_density_at_p_max"] > row["relative_density_0_5GPa"] > 0
    assert "failed" in bench.markdown(dict(device="d", backend="cpu", date="t", sizes=[], study=row))

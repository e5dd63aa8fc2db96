"""Smoke run of benchmarks/bench_fva.py at a tiny size: JSON keys only."""
import json


def test_bench_fva_quick(tmp_path, taichi_runtime, load_benchmark):
    mod = load_benchmark("bench_fva")
    out_path = tmp_path / "fva_cpu.json"
    mod.main(["--quick", "--backend", "cpu", "--dtype", "f64", "--no-peers", "--out", str(out_path)])
    data = json.loads(out_path.read_text())
    for key in ("device_name", "backend", "versions", "sizes", "date", "stream", "results"):
        assert key in data
    solves = [r for r in data["results"] if "preconditioner" in r]
    assert {r["preconditioner"] for r in solves} == {"jacobi", "mg"}
    for r in solves:
        for key in ("size", "wall_s", "iterations", "bytes_per_voxel", "flux_spread", "converged"):
            assert key in r
    assert "copy_GB_per_s" in data["stream"] and "matvec_fraction_of_copy" in data["stream"]

"""Benchmark of the finite-volume conduction solve (Jacobi vs multigrid PCG), with optional peers.

    python benchmarks/bench_fva.py --backend cpu --sizes 64,128 --repeats 3
    python benchmarks/bench_fva.py --quick

Images: random overlapping spheres (Boolean model, solid fraction ≈ 0.75, radius 5 voxels,
periodic x/y), solved along z to a plane-flux spread of 1e-4. Timing: one warm-up solve (compiles
the kernels), then the median over ``--repeats`` of synchronised wall times of the whole
``solve_conductivity`` call (connectivity, allocation, multigrid setup and PCG). A STREAM-like copy
kernel measures the achievable memory bandwidth and the matrix-free stencil kernel's achieved
fraction of it is reported. Peers (skipped with a line when not installed): TauFactor 2 and a
scipy sparse direct solve (≤ 96³). Writes ``benchmarks/results/fva_<backend>.json`` and prints a
markdown table.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _stream(K, ti, n: int, dtype_name: str, repeats: int = 5) -> dict:
    """Copy bandwidth (bytes read + written per second) and the fine matvec's effective bandwidth."""
    from fva.backend import sync
    from fva.pcg import sigma_table

    tdt = ti.f64 if dtype_name == "f64" else ti.f32
    item = 8 if dtype_name == "f64" else 4
    a = ti.ndarray(tdt, n ** 3 + n)   # the flat fine layout (fva.fine_kernels): n³ cells + a sentinel row
    b = ti.ndarray(tdt, n ** 3 + n)
    K.fill1(a, 1.0)
    K.copy(a, b)
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        K.copy(a, b)
        sync()
        ts.append(time.perf_counter() - t)
    copy_bw = 2 * item * n ** 3 / min(ts)
    ids = (np.random.default_rng(0).random((n, n, n)) < 0.75).astype(np.uint8)   # id 1 conducts (σ = 1)
    T = sigma_table(np.array([0.0, 1.0]))
    sig = ti.ndarray(ti.u8, n ** 3 + n)
    sig.from_numpy(np.concatenate([ids.ravel(), np.zeros(n, np.uint8)]))
    Tt = ti.ndarray(ti.f64, T.shape)
    Tt.from_numpy(T)
    em = ti.ndarray(ti.i32, (n, n))
    em.from_numpy(np.ones((n, n), np.int32))
    C, G = ti.Vector([1.0, 1.0, 1.0], dt=ti.f64), ti.Vector([n, n, n, 1, 1], dt=ti.i32)
    rs = ti.ndarray(ti.i32, 1)  # no runs: the id kernels visit every cell
    K.f_matvec_dot(sig, Tt, em, rs, a, b, C, G)
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        K.f_matvec_dot(sig, Tt, em, rs, a, b, C, G)
        sync()
        ts.append(time.perf_counter() - t)
    # compulsory traffic of y = A x: read phase id (1 B) and x, write y
    mv_bytes = (1 + 2 * item) * n ** 3
    mv_bw = mv_bytes / min(ts)
    return dict(stream_n=n, dtype=dtype_name, copy_GB_per_s=copy_bw / 1e9, matvec_GB_per_s=mv_bw / 1e9,
                matvec_Mvox_per_s=n ** 3 / min(ts) / 1e6, matvec_fraction_of_copy=mv_bw / copy_bw)


def _taufactor(phase: np.ndarray, tol: float) -> dict:
    try:
        import taufactor as tau  # noqa: F401
    except Exception as exc:  # pragma: no cover - optional
        return dict(skipped=f"taufactor not installed ({type(exc).__name__})")
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    img = (phase == 1).astype(np.float32)  # TauFactor solves along its first array axis (our z)
    try:
        solver = tau.Solver(img, device=dev)
        t = time.perf_counter()
        solver.solve(verbose="", conv_crit=tol, iter_limit=200000)
        if dev == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        return dict(wall_s=wall, tau=float(np.ravel(np.asarray(solver.tau))[0]),
                    D_eff=float(np.ravel(np.asarray(solver.D_eff))[0]), device=dev, conv_crit=tol,
                    torch_threads=torch.get_num_threads(), version=getattr(tau, "__version__", "?"))
    except Exception as exc:  # pragma: no cover - peer failure is reported, not fatal
        return dict(skipped=f"taufactor failed: {type(exc).__name__}: {exc}")


def _scipy_ref(img, axis="z") -> dict:
    from fva.conduction import solve_conductivity  # noqa: F401
    from fva.connectivity import percolating_mask
    from fva.reference import solve_reference

    sig = (img.phase == 1).astype(float)
    per = (img.periodic[1], img.periodic[0])
    t = time.perf_counter()
    perc = percolating_mask(sig > 0, 0, (False,) + per)
    method = "direct" if sig.size <= 40 ** 3 else "cg"
    _, planes = solve_reference(np.where(perc, sig, 0.0), None, (1.0, 1.0, 1.0), *per, method=method,
                                rtol=1e-8)
    wall = time.perf_counter() - t
    n0, n1, n2 = sig.shape
    return dict(wall_s=wall, method=method, sigma_eff_over_bulk=float(planes.mean() * n0 / (n1 * n2)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,128,256", help="comma-separated cube edges in voxels")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda", "vulkan", "auto"])
    ap.add_argument("--preconditioners", default="jacobi,mg")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flux-tol", type=float, default=1e-4)
    ap.add_argument("--solid-fraction", type=float, default=0.75)
    ap.add_argument("--radius", type=float, default=5.0, help="sphere radius in voxels")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--jacobi-max", type=int, default=256, help="skip Jacobi above this size")
    ap.add_argument("--quick", action="store_true", help="tiny run (16, 24) for smoke tests")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/fva_<backend>.json)")
    args = ap.parse_args(argv)

    from fva.atomic import write_json
    from fva.backend import current, ensure_init, sync, ti
    from fva.conduction import estimate_memory_bytes, solve_conductivity
    from fva.conduction_kernels import get_kernels
    from fva.voxelise import random_sphere_image

    sizes = [16] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    repeats = 1 if args.quick else max(1, args.repeats)
    info = ensure_init(args.backend, "f64")
    K = get_kernels(args.dtype)
    warm = random_sphere_image(12, args.solid_fraction, 3.0, seed=99)
    for pc in args.preconditioners.split(","):
        solve_conductivity(warm, "z", preconditioner=pc, dtype=args.dtype)
    rows = []
    for n in sizes:
        t = time.perf_counter()
        img = random_sphere_image(n, args.solid_fraction, args.radius, seed=n)
        vox_s = time.perf_counter() - t
        for pc in args.preconditioners.split(","):
            if pc == "jacobi" and n > args.jacobi_max:
                print(f"# jacobi skipped at {n}^3 (> --jacobi-max {args.jacobi_max})")
                continue
            walls, res = [], None
            for _ in range(repeats):
                sync()
                t = time.perf_counter()
                res = solve_conductivity(img, "z", preconditioner=pc, flux_tol=args.flux_tol, dtype=args.dtype)
                sync()
                walls.append(time.perf_counter() - t)
            nvox = n ** 3
            rows.append(dict(
                size=n, voxels=nvox, preconditioner=pc, dtype=args.dtype, wall_s=statistics.median(walls),
                wall_all_s=walls, iterations=res.iterations, flux_spread=res.flux_spread,
                residual=res.residual, converged=res.converged, sigma_eff_over_bulk=res.sigma_eff_over_bulk,
                tau=res.tau, solid_fraction=res.eps_total, voxelise_s=vox_s,
                bytes_per_voxel=estimate_memory_bytes(img.shape, args.dtype, pc) / nvox,
                Mvox_per_s=nvox / statistics.median(walls) / 1e6))
            print(f"# {n}^3 {pc}: {rows[-1]['wall_s']:.3f} s, {res.iterations} it, spread {res.flux_spread:.2e}",
                  flush=True)
        if not args.no_peers:
            peers = {}
            if n <= 96:
                peers["scipy_direct"] = _scipy_ref(img)
            else:
                peers["scipy_direct"] = dict(skipped="only at sizes <= 96^3")
            peers["taufactor"] = _taufactor(img.phase, args.flux_tol)
            for k, v in peers.items():
                if "skipped" in v:
                    print(f"# peer {k} skipped at {n}^3: {v['skipped']}")
            rows.append(dict(size=n, peers=peers))
    stream = _stream(K, ti, 64 if args.quick else min(max(sizes), 256), args.dtype)
    import scipy
    import taichi

    out = dict(
        benchmark="fva_conduction", date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        backend=info.backend, device_name=current().device_name, dtype=args.dtype, flux_tol=args.flux_tol,
        sizes=sizes, repeats=repeats, quick=bool(args.quick),
        versions=dict(python=platform.python_version(), taichi=".".join(map(str, taichi.__version__)),
                      numpy=np.__version__, scipy=scipy.__version__),
        stream=stream, results=rows)
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"fva_{info.backend}.json"
    write_json(path, out)
    print()
    print(f"FVA conduction benchmark — {out['device_name']} ({info.backend}, {args.dtype}, flux tol {args.flux_tol:g})")
    print()
    print("| size | precond | time (s) | iterations | spread | σ_eff/σ_bulk | bytes/voxel | Mvox/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "preconditioner" in r:
            print(f"| {r['size']}³ | {r['preconditioner']} | {r['wall_s']:.3f} | {r['iterations']} | "
                  f"{r['flux_spread']:.1e} | {r['sigma_eff_over_bulk']:.5f} | {r['bytes_per_voxel']:.1f} | "
                  f"{r['Mvox_per_s']:.2f} |")
    for r in rows:
        for k, v in r.get("peers", {}).items():
            if "wall_s" in v:
                print(f"| {r['size']}³ | peer {k} | {v['wall_s']:.3f} | | | "
                      f"{v.get('sigma_eff_over_bulk', v.get('D_eff', float('nan'))):.5f} | | |")
    print()
    print(f"copy bandwidth {stream['copy_GB_per_s']:.1f} GB/s; stencil matvec {stream['matvec_GB_per_s']:.1f} GB/s "
          f"({100 * stream['matvec_fraction_of_copy']:.0f}% of copy, {stream['matvec_Mvox_per_s']:.0f} Mvox/s)")
    print(f"JSON: {path}")
    return out


if __name__ == "__main__":
    main()

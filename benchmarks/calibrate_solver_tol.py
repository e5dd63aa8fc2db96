"""Which relative true residual keeps σ_eff within 1e-4 of the exact solve? (the solver's default rtol)

For every image of the convergence test family (``fva.generators``, along x, y and z, insulating and
periodic sides) and for the packed-sphere benchmark image, solve with the residual criterion alone
(``flux_tol`` and ``sigma_tol`` disabled: 0.99) at a ladder of ``rtol`` values, and compare σ_eff with
a scipy direct solve of the same discretisation. Prints the worst relative σ error per rtol and writes
``benchmarks/results/solver_tol_calibration.json``.

    python benchmarks/calibrate_solver_tol.py [--sphere-n 64]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sphere-n", type=int, default=64, help="edge of the packed-sphere image (voxels)")
    ap.add_argument("--dtype", default="f32", choices=["f64", "f32"],
                    help="work-vector precision (default: the solver default)")
    ap.add_argument("-o", "--out",
                    default=str(ROOT / "benchmarks" / "results" / "solver_tol_calibration.json"))
    args = ap.parse_args(argv)

    from fva.backend import current, ensure_init
    ensure_init("cpu", "f64")
    from fva.conduction import solve_conductivity
    from fva.types import VoxelImage
    from fva.voxelise import random_sphere_image
    from test_fva_convergence import CASES, _oriented, _reference_sigma

    images = {}
    for name, make in CASES.items():
        for axis in "xyz":
            for per in (False, True):
                images[f"{name}/{axis}/{'periodic' if per else 'insulating'}"] = (
                    VoxelImage(_oriented(make(), axis), 1e-6, periodic=(per,) * 3), axis, per)
    sph = random_sphere_image(args.sphere_n, 0.75, 5.0, seed=3)
    images[f"spheres{args.sphere_n}/z/periodic"] = (VoxelImage(sph.phase, 1e-6, periodic=(True, True, False)),
                                                    "z", True)
    rtols = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    worst = {r: 0.0 for r in rtols}
    rows = []
    for key, (img, axis, per) in images.items():
        ref = _reference_sigma(img, axis, per)
        if ref == 0.0:
            continue
        for rt in rtols:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = solve_conductivity(img, axis, rtol=rt, flux_tol=0.99, sigma_tol=0.99, dtype=args.dtype)
            err = abs(r.sigma_eff_S_per_m / ref - 1.0)
            worst[rt] = max(worst[rt], err)
            rows.append(dict(image=key, rtol=rt, iterations=r.iterations, rel_sigma_error=err,
                             residual=r.residual, converged=r.converged))
    print(f"{'rtol':>8s}  worst |σ/σ_exact − 1| over {len(images)} images ({args.dtype})")
    for rt in rtols:
        print(f"{rt:8.0e}  {worst[rt]:.3e}")
    out = dict(device_name=current().device_name, backend="cpu", dtype=args.dtype,
               worst_rel_sigma_error={f"{k:g}": v for k, v in worst.items()}, rows=rows)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Do two Taichi backends give the same answers? (CPU vs GPU agreement of the DEM curve and the FV solve.)

The same compaction (``benchmarks/reduced_study.toml`` set up through :mod:`dem.setup` as ``pelletsim run``
would: seeded sizes and loose packing, Thornton–Ning, load then release) and the same finite-volume solve run
once per backend, each in its own process (one Taichi runtime per process), and the
results are compared against stated tolerances:

* DEM, relative density on the loading branch: max |ρ_A(p) − ρ_B(p)| over 12 pressures log-spaced between
  20 MPa and 0.9 p_max (linear interpolation of each history) ≤ ``--tol-rho`` (default 0.01). The two
  backends start from bit-identical inputs but do not sum forces in the same floating-point order (GPU
  ``atomic``-free gathers still differ in fused multiply–adds and transcendental functions), so the
  particle trajectories diverge chaotically and only the packing-level curve can agree; 0.01 is about
  the seed-to-seed spread of ρ at 300 particles measured on the CPU (docs/calibration.md).
* DEM, relative density after release: |Δρ| ≤ ``--tol-rho``.
* FV, σ_eff/σ_bulk of one fixed voxel image (spheres from a numpy seed, identical on both sides):
  relative difference ≤ ``--tol-sigma`` (default 1e-4; both solve in f64, as the pipeline does, to a
  flux spread of 1e-5, so this checks the solver, not the DEM).

* ``--tiny`` (the test suite's check on a Vulkan device, where Mesa's lavapipe runs ≈ 100× slower than the CPU
  backend): no compaction curve but a trajectory — 30 particles, the punch driven 150 steps into the loose
  packing (impacts, contacts, neighbour rebuilds, volume correction, checks) — compared state against state:
  max |Δx| and |Δr| ≤ ``--tol-x`` (1e-4) r_min, |Δp_top|/p_top ≤ ``--tol-p`` (1e-3), and a 16³ FV solve. Both
  sides start from the same bits and agree to rounding (≈ 1e-14) until a contact's onset, where the viscous
  damping ∝ δ^¼ turns a rounding difference into ≈ 1e-6 (measured on lavapipe: 4e-6 r_min and 3e-6 in p at
  150 steps); a broken kernel gives O(1) (a Vulkan neighbour list missing pairs gave 0.3 r_min and 2× in p).

Usage (from the repository root)::

    python benchmarks/backend_agreement.py --backends cpu,cuda        # on a GPU machine
    python benchmarks/backend_agreement.py --backends cpu,cpu --quick  # smoke run of the script itself
    python benchmarks/backend_agreement.py --backends cpu,vulkan --tiny [--fp f32]   # any machine with lavapipe
    python benchmarks/backend_agreement.py --backends cpu,cuda --set particles.count=1000   # any scenario key

The compaction is ``reduced_study.toml`` with the overrides ``SETUP_SETS`` (300 particles, d ≤ 30 µm in a
60 µm die, p_y = 0.5 GPa, load to 0.5 GPa), then ``QUICK_SETS`` or ``TINY_SETS``, then each ``--set``.

Writes ``benchmarks/results/agreement_<A>_<B>.json`` (``--out``) atomically with the devices, every
figure, tolerance and verdict; prints a markdown table; exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SETUP = ROOT / "benchmarks" / "reduced_study.toml"
SETUP_SETS = ["particles.count=300", "particles.d_max_um=30.0", "die.base_x_um=60.0", "die.base_y_um=60.0",
              "material.yield_stress_MPa=500.0", "protocol.1.target_pressure_GPa=0.5", "run.history_every=50",
              "run.seed=21"]
QUICK_SETS = ["particles.count=60", "particles.d_max_um=20.0", "die.base_x_um=40.0", "die.base_y_um=40.0",
              "protocol.1.target_pressure_GPa=0.1"]
TINY_SETS = ["particles.count=30", "particles.d_max_um=16.0", "die.base_x_um=32.0", "die.base_y_um=32.0",
             "die.loose_fraction=0.3", "numerics.mass_scaling=1e6"]


def _fixed_image(n: int, seed: int = 3) -> np.ndarray:
    """A [z, y, x] uint8 image of overlapping random spheres at solid fraction ≈ 0.7 (numpy only)."""
    rng = np.random.default_rng(seed)
    g = (np.arange(n) + 0.5) / n
    Z, Y, X = np.meshgrid(g, g, g, indexing="ij")
    img = np.zeros((n, n, n), bool)
    while img.mean() < 0.7:
        c = rng.random(3)
        r = rng.uniform(0.08, 0.16)
        d2 = (np.minimum(abs(X - c[0]), 1 - abs(X - c[0])) ** 2 + np.minimum(abs(Y - c[1]), 1 - abs(Y - c[1])) ** 2
              + (Z - c[2]) ** 2)
        img |= d2 < r * r
    return img.astype(np.uint8)


class _Skipped(Exception):
    pass


def _trajectory(case, steps: int) -> dict:
    """The punch driven down at the approach speed for ``steps`` steps from the loose packing (impacts,
    neighbour rebuilds, volume correction, checks: every kernel of a step): positions, radii and p_top at the end.
    Both backends start from the same bits, so the states agree to rounding until the contact laws amplify the
    differences (the viscous damping ∝ δ^¼ at contact onset): a few hundred steps stay well below 1e-6 r."""
    from dem.simulation import Simulation

    sim = Simulation(case.loose, case.material, case.die, case.params)
    sim.set_punch_velocity(-case.stages[0].punch_speed_m_per_s)
    sim.advance(int(steps))
    return dict(x=sim.x.to_numpy().tolist(), r=sim.r.to_numpy().tolist(), p_top_Pa=sim.pressures()[0],
                box_xy=[case.die.base_x_m, case.die.base_y_m],
                steps=sim.step_count, rebuilds=sim.nlist.builds, max_radius_growth=sim.growth)


def run_backend(cfg: dict) -> dict:
    """One backend, in its own process: the compaction and the fixed FV solve."""
    from fva.backend import ensure_init

    info = ensure_init(cfg["backend"], cfg.get("fp", "f64"))
    from dem.scenario import load_scenario
    from dem.setup import compact, prepare
    from dem.simulation import SimulationError
    from fva.conduction import solve_conductivity
    from fva.types import VoxelImage

    out = dict(backend=info.backend, device=info.device_name, taichi=info.taichi_version, default_fp=info.default_fp)
    case = prepare(load_scenario(SETUP, cfg["sets"]), backend=info.backend, default_fp=info.default_fp,
                   solid_fraction_points=0)
    t0 = time.perf_counter()
    if cfg.get("trajectory_steps"):
        out["trajectory"] = _trajectory(case, cfg["trajectory_steps"])
        out["trajectory"]["wall_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    try:
        if cfg.get("no_compaction"):
            raise _Skipped
        res = compact(case)
        h = res.history
        out["dem"] = dict(p_Pa=h["p_top_Pa"].tolist(), rho=h["relative_density"].tolist(), step=h["step"].tolist(),
                          stage=h["stage"].tolist(), n_steps=int(res.info["n_steps"]),
                          wall_s=time.perf_counter() - t0,
                          host_launches_per_step=res.info.get("host_launches_per_step"),
                          host_syncs_per_step=res.info.get("host_syncs_per_step"))
    except SimulationError as exc:
        out["dem"] = dict(error=str(exc))
    except _Skipped:
        out["dem"] = dict(skipped=True)
    img = _fixed_image(cfg["image_n"])
    t0 = time.perf_counter()
    r = solve_conductivity(VoxelImage(img, (1e-6, 1e-6, 1e-6)), "z", sigma_bulk_S_per_m=0.2, flux_tol=1e-5)
    out["fva"] = dict(sigma_ratio=float(r.sigma_eff_S_per_m / 0.2), tau=float(r.tau), iterations=int(r.iterations),
                      wall_s=time.perf_counter() - t0, shape=list(img.shape))
    return out


def _loading_rho(dem: dict, grid: np.ndarray) -> np.ndarray:
    p, rho, st = (np.asarray(dem[k], float) for k in ("p_Pa", "rho", "stage"))
    sel = st <= 1
    k_max = int(np.argmax(np.where(sel, p, -np.inf)))
    p, rho = p[: k_max + 1][sel[: k_max + 1]], rho[: k_max + 1][sel[: k_max + 1]]
    env = np.maximum.accumulate(p)             # loading branch: pressure envelope
    keep = np.concatenate([[True], np.diff(env) > 0])
    return np.interp(grid, env[keep], rho[keep])


def _trajectory_check(a: dict, b: dict, tol_x: float, tol_p: float) -> dict:
    """max |x_A − x_B| (minimum image in x, y) and |r_A − r_B| over r_min (≤ tol_x), and the relative p_top
    difference (≤ tol_p: the punch force is a sum of contact forces, whose viscous part ∝ δ^¼ at a contact's onset
    turns a rounding difference of the overlap into a 1e-4-size force difference for a step)."""
    xa, xb, ra = (np.asarray(v, float) for v in (a["x"], b["x"], a["r"]))
    d = np.abs(xa - xb)
    box = np.asarray(a["box_xy"], float)
    d[:, :2] = np.minimum(d[:, :2], np.abs(d[:, :2] - box))
    dx = float(d.max() / ra.min())
    dr = float(np.abs(ra - np.asarray(b["r"], float)).max() / ra.min())
    dp = abs(a["p_top_Pa"] - b["p_top_Pa"]) / max(abs(a["p_top_Pa"]), 1.0)
    return dict(steps=a["steps"], max_dx_over_rmin=dx, max_dr_over_rmin=dr, p_top_a=a["p_top_Pa"],
                p_top_b=b["p_top_Pa"], p_top_rel_diff=dp, tol=tol_x, tol_p=tol_p,
                ok=max(dx, dr) <= tol_x and dp <= tol_p)


def compare(a: dict, b: dict, p_max_Pa: float, tol_rho: float, tol_sigma: float, p_min_Pa: float = 20e6,
            tol_x: float = 1e-4, tol_p: float = 1e-3) -> dict:
    """The checks of the module docstring: figures, tolerances, pass/fail."""
    checks = {}
    if "trajectory" in a and "trajectory" in b:
        checks["dem_trajectory"] = _trajectory_check(a["trajectory"], b["trajectory"], tol_x, tol_p)
    if a["dem"].get("skipped") or b["dem"].get("skipped"):
        pass
    elif "error" in a["dem"] or "error" in b["dem"]:
        checks["dem"] = dict(ok=False, error=a["dem"].get("error") or b["dem"].get("error"))
    else:
        grid = np.geomspace(p_min_Pa, 0.9 * p_max_Pa, 12)
        ra, rb = _loading_rho(a["dem"], grid), _loading_rho(b["dem"], grid)
        dmax = float(np.max(np.abs(ra - rb)))
        checks["dem_loading_rho"] = dict(max_abs_diff=dmax, tol=tol_rho, ok=dmax <= tol_rho,
                                         p_grid_Pa=grid.tolist(), rho_a=ra.tolist(), rho_b=rb.tolist())
        fa, fb = a["dem"]["rho"][-1], b["dem"]["rho"][-1]
        checks["dem_released_rho"] = dict(a=fa, b=fb, abs_diff=abs(fa - fb), tol=tol_rho, ok=abs(fa - fb) <= tol_rho)
    sa, sb = a["fva"]["sigma_ratio"], b["fva"]["sigma_ratio"]
    rel = abs(sa - sb) / max(abs(sa), 1e-300)
    checks["fva_sigma"] = dict(a=sa, b=sb, rel_diff=rel, tol=tol_sigma, ok=rel <= tol_sigma)
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="cpu,cuda", help="two backends, e.g. cpu,cuda or cpu,vulkan")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the compaction's scenario (benchmarks/reduced_study.toml), "
                         "as pelletsim run")
    ap.add_argument("--image-n", type=int, default=96, help="edge of the fixed FV image (voxels)")
    ap.add_argument("--tol-rho", type=float, default=0.01)
    ap.add_argument("--tol-sigma", type=float, default=1e-4)
    ap.add_argument("--quick", action="store_true", help="smoke run: 60 particles, 0.1 GPa, 24³ image")
    ap.add_argument("--tiny", action="store_true",
                    help="trajectory check only (for the test suite, Vulkan on lavapipe): 30 particles, the punch "
                         "driven 150 steps into the loose packing, states compared to --tol-x; 16³ image")
    ap.add_argument("--tol-x", type=float, default=1e-4, help="--tiny: max |Δx| and |Δr| over r_min")
    ap.add_argument("--tol-p", type=float, default=1e-3, help="--tiny: |Δp_top|/p_top at the end")
    ap.add_argument("--fp", choices=("f64", "f32"), default="f64", help="Taichi default_fp on both sides")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    names = [s.strip() for s in a.backends.split(",") if s.strip()]
    if len(names) != 2:
        ap.error("--backends needs exactly two names, e.g. cpu,cuda")
    from dem.scenario import ScenarioError, load_scenario

    sets = SETUP_SETS + (QUICK_SETS if a.quick else []) + (TINY_SETS if a.tiny else []) + a.set
    try:
        p_max_Pa = max(st.target_Pa() for st in load_scenario(SETUP, sets).protocol)
    except ScenarioError as exc:
        ap.error(str(exc))                                              # one line, exit status 2
    cfg = dict(sets=sets, image_n=24 if a.quick else a.image_n, fp=a.fp)
    if a.tiny:
        cfg.update(image_n=16, trajectory_steps=150, no_compaction=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ex:   # one at a time
        runs = [ex.submit(run_backend, dict(cfg, backend=b)).result() for b in names]
    checks = compare(runs[0], runs[1], p_max_Pa, a.tol_rho, a.tol_sigma, tol_x=a.tol_x, tol_p=a.tol_p)
    ok = all(c.get("ok") for c in checks.values())
    doc = dict(setup=cfg, backends=names, runs=[{k: v for k, v in r.items() if k not in ("dem", "trajectory")} |
                                                {"trajectory_wall_s": r.get("trajectory", {}).get("wall_s")} |
                                                {"dem_steps": r["dem"].get("n_steps"),
                                                 "dem_wall_s": r["dem"].get("wall_s"),
                                                 "dem_error": r["dem"].get("error")} for r in runs],
               checks=checks, all_ok=ok, wall_s=time.perf_counter() - t0)
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        f"agreement_{names[0]}_{names[1]}{'_quick' if a.quick else '_tiny' if a.tiny else ''}"
        f"{'_f32' if a.fp == 'f32' else ''}.json")
    from fva.atomic import write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, json.loads(json.dumps(doc, default=float)))
    print(f"| check | {runs[0]['device']} ({names[0]}) | {runs[1]['device']} ({names[1]}) | difference | "
          f"tolerance | ok |\n|---|---|---|---|---|---|")
    for k, c in checks.items():
        if "error" in c:
            print(f"| {k} | failed: {c['error'][:80]} | | | | no |")
        elif k == "dem_trajectory":
            worst = max(c["max_dx_over_rmin"], c["max_dr_over_rmin"])
            print(f"| {k} ({c['steps']} steps) | p_top = {c['p_top_a']:.6g} Pa | {c['p_top_b']:.6g} Pa | "
                  f"|Δx|/r_min {worst:.2e}, Δp/p {c['p_top_rel_diff']:.2e} | {c['tol']:g}, {c['tol_p']:g} | "
                  f"{'yes' if c['ok'] else 'NO'} |")
        elif k == "dem_loading_rho":
            print(f"| {k} (12 pressures) | ρ(0.9 p_max) = {c['rho_a'][-1]:.4f} | {c['rho_b'][-1]:.4f} | "
                  f"max {c['max_abs_diff']:.2e} | {c['tol']:g} | {'yes' if c['ok'] else 'NO'} |")
        else:
            diff = c.get("abs_diff", c.get("rel_diff"))
            print(f"| {k} | {c['a']:.6f} | {c['b']:.6f} | {diff:.2e} | {c['tol']:g} | {'yes' if c['ok'] else 'NO'} |")
    print(f"\nwritten {out} ({doc['wall_s']:.0f} s); {'all checks pass' if ok else 'SOME CHECKS FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""pelletsim's conduction solve against TauFactor, as their users run them (whole commands, defaults).

Two cases, each in fresh processes (import, start-up and compilation from the offline cache included):

* ``--spheres N`` (default 200): an N³ image of overlapping spheres (75 % solid, radius 5 voxels),
  along z. pelletsim: the whole ``pelletsim conductivity IMAGE --voxel-size 1e-6`` command (field
  files included, as by default). TauFactor: ``Solver(img, device="cpu").solve()`` with its defaults
  (timed around the solve, as its users see it), skipped with a line when taufactor is not installed.
* ``--tf500 PATH``: TauFactor's public 500³ test volume (``TF-500x500x500-1x2x6-v3.tiff`` from the
  TauFactor repository's ``docs/paper/``; phase 255, 30 %), all three axes with default settings;
  τ compared with the over-converged values of Cooper et al. (``docs/references.md``), and the peak
  resident memory of the process in bytes per voxel.

Writes ``benchmarks/results/fva_vs_taufactor_<backend>.json`` with the device name.

    python benchmarks/bench_taufactor.py --spheres 200 --tf500 /path/to/TF-500x500x500-1x2x6-v3.tiff
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TF500_TAU = {"x": 1.3905, "y": 1.1513, "z": 4.2431}   # our [z, y, x] axes; over-converged reference values

_TAUFACTOR_SNIPPET = """
import json, sys, time
import numpy as np
import taufactor as tau
img = (np.load(sys.argv[1]) == 1).astype(np.float32)
s = tau.Solver(img, device="cpu")
t = time.perf_counter()
s.solve(verbose=False)
wall = time.perf_counter() - t
print(json.dumps(dict(wall_s=wall, tau=float(np.ravel(np.asarray(s.tau))[0]),
                      version=getattr(tau, "__version__", "?"))))
"""


CPU_S: dict = {}   # command → user + system CPU seconds of its process (a check on a shared machine)


def _run(cmd: list[str], env=None) -> tuple[float, float, str]:
    """(wall s, peak RSS bytes of this child alone, stdout) of one command in a fresh process."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    CPU_S[" ".join(cmd)] = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr[-2000:]}")
    return wall, usage.ru_maxrss * 1024.0, stdout


def _pelletsim(image: Path, outdir: Path, extra: list[str]) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "dem.cli", "conductivity", str(image), "-o", str(outdir), "-q", *extra]
    wall, rss, _ = _run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    res = json.loads((outdir / "results.json").read_text())
    res["_cpu_s"] = CPU_S[" ".join(cmd)]
    return wall, rss, res


def spheres_case(n: int, tmp: Path) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from fva.voxelise import random_sphere_image

    img = random_sphere_image(n, 0.75, 5.0, seed=n)
    path = tmp / f"spheres{n}.npy"
    np.save(path, img.phase)
    _pelletsim(path, tmp / "warm", ["--voxel-size", "1e-6", "--no-vti"])  # offline cache warm, as for a user
    wall, rss, res = _pelletsim(path, tmp / "ours", ["--voxel-size", "1e-6"])
    row = dict(size=n, voxels=n ** 3, solid_fraction=float(img.phase.mean()),
               pelletsim=dict(command_wall_s=wall, command_cpu_s=res["_cpu_s"], tau=res["tau"],
                              iterations=res["analysed"][0]["iterations"],
                              residual=res["analysed"][0]["residual"], peak_rss_B_per_voxel=rss / n ** 3))
    try:
        import taufactor  # noqa: F401
    except Exception as exc:
        row["taufactor"] = dict(skipped=f"taufactor not installed ({type(exc).__name__})")
        return row
    wall_tf, rss_tf, out = _run([sys.executable, "-c", _TAUFACTOR_SNIPPET, str(path)])
    tf = json.loads(out.strip().splitlines()[-1])
    tf.update(process_wall_s=wall_tf, process_cpu_s=CPU_S[f"{sys.executable} -c {_TAUFACTOR_SNIPPET} {path}"])
    row["taufactor"] = tf
    row["speedup_command_vs_taufactor_solve"] = tf["wall_s"] / wall
    return row


def tf500_case(path: Path, tmp: Path) -> dict:
    wall, rss, res = _pelletsim(path, tmp / "tf500", ["--voxel-size", "1e-6", "--phase", "255", "--axis", "all"])
    taus = {e["axis"]: e["tau"] for e in res["analysed"]}
    dev = {a: abs(taus[a] / TF500_TAU[a] - 1.0) for a in TF500_TAU}
    return dict(image=path.name, command_wall_s=wall, command_cpu_s=res["_cpu_s"], peak_rss_bytes=rss,
                peak_rss_B_per_voxel=rss / 500 ** 3,
                tau=taus, reference_tau=TF500_TAU, rel_deviation=dev, within_0p1_percent=max(dev.values()) <= 1e-3,
                iterations={e["axis"]: e["iterations"] for e in res["analysed"]},
                residual={e["axis"]: e["residual"] for e in res["analysed"]})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spheres", type=int, default=200, help="edge of the sphere image (0: skip)")
    ap.add_argument("--tf500", type=Path, default=None, help="path of TF-500x500x500-1x2x6-v3.tiff")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from fva.backend import current, ensure_init

    ensure_init("cpu", "f64")
    out = dict(benchmark="fva_vs_taufactor", date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               backend="cpu", device_name=current().device_name, cores=os.cpu_count(),
               python=platform.python_version())
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if args.spheres:
            out["spheres"] = spheres_case(args.spheres, tmp)
            print(json.dumps(out["spheres"], indent=1), flush=True)
        if args.tf500 is not None:
            if not args.tf500.is_file():
                raise SystemExit(f"--tf500: {args.tf500} not found")
            out["tf500"] = tf500_case(args.tf500, tmp)
            print(json.dumps(out["tf500"], indent=1), flush=True)
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "fva_vs_taufactor_cpu.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"→ {path}")
    return out


if __name__ == "__main__":
    main()

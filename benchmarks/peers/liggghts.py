"""Run the same packing in LIGGGHTS (Debian package ``liggghts``) with a Hertz–Mindlin law.

Only for benchmarking: it writes a LIGGGHTS data file and input deck from a pelletsim ``Packing``
(periodic x, y; bottom wall at z = 0 and a top wall at the packing's height, both static so the
packed state stays under load), runs ``steps`` time steps and reads LIGGGHTS' own loop timer.
The ratio of particle-steps per second against pelletsim on the same packing is the figure.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def available() -> str | None:
    """Path of the liggghts executable, or None."""
    return shutil.which("liggghts")


def _data_file(path: Path, centers_m, radii_m, box_m, density_kg_m3: float) -> None:
    n = len(radii_m)
    lx, ly, h = (float(b) for b in box_m)
    lines = ["LIGGGHTS data file written by pelletsim benchmarks", "",
             f"{n} atoms", "1 atom types", "",
             f"0 {lx:.10e} xlo xhi", f"0 {ly:.10e} ylo yhi", f"0 {h:.10e} zlo zhi", "", "Atoms", ""]
    x = np.mod(centers_m[:, 0], lx)
    y = np.mod(centers_m[:, 1], ly)
    for i in range(n):
        lines.append(f"{i + 1} 1 {2 * radii_m[i]:.10e} {density_kg_m3:.6e} "
                     f"{x[i]:.10e} {y[i]:.10e} {centers_m[i, 2]:.10e}")
    path.write_text("\n".join(lines) + "\n")


DECK = """\
atom_style granular
atom_modify map array
boundary p p f
newton off
communicate single vel yes
units si
hard_particles yes
processors * * 1
read_data {data}
neighbor {skin} bin
neigh_modify delay 0
fix m1 all property/global youngsModulus peratomtype {E}
fix m2 all property/global poissonsRatio peratomtype {nu}
fix m3 all property/global coefficientRestitution peratomtypepair 1 {e}
fix m4 all property/global coefficientFriction peratomtypepair 1 {mu}
pair_style gran model hertz tangential history
pair_coeff * *
timestep {dt}
fix bottom all wall/gran model hertz tangential history primitive type 1 zplane 0.0
fix top all wall/gran model hertz tangential history primitive type 1 zplane {ztop}
fix integr all nve/sphere
thermo {thermo}
run {steps}
"""


def run(centers_m, radii_m, box_m, *, youngs_modulus_Pa: float, poisson_ratio: float,
        restitution: float, friction: float, density_kg_m3: float, dt_s: float,
        steps: int = 2000, nprocs: int = 1, skin_m: float | None = None, timeout_s: float = 1800) -> dict:
    """Run LIGGGHTS on the packing; return wall time of the run loop and particle-steps per second."""
    exe = available()
    if exe is None:
        raise RuntimeError("liggghts not installed (Debian: apt-get install liggghts)")
    radii_m = np.asarray(radii_m, float)
    skin = float(skin_m if skin_m is not None else 0.1 * 2 * radii_m.mean())
    with tempfile.TemporaryDirectory(prefix="pelletsim_liggghts_") as tmp:
        tmp = Path(tmp)
        _data_file(tmp / "packing.data", np.asarray(centers_m, float), radii_m, box_m, density_kg_m3)
        deck = DECK.format(data="packing.data", skin=skin, E=youngs_modulus_Pa, nu=poisson_ratio,
                           e=restitution, mu=friction, dt=dt_s, ztop=float(box_m[2]),
                           thermo=max(steps, 1), steps=steps)
        (tmp / "in.bench").write_text(deck)
        cmd = [exe, "-in", "in.bench", "-log", "log.lammps", "-screen", "none", "-nocite"]
        if nprocs > 1:
            cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(nprocs)] + cmd
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        log = (tmp / "log.lammps").read_text() if (tmp / "log.lammps").exists() else ""
        if proc.returncode != 0:
            raise RuntimeError(f"liggghts failed (rc={proc.returncode}): {proc.stderr[-500:]} {log[-800:]}")
    m = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", log)
    if not m:
        raise RuntimeError(f"could not read the LIGGGHTS loop time from its log: {log[-800:]}")
    loop_s, procs, nsteps, natoms = float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))
    version = re.search(r"LIGGGHTS \(Version ([^)]*)\)", log)
    return dict(tool="LIGGGHTS", version=version.group(1) if version else "unknown", procs=procs,
                steps=nsteps, n_particles=natoms, loop_s=loop_s,
                particle_steps_per_s=natoms * nsteps / loop_s if loop_s > 0 else float("nan"))

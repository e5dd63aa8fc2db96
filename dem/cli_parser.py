"""The ``pelletsim`` argument parser (:func:`build_parser`): every subcommand's arguments and their value
checks. Imports nothing heavy: every command, ``--help`` included, pays for it."""
from __future__ import annotations

import argparse
import sys

from dem.cli_common import EXIT_USAGE, _err
from dem.cli_image import VTI_DEFAULT_MAX_VOXELS

IMAGE_HELP = ("IMAGE is a .npy, .npz (--key), TIFF stack (.tif/.tiff) or .vti file. Arrays are indexed "
              "[z, y, x] (slice, row, column, as tifffile reads a stack); z is the through-plane axis. "
              "Phase 1 conducts by default (--phase to choose another label; 0 is pore).")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _unit_interval(text: str) -> float:
    """A solver tolerance: 0 < value < 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must satisfy 0 < value < 1, got {text}")
    return v


def _resistance(text: str) -> float:
    """R_i in Ω·m² for --interface-resistance: a finite number >= 0."""
    from fva.interface import check_interface_resistance
    try:
        return check_interface_resistance(text, "OHM_M2")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_conductivity(text: str) -> tuple[int, float]:
    """LABEL=S_PER_M for --phase-conductivity."""
    label, sep, value = text.partition("=")
    try:
        lab, v = int(label), float(value)
    except ValueError:
        lab, v = None, float("nan")
    if not sep or lab is None or not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected LABEL=S_PER_M with an integer label and a finite "
                                         f"conductivity >= 0 in S/m, e.g. 85=0.12; got {text!r}")
    return lab, v


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with one line, like every other bad input
        self.print_usage(sys.stderr)
        _err(message)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pelletsim",
                description="DEM die compaction of solid-electrolyte powders and finite-volume ionic "
                            "conductivity of the pellets.",
                epilog="Examples:\n  pelletsim run scenarios/quickstart.toml -o out/quickstart\n"
                       "  pelletsim validate scenarios/quickstart.toml --set particles.count=500\n"
                       "  pelletsim conductivity pellet.tif --voxel-size 0.92e-6 --axis all\n"
                       "  pelletsim plot out/quickstart",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    import dem
    p.add_argument("--version", action="version", version=f"pelletsim {dem.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser("run", help="run a scenario end to end (compaction, conductivity, figures)",
                       description="Run SCENARIO.toml: sizes → loose packing → compaction → conductivity of the "
                                   "captured packings → results.json, history.csv, packings/, PNGs, ParaView files.")
    r.add_argument("scenario", metavar="SCENARIO", nargs="?",
                   help="scenario TOML file (optional with --resume: the checkpoint holds it)")
    r.add_argument("-o", "--outdir", metavar="OUTDIR", help="output folder (default: out/<run.name>)")
    r.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"],
                   help="override run.backend (auto: CUDA, then Vulkan, then CPU)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a scenario value with TOML syntax, e.g. --set particles.count=500 "
                        "--set protocol.0.target_pressure_GPa=0.8 (repeatable)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.add_argument("--overwrite", action="store_true",
                   help="OUTDIR may hold an earlier run: remove pelletsim's outputs there first (other files "
                        "are kept)")
    r.add_argument("--resume", metavar="OUTDIR",
                   help="continue the interrupted run in OUTDIR from its checkpoint.npz (written every "
                        "run.checkpoint_every_s and on SIGTERM/Ctrl-C)")

    v = sub.add_parser("validate", help="check a scenario and print it with every default filled in",
                       description="Validate SCENARIO.toml (after --set overrides) and print the resolved "
                                   "scenario. Exit 0 if valid, 2 otherwise.")
    v.add_argument("scenario", metavar="SCENARIO")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    c = sub.add_parser("conductivity", help="finite-volume conductivity of a voxel image",
                       description="Solve steady conduction through IMAGE and write results.json (+ .vti). "
                                   + IMAGE_HELP)
    _image_args(c)
    c.add_argument("--axis", choices=["x", "y", "z", "all"], default="z", help="transport direction (default z)")
    c.add_argument("--sigma-bulk-mS-per-cm", type=_positive_float, default=10.0, metavar="S",
                   help="conductivity of the conducting phase in mS/cm (default 10 = 1 S/m)")
    c.add_argument("--phase-conductivity", dest="phase_conductivity", action="append", default=[],
                   type=_label_conductivity, metavar="LABEL=S_PER_M",
                   help="conductivity of one label in S/m (repeatable, multi-phase images); labels not "
                        "given are insulating; --phase (or the most conductive label) sets σ_bulk for τ")
    c.add_argument("--grain-labels", dest="grain_labels", action="store_true",
                   help="IMAGE is a grain label image (one label per grain, e.g. a watershed segmentation): every "
                        "label but --pore-label conducts with σ_bulk")
    c.add_argument("--pore-label", dest="pore_label", type=int, default=0, metavar="N",
                   help="pore value of a --grain-labels image (default 0)")
    c.add_argument("--interface-resistance", dest="interface_resistance", type=_resistance, default=0.0,
                   metavar="OHM_M2", help="specific resistance R_i (Ω·m²) of every face between two different "
                                          "grains (needs --grain-labels; default 0)")
    c.add_argument("--flux-tol", type=_unit_interval, default=1e-4,
                   help="spread of the plane currents, inlet/outlet included (0 < tol < 1, default 1e-4)")
    c.add_argument("--rtol", type=_unit_interval, default=None,
                   help="relative true residual ‖b − Ax‖/‖b‖ (0 < tol < 1, default 1e-6: σ within 1e-4)")
    vti = c.add_mutually_exclusive_group()
    vti.add_argument("--no-vti", action="store_true", help="do not write the .vti field files")
    vti.add_argument("--vti", action="store_true",
                     help=f"write the .vti field files also for images above {VTI_DEFAULT_MAX_VOXELS:.3g} voxels "
                          "(about 20 B/voxel more memory and disk)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    a = sub.add_parser("analyze", help="microstructure metrics of a voxel image (porosity profiles, pore "
                                       "sizes, sub-volume tortuosity, interface current)",
                       description="Microstructure heterogeneity of IMAGE: results.json with a "
                                   "'microstructure' object and PNG maps. " + IMAGE_HELP)
    _image_args(a)
    a.add_argument("--rve-grid", type=int, nargs="+", default=[4], metavar="N",
                   help="sub-volume grid, one number or three (default 4 → 4×4×4 = 64)")
    a.add_argument("--contact-fraction", type=_positive_float, default=0.9306,
                   help="electrode contact fraction for the interface current (default 0.9306)")

    ra = sub.add_parser("reanalyse", help="redo the conductivity stage of a run from its saved captures",
                        description="Voxelise and solve again every captured packing of OUTDIR (packings/*.npz) with "
                                    "its resolved scenario — e.g. after a compaction that stopped near its last "
                                    "pressure — and update results.json and the figures.")
    ra.add_argument("outdir", metavar="OUTDIR")
    ra.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"], default=None)
    ra.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    pl = sub.add_parser("plot", help="(re)draw the figures of a finished run",
                        description="Redraw every PNG of OUTDIR from results.json, history.csv and packings/.")
    pl.add_argument("outdir", metavar="OUTDIR")
    pl.add_argument("--compare", nargs="+", default=[], metavar="OTHER",
                    help="overlay the conductivity curves of other runs (e.g. the other Fig. 6b protocol)")
    from dem.sweep_args import add_parser as add_sweep_parser
    add_sweep_parser(sub)
    return p


def _image_args(sp) -> None:
    sp.add_argument("image", metavar="IMAGE", help="voxel image [z, y, x]: .npy, .npz, .tif/.tiff or .vti")
    sp.add_argument("--voxel-size", type=_positive_float, metavar="METRES",
                    help="voxel edge in metres (required unless the file carries it, e.g. .vti)")
    sp.add_argument("--phase", type=int, default=None, metavar="N",
                    help="label of the conducting phase (default 1; 0 is pore)")
    sp.add_argument("--key", default=None, metavar="K", help="array name inside an .npz file")
    sp.add_argument("-o", "--outdir", metavar="OUTDIR", help="output folder (default: out/<image stem>_<command>)")
    sp.add_argument("--preconditioner", default="mg", help="CG preconditioner (default mg)")
    sp.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"], default="cpu")

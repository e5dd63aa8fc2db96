"""The ``pelletsim sweep`` command-line arguments, apart from :mod:`dem.sweep` so that building the parser
imports nothing heavy (every command pays for the parser)."""


def add_parser(sub) -> None:
    """The ``pelletsim sweep`` subcommand (called by dem.cli.build_parser)."""
    s = sub.add_parser("sweep", help="run a parameter sweep: one run per point, in parallel worker processes",
                       description="Run every point of SWEEP.toml (a base scenario and the keys to vary) as an "
                                   "ordinary run in OUTDIR/points/<id>/, on dask.distributed worker processes "
                                   "(a local cluster, or --scheduler). Complete points are skipped, so rerunning "
                                   "resumes. Writes sweep.csv, overlay figures and sensitivity.csv.")
    s.add_argument("sweep", metavar="SWEEP", help="sweep TOML file ([sweep] base = ..., grid / zip / seeds)")
    s.add_argument("-o", "--outdir", metavar="OUTDIR", help="output folder (default: out/<sweep name>)")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (default: cores // threads-per-worker)")
    s.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                   help="Taichi CPU threads per worker (default 1); workers × T ≤ cores")
    s.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="connect to a running Dask scheduler (e.g. tcp://host:8786) instead of a local cluster")
    s.add_argument("--resume", action="store_true",
                   help="continue the sweep in OUTDIR: run only the points not complete (an error if none is there)")
    s.add_argument("--backend", choices=["cpu", "cuda", "vulkan", "auto"], default=None,
                   help="override run.backend of every point")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

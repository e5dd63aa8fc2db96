"""``pelletsim`` command line: run / validate / conductivity / analyze / plot / sweep.

Bad input → one line on stderr and exit status 2 (no traceback; set PELLETSIM_DEBUG=1 to see one);
a simulation failure → exit 1; Ctrl-C → exit 130 with the finished outputs left valid.

The parser is :mod:`dem.cli_parser`; the handlers :mod:`dem.cli_run` (scenarios, run folders) and
:mod:`dem.cli_image` (voxel images); exit statuses and errors :mod:`dem.cli_common`.
"""
from __future__ import annotations

import os
import sys

from dem.cli_common import (  # noqa: F401 (re-exported)
    EXIT_FAIL, EXIT_INTERRUPT, EXIT_OK, EXIT_TERM, EXIT_USAGE, Terminated, UsageError, _check_backend, _err)
from dem.cli_image import (  # noqa: F401 (re-exported)
    VTI_DEFAULT_MAX_VOXELS, SolveProgress, cmd_analyze, cmd_conductivity)
from dem.cli_parser import IMAGE_HELP, build_parser  # noqa: F401 (re-exported)
from dem.cli_run import _print_summary, cmd_plot, cmd_reanalyse, cmd_run, cmd_sweep, cmd_validate  # noqa: F401


def _on_sigterm(signum, frame):
    raise Terminated(f"signal {signum}")


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "conductivity": cmd_conductivity,
            "analyze": cmd_analyze, "plot": cmd_plot, "reanalyse": cmd_reanalyse,
            "sweep": cmd_sweep}


def main(argv=None) -> int:
    """Entry point of the ``pelletsim`` console script; returns the exit status."""
    os.environ.setdefault("TI_LOG_LEVEL", "warn")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    debug = bool(os.environ.get("PELLETSIM_DEBUG"))
    import signal

    old = None
    try:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:          # not the main thread: leave the default
        pass
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"pelletsim: {'terminated (SIGTERM)' if term else 'interrupted'}", file=sys.stderr)
        return EXIT_TERM if term else EXIT_INTERRUPT
    except (UsageError, FileNotFoundError, IsADirectoryError, ValueError) as exc:   # ScenarioError is a ValueError
        if debug:
            raise
        _err(exc)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            raise
        try:
            from dem.simulation import SimulationError
        except Exception:  # pragma: no cover
            SimulationError = ()  # noqa: N806
        from dem.pipeline import PipelineError
        if SimulationError and isinstance(exc, SimulationError):
            _err(f"compaction failed: {exc}")
            return EXIT_FAIL
        if isinstance(exc, PipelineError):
            _err(exc)
            return EXIT_FAIL
        if isinstance(exc, RuntimeError) and "backend" in str(exc):
            _err(exc)
            return EXIT_USAGE
        _err(f"{type(exc).__name__}: {exc} (PELLETSIM_DEBUG=1 shows the traceback)")
        return EXIT_FAIL
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())

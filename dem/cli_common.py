"""What the ``pelletsim`` subcommands share: exit statuses, :class:`UsageError` (exit 2), :class:`Terminated`
(SIGTERM handled as Ctrl-C), the one-line error printer and the backend check."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPT, EXIT_TERM = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, ``timeout``, ``kill``): handled as Ctrl-C, so that what was
    finished is written before the process ends (exit 143)."""


class UsageError(Exception):
    """Bad command-line input (exit 2)."""


def _err(msg: str) -> None:
    lines = str(msg).strip().splitlines() or ["unknown error"]
    for line in lines:
        print(f"pelletsim: error: {line}", file=sys.stderr)


def _check_backend(name: str) -> None:
    from fva.backend import resolve_backend
    try:
        resolve_backend(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(str(exc)) from None

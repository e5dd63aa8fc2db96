"""Run test code on the Vulkan backend in a child process (one Taichi runtime per process)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_on_vulkan(body: str, marker: str, timeout_s: float = 300) -> list[str]:
    """Run ``body`` after ``ensure_init('vulkan', 'f64')`` in a child interpreter at the repository root and
    return the words after ``marker`` on the first stdout line that starts with it (skips without Vulkan)."""
    from fva.backend import _arch_available

    if not _arch_available("vulkan"):
        pytest.skip("no Vulkan device")
    code = "import numpy as np\nfrom fva.backend import ensure_init\nensure_init('vulkan', 'f64')\n" + body
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith(marker)]
    assert line, out.stderr[-2000:]
    return line[0].split()[1:]

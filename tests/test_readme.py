"""The README's Python API quick starts run as written (the first two ```python blocks, in order, one namespace;
later blocks, such as the cluster snippet of the sweep section, need a cluster)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run(taichi_runtime, capsys):
    blocks = _python_blocks()[:2]      # (the third, a dask scheduler for sweeps, waits for a key press)
    assert len(blocks) == 2, "README: the FV solve and the compaction quick starts"
    assert "solve_conductivity" in blocks[0] and "run_compaction" in blocks[1]
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), ns)
    assert len(ns["res"].packings) == 2
    out = capsys.readouterr().out.split("\n")
    sigma, tau, eps = (float(x) for x in out[0].split())
    assert 0 < sigma < 0.2 and tau > 1 and 0 < eps < 1           # FV block: σ_eff < σ_bulk, τ > 1
    assert "load 0.30 GPa" in out[1] and float(out[2]) > 1      # compaction block: its captures, then τ

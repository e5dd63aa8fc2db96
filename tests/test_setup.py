"""The set-up path (dem.setup) and the identity of captures (dem.types.CaptureSpec) from request to result."""
import dataclasses

import numpy as np
import pytest

from dem.types import CaptureSpec, CompactionResult, Stage, capture_specs
from fva.types import Packing

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"


def _protocol():
    return [Stage("load", 0.5e9, 0.1, capture_pressures_Pa=(0.3e9, 0.1e9)),
            Stage("unload", 0.1e9, 0.1, capture_pressures_Pa=(0.2e9, 0.1e9)),
            Stage("hold", 0.1e9, hold_time_s=1e-6, capture_pressures_Pa=(0.1e9,)),
            Stage("load", 0.8e9, 0.1, capture_pressures_Pa=(0.8e9,), cycle=1),
            Stage("unload", 0.0, 0.1, capture_pressures_Pa=(0.0,), cycle=1)]


def test_capture_specs_in_the_order_the_driver_takes_them():
    specs = capture_specs(_protocol())
    assert [(c.stage_index, c.kind, c.pressure_Pa, c.pelletizing_Pa, c.cycle) for c in specs] == [
        (0, "load", 0.1e9, 0.1e9, 0), (0, "load", 0.3e9, 0.3e9, 0),
        (1, "unload", 0.2e9, 0.5e9, 0), (1, "unload", 0.1e9, 0.5e9, 0),
        (2, "hold", 0.1e9, 0.5e9, 0), (3, "load", 0.8e9, 0.8e9, 1), (4, "unload", 0.0, 0.8e9, 1)]
    assert [c.protocol for c in specs] == ["variable_pressure"] * 2 + ["stack_pressure"] * 3 + \
        ["variable_pressure", "stack_pressure"]


def _scenario(**conductivity):
    from dem.scenario import load_scenario

    sets = ["protocol.2.capture_pressures_GPa=[0.0]"] + [f"conductivity.{k}={v}" for k, v in conductivity.items()]
    return load_scenario(TINY, sets)


def test_select_captures_reads_the_spec_not_the_label_or_pressure():
    """A capture far off its nominal pressure (a large overshoot) or labelled freely is still the capture of its
    spec: the old pairing by order and "±25 % + 5 MPa" and the search for "load" in labels are gone."""
    from dem.pipeline import select_captures
    from dem.scenario import expand_protocol

    scen = _scenario()
    specs = [c for e in expand_protocol(scen) for c in e.captures]
    assert [c.kind for c in specs] == ["load", "load", "unload"]
    pk = Packing(np.zeros((1, 3)) + 5e-6, np.array([1e-6]), np.array([6e-5, 6e-5, 1e-5]))
    packings = [dataclasses.replace(pk, pressure_Pa=0.2e9, label="x"),        # 0.1 GPa asked, 0.2 reached
                dataclasses.replace(pk, pressure_Pa=0.3e9, label="unload?"),
                dataclasses.replace(pk, pressure_Pa=0.1e9, label="load after")]
    sel = select_captures(scen, packings, specs)
    assert [(i, sp.pressure_Pa) for i, _, sp in sel] == [(0, 0.1e9), (1, 0.3e9)]
    stack = _scenario(protocol='"stack_pressure"')
    assert [i for i, _, _ in select_captures(stack, packings, specs)] == [2]
    at = _scenario(pressures_GPa="[0.1]")
    assert [i for i, _, _ in select_captures(at, packings, specs)] == [0]
    with pytest.raises(ValueError):        # a packing without its spec is a bug, never paired by guess
        select_captures(scen, packings, specs[:2])


def test_checkpoint_tree_keeps_the_capture_specs(tmp_path):
    from dem.checkpoint import load_checkpoint, save_checkpoint
    from dem.protocol import result_from_tree, result_tree

    specs = capture_specs(_protocol())[:2]
    pk = Packing(np.ones((2, 3)) * 1e-5, np.full(2, 1e-6), np.array([1e-4, 1e-4, 5e-5]), pressure_Pa=0.11e9,
                 label="load 0.10 GPa")
    res = CompactionResult(history={"step": np.arange(3)}, packings=[pk, pk], captures=specs, info={"n_steps": 3})
    save_checkpoint(tmp_path / "c.npz", {"completed": result_tree(res)})
    back = result_from_tree(load_checkpoint(tmp_path / "c.npz")["completed"])
    assert back.captures == specs and all(isinstance(c, CaptureSpec) for c in back.captures)

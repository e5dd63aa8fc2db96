"""Checkpoints and ``pelletsim run --resume`` (issue 16): a tiny run killed mid-compaction (kill -9, or
SIGTERM) and resumed ends bitwise where the uninterrupted run does, on the CPU; a checkpoint of another
version or scenario is refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dem.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.toml"
SETS = ["--set", "run.checkpoint_every_s=0.3", "--set", "microstructure.enabled=false", "--set", "run.plots=false"]
SKIP_KEYS = ("wall", "timings", "utc", "per_s", "resumed", "versions", "host_")  # host_: this process's traffic


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (it checkpoints too: writing checkpoints must not change a number)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["run", str(TINY), "-o", str(out), "-q", *SETS]) == 0
    assert not (out / "checkpoint.npz").exists()          # removed once the run completed
    return out


def _start(out: Path) -> subprocess.Popen:
    env = {**os.environ, "TI_LOG_LEVEL": "error"}
    return subprocess.Popen([sys.executable, "-m", "dem.cli", "run", str(TINY), "-o", str(out), "-q", *SETS],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(pred, proc, timeout=120.0):
    t = time.time()
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted: "
                        f"{proc.stderr.read().decode()[-500:]}")
        if time.time() - t > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def _compare_json(a, b, path=""):
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        keys = {k for k in set(a) | set(b) if not any(s in k for s in SKIP_KEYS)}
        for k in keys:
            assert k in a and k in b, f"{path}.{k} missing"
            _compare_json(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _compare_json(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _assert_same_run(ref: Path, out: Path) -> None:
    assert (ref / "history.csv").read_text() == (out / "history.csv").read_text()
    for f in sorted((ref / "packings").glob("*.npz")):
        with np.load(f) as x, np.load(out / "packings" / f.name) as y:
            assert set(x.files) == set(y.files)
            for k in x.files:
                assert np.array_equal(x[k], y[k]), (f.name, k)
    frames = sorted((ref / "particles").glob("*.vtp"))
    assert frames and [p.name for p in frames] == sorted(p.name for p in (out / "particles").glob("*.vtp"))
    import pyvista as pv
    for f in frames:
        x, y = pv.read(f), pv.read(out / "particles" / f.name)
        assert np.array_equal(x.points, y.points) and set(x.point_data) == set(y.point_data)
        for k in x.point_data:
            assert np.array_equal(x.point_data[k], y.point_data[k]), (f.name, k)
    ra = json.loads((ref / "results.json").read_text())
    rb = json.loads((out / "results.json").read_text())
    assert rb["status"] == "complete" and rb["resumed_from_step"] > 0
    _compare_json(ra, rb)
    assert not (out / "checkpoint.npz").exists()


def _mid_compaction(out: Path) -> int:
    from dem.checkpoint import load_checkpoint

    tree = load_checkpoint(out / "checkpoint.npz")
    step = int(tree["meta_step"])
    assert 0 < step and tree["driver"]["stage"]["si"] < 3
    return step


def test_kill9_mid_compaction_resume_is_bitwise(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(lambda: (out / "checkpoint.npz").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = _mid_compaction(out)
    n_steps = json.loads((reference / "results.json").read_text())["compaction"]["n_steps"]
    assert step < n_steps
    assert main(["run", "--resume", str(out), "-q"]) == 0
    _assert_same_run(reference, out)


def test_sigterm_checkpoints_then_resume_is_bitwise(reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for(lambda: (out / "history.csv").is_file() and len((out / "history.csv").read_text().splitlines()) > 3,
              proc)
    ck = out / "checkpoint.npz"
    ck.unlink(missing_ok=True)           # a periodic one may exist: the one tested is written on the signal
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert "--resume" in proc.stderr.read().decode()
    assert ck.is_file()
    _mid_compaction(out)
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert main(["run", "--resume", str(out), "-q"]) == 0
    _assert_same_run(reference, out)


# ------------------------------------------------------------------------------------------ refusals
def _fake_checkpoint(folder: Path, **meta_changes) -> None:
    from dem.checkpoint import save_checkpoint
    from dem.checkpoint import checkpoint_meta
    from dem.scenario import load_scenario

    folder.mkdir(parents=True, exist_ok=True)
    meta = {**checkpoint_meta(load_scenario(TINY)), **meta_changes}
    save_checkpoint(folder / "checkpoint.npz", {"meta": meta, "meta_step": 10, "engine": {"x": np.zeros(3)}})


def test_resume_refuses_another_version(tmp_path, capsys):
    _fake_checkpoint(tmp_path / "r", pelletsim="0.0.1")
    assert main(["run", "--resume", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "pelletsim 0.0.1" in err and "--overwrite" in err


def test_resume_refuses_another_scenario(tmp_path, capsys):
    _fake_checkpoint(tmp_path / "r")
    assert main(["run", str(TINY), "--set", "particles.count=61", "--resume", str(tmp_path / "r")]) == 2
    assert "differs" in capsys.readouterr().err
    assert main(["run", "--set", "particles.count=61", "--resume", str(tmp_path / "r")]) == 2
    assert "--set" in capsys.readouterr().err


def test_checkpoint_of_a_histogram_scenario_needs_no_csv(tmp_path):
    """The checkpoint's scenario holds a histogram CSV's bins: --resume reads it after the CSV is gone, and a
    scenario given with --resume matches it only while its CSV holds the same bins."""
    from dem.checkpoint import CheckpointError, checkpoint_meta, read_resume, save_checkpoint
    from dem.scenario import load_scenario

    src = tmp_path / "scen"
    src.mkdir()
    (src / "sizes.csv").write_text("d_low_um,d_high_um,count\n14,18,1\n18,22,2\n22,26,1\n")
    text = TINY.read_text().replace('distribution = "gamma"', 'distribution = "histogram"\nhistogram_csv = "sizes.csv"')
    (src / "tiny.toml").write_text(text)
    scen = load_scenario(src / "tiny.toml")
    save_checkpoint(tmp_path / "r" / "checkpoint.npz", {"meta": checkpoint_meta(scen), "meta_step": 10})
    assert read_resume(tmp_path / "r", scen)[0].particles.histogram_bins_um[1] == (18.0, 22.0, 2.0)
    (src / "sizes.csv").write_text("d_low_um,d_high_um,count\n14,18,1\n18,22,3\n22,26,1\n")
    with pytest.raises(CheckpointError, match="differs"):
        read_resume(tmp_path / "r", load_scenario(src / "tiny.toml"))
    (src / "sizes.csv").unlink()
    assert read_resume(tmp_path / "r")[0].particles == scen.particles


def test_resume_without_checkpoint_exit_2(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err
    assert main(["run"]) == 2


def test_checkpoint_round_trip_keeps_bits(tmp_path):
    from dem.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(0)
    tree = {"a": {"x": rng.random((5, 3)), "n": 3, "f": 0.1 + 0.2, "none": None, "nan": float("nan")},
            "l": [{"y": np.arange(4, dtype=np.int32)}, 1.0 / 3.0], "s": "text"}
    save_checkpoint(tmp_path / "c.npz", tree)
    back = load_checkpoint(tmp_path / "c.npz")
    assert np.array_equal(back["a"]["x"], tree["a"]["x"]) and back["a"]["f"] == 0.1 + 0.2
    assert back["a"]["none"] is None and np.isnan(back["a"]["nan"]) and back["l"][1] == 1.0 / 3.0
    assert back["l"][0]["y"].dtype == np.int32 and back["s"] == "text"


def test_interrupted_after_compaction_resumes_at_conductivity(reference, tmp_path, monkeypatch):
    """Stopped in the conductivity stage: the checkpoint holds the finished compaction, so --resume redoes
    only the later stages — with the uninterrupted run's numbers."""
    import dem.pipeline as P

    out = tmp_path / "run"
    real = P._conductivity_stage

    def stop(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(P, "_conductivity_stage", stop)
    assert main(["run", str(TINY), "-o", str(out), "-q", *SETS]) == 130
    from dem.checkpoint import load_checkpoint
    assert "completed" in load_checkpoint(out / "checkpoint.npz")
    monkeypatch.setattr(P, "_conductivity_stage", real)
    import dem.protocol
    monkeypatch.setattr(dem.protocol, "run_compaction", None)     # the compaction must not run again
    assert main(["run", "--resume", str(out), "-q"]) == 0
    _assert_same_run(reference, out)


def test_engine_state_dict_round_trip_bitwise_with_grown_pair_capacity(taichi_runtime, monkeypatch):
    """Simulation.state_dict → a fresh Simulation.load_state_dict continues bitwise, also when the saved
    Verlet list had grown past the fresh one's capacity (or is smaller than it)."""
    import dem.simulation as S
    from dem.loose import insert_loose
    from dem.types import Material, SimParams

    d = np.random.default_rng(3).uniform(14e-6, 26e-6, 60)
    pk = insert_loose(d, 60e-6, 60e-6, target_fraction=0.3, seed=3)
    mat = Material(1900.0, 20e9, 0.3, yield_stress_Pa=5e8, friction=0.3, wall_friction=0.1)
    params = SimParams(mass_scaling=1e5, dt_safety=0.2)
    real = S.NeighbourList

    def run(sim, n):
        sim.advance(n, on_check=lambda s: False)
        return sim.x.to_numpy(), sim.v.to_numpy(), sim.nlist.hist.to_numpy()[:sim.nlist.npairs]

    for small_first in (True, False):
        # the saved run starts with a 16-pair list (it grows) and the fresh one with the default, or the reverse
        monkeypatch.setattr(S, "NeighbourList", (lambda *a, capacity=None, **k: real(*a, capacity=16, **k))
                            if small_first else real)
        a = S.Simulation(pk, mat, None, params)
        a.set_punch_velocity(-0.05)
        run(a, 400)
        state = a.state_dict()
        xa, va, ha = run(a, 400)
        monkeypatch.setattr(S, "NeighbourList", real if small_first else
                            (lambda *a, capacity=None, **k: real(*a, capacity=16, **k)))
        b = S.Simulation(pk, mat, None, params)
        assert b.nlist.capacity != state["contacts"]["capacity"]
        b.load_state_dict(state)
        xb, vb, hb = run(b, 400)
        assert a.nlist.npairs > 16 and a.step_count == b.step_count
        assert np.array_equal(xa, xb) and np.array_equal(va, vb) and np.array_equal(ha, hb)
        assert a.punch_z == b.punch_z and a.time_s == b.time_s

"""fva.backend.host_traffic and results.json's host_launches_per_step / host_syncs_per_step: the counters see
every kernel launch (a graph run counts as one) and every host sync, checked on small kernels and against an
independent count (a profiler hook on Taichi's C++ entry points: ``Program.launch_kernel``,
``CompiledGraph.jit_run``, ``synchronize``, ndarray element reads/writes) on a tiny compaction."""
import collections
import sys

import numpy as np

from fva.backend import host_traffic, ti
from fva.launch import PreparedKernel

_SYNC_CALLS = ("synchronize", "read_float", "read_int", "write_float", "write_int")


@ti.kernel
def _inc(a: ti.types.ndarray()):
    for i in range(a.shape[0]):
        a[i] += 1.0


@ti.kernel
def _total(a: ti.types.ndarray()) -> float:
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i]
    return s


class _CCalls:
    """Counts the C functions called while active (sys.setprofile 'c_call' events), by name."""

    def __enter__(self):
        self.n = collections.Counter()

        def prof(frame, event, arg):
            if event == "c_call":
                self.n[getattr(arg, "__name__", "")] += 1
        sys.setprofile(prof)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)

    @property
    def launches(self):
        return self.n["launch_kernel"] + self.n["jit_run"]      # a kernel, or a graph of kernels (one host call)

    @property
    def syncs(self):
        return sum(self.n[k] for k in _SYNC_CALLS)


def test_each_kind_of_host_traffic_is_counted(taichi_runtime):
    a = ti.ndarray(ti.f64, 4)
    pk = PreparedKernel(_inc)

    def delta(fn):
        t0 = host_traffic()
        fn()
        return tuple(int(x) for x in np.subtract(host_traffic(), t0))

    assert delta(lambda: _inc(a)) == (1, 0)                  # a launch, no wait
    assert delta(lambda: _total(a)) == (1, 1)                # a returned value waits for the device
    assert delta(lambda: a.to_numpy()) == (1, 1)             # Taichi's copy kernel, then a read
    assert delta(lambda: a.from_numpy(np.ones(4))) == (1, 1)
    assert delta(lambda: a[1]) == (0, 1) and delta(lambda: a.__setitem__(2, 3.0)) == (0, 1)
    assert delta(lambda: (pk(a), pk(a))) == (2, 0)           # the prepared path counts too


def test_compaction_reports_the_launches_and_syncs_it_issued(taichi_runtime):
    from dem.simulation import run_compaction
    from dem.types import Die, SimParams, Stage
    from tests.test_dem_simulation import A, _lattice, _tn

    prot = [Stage("load", 10e6, punch_speed_m_per_s=0.1, capture_pressures_Pa=(5e6,)),
            Stage("unload", 2e6, punch_speed_m_per_s=0.1)]
    with _CCalls() as c:
        res = run_compaction(_lattice(nx=3, nz=3), _tn(), Die(3 * A, 3 * A, 3 * A), prot,
                             SimParams(mass_scaling=1e4, history_every=50, volume_correction=True))
    info = res.info
    assert info["host_launches"] == c.launches > 0
    assert c.n["jit_run"] > 0                       # the steps run in graph-replayed blocks
    assert info["host_launches"] < info["n_steps"]    # fewer host calls than steps
    assert info["host_syncs"] == c.syncs > 0
    assert info["host_launches_per_step"] == info["host_launches"] / info["n_steps"]
    assert info["host_syncs_per_step"] == info["host_syncs"] / info["n_steps"]

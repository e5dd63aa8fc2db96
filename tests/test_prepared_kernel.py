"""fva.launch.PreparedKernel: the lean launch path gives the plain call's results, follows changed arguments,
and falls back to the plain call where it cannot prepare."""
import numpy as np

from fva.backend import ti
from fva.launch import PreparedKernel


@ti.kernel
def _axpy(k: ti.template(), n: ti.i32, a: float, x: ti.types.ndarray(), y: ti.types.ndarray()):
    for i in range(n):
        y[i] += k * a * x[i]


@ti.kernel
def _total(n: ti.i32, x: ti.types.ndarray()) -> float:
    s = 0.0
    for i in range(n):
        s += x[i]
    return s


def _nd(a):
    out = ti.ndarray(ti.f64, len(a))
    out.from_numpy(np.asarray(a, dtype=np.float64))
    return out


def test_prepared_launch_follows_changed_arguments(taichi_runtime):
    xs = np.arange(8.0)
    x, y = _nd(xs), _nd(np.zeros(8))
    pk = PreparedKernel(_axpy)
    pk(1, 8, 2.0, x, y)
    pk(1, 8, 2.0, x, y)                       # same arguments: the prepared list is reused
    assert pk.fast
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs)
    assert pk.prepares == 1
    pk(1, 4, -1.0, x, y)                      # changed scalars: patched in place, not prepared again
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs - np.where(np.arange(8) < 4, xs, 0.0))
    assert pk.prepares == 1
    pk(1, 4, 1.0, x, y)                       # and back
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs)
    pk(1, 8, np.float64(0.5), x, y)           # numpy scalars too
    np.testing.assert_array_equal(y.to_numpy(), 4.5 * xs)
    pk(1, 8, -0.5, x, y)
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs)
    big = 512                                  # an equal template value that is another int object (> 256)
    pk(big, 8, 0.0, x, y)
    pk(int(str(big)), 8, 1.0 / big, x, y)
    np.testing.assert_array_equal(y.to_numpy(), 5.0 * xs)
    assert pk.prepares == 2
    pk(1, 8, -1.0, x, y)
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs)
    assert pk.prepares == 3
    pk(1, 4, -1.0, x, y)
    y2 = _nd(np.ones(8))
    pk(3, 8, 1.0, x, y2)                      # a new ndarray and a new template instance: prepared again
    np.testing.assert_array_equal(y2.to_numpy(), 1.0 + 3.0 * xs)
    np.testing.assert_array_equal(y.to_numpy(), 4.0 * xs - np.where(np.arange(8) < 4, xs, 0.0))
    assert pk.prepares == 4
    pk(1, 8, 1.0, x, y2)                      # only the template value changed: prepared again
    np.testing.assert_array_equal(y2.to_numpy(), 1.0 + 4.0 * xs)
    assert pk.prepares == 5
    assert pk.fast


def test_kernel_with_a_return_value_falls_back(taichi_runtime):
    pk = PreparedKernel(_total)
    assert pk(5, _nd(np.arange(8.0))) == 10.0
    assert not pk.fast


def test_dem_blocks_bitwise_equal_to_plain_launches(taichi_runtime):
    """A hot gas (many neighbour-list rebuilds, so npairs and the pair arrays change between blocks) advanced by
    graph-replayed blocks and by the same kernels launched one by one from Python ends in the same state to the
    bit."""
    from tests.test_dem_neighbours import _hot_gas

    runs = []
    for use_graph in (True, False):
        sim = _hot_gas(n=120)
        sim._graph.use_graph = use_graph
        sim.nlist._graph.use_graph = use_graph
        b0 = sim.nlist.builds
        sim.advance(150)
        assert sim.nlist.builds - b0 > 10
        assert sim._graph.use_graph is use_graph
        runs.append((sim.x.to_numpy(), sim.v.to_numpy(), sim.nlist.hist.to_numpy()[: sim.nlist.npairs]))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)

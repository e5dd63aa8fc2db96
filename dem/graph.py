"""Replay a fixed sequence of Taichi kernel launches with one host call (``ti.graph``).

Taichi's graphs record the dispatches once and replay them from C++ with new arguments: the Python cost of a
launch (argument checks and marshalling, ≈ 0.2–0.5 ms with tens of ndarrays) is paid once per sequence, not per
kernel. Used by the engine's blocks of steps (:mod:`dem.block`) and the neighbour-list build.
"""
import os

from fva.backend import TRAFFIC, ti


def _scalar_type(anno):
    from taichi.lang import impl
    if anno is float:
        return impl.get_runtime().default_fp
    if anno is int:
        return impl.get_runtime().default_ip
    return anno


_CPP_KERNELS: dict = {}   # (kernel, argument types) → Taichi's compiled kernel, shared by all graphs
_CPP_PROGRAM = [None]     # the Taichi program those belong to: a new ti.init (another backend) starts afresh


def _cpp_cache() -> dict:
    from taichi.lang import impl
    prog = impl.get_runtime().prog
    if _CPP_PROGRAM[0] is not prog:
        _CPP_KERNELS.clear()
        _CPP_PROGRAM[0] = prog
    return _CPP_KERNELS


def graphs_enabled() -> bool:
    """False when the environment variable PELLETSIM_NO_GRAPH is set to anything but "", "0", "false", "no"."""
    return os.environ.get("PELLETSIM_NO_GRAPH", "") in ("", "0", "false", "no")


class KernelGraph:
    """Records and replays sequences of dispatches. A sequence is a list of (kernel, names): ``names`` gives, in
    the kernel's parameter order, the keys of the values dict that feed each parameter (the same name may feed
    several kernels). A graph is compiled per sequence key (cheap: the kernels themselves compile once) and
    cached; ``run(key, seq_fn, values)`` replays it with ``values`` (name → ndarray or scalar): one host launch,
    counted as such in :func:`fva.backend.host_traffic` (the kernels it queues are device work, not host
    calls). The kernels may take no template arguments. Where graphs are unavailable (``use_graph=False``, or
    a failure to build one) the same dispatches are launched one by one from Python — same kernels, same
    order, same results."""

    def __init__(self, use_graph: bool | None = None):
        # default: graphs unless the environment sets PELLETSIM_NO_GRAPH (1/true/yes)
        self.use_graph = graphs_enabled() if use_graph is None else bool(use_graph)
        self._graphs: dict = {}

    @staticmethod
    def _arg(anno, name, value):
        from taichi.lang._ndarray import Ndarray
        kinds = ti.graph.ArgKind
        if isinstance(value, Ndarray):
            return ti.graph.Arg(kinds.NDARRAY, name, dtype=value.dtype, ndim=len(value.shape))
        return ti.graph.Arg(kinds.SCALAR, name, _scalar_type(anno))

    def _build(self, seq, values):
        from taichi.graph._graph import flatten_args, gen_cpp_kernel
        b = ti.graph.GraphBuilder()
        for kernel, names in seq:
            params = kernel._primal.arguments
            assert len(params) == len(names), (kernel, names)
            args = [self._arg(a.annotation, nm, values[nm]) for a, nm in zip(params, names)]
            # the compiled kernel for these argument types, looked up once: Taichi's GraphBuilder.dispatch
            # re-derives it on every call by allocating dummy ndarrays (≈ 10 ms per dispatch of the step kernel)
            sig = (kernel, tuple((type(v).__name__, getattr(v, "dtype", None), len(getattr(v, "shape", ())))
                                 for v in (values[nm] for nm in names)))
            cache = _cpp_cache()
            cpp = cache.get(sig)
            if cpp is None:
                cpp = cache[sig] = gen_cpp_kernel(kernel, args)
            b._graph_builder.dispatch(cpp, flatten_args(args))
        return b.compile()

    def run(self, key, seq_fn, values: dict):
        """Run the sequence ``key`` (its dispatch list from ``seq_fn()`` on first use) with ``values``."""
        if self.use_graph:
            g = self._graphs.get(key)
            if g is None:
                try:
                    g = self._graphs[key] = self._build(seq_fn(), values)
                except Exception as exc:   # pragma: no cover - a Taichi without graphs on this backend
                    import logging
                    logging.getLogger("pelletsim").warning("kernel graphs unavailable (%s): launching one by one",
                                                           exc)
                    self.use_graph = False
            if g is not None:
                TRAFFIC.launches += 1
                g.run(values)
                return
        for kernel, names in seq_fn():
            kernel(*[values[nm] for nm in names])

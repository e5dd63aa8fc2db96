"""Prepared kernel launches (:class:`PreparedKernel`): a ``@ti.kernel`` called with less Python per launch,
through Taichi 1.7 internals; counted in :func:`fva.backend.host_traffic`."""
from __future__ import annotations

import os

import numpy as np

from fva.backend import TRAFFIC, log, ti


class PreparedKernel:
    """Launch a ``@ti.kernel`` with less Python per call: the argument list is type-checked and specialised
    once, then every call only rebuilds Taichi's launch context (the executor overwrites its ndarray slots
    with raw pointers at launch, so a context cannot be reused) and sets the arguments from a prepared list.

    Call it exactly as the kernel: ``pk(*args)``. While the arguments are the same objects / values as at the
    previous call (a tuple comparison, identity first), the prepared list is reused; otherwise it is prepared
    again (compiling a new template instance if needed). Measured on the 2-core CPU with the DEM step kernel
    (43 arguments, 25 ndarrays): Taichi's own ``Kernel.__call__`` costs 330–500 µs per launch of an empty
    kernel, this 170–230 µs (the rest is the executor's per-task dispatch, ≈ 70 µs per parallel loop).

    Uses Taichi 1.7 internals (``Kernel.ensure_compiled``, ``make_launch_context``, ``Program.launch_kernel``);
    if they are missing or a kernel uses anything but scalars and ndarrays, or returns a value, it falls back to
    the plain call (``self.fast`` says which path is active). ``PELLETSIM_PLAIN_LAUNCH=1`` forces the plain
    path. A re-``ti.init`` is detected (new program object) and prepares again. On a GPU backend the plain path
    is used unless ``PELLETSIM_PREPARED_LAUNCH=1``: the prepared one has only been validated on the CPU (bitwise
    against plain launches, ``tests/test_prepared_kernel.py``; run that test on the GPU with the variable set).
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.fast = os.environ.get("PELLETSIM_PLAIN_LAUNCH", "") not in ("1", "true", "yes")
        self._args = None
        self._prog = None
        self.prepares = 0      # full preparations so far (scalar-only changes are patched, not counted)

    def _prepare(self, args):
        from taichi.lang import impl
        from taichi.lang.kernel_impl import _process_args, template
        from taichi.lang.util import cook_dtype
        from taichi.types import ndarray_type, primitive_types
        from taichi.types.utils import is_signed

        prim = self.kernel._primal
        if prim.return_type is not None or getattr(prim, "has_print", False):
            raise TypeError("kernel returns a value or prints")
        if (impl.current_cfg().arch not in (ti.x64, ti.arm64)
                and os.environ.get("PELLETSIM_PREPARED_LAUNCH", "") not in ("1", "true", "yes")):
            raise TypeError("prepared launches are validated on the CPU only (PELLETSIM_PREPARED_LAUNCH=1 to try)")
        full = _process_args(prim, args, {})
        t_kernel = prim.compiled_kernels[prim.ensure_compiled(*full)]
        prog = impl.get_runtime().prog
        ctx_cls = type(t_kernel.make_launch_context())
        setters, slot, setter_of = [], 0, []
        for a, v in zip(prim.arguments, full):
            ann = a.annotation
            if isinstance(ann, template):
                setter_of.append(None)
                continue
            setter_of.append(len(setters))
            if isinstance(ann, ndarray_type.NdarrayType) and hasattr(v, "arr"):
                if v.grad is not None:
                    raise TypeError("ndarray with gradient")
                setters.append((ctx_cls.set_arg_ndarray, (slot,), v.arr))
            elif id(ann) in primitive_types.real_type_ids and isinstance(v, (float, int, np.floating, np.integer)):
                setters.append((ctx_cls.set_arg_float, (slot,), float(v)))
            elif (id(ann) in primitive_types.integer_type_ids and isinstance(v, (int, np.integer))
                  and is_signed(cook_dtype(ann))):
                setters.append((ctx_cls.set_arg_int, (slot,), int(v)))
            else:
                raise TypeError(f"argument {a.name}: only scalars and ndarrays are prepared")
            slot += 1
        trial = t_kernel.make_launch_context()      # the setters must work before any launch relies on them
        for setter, idx, val in setters:
            setter(trial, idx, val)
        self._ckd = prog.compile_kernel(prog.config(), prog.get_device_caps(), t_kernel)
        self._make_ctx = t_kernel.make_launch_context
        self._launch = prog.launch_kernel
        self._setters = setters
        self._setter_of = setter_of
        self._args = args
        self._prog = prog
        self.prepares += 1

    def _patch_scalars(self, args) -> bool:
        """When only scalar arguments changed (same ndarrays, same template values), update their prepared
        values in place — a full prepare costs ≈ 0.6 ms, more than the plain call saves. False otherwise."""
        old = self._args
        if old is None or len(args) != len(old) or self._prog is not _runtime_program():
            return False
        patches = []
        for k, (a, b) in enumerate(zip(args, old)):
            if a is b:
                continue
            s = self._setter_of[k] if k < len(self._setter_of) else None
            if s is None:                        # a template argument: only an equal value keeps the instance
                if type(a) is type(b) and isinstance(a, (int, float, str)) and a == b:
                    continue
                return False
            if isinstance(a, bool) or not isinstance(a, (int, float, np.floating, np.integer)):
                return False
            setter, idx, prev = self._setters[s]
            if isinstance(prev, float):
                patches.append((s, (setter, idx, float(a))))
            elif isinstance(prev, int) and isinstance(a, (int, np.integer)):
                patches.append((s, (setter, idx, int(a))))
            else:
                return False
        for s, t in patches:
            self._setters[s] = t
        self._args = args
        return True

    def __call__(self, *args):
        if self.fast:
            if (args != self._args or self._prog is not _runtime_program()) and not self._patch_scalars(args):
                try:
                    self._prepare(args)
                except Exception as exc:  # any failure to prepare → Taichi's own call (which reports real errors)
                    log.debug("PreparedKernel: plain launches for %s (%s)", self.kernel, exc)
                    self.fast = False
                    return self.kernel(*args)
            ctx = self._make_ctx()
            for setter, idx, val in self._setters:
                setter(ctx, idx, val)
            self._launch(self._ckd, ctx)
            TRAFFIC.launches += 1
            return None
        return self.kernel(*args)


def _runtime_program():
    from taichi.lang import impl

    return impl.get_runtime().prog

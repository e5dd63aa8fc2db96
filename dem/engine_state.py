"""The engine's whole dynamic state as named parts of host data (a mixin of :class:`dem.simulation.Simulation`):
the checkpoint format, restored bitwise on the CPU."""
import numpy as np

from dem.punch import Ctrl, Servo, servo_drives


class EngineState:
    """``state_dict`` / ``load_state_dict`` of a :class:`dem.simulation.Simulation`."""

    STATE_FORMAT = 4     # 3: the hold servo's device state (control.servo); 4: Ctrl.PHI_MIN
    # named parts of the engine state: per-particle arrays, per-pair contact records, scalars
    _PARTICLE_ARRAYS = ("x", "v", "w", "r", "f", "fc", "tq", "eps_v", "eps_p", "phi_c", "wall_hist", "fwall",
                        "ewall", "ncont")
    _PAIR_ARRAYS = ("partner", "pair_owner", "hist", "rev_pairs")
    _ROW_ARRAYS = ("row_start", "rev_start", "x_build", "r_build")

    def state_dict(self) -> dict:
        """The whole dynamic state, as named parts of host (numpy) data: ``particles`` (positions, velocities,
        spins, radii and their growth, forces of the last step, wall-contact histories), ``contacts`` (the
        Verlet list with each pair's contact history, its build snapshot and counters; the per-pair force
        records are derived, recomputed on load), ``control``
        (punch position/velocity/time, step, block cap, pressure thresholds, the hold servo's slots
        :class:`dem.punch.Servo`). With :meth:`load_state_dict` on a
        Simulation built from the same packing, material, die and params, the run continues bitwise (CPU).
        Everything else (masses, contact parameters, the time step, the solid-fraction points) follows from
        the constructor's inputs; the engine draws no random numbers while it runs."""
        nl = self.nlist
        m = nl.npairs
        return {
            "format": self.STATE_FORMAT,
            "particles": {k: getattr(self, k).to_numpy() for k in self._PARTICLE_ARRAYS},
            "contacts": {**{k: getattr(nl, k).to_numpy()[:m] for k in self._PAIR_ARRAYS},
                         **{k: getattr(nl, k).to_numpy() for k in self._ROW_ARRAYS},
                         "npairs": int(m), "capacity": int(nl.capacity), "builds": int(nl.builds),
                         "grow_events": int(nl.grow_events)},
            "control": {"ctrl": self._ctrl_now(), "servo": self.servo.to_numpy(), "step_count": int(self.step_count),
                        "k_cap": None if self.k_cap is None else int(self.k_cap),
                        "stop_above_Pa": float(self.stop_above_Pa), "stop_below_Pa": float(self.stop_below_Pa)},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (see there); raises ValueError when it belongs to another system."""
        if int(state.get("format", -1)) != self.STATE_FORMAT:
            raise ValueError(f"engine state format {state.get('format')} is not {self.STATE_FORMAT}")
        P, C, K = state["particles"], state["contacts"], state["control"]
        if P["x"].shape != (self.n, 3):
            raise ValueError(f"engine state holds {P['x'].shape[0]} particles, this simulation {self.n}")
        for k in self._PARTICLE_ARRAYS:
            getattr(self, k).from_numpy(np.ascontiguousarray(P[k]))
        nl = self.nlist
        cap, m = int(C["capacity"]), int(C["npairs"])
        if cap != nl.capacity:
            nl._alloc_pairs(cap)
        if cap != self._pair_cap:
            self._alloc_pair_work(cap)
        for k in self._PAIR_ARRAYS:
            a = getattr(nl, k).to_numpy()
            a[:m] = C[k]
            getattr(nl, k).from_numpy(a)
        for k in self._ROW_ARRAYS:
            getattr(nl, k).from_numpy(np.ascontiguousarray(C[k]))
        nl.npairs, nl.builds, nl.grow_events, nl._has_old = m, int(C["builds"]), int(C["grow_events"]), 1
        self._pair_forces_eval()    # the per-pair force records (derived data: every step rewrites them first)
        self.ctrl.from_numpy(np.ascontiguousarray(K["ctrl"]))
        self.servo.from_numpy(np.ascontiguousarray(K["servo"], dtype=np.float64))
        self.servo_on = bool(K["servo"][int(Servo.ON)] != 0.0)
        self._vp = float(K["ctrl"][int(Ctrl.PUNCH_V)])
        self.step_count = int(K["step_count"])
        self.k_cap = None if K["k_cap"] is None else int(K["k_cap"])
        self.stop_above_Pa, self.stop_below_Pa = float(K["stop_above_Pa"]), float(K["stop_below_Pa"])
        self._measure()

    def _ctrl_now(self) -> np.ndarray:
        """ctrl with the punch velocity of the next block: the host's, unless the hold servo drives the punch."""
        c = self.ctrl.to_numpy()
        if not servo_drives(self.servo.to_numpy()):
            c[int(Ctrl.PUNCH_V)] = self._vp
        return c

"""What the engine reports about its state (a mixin of :class:`dem.simulation.Simulation`): pressures, energies,
stress, thickness, densities, packings, frames and history rows. The per-step and per-block numbers come from the
block record the device filled (:mod:`dem.block`): no device traffic; whole-array views (packings, frames, pair
tables) read the arrays."""
import math

import numpy as np

from fva.types import Packing
from dem import block as B
from dem import volume_kernels as VK
from dem.types import ParticleFrame

class Observables:
    """Measurements of a :class:`dem.simulation.Simulation`."""

    @property
    def growth(self) -> float:
        """Largest radius growth max_i r_i/r0_i so far (the volume correction never shrinks a radius, so the
        current maximum is the maximum over the run; the last block's device maximum)."""
        if not self._measured:
            self._measure()
        return max(1.0, float(self._host["row"][B.Slot.GROWTH - B.Slot.KE_TRANS]))

    def pressures(self) -> tuple[float, float]:
        """(p_top, p_bottom) in Pa: wall forces over the die area, as the last block's watch summed them
        (deterministic chunked sums, :func:`dem.block.watch`); no device traffic."""
        if not self._measured:
            self._measure()
        return self._host["p_top"], self._host["p_bottom"]

    def state(self) -> dict:
        return dict(x=self.x.to_numpy(), v=self.v.to_numpy(), w=self.w.to_numpy(), r=self.r.to_numpy(),
                    f=self.fc.to_numpy(), ncont=self.ncont.to_numpy(), punch_z=self.punch_z, time=self.time_s,
                    step=self.step_count)

    def pair_table(self, history: bool = True) -> dict:
        """Host copy of the pair list: owner, partner, force on owner, overlap fraction, energy, history
        (columns ξx, ξy, ξz, δ_max, δ_p, R_p*)."""
        m = self.nlist.npairs
        pw = self.pw.to_numpy()[:m]
        t = dict(owner=self.nlist.pair_owner.to_numpy()[:m], partner=self.nlist.partner.to_numpy()[:m],
                 force=pw[:, 0:3].copy(), overlap_fraction=pw[:, 10].copy(), energy=pw[:, 9].copy())
        if history:
            t["hist"] = self.nlist.hist.to_numpy()[:m]
        return t

    def energies(self) -> dict:
        """Kinetic (translational, rotational) and recoverable elastic energy (pairs + walls), J."""
        v, w = self.v.to_numpy(), self.w.to_numpy()
        ke_t = 0.5 * float(np.sum(self.m_np * np.sum(v * v, 1)))
        ke_r = 0.5 * float(np.sum(self.I_np * np.sum(w * w, 1)))
        el = float(np.sum(self.pw.to_numpy()[: self.nlist.npairs, 9])) + float(np.sum(self.ewall.to_numpy()))
        return dict(kinetic=ke_t + ke_r, translational=ke_t, rotational=ke_r, elastic=el,
                    total=ke_t + ke_r + el)

    def momentum(self) -> np.ndarray:
        return (self.m_np[:, None] * self.v.to_numpy()).sum(0)

    def stress_zz(self) -> float:
        """σ_zz = (1/V) [Σ_pairs f_z l_z + Σ_walls f_z (x_c − x)_z], V = A × punch_z (compression < 0), from the
        last block's device sum (:func:`dem.block.row_sums`)."""
        if not self._measured:
            self._measure()
        return float(self._host["row"][B.Slot.VIRIAL_ZZ - B.Slot.KE_TRANS]) / (self.area * self.punch_z)

    def thickness(self) -> float:
        """Pellet thickness t = min(punch_z, max_i(z_i + r_i)) in m (current, volume-corrected radii).

        Under load the punch rests on the pellet (its contacts overlap the punch plane), so t = punch_z. After
        release the punch may stand above the pellet (it keeps moving until the check that sees the contact
        lost, and the pellet may relax further); the pellet's own top, the highest particle surface — what a
        micrometer would measure — is then the thickness. Relative density, solid fraction and the captured
        packings' box all use t, so a released pellet is never diluted by the gap under the punch."""
        H = self.punch_z
        if not self._measured:
            self._measure()
        top = float(self._host["row"][B.Slot.TOP - B.Slot.KE_TRANS])   # the last block's max (z + r)
        if not self.top_wall:
            return top
        return min(H, top) if top > 0 else H

    def relative_density(self, thickness: float | None = None) -> float:
        """Mass-based: Σ (4/3)π r0³ / (A · t), t = :meth:`thickness`."""
        t = self.thickness() if thickness is None else thickness
        return float(np.sum(4.0 / 3.0 * math.pi * self.r0_np ** 3)) / (self.area * t)

    def solid_fraction(self, thickness: float | None = None) -> float:
        """Geometric union-of-spheres solid fraction of the box A × t, t = :meth:`thickness` (Monte-Carlo,
        fixed points)."""
        if self._mc_unit.shape[0] == 0:
            return float("nan")
        from scipy.spatial import cKDTree

        x = self.x.to_numpy()
        r = self.r.to_numpy()
        H = self.thickness() if thickness is None else thickness
        pts = self._mc_unit * np.array([self.Lx, self.Ly, H])
        zbox = 4.0 * (H + 4.0 * float(r.max())) + 1e-12
        pts[:, 0] = np.minimum(pts[:, 0], np.nextafter(self.Lx, 0))
        pts[:, 1] = np.minimum(pts[:, 1], np.nextafter(self.Ly, 0))
        pts[:, 2] += zbox / 4
        c = x.copy()
        c[:, 0] %= self.Lx
        c[:, 1] %= self.Ly
        c[:, 0] = np.minimum(c[:, 0], np.nextafter(self.Lx, 0))
        c[:, 1] = np.minimum(c[:, 1], np.nextafter(self.Ly, 0))
        c[:, 2] = np.clip(c[:, 2] + zbox / 4, 0.0, np.nextafter(zbox, 0))
        tree = cKDTree(pts, boxsize=np.array([self.Lx, self.Ly, zbox]))
        hits = tree.query_ball_point(c, r, return_sorted=False)
        inside = np.zeros(pts.shape[0], bool)
        if len(hits):
            flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
            inside[flat] = True
        return float(np.mean(inside))

    def packing(self, pressure_Pa: float = float("nan"), label: str = "") -> Packing:
        x = self.x.to_numpy()
        x[:, 0] %= self.Lx
        x[:, 1] %= self.Ly
        return Packing(centers_m=x, radii_m=self.r.to_numpy(), box_m=np.array([self.Lx, self.Ly, self.thickness()]),
                       periodic=(True, True, False), pressure_Pa=float(pressure_Pa), label=label)

    def particle_stress(self) -> np.ndarray:
        """(N,) mean stress of each particle −tr(σ_i)/3 in Pa (compression positive), from its contacts."""
        nl = self.nlist
        VK.particle_mean_stress(self.n, self.x, self.r, self.r0, nl.row_start, nl.partner, nl.rev_start,
                                nl.rev_pairs, nl.pair_owner, self.pw, self.fwall, self.ctrl, self.Lx, self.Ly,
                                int(self.top_wall), self._pstress)
        return self._pstress.to_numpy()

    def frame(self) -> ParticleFrame:
        return ParticleFrame(time_s=self.time_s, step=self.step_count, centers_m=self.x.to_numpy(),
                             radii_m=self.r.to_numpy(), velocities_m_per_s=self.v.to_numpy(),
                             forces_N=self.fc.to_numpy(), contact_count=self.ncont.to_numpy(),
                             stress_Pa=self.particle_stress(), box_m=np.array([self.Lx, self.Ly, self.punch_z]))

    def history_row(self, stage_index: int = -1, solid_fraction: bool = True) -> dict:
        """One history.csv row from the last block's device sums (:func:`dem.block.row_sums`): no device traffic
        except the Monte-Carlo solid fraction (two array reads; ``solid_fraction=False`` gives NaN)."""
        p_top, p_bot = self.pressures()
        S = B.Slot
        row = dict(zip(range(S.KE_TRANS, S.GROWTH + 1), self._host["row"]))
        kinetic, elastic = row[S.KE_TRANS] + row[S.KE_ROT], row[S.ELASTIC]
        # Σ_i (contacts of i) = 2 × pairs in contact (the gather's count of pairs with a positive overlap)
        coord = row[S.CONTACTS] / self.n
        H = self.punch_z
        t = self.thickness()
        ke_ratio = kinetic / elastic if elastic > 0 else float("nan")
        vp = abs(self.punch_v)
        # I = γ̇ ⟨d_i √ρ_i⟩ / √p (GDR MiDi 2004), γ̇ = v_punch/H: ⟨d⟩ √(ρ_s/p) without size-dependent mass scaling
        inertial = (vp / H) * self.d_inertial * math.sqrt(self.rho_s / p_top) if p_top > 0 else float("nan")
        return dict(step=self.step_count, time_s=self.time_s, punch_z_m=H, thickness_m=t, p_top_Pa=p_top,
                    p_bottom_Pa=p_bot, p_stress_tensor_Pa=-self.stress_zz(),
                    relative_density=self.relative_density(t),
                    solid_fraction=self.solid_fraction(t) if solid_fraction else float("nan"),
                    coordination=coord, ke_ratio=ke_ratio, inertial_number=inertial, stage=stage_index)

"""Set-up arithmetic of :class:`dem.simulation.Simulation`: size-dependent mass scaling, the radius that sets the
time step, masses and moments of inertia, and the Taichi ndarrays of the state.

Mass scaling: ρ_s = mass_scaling · ρ; with ``params.mass_scaling_min_diameter_m`` = d_ms, ρ_i = ρ_s (d_ms/d_i)²
below d_ms, so that t_R ∝ d √ρ of every particle below d_ms is that of a d_ms particle.
"""
from __future__ import annotations

import math

import numpy as np

from fva.backend import ti
from dem.types import SimParams


def density_factors(r0_m: np.ndarray, min_diameter_m: float | None) -> np.ndarray:
    """Size-dependent mass scaling: ρ_i/ρ_s = max(1, (d_ms/d_i)²) (1 everywhere when ``min_diameter_m`` is None).
    The Rayleigh time t_R ∝ d √ρ of every particle below d_ms is then that of a d_ms particle."""
    r0 = np.asarray(r0_m, float)
    if not min_diameter_m:
        return np.ones_like(r0)
    return np.maximum(1.0, (0.5 * float(min_diameter_m) / r0) ** 2)


def time_step_radius(r0_m: np.ndarray, params: SimParams) -> float:
    """The radius whose Rayleigh time sets dt: max(r_min, d_ms/2) (size-dependent mass scaling), else r_min."""
    r_min = float(np.min(r0_m))
    d_ms = params.mass_scaling_min_diameter_m
    return max(r_min, 0.5 * float(d_ms)) if d_ms else r_min


def mass_properties(r0: np.ndarray, rho_s: float, density_factor: np.ndarray):
    """(m, I, ρ_mean, d_inertial): masses m_i = 4/3 π r_i³ ρ_s f_i, moments I_i = 2/5 m_i r_i², the solid's mean
    (mass-scaled) density Σm/ΣV (the servo's wave speed) and the particles' mean d_i √(ρ_i/ρ_s) (the inertial
    number); exactly ρ_s and the mean diameter without size-dependent scaling (all f_i = 1)."""
    m = 4.0 / 3.0 * math.pi * r0 ** 3 * rho_s * density_factor
    inertia = 0.4 * m * r0 ** 2
    scaled = bool(np.any(density_factor > 1.0))
    rho_mean = float(m.sum() / np.sum(4.0 / 3.0 * math.pi * r0 ** 3)) if scaled else rho_s
    d_inertial = float(np.mean(2.0 * r0 * np.sqrt(density_factor))) if scaled else 2.0 * float(r0.mean())
    return m, inertia, rho_mean, d_inertial


def nd_from(a, dtype=None):
    """A Taichi ndarray holding a copy of the numpy array ``a`` (float64 unless ``dtype``)."""
    a = np.ascontiguousarray(a, dtype=np.float64 if dtype is None else None)
    nd = ti.ndarray(ti.f64 if dtype is None else dtype, a.shape)
    nd.from_numpy(a)
    return nd


def nd_zeros(shape, dtype=None):
    """A zero-filled Taichi ndarray (float64 unless ``dtype``)."""
    nd = ti.ndarray(ti.f64 if dtype is None else dtype, shape)
    nd.fill(0)
    return nd

"""Contact parameters and analytic reference formulas (Python side of ``contact_kernels``).

All functions are plain numpy/scipy (no Taichi) except :func:`normal_force_curve`, which drives the
Taichi ``normal_law`` through a prescribed overlap path so tests check the very function the engine runs.

Wall convention: the bottom wall and the punch are **rigid** (steel die, E ≈ 200 GPa ≫ E of a
thiophosphate electrolyte): particle–wall contacts use R* = r, m* = m, E* = E/(1 − ν²),
G* = G/(2 − ν), with the same normal/tangential laws as particle pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dem.types import Material


def effective_modulus(E1: float, nu1: float, E2: float | None = None, nu2: float | None = None) -> float:
    """E* = 1/((1−ν1²)/E1 + (1−ν2²)/E2); ``E2=inf`` (or ``math.inf``) is a rigid body."""
    E2 = E1 if E2 is None else E2
    nu2 = nu1 if nu2 is None else nu2
    inv = (1 - nu1 ** 2) / E1 + (0.0 if math.isinf(E2) else (1 - nu2 ** 2) / E2)
    return 1.0 / inv


def effective_shear_modulus(E1: float, nu1: float, E2: float | None = None, nu2: float | None = None) -> float:
    """G* = 1/((2−ν1)/G1 + (2−ν2)/G2), G = E/(2(1+ν)) (Mindlin); ``E2=inf`` is rigid."""
    E2 = E1 if E2 is None else E2
    nu2 = nu1 if nu2 is None else nu2
    G1 = E1 / (2 * (1 + nu1))
    inv = (2 - nu1) / G1
    if not math.isinf(E2):
        inv += (2 - nu2) / (E2 / (2 * (1 + nu2)))
    return 1.0 / inv


def damping_beta(restitution: float) -> float:
    """β = ln e / √(ln² e + π²) (≤ 0); 0 for e = 1 (Tsuji 1992 / LIGGGHTS)."""
    e = float(restitution)
    if not (0.0 < e <= 1.0):
        raise ValueError(f"restitution must be in (0, 1], got {e}")
    if e >= 1.0:
        return 0.0
    le = math.log(e)
    return le / math.sqrt(le * le + math.pi ** 2)


def yield_overlap(R_eff: float, E_eff: float, p_y: float) -> float:
    """Thornton–Ning yield overlap δ_y = (π p_y/(2E*))² R*."""
    return (math.pi * p_y / (2.0 * E_eff)) ** 2 * R_eff


def hertz_force(delta, R_eff, E_eff):
    """F = 4/3 E* √R* δ^{3/2} (0 for δ ≤ 0)."""
    d = np.maximum(np.asarray(delta, dtype=float), 0.0)
    return 4.0 / 3.0 * E_eff * np.sqrt(R_eff) * d ** 1.5


def hertz_contact_time(m_eff: float, R_eff: float, E_eff: float, v_impact: float) -> float:
    """Hertz contact duration t_c = 2.87 (m*² / (R* E*² v))^{1/5} (elastic head-on impact)."""
    return 2.87 * (m_eff ** 2 / (R_eff * E_eff ** 2 * abs(v_impact))) ** 0.2


def hertz_max_overlap(m_eff: float, R_eff: float, E_eff: float, v_impact: float) -> float:
    """δ_max = (15 m* v² / (16 E* √R*))^{2/5}."""
    return (15.0 * m_eff * v_impact ** 2 / (16.0 * E_eff * math.sqrt(R_eff))) ** 0.4


def rayleigh_time(radius: float, density: float, shear_modulus: float, poisson: float) -> float:
    """t_R = π r √(ρ/G) / (0.1631 ν + 0.8766)."""
    return math.pi * radius * math.sqrt(density / shear_modulus) / (0.1631 * poisson + 0.8766)


def tn_force(delta, R_eff, E_eff, p_y):
    """Thornton–Ning loading curve (monotonic): Hertz up to δ_y, then F_y + π p_y R*(δ − δ_y)."""
    d = np.maximum(np.asarray(delta, dtype=float), 0.0)
    dy = yield_overlap(R_eff, E_eff, p_y)
    Fy = float(hertz_force(dy, R_eff, E_eff))
    return np.where(d <= dy, hertz_force(d, R_eff, E_eff), Fy + math.pi * p_y * R_eff * (d - dy))


def tn_unloading(delta_max: float, R_eff: float, E_eff: float, p_y: float):
    """Unloading branch after a maximum overlap δ_max: returns (F_max, R_p*, δ_p).

    Elastic max (δ_max ≤ δ_y): R_p* = R*, δ_p = 0. Otherwise a_p² = (2F_max+F_y)/(2π p_y),
    R_p* = 4E* a_p³/(3F_max), δ_p = δ_max − a_p²/R_p* (Thornton & Ning 1998).
    """
    dy = yield_overlap(R_eff, E_eff, p_y)
    Fmax = float(tn_force(delta_max, R_eff, E_eff, p_y))
    if delta_max <= dy:
        return Fmax, R_eff, 0.0
    Fy = float(hertz_force(dy, R_eff, E_eff))
    a2 = (2 * Fmax + Fy) / (2 * math.pi * p_y)
    Rp = 4 * E_eff * a2 ** 1.5 / (3 * Fmax)
    return Fmax, Rp, delta_max - a2 / Rp


@dataclass(frozen=True)
class ContactParams:
    """Derived contact constants for identical particles of one material (SI)."""

    E_pp: float        # E* particle–particle
    G_pp: float        # G* particle–particle
    E_pw: float        # E* particle–rigid wall
    G_pw: float        # G* particle–rigid wall
    beta: float        # damping β from restitution
    p_y: float         # TN limiting pressure (0 for Hertz)
    mu_pp: float
    mu_pw: float
    model_id: int
    adhesion: float = 0.0   # work of adhesion Δγ (J/m²) of flattened particle–particle contacts


def contact_params(material: Material) -> ContactParams:
    from dem.contact_kernels import MODEL_IDS

    E, nu = material.youngs_modulus_Pa, material.poisson_ratio
    return ContactParams(
        E_pp=effective_modulus(E, nu), G_pp=effective_shear_modulus(E, nu),
        E_pw=effective_modulus(E, nu, math.inf), G_pw=effective_shear_modulus(E, nu, math.inf),
        beta=damping_beta(material.restitution),
        p_y=float(material.yield_stress_Pa or 0.0),
        mu_pp=float(material.friction), mu_pw=float(material.wall_friction),
        model_id=MODEL_IDS[material.contact_model], adhesion=float(material.adhesion_J_per_m2))


def normal_force_curve(model: str, deltas, R_eff: float, E_eff: float, p_y: float = 0.0,
                       adhesion_J_per_m2: float = 0.0) -> np.ndarray:
    """Run the engine's Taichi normal law along an overlap path. Returns (len, 7):
    F, S, δ_max, δ_p, R_p*, U, F_c per point (F_c: the cohesion of a bonded flattened contact when
    ``adhesion_J_per_m2`` > 0, else 0). Needs an initialised Taichi runtime (``ensure_init``)."""
    from dem.contact_kernels import MODEL_IDS, evaluate_normal_law_kernel

    d = np.ascontiguousarray(deltas, dtype=np.float64)
    out = np.zeros((d.size, 7), dtype=np.float64)
    evaluate_normal_law_kernel(MODEL_IDS[model], d, float(R_eff), float(E_eff), float(p_y),
                               float(adhesion_J_per_m2), out)
    return out

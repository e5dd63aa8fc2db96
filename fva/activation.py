"""Pressure dependence of the bulk ionic conductivity through the activation volume.

σ(p) = σ_ref · exp(−ΔV · (p − p_ref) / (R · T))   (Schneider et al. 2023, Eq. 3; ΔV = 1.4 cm³/mol
measured for t-Li7SiPS8).
"""
from __future__ import annotations

import numpy as np

R_J_PER_MOL_K = 8.314462618


def sigma_bulk_at_pressure(p_Pa, sigma_ref_S_per_m, dV_m3_per_mol: float = 1.4e-6, p_ref_Pa=0.0,
                           T_K: float = 298.15):
    """Bulk conductivity (S/m) at pressure ``p_Pa`` (scalar or array, Pa; broadcast with the rest).

    Parameters
    ----------
    p_Pa : pressure the material is under (Pa).
    sigma_ref_S_per_m : conductivity at ``p_ref_Pa`` (S/m, > 0).
    dV_m3_per_mol : activation volume (m³/mol; 1.4e-6 = 1.4 cm³/mol), >= 0 lowers σ with pressure.
    p_ref_Pa : reference pressure (Pa).
    T_K : temperature (K, > 0).

    Returns a float for scalar input, else an ndarray.
    """
    p = np.asarray(p_Pa, dtype=np.float64)
    s = np.asarray(sigma_ref_S_per_m, dtype=np.float64)
    dv = np.asarray(dV_m3_per_mol, dtype=np.float64)
    pr = np.asarray(p_ref_Pa, dtype=np.float64)
    T = np.asarray(T_K, dtype=np.float64)
    for name, a in (("p_Pa", p), ("sigma_ref_S_per_m", s), ("dV_m3_per_mol", dv), ("p_ref_Pa", pr),
                    ("T_K", T)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite, got {a}")
    if np.any(s <= 0):
        raise ValueError(f"sigma_ref_S_per_m must be > 0, got {s}")
    if np.any(T <= 0):
        raise ValueError(f"T_K must be > 0 K, got {T}")
    if np.any(np.abs(dv) > 1e-3):
        raise ValueError(f"dV_m3_per_mol={dv} looks like cm³/mol; pass m³/mol (1.4 cm³/mol = 1.4e-6)")
    out = s * np.exp(-dv * (p - pr) / (R_J_PER_MOL_K * T))
    return float(out) if out.ndim == 0 else out

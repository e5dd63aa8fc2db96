"""Load/release analysis of a compaction history for the Heckel plots (:mod:`dem.heckel`): the virgin loading
branch, the load/release cycles (peak–trough detection or the protocol's unload stages), and the in-die and
out-of-die fits.

Out-of-die Heckel: the density after release (at zero or a small stack pressure) against the maximum
pressure reached in that cycle; :func:`in_die_and_out_of_die` builds both from a history.
"""
from __future__ import annotations

import warnings

import numpy as np

from dem.heckel import elastic_recovery, heckel_fit

__all__ = ["loading_branch", "find_cycles", "cycles_from_stages", "in_die_and_out_of_die"]


def loading_branch(p_Pa, rho_rel):
    """Virgin loading curve of a time series: the points where the pressure exceeds every earlier one
    (re-loading below an earlier maximum and noise dips are dropped). Returns (p, ρ) arrays."""
    p = np.asarray(p_Pa, dtype=np.float64).ravel()
    r = np.asarray(rho_rel, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise ValueError("p_Pa and rho_rel must have the same length")
    keep = np.zeros(p.size, dtype=bool)
    pmax = 0.0
    for k in range(p.size):
        if np.isfinite(p[k]) and p[k] > pmax:
            keep[k] = True
            pmax = p[k]
    return p[keep], r[keep]


def find_cycles(p_Pa, rho_rel, *, drop_fraction=0.3, min_peak_fraction=0.02):
    """Load/release cycles of a pressure time series by peak–trough detection with hysteresis.

    A peak ends when the pressure falls below (1 − drop_fraction)·peak; the following trough ends when
    the pressure climbs back by drop_fraction of (peak − trough). Peaks below min_peak_fraction of the
    series' maximum pressure are ignored (force-chain collapses in regime I, DEM noise). Returns a list
    of dicts: p_max_Pa, rho_at_max (density at the peak), p_release_Pa (trough pressure),
    rho_after_release (density at the trough), elastic_recovery. A series that ends while unloading
    counts its last trough.
    """
    p = np.asarray(p_Pa, dtype=np.float64).ravel()
    r = np.asarray(rho_rel, dtype=np.float64).ravel()
    cycles = []
    if p.size == 0:
        return []
    p_floor = min_peak_fraction * float(np.nanmax(p))
    state, ipk, itr = "up", 0, None
    for k in range(p.size):
        if state == "up":
            if p[k] >= p[ipk]:
                ipk = k
            elif p[ipk] > p_floor and p[k] < (1.0 - drop_fraction) * p[ipk]:
                state, itr = "down", k
        else:
            if p[k] < p[itr]:
                itr = k
            elif p[k] > p[itr] + drop_fraction * (p[ipk] - p[itr]):
                cycles.append((ipk, itr))
                state, ipk, itr = "up", k, None
    if state == "down":
        cycles.append((ipk, itr))
    out = []
    for ipk, itr in cycles:
        out.append(dict(p_max_Pa=float(p[ipk]), rho_at_max=float(r[ipk]), p_release_Pa=float(p[itr]),
                        rho_after_release=float(r[itr]),
                        elastic_recovery=elastic_recovery(r[ipk], r[itr])))
    return out


def cycles_from_stages(p_Pa, rho_rel, stage_index, stage_kinds) -> list:
    """Load/release cycles read off the protocol itself: one cycle per ``unload`` stage.

    The peak is the highest pressure since the previous unload stage ended, the trough the last row
    of the unload stage. Unlike :func:`find_cycles` this cannot mistake a relaxation between two
    loading stages (e.g. after a fast approach) for a release.
    """
    p = np.asarray(p_Pa, dtype=np.float64).ravel()
    r = np.asarray(rho_rel, dtype=np.float64).ravel()
    st = np.asarray(stage_index).astype(int).ravel()
    out, start = [], 0
    for s, kind in enumerate(stage_kinds):
        if kind != "unload":
            continue
        rows = np.flatnonzero(st == s)
        if rows.size == 0:
            continue
        end = int(rows[-1])
        seg = slice(start, end + 1)
        if end + 1 - start < 2:
            continue
        ipk = start + int(np.nanargmax(p[seg]))
        out.append(dict(p_max_Pa=float(p[ipk]), rho_at_max=float(r[ipk]), p_release_Pa=float(p[end]),
                        rho_after_release=float(r[end]),
                        elastic_recovery=elastic_recovery(r[ipk], r[end])))
        start = end + 1
    return out


def in_die_and_out_of_die(history, *, stage_kinds=None, **fit_kwargs) -> dict:
    """In-die and out-of-die Heckel analyses of a compaction history.

    ``history`` is either
      * a time series: a mapping with pressure under ``p_Pa`` (or ``p_top_Pa``) and relative density
        under ``rho_rel`` (or ``relative_density``), e.g. the engine's history dict; the loading branch
        and the load/release cycles are extracted automatically (``loading_branch``, ``find_cycles``); or
      * explicit points: ``{"load": (p_Pa, rho_rel), "release": (p_max_Pa, rho_after_release)}`` where
        release holds, per cycle, the maximum pressure reached and the density after release.

    With ``stage_kinds`` (the protocol's stage kinds, indexed by the history's ``stage`` column) the
    cycles come from the unload stages (:func:`cycles_from_stages`) instead of peak detection.

    Returns a dict: ``in_die`` (HeckelResult), ``out_of_die`` (HeckelResult or None when fewer than 4
    release points), ``cycles`` (list of dicts, time-series input only), ``elastic_recovery`` (of the
    last cycle, or None), ``notes`` (list of str). ``fit_kwargs`` go to the in-die ``heckel_fit``.
    """
    notes = []
    cycles = []
    if "load" in history and "release" in history:
        lp, lr = (np.asarray(a, dtype=np.float64) for a in history["load"])
        rp, rr = (np.asarray(a, dtype=np.float64).ravel() for a in history["release"])
        if rp.shape != rr.shape:
            raise ValueError("history['release'] must be (p_max_Pa, rho_after_release) of equal length")
        lp, lr = loading_branch(lp, lr)
    else:
        pk = next((k for k in ("p_Pa", "p_top_Pa") if k in history), None)
        rk = next((k for k in ("rho_rel", "relative_density") if k in history), None)
        if pk is None or rk is None:
            raise ValueError("history needs 'p_Pa' (or 'p_top_Pa') and 'rho_rel' (or 'relative_density'), "
                             "or 'load' and 'release'")
        P = np.asarray(history[pk], dtype=np.float64)
        R = np.asarray(history[rk], dtype=np.float64)
        lp, lr = loading_branch(P, R)
        if stage_kinds is not None and "stage" in history:
            cycles = cycles_from_stages(P, R, history["stage"], stage_kinds)
        else:
            cycles = find_cycles(P, R)
        rp = np.array([c["p_max_Pa"] for c in cycles])
        rr = np.array([c["rho_after_release"] for c in cycles])
    in_die = heckel_fit(lp, lr, **fit_kwargs)
    out_of_die = None
    if rp.size >= 4:
        order = np.argsort(rp, kind="stable")
        rp, rr = rp[order], rr[order]
        if rp.size >= 10:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out_of_die = heckel_fit(rp, rr, auto=True)
            if out_of_die.method != "auto":
                out_of_die = None
        if out_of_die is None:
            lo, hi = in_die.fit_range_Pa
            sel = (rp >= lo) & (rp <= hi)
            if np.count_nonzero(sel) >= 4:
                out_of_die = heckel_fit(rp[sel], rr[sel], auto=False)
                notes.append("out-of-die: fitted the release points inside the in-die regime II range "
                             f"[{lo:.4g}, {hi:.4g}] Pa")
            else:
                out_of_die = heckel_fit(rp, rr, auto=False)
                notes.append("out-of-die: fewer than 4 release points inside the in-die regime II range; "
                             "fitted all of them")
    else:
        notes.append(f"out-of-die: {rp.size} release point(s), need 4 for a fit")
    rec = None
    if cycles:
        rec = cycles[-1]["elastic_recovery"]
    elif rp.size and lp.size:
        # explicit input: recovery of the cycle with the highest maximum pressure
        k = int(np.argmax(rp))
        j = int(np.argmin(np.abs(lp - rp[k])))
        rec = elastic_recovery(lr[j], rr[k])
    return dict(in_die=in_die, out_of_die=out_of_die, cycles=cycles, elastic_recovery=rec, notes=notes)

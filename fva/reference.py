"""Host-side (numpy / scipy.sparse) version of the conduction discretisation.

Used for the per-face currents of the result fields and, in the tests and benchmarks, as a
direct-solve reference of exactly the operator the Taichi solver applies matrix-free.
Layout: array axis 0 is the solve axis (low face at 1 V, high face at 0 V); see
``fva.conduction_kernels``.
"""
from __future__ import annotations

import numpy as np


def harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    s = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where((a > 0) & (b > 0), 2.0 * a * b / np.where(s > 0, s, 1.0), 0.0)
    return h


def series(a, b, la=None, lb=None, r=0.0) -> np.ndarray:
    """Face conductivity (S/m) of cells a | b: the harmonic mean, or with labels and r = R_i/Δ (Ω·m) and
    la ≠ lb (both ≥ 0) the series 1/(1/(2σa) + r + 1/(2σb)) of ``fva.interface``; 0 when either σ is 0."""
    h = harmonic(a, b)
    if la is None or not r > 0:
        return h
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    on = (a > 0) & (b > 0) & (la != lb) & (la >= 0) & (lb >= 0)
    with np.errstate(divide="ignore"):
        s = 1.0 / (0.5 / np.where(on, a, 1.0) + r + 0.5 / np.where(on, b, 1.0))
    return np.where(on, s, h)


def face_conductances(sig: np.ndarray, em: np.ndarray, c, p1: bool, p2: bool, labels=None, r_over_d=(0, 0, 0)):
    """Face conductances (S·m): gA (n0+1, n1, n2) incl. electrode planes, gB, gC (face to +1).

    gB[:, j] joins j and j+1 (the last one is the periodic wrap face, or 0 when not periodic or
    when the axis has a single cell); the same for gC. ``labels`` (particle per cell, −1 pore) and
    ``r_over_d`` (R_i/Δ per axis, Ω·m) add the interface resistance between different particles.
    """
    sig = np.asarray(sig, np.float64)
    n0, n1, n2 = sig.shape
    L = np.zeros(sig.shape, np.int64) if labels is None else np.asarray(labels)
    r = tuple(float(v) for v in r_over_d) if labels is not None else (0.0, 0.0, 0.0)
    gA = np.zeros((n0 + 1, n1, n2))
    gA[0] = 2.0 * c[0] * sig[0]
    gA[n0] = 2.0 * c[0] * sig[-1] * np.asarray(em, np.float64)
    gA[1:n0] = c[0] * series(sig[:-1], sig[1:], L[:-1], L[1:], r[0])
    gB = np.zeros_like(sig)
    gC = np.zeros_like(sig)
    if n1 > 1:
        gB[:, :-1] = c[1] * series(sig[:, :-1], sig[:, 1:], L[:, :-1], L[:, 1:], r[1])
        if p1:
            gB[:, -1] = c[1] * series(sig[:, -1], sig[:, 0], L[:, -1], L[:, 0], r[1])
    if n2 > 1:
        gC[:, :, :-1] = c[2] * series(sig[:, :, :-1], sig[:, :, 1:], L[:, :, :-1], L[:, :, 1:], r[2])
        if p2:
            gC[:, :, -1] = c[2] * series(sig[:, :, -1], sig[:, :, 0], L[:, :, -1], L[:, :, 0], r[2])
    return gA, gB, gC


def face_currents(phi: np.ndarray, gA, gB, gC):
    """Currents (A) through every face, positive towards +index: IA (n0+1,..), IB, IC."""
    n0 = phi.shape[0]
    ext = np.concatenate([np.ones((1,) + phi.shape[1:]), phi, np.zeros((1,) + phi.shape[1:])])
    IA = gA * (ext[:-1] - ext[1:])
    IB = gB * (phi - np.roll(phi, -1, axis=1))
    IC = gC * (phi - np.roll(phi, -1, axis=2))
    assert IA.shape[0] == n0 + 1
    return IA, IB, IC


def assemble(sig: np.ndarray, em: np.ndarray, c, p1: bool, p2: bool, labels=None, r_over_d=(0, 0, 0)):
    """Sparse matrix A (active cells only), right-hand side b and the active mask."""
    sig = np.asarray(sig, np.float64)
    n0, n1, n2 = sig.shape
    gA, gB, gC = face_conductances(sig, em, c, p1, p2, labels, r_over_d)
    idx = np.arange(sig.size).reshape(sig.shape)
    rows, cols, vals = [], [], []
    diag = np.zeros(sig.shape)
    diag += gA[:-1] + gA[1:]

    def couple(g, a, b):
        m = g > 0
        rows.extend([a[m], b[m]])
        cols.extend([b[m], a[m]])
        vals.extend([-g[m], -g[m]])

    couple(gA[1:n0], idx[:-1], idx[1:])
    for g, ax, per in ((gB, 1, p1), (gC, 2, p2)):
        n = sig.shape[ax]
        if n < 2:
            continue
        nb = np.roll(idx, -1, axis=ax)
        gg = g.copy()
        if not per:
            np.moveaxis(gg, ax, 0)[-1] = 0.0
        diag += gg + np.roll(gg, 1, axis=ax)
        couple(gg, idx, nb)
    active = diag.ravel() > 0
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(diag.ravel())
    import scipy.sparse as sp  # lazy: the solver imports this module for its tables only

    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(sig.size, sig.size))
    b = np.zeros(sig.shape)
    b[0] = gA[0]
    act = np.flatnonzero(active)
    return A[act][:, act], b.ravel()[act], active.reshape(sig.shape)


def solve_reference(sig: np.ndarray, em=None, c=(1.0, 1.0, 1.0), p1=False, p2=False, method="direct",
                    rtol=1e-10, labels=None, r_over_d=(0.0, 0.0, 0.0)):
    """Solve (direct ``spsolve``, or Jacobi-preconditioned scipy ``cg`` for large systems).

    ``labels`` / ``r_over_d``: the interface resistance between particles (``face_conductances``).

    Returns (phi [n0, n1, n2] in V, plane currents (n0+1,) in A: electrode faces included).
    """
    import scipy.sparse.linalg as spla

    sig = np.asarray(sig, np.float64)
    em = np.ones(sig.shape[1:]) if em is None else np.asarray(em, np.float64)
    A, b, active = assemble(sig, em, c, p1, p2, labels, r_over_d)
    phi = np.zeros(sig.shape)
    if b.size and method == "direct":
        phi[active] = spla.spsolve(A.tocsc(), b)
    elif b.size:
        dinv = 1.0 / A.diagonal()
        M = spla.LinearOperator(A.shape, matvec=lambda v: dinv * v)
        sol, info = spla.cg(A.tocsr(), b, rtol=rtol, M=M, maxiter=100000)
        if info != 0:
            raise RuntimeError(f"scipy cg did not converge (info={info})")
        phi[active] = sol
    gA, gB, gC = face_conductances(sig, em, c, p1, p2, labels, r_over_d)
    IA, _, _ = face_currents(phi, gA, gB, gC)
    return phi, IA.sum(axis=(1, 2))

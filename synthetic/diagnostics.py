"""Geometry of a (spiked) dictionary: coherence, active-block conditioning, and the
lasso irrepresentable score (docs/method.md §1 support recovery, §5 reference values)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SpikeDiagnostics(NamedTuple):
    """What :func:`spike_diagnostics` returns (averages over random supports of size k)."""

    mean_coherence: float
    """Mean off-diagonal cosine (1/(m(m−1))) Σ_{i≠j} ⟨d_i, d_j⟩ (signed)."""
    cond_DS: float
    """Mean condition number σ_max/σ_min of the active block D_S (n, k)."""
    cond_gram: float
    """Mean condition number of G_SS = D_Sᵀ D_S, i.e. cond(D_S)²."""
    irrepresentable: float
    """Mean over supports A of ‖G_{AᶜA} G_AA⁻¹ 1‖∞ (the lasso's, sign vector all ones);
    support recovery by the non-negative lasso needs it < 1."""
    irrepresentable_theory: float
    """kρ/(1 + (k−1)ρ), the score of an exactly equicorrelated dictionary (nan if no ρ)."""


def spike_diagnostics(D: np.ndarray, k: int, rho: float | None = None, n_supports: int = 20,
                      seed: int = 0) -> SpikeDiagnostics:
    """Diagnostics of dictionary ``D`` (n, m), atoms as unit-norm columns, for k-sparse codes.

    Supports are ``n_supports`` uniformly random k-subsets drawn from
    ``np.random.default_rng(seed)``. For an equicorrelated Gram G = (1−ρ)I + ρ11ᵀ,
    G_AA⁻¹1 = 1/(1 + (k−1)ρ) and every off-support row gives kρ/(1 + (k−1)ρ)
    (``irrepresentable_theory``); random u_j add an O((1−ρ)√k/√n) spread whose maximum over
    the m − k rows pushes the measured score above it.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2:
        raise ValueError(f"D has shape {D.shape}, must be (n, m)")
    n, m = D.shape
    if not 1 <= k < m:
        raise ValueError(f"k == {k}, must be in [1, m={m})")
    if n_supports < 1:
        raise ValueError(f"n_supports == {n_supports}, must be >= 1")
    s = D.sum(axis=1)
    mean_coh = (float(s @ s) - float((D * D).sum())) / (m * (m - 1))
    rng = np.random.default_rng(seed)
    conds, irr = [], []
    for _ in range(n_supports):
        A = rng.choice(m, size=k, replace=False)
        DA = D[:, A]
        sv = np.linalg.svd(DA, compute_uv=False)
        conds.append(sv[0] / sv[-1])
        w = np.linalg.solve(DA.T @ DA, np.ones(k))  # G_AA⁻¹ 1
        r = D.T @ (DA @ w)  # (m,) G_{:,A} G_AA⁻¹ 1
        r[A] = 0.0
        irr.append(np.abs(r).max())
    theory = float("nan") if rho is None else k * rho / (1 + (k - 1) * rho)
    c = np.asarray(conds)
    return SpikeDiagnostics(mean_coh, float(c.mean()), float((c**2).mean()), float(np.mean(irr)), theory)

r"""Primal objective, dual objective, certified duality gap and KKT residual.

The primal (docs/method.md §1), for each row x of X, with y = x − b::

    P(z) = ½‖y − Dz‖² + λ1 Σ_j w_j |z_j| + (λ2/2)‖z‖²        (+ the constraint z ≥ 0 if nonneg)

Write P(z) = f(Dz) + g(z) with f(u) = ½‖y − u‖². Fenchel duality gives, for any θ ∈ Rⁿ,

    Dual(θ) = ⟨θ, y⟩ − ½‖θ‖² − Σ_j g_j*(d_jᵀθ)  ≤  P(z)   for every z,

where g_j* is the conjugate of the per-coordinate penalty g_j(t) = λ1 w_j|t| + (λ2/2)t²
(+ the indicator of t ≥ 0):

    signed,  λ2 > 0:  g_j*(v) = max(|v| − λ1 w_j, 0)² / (2λ2)
    z ≥ 0,   λ2 > 0:  g_j*(v) = max( v  − λ1 w_j, 0)² / (2λ2)
    signed,  λ2 = 0:  g_j*(v) = 0 if |v| ≤ λ1 w_j else +∞
    z ≥ 0,   λ2 = 0:  g_j*(v) = 0 if  v  ≤ λ1 w_j else +∞

At the optimum θ* = y − Dz* (the residual). We take θ = residual for λ2 > 0 (always
dual-feasible), and for λ2 = 0 the residual rescaled into the dual-feasible set,
θ = s·r with s = clip(⟨r, y⟩/‖r‖², 0, s_max) and s_max = min_j λ1 w_j / (d_jᵀr)⁺ (the best
feasible multiple of r). ``gap = P(z) − Dual(θ) ≥ 0`` then bounds P(z) − P(z*) — a
certificate that needs no knowledge of z*.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from geomsae.solvers.problem import Problem, prepare, prepare_codes, to_output


def primal_from_residual(R: Tensor, Z: Tensor, prob: Problem) -> Tensor:
    """(B,) primal objective P(z) given the residual R = Y − Z Dᵀ (B, n) and Z (B, m)."""
    l1 = (prob.W * Z.abs()).sum(dim=1)
    P = 0.5 * (R * R).sum(dim=1) + prob.lam1 * l1 + 0.5 * prob.lam2 * (Z * Z).sum(dim=1)
    if prob.nonneg:
        P = torch.where((Z < 0).any(dim=1), torch.full_like(P, float("inf")), P)
    return P


def dual_scale(R: Tensor, V: Tensor, prob: Problem) -> Tensor:
    """(B,) the factor s of the dual point θ = s·R built from R (B, n) and V = R D (B, m).

    s = 1 for λ2 > 0; for λ2 = 0 the best multiple of r inside the feasible set
    {V_j ≤ λ1 w_j}: s = clip(⟨r, y⟩/‖r‖², 0, s_max).
    """
    if prob.lam2 > 0:
        return torch.ones(R.shape[0], dtype=R.dtype, device=R.device)
    thr = prob.lam1 * prob.W
    Vs = V if prob.nonneg else V.abs()
    ratio = (Vs / thr).amax(dim=1)  # (B,)
    s_max = torch.where(ratio > 0, 1.0 / ratio.clamp_min(1e-300), torch.full_like(ratio, float("inf")))
    rr = (R * R).sum(dim=1)
    ry = (R * prob.Y).sum(dim=1)
    s = torch.where(rr > 0, ry / rr.clamp_min(1e-300), torch.zeros_like(rr))
    return torch.minimum(s.clamp_min(0), s_max)


def dual_from_residual(R: Tensor, V: Tensor, prob: Problem) -> Tensor:
    """(B,) dual objective Dual(θ) at the dual point built from R (B, n) and V = R D (B, m)."""
    Y = prob.Y
    thr = prob.lam1 * prob.W
    Vs = V if prob.nonneg else V.abs()
    if prob.lam2 > 0:
        conj = (Vs - thr).clamp_min(0).pow(2).sum(dim=1) / (2 * prob.lam2)
        return (R * Y).sum(dim=1) - 0.5 * (R * R).sum(dim=1) - conj
    # λ2 = 0: rescale r into the feasible set {V_j ≤ λ1 w_j}.
    s = dual_scale(R, V, prob)
    return s * (R * Y).sum(dim=1) - 0.5 * s * s * (R * R).sum(dim=1)


def gap_terms(Z: Tensor, prob: Problem) -> tuple[Tensor, Tensor, Tensor]:
    """(P, Dual, V) for codes Z (B, m): primal, dual (both (B,)) and V = (Y − Z Dᵀ) D (B, m)."""
    R = prob.Y - Z @ prob.D.T
    V = R @ prob.D
    return primal_from_residual(R, Z, prob), dual_from_residual(R, V, prob), V


def kkt_residual(Z: Tensor, V: Tensor, prob: Problem) -> Tensor:
    """(B,) the largest violation of the optimality conditions of F at Z, with V = Dᵀ(y − Dz).

    Stationarity: v_j − λ2 z_j ∈ λ1 w_j ∂|z_j| (and for z ≥ 0: = λ1 w_j where z_j > 0,
    ≤ λ1 w_j where z_j = 0; z_j < 0 is itself a violation).
    """
    thr = prob.lam1 * prob.W
    g = V - prob.lam2 * Z  # must equal λ1 w sign(z) on the support
    on = Z != 0
    viol_on = (g - thr * torch.sign(Z)).abs()
    if prob.nonneg:
        viol_off = (g - thr).clamp_min(0)
        neg = (-Z).clamp_min(0)
    else:
        viol_off = (g.abs() - thr).clamp_min(0)
        neg = torch.zeros_like(Z)
    viol = torch.where(on, viol_on, viol_off) + neg
    return viol.amax(dim=1)


def duality_gap(
    X: Any,
    D: Any,
    Z: Any,
    *,
    lam1: float,
    lam2: float = 0.0,
    weights: Any = None,
    bias: Any = None,
    nonneg: bool = True,
) -> Any:
    """Certified duality gap P(z) − Dual(θ) ≥ P(z) − P(z*) for each row, shape (B,).

    Objective (canonical units, docs/method.md §1), per row x of X (B, n) and code z of Z (B, m)::

        P(z) = ½‖x − b − Dz‖² + λ1 Σ_j w_j|z_j| + (λ2/2)‖z‖²     (z ≥ 0 if nonneg)

    Dual (see the module docstring): Dual(θ) = ⟨θ, x − b⟩ − ½‖θ‖² − Σ_j g_j*(d_jᵀθ), with θ
    the residual x − b − Dz (rescaled into the feasible set when λ2 = 0). The gap is +inf if
    nonneg and some z_j < 0. Returned in float64, numpy or torch like X.
    """
    prob = prepare(X, D, lam1=lam1, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
    Zt = prepare_codes("Z", Z, prob)
    P, Dl, _ = gap_terms(Zt, prob)
    return to_output(P - Dl, prob, dtype=torch.float64)


def objective(
    X: Any, D: Any, Z: Any, *, lam1: float, lam2: float = 0.0, weights: Any = None, bias: Any = None, nonneg: bool = True
) -> Any:
    """The primal objective F(z; x) of each row, shape (B,), float64 (inf where z violates z ≥ 0)."""
    prob = prepare(X, D, lam1=lam1, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
    Zt = prepare_codes("Z", Z, prob)
    R = prob.Y - Zt @ prob.D.T
    return to_output(primal_from_residual(R, Zt, prob), prob, dtype=torch.float64)

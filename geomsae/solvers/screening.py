r"""Gap-safe screening (Fercoq, Gramfort & Salmon 2015; Ndiaye et al. 2017).

The dual of F (see :mod:`geomsae.solvers.objective`) is 1-strongly concave in θ, so for any
code z and dual-feasible θ built from its residual,

    ½‖θ − θ*‖² ≤ Dual(θ*) − Dual(θ) ≤ P(z) − Dual(θ) = gap,

i.e. the dual optimum θ* (the optimal residual) lies in the ball of radius √(2·gap)
around θ. Every optimal code has z*_j = 0 where d_jᵀθ* < λ1 w_j (|d_jᵀθ*| when signed),
so an atom j with

    d_jᵀθ + ‖d_j‖·√(2·gap) < λ1 w_j        (|d_jᵀθ| + … when signed)

is inactive in *every* optimal code and can be discarded safely. The test is certified by
the same gap as the solution, so no knowledge of z* is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from geomsae.solvers.problem import Problem, prepare, prepare_codes, to_output
from geomsae.solvers.objective import dual_scale, gap_terms

# Relative slack added to the gap before the test, so rounding in a float64 gap of ~1e-16
# relative can never make the ball too small.
GAP_SLACK = 1e-12


def safe_keep(V: Tensor, R_scale: Tensor, gap: Tensor, P: Tensor, col_norms: Tensor, prob: Problem) -> Tensor:
    """(B, m) bool: atoms the gap-safe test cannot discard (True = may be active).

    Args:
        V: (B, m) Dᵀr, with r the residual y − Dz of the code being certified.
        R_scale: (B,) s with θ = s·r the dual point (1 when λ2 > 0).
        gap: (B,) the certified duality gap P(z) − Dual(θ) at that code.
        P: (B,) the primal objective (sets the rounding slack).
        col_norms: (m,) ‖d_j‖.
    """
    radius = torch.sqrt(2 * (gap.clamp_min(0) + GAP_SLACK * P.abs() + 1e-300))
    corr = R_scale[:, None] * V
    corr = corr if prob.nonneg else corr.abs()
    return corr + col_norms[None] * radius[:, None] >= prob.lam1 * prob.W


def screen(
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
    """(B, m) bool mask of atoms that may be active in an optimal code (False: certainly zero).

    Z (B, m) is any code (for example an unfinished iterate); the better it is, the smaller
    its gap and the more atoms are discarded. Same problem and arguments as
    :func:`geomsae.solvers.duality_gap`. Returned as numpy or torch like X.
    """
    prob = prepare(X, D, lam1=lam1, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
    Zt = prepare_codes("Z", Z, prob)
    if prob.nonneg:
        Zt = Zt.clamp_min(0)  # a negative code has an infinite gap; its projection is feasible
    P, Dl, V = gap_terms(Zt, prob)
    R = prob.Y - Zt @ prob.D.T
    keep = safe_keep(V, dual_scale(R, V, prob), P - Dl, P, prob.D.norm(dim=0), prob)
    return to_output(keep, prob, dtype=torch.bool)

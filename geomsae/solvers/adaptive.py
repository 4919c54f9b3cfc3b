"""Adaptive weights (Zou & Zhang 2009) and the two-stage adaptive elastic net."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from geomsae.solvers.problem import as_tensor, check_finite, check_lams
from geomsae.solvers.fast import SolverResult, solve


def adaptive_weights(z_pilot: Any, *, gamma: float = 1.0, eps: float = 1e-6) -> Any:
    """Zou–Zhang weights w_j = (|ẑ_j| + ε)^(−γ) from a pilot code ẑ, same shape and type.

    Large pilot coefficients get small penalties (no shrinkage of strong features); zeros
    of the pilot get the largest weight ε^(−γ), which keeps them out of the support.
    """
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma == {gamma!r}, must be a finite number > 0")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps == {eps!r}, must be a finite number > 0")
    t = as_tensor("z_pilot", z_pilot, device=z_pilot.device if isinstance(z_pilot, Tensor) else None)
    check_finite("z_pilot", t)
    w = (t.abs() + eps).pow(-gamma)
    if isinstance(z_pilot, Tensor):
        return w
    return w.numpy()


def aen_solve(
    X: Any,
    D: Any,
    *,
    lam1: float,
    lam2: float,
    gamma: float = 1.0,
    eps: float = 1e-6,
    pilot_lam1: float | None = None,
    pilot_lam2: float | None = None,
    bias: Any = None,
    nonneg: bool = True,
    tol: float = 1e-8,
    max_iter: int = 20000,
    **kwargs: Any,
) -> SolverResult:
    """The adaptive elastic net of Zou & Zhang (2009), in two exact stages.

    1. Pilot: the elastic net ẑ = argmin ½‖x − b − Dz‖² + λ1ᵖ Σ|z_j| + (λ2ᵖ/2)‖z‖²
       (λ1ᵖ = ``pilot_lam1`` or ``lam1``, λ2ᵖ = ``pilot_lam2`` or ``lam2``).
    2. Weights w = (|ẑ| + ε)^(−γ) per sample, then the adaptive elastic net
       argmin ½‖x − b − Dz‖² + λ1 Σ w_j|z_j| + (λ2/2)‖z‖².

    Returns the second stage's :class:`SolverResult` with ``weights`` (B, m) set.
    """
    check_lams(lam1, lam2)
    p1 = lam1 if pilot_lam1 is None else pilot_lam1
    p2 = lam2 if pilot_lam2 is None else pilot_lam2
    pilot = solve(X, D, lam1=p1, lam2=p2, bias=bias, nonneg=nonneg, tol=tol, max_iter=max_iter, **kwargs)
    codes = pilot.codes
    zp = codes.double() if isinstance(codes, Tensor) else np.asarray(codes, dtype=np.float64)
    w = adaptive_weights(zp, gamma=gamma, eps=eps)
    res = solve(X, D, lam1=lam1, lam2=lam2, weights=w, bias=bias, nonneg=nonneg, tol=tol, max_iter=max_iter, **kwargs)
    return res._replace(weights=w)



"""Regularisation paths over λ1 with warm starts."""

from __future__ import annotations

import math
from typing import Any


from geomsae.solvers.problem import check_tol, prepare
from geomsae.solvers.fast import Context, SolverResult, make_result, solve_with_context


def solve_path(
    X: Any,
    D: Any,
    *,
    lam1s: Any,
    lam2: float = 0.0,
    weights: Any = None,
    bias: Any = None,
    nonneg: bool = True,
    tol: float = 1e-8,
    max_iter: int = 20000,
    batch_size: int = 4096,
    progress: bool = False,
) -> list[SolverResult]:
    """Solve F(z; x) (see :func:`geomsae.solvers.solve`) for every λ1 in ``lam1s``.

    The λ1 are visited from largest to smallest, each solve warm-started at the previous
    codes (sparse solutions first, so supports grow gradually); the dictionary's
    precomputation (‖D‖₂, DᵀD) is done once. Returns one :class:`SolverResult` per λ1,
    in the order ``lam1s`` was given.
    """
    lams = [float(v) for v in (lam1s.tolist() if hasattr(lam1s, "tolist") else lam1s)]
    if not lams:
        raise ValueError("lam1s is empty, must hold at least one λ1")
    for v in lams:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"lam1s contains {v!r}, every λ1 must be a finite number >= 0")
    check_tol(tol, max_iter)
    base = prepare(X, D, lam1=max(lams) or 1.0, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
    ctx = Context(base.D, base.lam2)
    results: list[SolverResult | None] = [None] * len(lams)
    Z = None
    for i in sorted(range(len(lams)), key=lambda i: -lams[i]):
        prob = prepare(X, D, lam1=lams[i], lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
        Zt, gap, P, its, conv = solve_with_context(prob, ctx, Z, tol=tol, max_iter=max_iter, batch_size=batch_size, progress=progress)
        Z = Zt
        results[i] = make_result(prob, Zt, gap, P, its, conv, tol)
    return results  # type: ignore[return-value]



"""The same problem through cvxpy (Clarabel): slow, general, the reference in tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geomsae.solvers.problem import prepare
from geomsae.solvers.fast import SolverResult
from geomsae.solvers.objective import gap_terms
from geomsae.solvers.problem import to_output

# cvxpy refuses problems this large in a sensible time; the fast solver is for those.
MAX_REFERENCE_SIZE = 5_000_000


def solve_cvxpy(
    X: Any,
    D: Any,
    *,
    lam1: float,
    lam2: float = 0.0,
    weights: Any = None,
    bias: Any = None,
    nonneg: bool = True,
    solver: str = "CLARABEL",
    eps: float = 1e-10,
) -> SolverResult:
    """Solve F(z; x) = ½‖x − b − Dz‖² + λ1 Σ w_j|z_j| + (λ2/2)‖z‖² (z ≥ 0 if nonneg) with cvxpy.

    One parametrised problem is built once (``cp.Parameter`` for x − b and λ1·w) and
    re-solved per row. Meant for small problems (B·n·m ≤ 5e6): it is the slow, independent
    reference the fast :func:`geomsae.solvers.solve` is tested against. The returned
    ``dual_gap`` is our own certificate, recomputed at cvxpy's codes.
    """
    import cvxpy as cp

    prob = prepare(X, D, lam1=lam1, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
    B, m = prob.B, prob.m
    n = prob.D.shape[0]
    if B * n * m > MAX_REFERENCE_SIZE:
        raise ValueError(f"B*n*m == {B * n * m}, too large for the cvxpy reference (must be <= {MAX_REFERENCE_SIZE}); use solve()")
    Dn = prob.D.cpu().numpy()
    Yn = prob.Y.cpu().numpy()
    Wn = prob.W.cpu().numpy()
    z = cp.Variable(m, nonneg=nonneg)
    y = cp.Parameter(n)
    lw = cp.Parameter(m, nonneg=True)
    pen = lw @ z if nonneg else lw @ cp.abs(z)
    obj = 0.5 * cp.sum_squares(y - Dn @ z) + pen
    if prob.lam2 > 0:
        obj = obj + 0.5 * prob.lam2 * cp.sum_squares(z)
    problem = cp.Problem(cp.Minimize(obj))
    opts: dict[str, Any] = {}
    if solver.upper() == "CLARABEL":
        opts = dict(tol_gap_abs=eps, tol_gap_rel=eps, tol_feas=eps, tol_ktratio=eps, max_iter=500)
    Z = np.zeros((B, m))
    its = np.zeros(B, dtype=np.int64)
    for i in range(B):
        y.value = Yn[i]
        lw.value = prob.lam1 * Wn[0 if Wn.shape[0] == 1 else i]
        problem.solve(solver=solver, **opts)
        if z.value is None:
            raise RuntimeError(f"cvxpy ({solver}) failed on row {i}: status {problem.status}")
        Z[i] = z.value
        its[i] = problem.solver_stats.num_iters or 0
    if nonneg:
        Z = np.maximum(Z, 0)
    Zt = torch.from_numpy(Z).to(prob.Y.device)
    P, Dl, _ = gap_terms(Zt, prob)
    gap = P - Dl
    conv = gap <= 1e-6 * P.clamp_min(0) + 1e-12
    return SolverResult(
        codes=to_output(Zt, prob),
        dual_gap=to_output(gap, prob, dtype=torch.float64),
        n_iter=to_output(torch.from_numpy(its), prob, dtype=torch.int64),
        converged=to_output(conv, prob, dtype=torch.bool),
        objective=to_output(P, prob, dtype=torch.float64),
    )

"""Exact, certified solvers of the sparse-coding map of docs/method.md §1.

    F(z; x) = ½‖x − b − Dz‖² + λ1 Σ_j w_j |z_j| + (λ2/2)‖z‖²        (optionally z ≥ 0)

Lasso (λ2 = 0, w ≡ 1), elastic net (λ2 > 0), adaptive lasso and adaptive elastic net
(w from a pilot) are all one family. Every result carries a certified duality gap.
"""

from geomsae.solvers.adaptive import adaptive_weights, aen_solve
from geomsae.solvers.fast import ConvergenceWarning, Solver, SolverResult, lam1_max, solve
from geomsae.solvers.objective import duality_gap, objective
from geomsae.solvers.path import solve_path
from geomsae.solvers.reference import solve_cvxpy
from geomsae.solvers.screening import screen

__all__ = [
    "ConvergenceWarning",
    "Solver",
    "SolverResult",
    "adaptive_weights",
    "aen_solve",
    "duality_gap",
    "lam1_max",
    "objective",
    "screen",
    "solve",
    "solve_cvxpy",
    "solve_path",
]

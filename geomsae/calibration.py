"""λ1 of the non-negative lasso whose exact codes have a target mean L0 (for surrogate SAEs).

``geomsae compare`` solves the lasso for SAEs without an l1 objective (topk, batchtopk,
jumprelu, gated) at the λ1 whose exact codes are as sparse as the encoder's. L0(λ1) is a
decreasing staircase (steps of 1/N for N tokens), so λ1 is searched in log λ1:

* :func:`calibrate_lam1` (fast): a secant (regula falsi, Illinois) search on a small
  subsample first, where each solve is cheap, then the same search on all the calibration
  tokens inside a bracket of ±25 % around the subsample's answer; every solve is
  warm-started at the codes of the nearest λ1 already solved, and all share one
  :class:`geomsae.solvers.Solver` (the Gram matrix is computed once).
* :func:`calibrate_lam1_bisection` (slow reference): plain bisection in log λ1 on
  [10⁻⁴ λ_max, λ_max] on all the tokens, the method used before.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from geomsae.solvers import Solver, lam1_max

# Solves of the calibration are certified to this relative gap at most (their only use is L0).
CALIBRATION_TOL = 1e-6


def _l0(codes: Tensor) -> float:
    return float((codes > 0).sum(1).double().mean())


class _Search:
    """L0 at λ1 for one set of tokens, remembering every solve for warm starts."""

    def __init__(self, solver: Solver, X: Tensor, b: Tensor, tol: float):
        self.solver, self.X, self.b, self.tol = solver, X, b, tol
        self.done: dict[float, tuple[float, Tensor]] = {}

    def __call__(self, lam: float) -> float:
        if lam not in self.done:
            init = None
            if self.done:  # warm start at the nearest λ1 in log scale
                near = min(self.done, key=lambda v: abs(math.log(v / lam)))
                init = self.done[near][1]
            res = self.solver(self.X, lam1=lam, lam2=0.0, bias=self.b, tol=self.tol, init=init, max_iter=5000)
            self.done[lam] = (_l0(res.codes), res.codes)
        return self.done[lam][0]

    def best(self, target: float) -> tuple[float, float]:
        """(λ1, L0) of the solve whose L0 is nearest the target (the largest λ1 among ties)."""
        lam = min(self.done, key=lambda v: (abs(self.done[v][0] - target), -v))
        return lam, self.done[lam][0]


def _secant(f: _Search, target: float, lo: float, hi: float, steps: int, resolution: float) -> None:
    """Regula falsi (Illinois) in log λ1 on L0(λ1) − target, bracketed by lo < hi.

    Stops after ``steps`` solves, when an L0 within ``resolution`` of the target is found,
    or when the bracket is narrower than 1e-4 relative.
    """
    a, b = math.log(lo), math.log(hi)
    fa, fb = f(lo) - target, f(hi) - target  # fa > 0 (too dense), fb < 0 (too sparse)
    side = 0
    for _ in range(steps):
        if abs(f.best(target)[1] - target) <= resolution or b - a < 1e-4:
            return
        c = (a * fb - b * fa) / (fb - fa) if fb != fa else 0.5 * (a + b)
        c = min(max(c, a + 0.05 * (b - a)), b - 0.05 * (b - a))  # keep clear of the ends
        fc = f(math.exp(c)) - target
        if fc > 0:
            a, fa = c, fc
            if side == -1:
                fb *= 0.5
            side = -1
        else:
            b, fb = c, fc
            if side == 1:
                fa *= 0.5
            side = 1


def _bracket(f: _Search, target: float, lam: float, factor: float, lo_limit: float, hi_limit: float) -> tuple[float, float] | None:
    """lo < hi with L0(lo) > target ≥ L0(hi), grown geometrically by ``factor`` from λ1 = lam."""
    if f(lam) > target:
        lo, hi = lam, min(lam * factor, hi_limit)
        while f(hi) > target and hi < hi_limit:
            lo, hi = hi, min(hi * factor, hi_limit)
        return (lo, hi) if f(hi) <= target else None
    hi, lo = lam, max(lam / factor, lo_limit)
    while f(lo) <= target and lo > lo_limit:
        hi, lo = lo, max(lo / factor, lo_limit)
    return (lo, hi) if f(lo) > target else None


def calibrate_lam1(Xp: Tensor, D: Tensor, b: Tensor, target_l0: float, *, iters: int, tol: float,
                   solver: Solver | None = None, subsample: int = 64) -> tuple[float, float]:
    """λ1 of the non-negative lasso whose exact codes on Xp (N, n) have mean L0 ≈ ``target_l0``.

    Args:
        Xp: (N, n) float64 inputs in problem space. D: (n, m) decoder. b: (n,) bias.
        target_l0: the encoder's mean L0 on the same tokens.
        iters: solves of each secant stage at most (subsample, then all tokens).
        tol: the compare's certified gap; calibration solves use max(tol, 1e-6).
        solver: a :class:`geomsae.solvers.Solver` for D to share (None: one is made).
        subsample: tokens of the first stage.
    Returns:
        (λ1, L0 at that λ1 on all of Xp).
    """
    solver = solver or Solver(D)
    hi = float(lam1_max(Xp, D, bias=b).max())
    if target_l0 <= 0 or hi <= 0:
        return max(hi, 1e-12) * 1.0001, 0.0
    lo_limit = hi * 1e-4
    tol = max(tol, CALIBRATION_TOL)
    N = Xp.shape[0]
    lam = math.sqrt(lo_limit * hi)
    if N > 2 * subsample:
        # stage 1: a cheap estimate on a subsample (every ⌊N/subsample⌋-th token)
        sub = _Search(solver, Xp[:: N // subsample][:subsample], b, tol)
        br = _bracket(sub, target_l0, hi / 2, 4.0, lo_limit, hi)
        if br is not None:
            _secant(sub, target_l0, br[0], br[1], iters, 0.5 / subsample)
            lam = sub.best(target_l0)[0]
    full = _Search(solver, Xp, b, tol)
    if N > 2 * subsample:  # a narrow bracket around the subsample's answer
        br = _bracket(full, target_l0, lam, 1.25, lo_limit, hi)
    else:  # no subsample stage: a coarse bracket first, as stage 1 does
        br = _bracket(full, target_l0, hi / 2, 4.0, lo_limit, hi)
    if br is not None:
        _secant(full, target_l0, br[0], br[1], iters, 0.5 / N)
    return full.best(target_l0)


def calibrate_lam1_bisection(Xp: Tensor, D: Tensor, b: Tensor, target_l0: float, *, iters: int, tol: float,
                             solver: Any = None) -> tuple[float, float]:
    """The slow reference: ``iters`` bisection steps in log λ1 on [10⁻⁴ λ_max, λ_max], all tokens."""
    solver = solver or Solver(D)
    hi = float(lam1_max(Xp, D, bias=b).max())
    if target_l0 <= 0 or hi <= 0:
        return max(hi, 1e-12) * 1.0001, 0.0
    lo = hi * 1e-4
    init = None
    best = (hi, 0.0)
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        res = solver(Xp, lam1=mid, lam2=0.0, bias=b, tol=max(tol, CALIBRATION_TOL), init=init, max_iter=5000)
        l0 = _l0(res.codes)
        init = res.codes
        if abs(l0 - target_l0) < abs(best[1] - target_l0):
            best = (mid, l0)
        if l0 > target_l0:
            lo = mid
        else:
            hi = mid
    return best


__all__ = ["calibrate_lam1", "calibrate_lam1_bisection"]

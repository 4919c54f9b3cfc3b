"""The solver's public signature is written once (Solver.__call__); solve(X, D, ...) is Solver(D)(X, ...)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from geomsae.solvers import Solver, solve


def test_solve_takes_exactly_the_keywords_of_solver_call():
    call = inspect.signature(Solver.__call__).parameters
    sig = inspect.signature(solve).parameters
    assert list(sig)[:2] == ["X", "D"]
    assert {k: (p.kind, p.default) for k, p in sig.items() if k not in ("X", "D")} == \
           {k: (p.kind, p.default) for k, p in call.items() if k not in ("self", "X")}
    with pytest.raises(TypeError, match="lam"):
        solve(np.ones((2, 3)), np.eye(3), lam=0.1)


def test_solve_equals_a_solver_call_bit_for_bit():
    rng = np.random.default_rng(0)
    X, D = rng.normal(size=(5, 8)), rng.normal(size=(8, 20))
    a = solve(X, D, lam1=0.2, lam2=0.05, nonneg=False, tol=1e-10)
    b = Solver(D)(X, lam1=0.2, lam2=0.05, nonneg=False, tol=1e-10)
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.dual_gap, b.dual_gap)
    assert a.converged.all()

"""The working-set solver and gap-safe screening against the slow references.

Every certificate is recomputed here from the formulas (``independent_gap``), never taken
from the library; the references are cvxpy (Clarabel) and the all-float64 FISTA path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from geomsae.solvers import screen, solve, solve_cvxpy
from geomsae.solvers.problem import prepare
from geomsae.solvers.fast import Context
from geomsae.solvers.working_set import WorkingSetConfig, newton_on_block, solve_working_set
from tests.conftest import planted, random_dict, spiked_dict
from tests.test_solvers import assert_within_certified_distance, independent_gap

HYP = settings(derandomize=True, max_examples=25, deadline=None)


def near_duplicate_dict(rng: np.random.Generator, n: int, m: int, eps: float = 1e-2) -> np.ndarray:
    """Each atom of the second half copies one of the first half up to eps-relative noise."""
    D = random_dict(rng, n, m)
    D[:, m // 2:] = D[:, : m - m // 2] + eps * rng.standard_normal((n, m - m // 2)) / np.sqrt(n)
    return D / np.linalg.norm(D, axis=0)


GEOMETRIES = {
    "random": lambda rng: random_dict(rng, 24, 80),
    "spiked0.99": lambda rng: spiked_dict(rng, 24, 80, 0.99),
    "neardup": lambda rng: near_duplicate_dict(rng, 24, 80),
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("lam2", [0.0, 0.05])
@pytest.mark.parametrize("nonneg", [True, False])
def test_working_set_matches_cvxpy_with_certified_gap(geometry, lam2, nonneg):
    rng = np.random.default_rng(7)
    D = GEOMETRIES[geometry](rng)
    X = planted(rng, D, 6, 4, noise=0.05)
    w = rng.uniform(0.5, 2.0, D.shape[1])
    tol = 1e-10
    fast = solve(X, D, lam1=0.1, lam2=lam2, weights=w, nonneg=nonneg, tol=tol, algorithm="working_set")
    ref = solve_cvxpy(X, D, lam1=0.1, lam2=lam2, weights=w, nonneg=nonneg)
    gap, P = independent_gap(X, D, fast.codes, 0.1, lam2, w, nonneg)
    assert np.all(gap <= tol * P + 1e-14), (gap / P).max()
    np.testing.assert_allclose(fast.dual_gap, gap, rtol=1e-6, atol=1e-13)
    np.testing.assert_allclose(fast.objective, ref.objective, rtol=1e-7)
    assert np.all(fast.objective <= ref.objective * (1 + 1e-9))
    if lam2 > 0:  # unique optimum: the codes agree within the certified distances
        assert_within_certified_distance(fast, ref, lam2)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("nonneg", [True, False])
def test_working_set_equals_full_solution(geometry, nonneg):
    """Solving on working sets gives the solution of the full problem (the FISTA reference)."""
    rng = np.random.default_rng(3)
    D = GEOMETRIES[geometry](rng)
    X = planted(rng, D, 10, 5, noise=0.05)
    ws = solve(X, D, lam1=0.05, lam2=0.02, nonneg=nonneg, tol=1e-12, algorithm="working_set")
    full = solve(X, D, lam1=0.05, lam2=0.02, nonneg=nonneg, tol=1e-12, algorithm="fista", precision="double")
    np.testing.assert_allclose(ws.objective, full.objective, rtol=1e-10)
    assert_within_certified_distance(ws, full, 0.02)
    # and the working-set rounds alone (no FISTA hand-off) certify on these problems
    prob = prepare(X, D, lam1=0.05, lam2=0.02, nonneg=nonneg)
    Z, gap, P, _, conv = solve_working_set(prob, Context(prob.D, 0.02), None, tol=1e-12)
    assert bool(conv.all())
    g2, P2 = independent_gap(X, D, Z.numpy(), 0.05, 0.02, np.ones(D.shape[1]), nonneg)
    assert np.all(g2 <= 1e-12 * P2 + 1e-14)


def test_one_working_set_of_all_atoms_is_the_full_problem():
    """With W = all atoms the Newton block alone solves the problem exactly."""
    rng = np.random.default_rng(5)
    D = spiked_dict(rng, 16, 40, 0.9)
    X = planted(rng, D, 4, 3, noise=0.05)
    lam1, lam2 = 0.1, 0.05
    A = torch.from_numpy(D.T @ D + lam2 * np.eye(40)).expand(4, -1, -1).contiguous()
    q = torch.from_numpy(X @ D)
    thr = torch.full((4, 40), lam1, dtype=torch.float64)
    z, ok, _ = newton_on_block(A, q, thr, torch.ones(4, 40, dtype=torch.bool), torch.zeros(4, 40, dtype=torch.float64), True, 50)
    assert bool(ok.all())
    gap, P = independent_gap(X, D, z.numpy(), lam1, lam2, np.ones(40), True)
    assert np.all(gap <= 1e-12 * P)


def test_exact_duplicates_at_lam2_zero_are_certified():
    """Duplicated atoms make the lasso's Newton blocks singular; the result still certifies."""
    rng = np.random.default_rng(2)
    D = random_dict(rng, 20, 30)
    D = np.concatenate([D, D[:, :10]], axis=1)
    X = planted(rng, D, 5, 3, noise=0.05)
    res = solve(X, D, lam1=0.1, lam2=0.0, tol=1e-10, algorithm="working_set")
    gap, P = independent_gap(X, D, res.codes, 0.1, 0.0, np.ones(40), True)
    assert res.converged.all() and np.all(gap <= 1e-10 * P + 1e-14)


def test_small_config_still_certifies():
    """Tiny working sets need more rounds (or the FISTA hand-off), never a false certificate."""
    rng = np.random.default_rng(4)
    D = spiked_dict(rng, 24, 80, 0.99)
    X = planted(rng, D, 6, 5, noise=0.05)
    prob = prepare(X, D, lam1=0.05, lam2=0.0, nonneg=True)
    Z, gap, P, its, conv = solve_working_set(prob, Context(prob.D, 0.0), None, tol=1e-10,
                                             cfg=WorkingSetConfig(first_size=2, max_outer=2))
    g2, P2 = independent_gap(X, D, Z.numpy(), 0.05, 0.0, np.ones(80), True)
    np.testing.assert_allclose(gap.numpy(), g2, rtol=1e-6, atol=1e-13)
    assert np.all(conv.numpy() == (g2 <= 1e-10 * P2.clip(0)))


screen_st = st.tuples(
    st.integers(4, 12),  # n
    st.integers(4, 40),  # m
    st.floats(0.02, 1.0),  # lam1
    st.sampled_from([0.0, 0.01, 0.5]),  # lam2
    st.booleans(),  # nonneg
    st.sampled_from(["random", "spiked0.99", "neardup"]),
    st.floats(0.0, 1.0),  # how far along towards the optimum the screened code is
    st.integers(0, 2**16),  # seed
)


@settings(HYP, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(screen_st)
def test_screening_never_discards_an_active_atom(p):
    n, m, lam1, lam2, nonneg, geometry, t, seed = p
    rng = np.random.default_rng(seed)
    D = {"random": random_dict, "spiked0.99": lambda r, a, b: spiked_dict(r, a, b, 0.99),
         "neardup": near_duplicate_dict}[geometry](rng, n, m)
    X = rng.standard_normal((3, n))
    w = rng.uniform(0.5, 2.0, m)
    # the reference is FISTA alone (no screening inside it); a ρ 0.99 lasso can need far more iterations than a
    # test affords, so such draws are skipped rather than letting the test run for minutes
    ref = solve(X, D, lam1=lam1, lam2=lam2, weights=w, nonneg=nonneg, tol=1e-11, max_iter=20_000,
                algorithm="fista", precision="double")
    assume(bool(np.all(np.asarray(ref.converged))))
    # any code: a mix of the optimum and noise (t = 1: the optimum itself)
    noise = rng.standard_normal((3, m)) * (rng.random((3, m)) < 0.3)
    Z = t * ref.codes + (1 - t) * (np.abs(noise) if nonneg else noise)
    keep = screen(X, D, Z, lam1=lam1, lam2=lam2, weights=w, nonneg=nonneg)
    active = np.abs(ref.codes) > 1e-6 * max(1.0, np.abs(ref.codes).max())
    assert not np.any(active & ~keep), np.argwhere(active & ~keep)


def test_screening_at_the_optimum_discards_the_clearly_inactive():
    rng = np.random.default_rng(0)
    D = random_dict(rng, 30, 200)
    X = planted(rng, D, 4, 3, noise=0.01)
    res = solve(X, D, lam1=0.2, lam2=0.05, tol=1e-14, algorithm="working_set")
    keep = screen(X, D, res.codes, lam1=0.2, lam2=0.05)
    V = (X - res.codes @ D.T) @ D
    # with a gap of ~1e-14 the ball is tiny: every atom clearly below the threshold goes
    assert np.all(keep >= (res.codes > 0))
    assert not np.any(keep & (V < 0.2 - 1e-4))
    assert keep.sum() < 0.2 * keep.size


def test_screen_validates_inputs():
    rng = np.random.default_rng(0)
    D = random_dict(rng, 5, 10)
    X = rng.standard_normal((2, 5))
    with pytest.raises(ValueError, match=r"Z has shape \(2, 9\)"):
        screen(X, D, np.zeros((2, 9)), lam1=0.1)
    with pytest.raises(ValueError, match=r"lam1 == -1"):
        screen(X, D, np.zeros((2, 10)), lam1=-1)

"""The exact solvers: agreement with cvxpy, certificates, closed forms, invariants, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomsae.solvers import (
    ConvergenceWarning,
    adaptive_weights,
    aen_solve,
    duality_gap,
    lam1_max,
    objective,
    solve,
    solve_cvxpy,
    solve_path,
)
from tests.conftest import duplicated_dict, planted, random_dict, spiked_dict

HYP = settings(derandomize=True, max_examples=25, deadline=None)


def independent_gap(X, D, Z, lam1, lam2, w, nonneg):
    """The duality gap recomputed here from the formulas, without the library's code."""
    P, Dl = [], []
    for x, z in zip(X, Z):
        r = x - D @ z
        p = 0.5 * r @ r + lam1 * np.sum(w * np.abs(z)) + 0.5 * lam2 * z @ z
        v = D.T @ r
        vv = v if nonneg else np.abs(v)
        if lam2 > 0:
            d = r @ x - 0.5 * r @ r - np.sum(np.maximum(vv - lam1 * w, 0) ** 2) / (2 * lam2)
        else:
            s = min(1.0, lam1 / max(np.max(vv / w), 1e-300)) if np.max(vv / w) > 0 else 1.0
            s = min(max(r @ x / (r @ r), 0.0), s) if r @ r > 0 else 0.0
            d = s * (r @ x) - 0.5 * s * s * (r @ r)
        P.append(p)
        Dl.append(d)
    return np.array(P) - np.array(Dl), np.array(P)


def assert_within_certified_distance(r1, r2, lam2, z1=None, z2=None, scale1=1.0):
    """‖z1 − z2‖ ≤ √(2 gap1/λ2) + √(2 gap2/λ2): F is λ2-strongly convex, so each certified
    code lies within √(2 gap/λ2) of the unique optimum. ``scale1`` rescales r1's problem."""
    z1 = r1.codes if z1 is None else z1
    z2 = r2.codes if z2 is None else z2
    b1 = scale1 * np.sqrt(2 * np.maximum(r1.dual_gap, 0) / lam2)
    b2 = np.sqrt(2 * np.maximum(r2.dual_gap, 0) / lam2)
    assert np.all(np.linalg.norm(z1 - z2, axis=1) <= b1 + b2 + 1e-9 * (1 + np.abs(z2).max()))


CASES = {
    "random": lambda rng: random_dict(rng, 24, 64),
    "spiked0.9": lambda rng: spiked_dict(rng, 24, 64, 0.9),
    "duplicated": lambda rng: duplicated_dict(rng, 24, 64),
}


@pytest.mark.parametrize("geometry", list(CASES))
@pytest.mark.parametrize("lam2", [0.0, 0.05])
@pytest.mark.parametrize("nonneg", [True, False])
def test_matches_cvxpy(geometry, lam2, nonneg):
    rng = np.random.default_rng(1)
    D = CASES[geometry](rng)
    X = planted(rng, D, 6, 4, noise=0.05)
    lam1 = 0.1
    fast = solve(X, D, lam1=lam1, lam2=lam2, nonneg=nonneg, tol=1e-13)
    ref = solve_cvxpy(X, D, lam1=lam1, lam2=lam2, nonneg=nonneg)
    assert fast.converged.all()
    # objectives agree to 1e-7 relative, and ours is never worse than cvxpy's
    np.testing.assert_allclose(fast.objective, ref.objective, rtol=1e-7)
    assert np.all(fast.objective <= ref.objective * (1 + 1e-12))
    unique = lam2 > 0 or geometry != "duplicated"
    if unique:  # the lasso on duplicated columns has many optimal codes: compare objectives only
        err = np.linalg.norm(fast.codes - ref.codes, axis=1) / np.linalg.norm(ref.codes, axis=1)
        assert err.max() <= 1e-5


@pytest.mark.parametrize("lam2", [0.0, 0.1])
@pytest.mark.parametrize("nonneg", [True, False])
def test_gap_recomputed_independently(rng, lam2, nonneg):
    D = random_dict(rng, 16, 40)
    X = planted(rng, D, 5, 3, noise=0.1)
    w = rng.uniform(0.5, 2.0, 40)
    # at an arbitrary (non-optimal) code, and at the solution
    Z = np.abs(rng.standard_normal((5, 40))) * (rng.random((5, 40)) < 0.2)
    for codes in (Z, solve(X, D, lam1=0.2, lam2=lam2, weights=w, nonneg=nonneg).codes):
        ours = duality_gap(X, D, codes, lam1=0.2, lam2=lam2, weights=w, nonneg=nonneg)
        theirs, P = independent_gap(X, D, codes, 0.2, lam2, w, nonneg)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(objective(X, D, codes, lam1=0.2, lam2=lam2, weights=w, nonneg=nonneg), P, rtol=1e-12)
        assert np.all(ours >= -1e-12)
    # and at the solution the gap is tiny relative to P
    res = solve(X, D, lam1=0.2, lam2=lam2, weights=w, nonneg=nonneg)
    assert np.all(res.dual_gap <= 1e-8 * res.objective + 1e-15)


def test_gap_is_inf_for_negative_codes_when_nonneg(rng):
    D = random_dict(rng, 8, 12)
    X = planted(rng, D, 2, 2)
    Z = np.zeros((2, 12))
    Z[0, 3] = -1.0
    gap = duality_gap(X, D, Z, lam1=0.1, lam2=0.1, nonneg=True)
    assert np.isinf(gap[0]) and np.isfinite(gap[1])


@pytest.mark.parametrize("nonneg", [True, False])
def test_large_lambda_gives_zero(rng, nonneg):
    D = random_dict(rng, 20, 50)
    X = planted(rng, D, 8, 3, noise=0.1)
    b = rng.standard_normal(20) * 0.1
    w = rng.uniform(0.5, 2, 50)
    lmax = lam1_max(X, D, weights=w, bias=b, nonneg=nonneg)
    V = (X - b) @ D
    expect = (np.abs(V) if not nonneg else V) / w
    np.testing.assert_allclose(lmax, np.maximum(expect.max(1), 0))
    res = solve(X, D, lam1=float(lmax.max()) * 1.0001, lam2=0.1, weights=w, bias=b, nonneg=nonneg)
    assert np.all(res.codes == 0)
    # and just below λ_max of every row, the code is not zero
    res = solve(X, D, lam1=float(lmax.min()) * 0.9, lam2=0.1, weights=w, bias=b, nonneg=nonneg)
    assert np.all(np.abs(res.codes).sum(1) > 0)


@pytest.mark.parametrize("nonneg", [True, False])
def test_orthonormal_closed_form(rng, nonneg):
    Q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    X = rng.standard_normal((10, 30))
    b = rng.standard_normal(30) * 0.2
    w = rng.uniform(0.5, 2, 30)
    lam1, lam2 = 0.3, 0.7
    res = solve(X, Q, lam1=lam1, lam2=lam2, weights=w, bias=b, nonneg=nonneg, tol=1e-14)
    c = (X - b) @ Q
    if nonneg:
        expect = np.maximum(c - lam1 * w, 0) / (1 + lam2)
    else:
        expect = np.sign(c) * np.maximum(np.abs(c) - lam1 * w, 0) / (1 + lam2)
    np.testing.assert_allclose(res.codes, expect, atol=1e-12)


def _kkt(X, D, Z, lam1, lam2, w, nonneg):
    V = X @ D - Z @ (D.T @ D)
    g = V - lam2 * Z
    on = Z != 0
    viol = np.where(on, np.abs(g - lam1 * w * np.sign(Z)), np.maximum((g if nonneg else np.abs(g)) - lam1 * w, 0))
    if nonneg:
        assert np.all(Z >= 0)
    return viol.max()


problem_st = st.tuples(
    st.integers(4, 12),  # n
    st.integers(4, 30),  # m
    st.floats(0.01, 1.0),  # lam1
    st.sampled_from([0.0, 0.01, 0.5]),  # lam2
    st.booleans(),  # nonneg
    st.integers(0, 2**16),  # seed
)


@HYP
@given(problem_st)
def test_kkt_holds(p):
    n, m, lam1, lam2, nonneg, seed = p
    rng = np.random.default_rng(seed)
    D = random_dict(rng, n, m)
    X = rng.standard_normal((3, n))
    w = rng.uniform(0.2, 3, m)
    res = solve(X, D, lam1=lam1, lam2=lam2, weights=w, nonneg=nonneg, tol=1e-12, max_iter=200_000)
    scale = max(1.0, np.abs(X @ D).max())
    assert _kkt(X, D, res.codes, lam1, lam2, w, nonneg) <= 1e-5 * scale


@HYP
@given(problem_st, st.floats(0.1, 10.0))
def test_scaling_equivariance(p, c):
    n, m, lam1, lam2, nonneg, seed = p
    lam2 = max(lam2, 0.01)  # unique solutions, so codes (not only objectives) compare
    rng = np.random.default_rng(seed)
    D = random_dict(rng, n, m)
    X = rng.standard_normal((3, n))
    b = rng.standard_normal(n) * 0.3
    r1 = solve(X, D, lam1=lam1, lam2=lam2, bias=b, nonneg=nonneg, tol=1e-12)
    r2 = solve(c * X, D, lam1=c * lam1, lam2=lam2, bias=c * b, nonneg=nonneg, tol=1e-12)
    # F(cz; cx, cλ1) = c² F(z; x, λ1): the gap of r1 scales by c², its distance by c
    assert_within_certified_distance(r1, r2, lam2, z1=c * r1.codes, scale1=c)


@HYP
@given(problem_st)
def test_permutation_equivariance(p):
    n, m, lam1, lam2, nonneg, seed = p
    lam2 = max(lam2, 0.01)
    rng = np.random.default_rng(seed)
    D = random_dict(rng, n, m)
    X = rng.standard_normal((3, n))
    w = rng.uniform(0.5, 2, m)
    perm = rng.permutation(m)
    r1 = solve(X, D, lam1=lam1, lam2=lam2, weights=w, nonneg=nonneg, tol=1e-12)
    r2 = solve(X, D[:, perm], lam1=lam1, lam2=lam2, weights=w[perm], nonneg=nonneg, tol=1e-12)
    assert_within_certified_distance(r1, r2, lam2, z1=r1.codes[:, perm])


@pytest.mark.parametrize("lam2", [0.0, 0.02])
def test_mixed_precision_fast_path_matches_double_reference(lam2):
    """The default float32-iteration path against the all-float64 path, same certificates."""
    rng = np.random.default_rng(3)
    D = spiked_dict(rng, 32, 128, 0.7)
    X = planted(rng, D, 24, 5, noise=0.02)
    fast = solve(X, D, lam1=0.05, lam2=lam2, tol=1e-10)
    slow = solve(X, D, lam1=0.05, lam2=lam2, tol=1e-10, precision="double")
    assert fast.converged.all() and slow.converged.all()
    np.testing.assert_allclose(fast.objective, slow.objective, rtol=1e-9)
    if lam2 > 0:
        assert_within_certified_distance(fast, slow, lam2)


def test_float32_and_torch_agree_with_float64(rng):
    D = spiked_dict(rng, 32, 96, 0.5)
    X = planted(rng, D, 16, 4, noise=0.05)
    ref = solve(X, D, lam1=0.1, lam2=0.05, tol=1e-12)
    r32 = solve(X.astype(np.float32), D.astype(np.float32), lam1=0.1, lam2=0.05, tol=1e-12)
    assert r32.codes.dtype == np.float32
    # documented: float32 inputs are rounded (~6e-8 relative) then solved in float64
    np.testing.assert_allclose(r32.codes, ref.codes, rtol=1e-4, atol=1e-4)
    rt = solve(torch.from_numpy(X), torch.from_numpy(D), lam1=0.1, lam2=0.05, tol=1e-12)
    assert isinstance(rt.codes, torch.Tensor) and rt.codes.dtype == torch.float64
    np.testing.assert_allclose(rt.codes.numpy(), ref.codes, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu(rng):
    D = spiked_dict(rng, 32, 96, 0.5)
    X = planted(rng, D, 16, 4, noise=0.05)
    ref = solve(X, D, lam1=0.1, lam2=0.05, tol=1e-12)
    for dt, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        res = solve(torch.from_numpy(X).to("cuda", dt), torch.from_numpy(D).to("cuda", dt), lam1=0.1, lam2=0.05, tol=1e-12)
        assert res.codes.device.type == "cuda"
        np.testing.assert_allclose(res.codes.double().cpu().numpy(), ref.codes, rtol=tol, atol=tol)


def test_vector_input_and_warm_start(rng):
    D = random_dict(rng, 20, 60)
    X = planted(rng, D, 4, 3)
    full = solve(X, D, lam1=0.1, lam2=0.01, tol=1e-12)
    one = solve(X[0], D, lam1=0.1, lam2=0.01, tol=1e-12)
    assert one.codes.shape == (60,) and np.ndim(one.dual_gap) == 0
    np.testing.assert_allclose(one.codes, full.codes[0], atol=1e-9)
    warm = solve(X, D, lam1=0.1, lam2=0.01, tol=1e-12, init=full.codes)
    assert warm.n_iter.max() <= 10  # already optimal: one check certifies it
    np.testing.assert_allclose(warm.codes, full.codes, atol=1e-9)


def test_nonconvergence_warns_and_flags(rng):
    D = spiked_dict(rng, 20, 80, 0.9)
    X = planted(rng, D, 4, 6, noise=0.1)
    with pytest.warns(ConvergenceWarning, match=r"did not converge: worst certified relative gap .* > tol 1e-14"):
        res = solve(X, D, lam1=0.01, lam2=0.0, tol=1e-14, max_iter=3, algorithm="fista")
    assert not res.converged.all()
    assert np.all(res.n_iter == 3)


def test_path_warm_starts_match_cold(rng):
    D = spiked_dict(rng, 24, 64, 0.7)
    X = planted(rng, D, 5, 4, noise=0.05)
    lams = [0.05, 0.5, 0.2]
    path = solve_path(X, D, lam1s=lams, lam2=0.05, tol=1e-12)
    assert len(path) == 3
    for lam, res in zip(lams, path):
        cold = solve(X, D, lam1=lam, lam2=0.05, tol=1e-12)
        assert_within_certified_distance(res, cold, 0.05)
    # sparser at larger λ1
    nnz = [np.count_nonzero(r.codes) for r in path]
    assert nnz[1] <= nnz[2] <= nnz[0]


def test_adaptive_weights_and_aen(rng):
    z = np.array([[0.0, 1.0, 4.0]])
    np.testing.assert_allclose(adaptive_weights(z, gamma=1.0, eps=1e-6), [[1e6, 1 / (1 + 1e-6), 1 / (4 + 1e-6)]])
    np.testing.assert_allclose(adaptive_weights(z, gamma=0.5, eps=1e-6)[0, 2], (4 + 1e-6) ** -0.5)
    D = spiked_dict(rng, 32, 96, 0.5)
    X = planted(rng, D, 6, 4)
    res = aen_solve(X, D, lam1=0.05, lam2=0.01, gamma=1.0)
    pilot = solve(X, D, lam1=0.05, lam2=0.01)
    np.testing.assert_allclose(res.weights, adaptive_weights(pilot.codes, gamma=1.0))
    again = solve(X, D, lam1=0.05, lam2=0.01, weights=res.weights, tol=1e-12)
    np.testing.assert_allclose(res.codes, again.codes, atol=1e-6)
    # the pilot's zeros carry weight 1e6: AEN's support lies inside the pilot's
    assert np.all((res.codes > 0) <= (pilot.codes > 0))


# ---- input validation: each error names the bad value -------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lam1=-0.1), r"lam1 == -0.1, must be a finite number >= 0"),
        (dict(lam1=float("nan")), r"lam1 == nan"),
        (dict(lam1=0.1, lam2=-1.0), r"lam2 == -1.0, must be a finite number >= 0"),
        (dict(lam1=0.0, lam2=0.0), r"lam1 == 0 and lam2 == 0"),
        (dict(lam1=0.1, weights=np.zeros(10)), r"weights must be > 0, got min weight 0"),
        (dict(lam1=0.1, weights=np.ones(9)), r"weights has shape \(9,\), must be \(m,\) = \(10,\)"),
        (dict(lam1=0.1, bias=np.ones(3)), r"bias has shape \(3,\), must be \(n,\) = \(5,\)"),
        (dict(lam1=0.1, tol=0.0), r"tol == 0.0, must be a finite number > 0"),
        (dict(lam1=0.1, max_iter=0), r"max_iter == 0, must be an integer >= 1"),
        (dict(lam1=0.1, init=np.ones((2, 3))), r"init has shape \(2, 3\), must be \(B, m\) = \(2, 10\)"),
        (dict(lam1=0.1, precision="half"), r"precision == 'half', must be 'mixed' or 'double'"),
    ],
)
def test_bad_arguments(kwargs, match):
    rng = np.random.default_rng(0)
    D = random_dict(rng, 5, 10)
    X = rng.standard_normal((2, 5))
    with pytest.raises(ValueError, match=match):
        solve(X, D, **kwargs)


def test_bad_arrays():
    rng = np.random.default_rng(0)
    D = random_dict(rng, 5, 10)
    X = rng.standard_normal((2, 5))
    Xn = X.copy()
    Xn[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or Inf \(first at index \(1, 2\)"):
        solve(Xn, D, lam1=0.1)
    Dn = D.copy()
    Dn[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"D contains NaN or Inf"):
        solve(X, Dn, lam1=0.1)
    with pytest.raises(ValueError, match=r"X has shape \(2, 4\): its last dimension 4 must equal D's rows n=5"):
        solve(X[:, :4], D, lam1=0.1)
    with pytest.raises(ValueError, match=r"D has shape \(5,\), must be 2-D"):
        solve(X, D[:, 0], lam1=0.1)
    Dz = D.copy()
    Dz[:, 7] = 0
    with pytest.raises(ValueError, match=r"D column 7 has norm 0: zero atoms are not allowed"):
        solve(X, Dz, lam1=0.1)
    with pytest.raises(TypeError, match=r"X has dtype torch.int64, must be floating point"):
        solve(np.ones((2, 5), dtype=np.int64), D, lam1=0.1)
    with pytest.raises(ValueError, match=r"lam1s is empty"):
        solve_path(X, D, lam1s=[])
    with pytest.raises(ValueError, match=r"gamma == 0, must be a finite number > 0"):
        adaptive_weights(np.ones(3), gamma=0)
    with pytest.raises(ValueError, match=r"Z has shape \(2, 9\)"):
        duality_gap(X, D, np.zeros((2, 9)), lam1=0.1)


def test_non_unit_columns_are_solved_as_written(rng):
    """Documented: D need not have unit-norm columns; scaling a column rescales its code."""
    D = random_dict(rng, 12, 30)
    X = planted(rng, D, 3, 3)
    D2 = D.copy()
    D2[:, 0] *= 2.0
    w2 = np.ones(30)
    w2[0] = 2.0  # λ1 w |z| with z' = z/2 keeps the same penalty
    r1 = solve(X, D, lam1=0.1, lam2=0.0, tol=1e-13)
    r2 = solve(X, D2, lam1=0.1, lam2=0.0, weights=w2, tol=1e-13)
    np.testing.assert_allclose(r2.objective, r1.objective, rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r2.converged.all()

"""Benchmark: geomsae.solvers.solve vs scikit-learn ElasticNet vs cvxpy (Clarabel).

    python bench/solvers.py [--B 1024] [--cvxpy-subset 3] [--quick]

Same problems for all three, side by side in one run: B planted non-negative problems
x = D z (k active atoms, magnitudes U[1, 3]) on a random unit-norm dictionary, solved as
the non-negative elastic net ½‖x − Dz‖² + λ1 Σ z + (λ2/2)‖z‖² (canonical units).
scikit-learn's ElasticNet minimises 1/(2n)‖y − Dz‖² + α·r‖z‖₁ + ½α(1 − r)‖z‖², so
α = (λ1 + λ2)/n and r = λ1/(λ1 + λ2). Every method's codes are certified with *our*
duality gap, and the table prints samples/s, the worst certified relative gap, and the
ratios. cvxpy is timed on a subset and extrapolated (it is ~1000× slower).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from geomsae.solvers import duality_gap, objective, solve


def planted(rng: np.random.Generator, n: int, m: int, k: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    D = rng.standard_normal((n, m))
    D /= np.linalg.norm(D, axis=0)
    Z = np.zeros((B, m))
    for i in range(B):
        Z[i, rng.choice(m, k, replace=False)] = rng.uniform(1, 3, k)
    return Z @ D.T, D


def rel_gap(X, D, Z, lam1, lam2) -> np.ndarray:
    g = duality_gap(X, D, Z, lam1=lam1, lam2=lam2)
    P = objective(X, D, Z, lam1=lam1, lam2=lam2)
    return g / P


def run_sklearn(X, D, lam1, lam2, tol):
    from sklearn.exceptions import ConvergenceWarning as SkWarn
    from sklearn.linear_model import ElasticNet

    n = D.shape[0]
    alpha = (lam1 + lam2) / n
    model = ElasticNet(alpha=alpha, l1_ratio=lam1 / (lam1 + lam2), positive=True, fit_intercept=False,
                       precompute=True, tol=tol, max_iter=100_000, selection="cyclic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkWarn)
        model.fit(D, X.T)  # one multi-target fit: targets are the B signals
    return np.atleast_2d(model.coef_)


def run_cvxpy(X, D, lam1, lam2, tol=1e-8):
    import cvxpy as cp

    n, m = D.shape
    z = cp.Variable(m, nonneg=True)
    y = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(y - D @ z) + lam1 * cp.sum(z) + 0.5 * lam2 * cp.sum_squares(z)))
    out = np.zeros((X.shape[0], m))
    for i, x in enumerate(X):
        y.value = x
        prob.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
        out[i] = np.maximum(z.value, 0)
    return out


def bench(n, m, k, B, lam1, lam2, cvx_subset, seed=0):
    rng = np.random.default_rng(seed)
    X, D = planted(rng, n, m, k, B)
    rows = []
    solve(X[:8], D, lam1=lam1, lam2=lam2)  # warm up BLAS threads
    t = time.perf_counter()
    res = solve(X, D, lam1=lam1, lam2=lam2, tol=1e-8)
    t_ours = time.perf_counter() - t
    rows.append(("geomsae solve (mixed)", B / t_ours, rel_gap(X, D, res.codes, lam1, lam2).max()))
    t = time.perf_counter()
    res64 = solve(X, D, lam1=lam1, lam2=lam2, tol=1e-8, precision="double")
    t64 = time.perf_counter() - t
    rows.append(("geomsae solve (double)", B / t64, rel_gap(X, D, res64.codes, lam1, lam2).max()))
    # scikit-learn: pick the loosest of its tolerances whose certified gap is <= 1e-8
    for sk_tol in (1e-8, 1e-10, 1e-12):
        t = time.perf_counter()
        Zs = run_sklearn(X, D, lam1, lam2, sk_tol)
        t_sk = time.perf_counter() - t
        g_sk = rel_gap(X, D, Zs, lam1, lam2).max()
        if g_sk <= 1e-8:
            break
    rows.append((f"scikit-learn ElasticNet (tol={sk_tol:g})", B / t_sk, g_sk))
    sub = X[:cvx_subset]
    for cvx_tol in (1e-8, 1e-10, 1e-12):  # likewise the loosest Clarabel tolerance that certifies <= 1e-8
        t = time.perf_counter()
        Zc = run_cvxpy(sub, D, lam1, lam2, cvx_tol)
        t_cvx = time.perf_counter() - t
        g_cvx = rel_gap(sub, D, Zc, lam1, lam2).max()
        if g_cvx <= 1e-8:
            break
    rows.append((f"cvxpy Clarabel (tol={cvx_tol:g}; {cvx_subset} samples, extrapolated)", cvx_subset / t_cvx, g_cvx))
    support = (res.codes > 0).sum(1).mean()
    print(f"\n## n={n} m={m} k={k} B={B} lam1={lam1} lam2={lam2}  (mean solution support {support:.1f}, torch threads {torch.get_num_threads()})")
    print(f"{'method':52s} {'samples/s':>10s} {'ms/sample':>10s} {'worst rel gap':>14s}")
    for name, sps, g in rows:
        print(f"{name:52s} {sps:10.1f} {1e3 / sps:10.2f} {g:14.2e}")
    ours = rows[0][1]
    print(f"ratio geomsae(mixed)/scikit-learn: {ours / rows[2][1]:.2f}x   geomsae(mixed)/cvxpy: {ours / rows[3][1]:.0f}x   "
          f"mixed/double: {ours / rows[1][1]:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=1024)
    ap.add_argument("--cvxpy-subset", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="B=128 and only the small problem")
    args = ap.parse_args()
    B = 128 if args.quick else args.B
    if not args.quick:
        bench(512, 4096, 32, B, 0.1, 0.05, args.cvxpy_subset)
    bench(64, 512, 8, B, 0.1, 0.05, max(args.cvxpy_subset, 20))


if __name__ == "__main__":
    main()

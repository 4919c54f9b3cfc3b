"""Benchmark: geomsae.solvers.solve vs scikit-learn ElasticNet vs cvxpy (Clarabel), interleaved.

    python bench/solvers.py [--B 512] [--repeats 3] [--quick] [--cvxpy-large]

Same problems for all, side by side in one run: B planted non-negative problems x = D z + noise
(k active atoms, magnitudes U[1, 3], noise 0.01) on three dictionary geometries — random
unit-norm atoms, the spiked model with ρ = 0.99 (every pair of atoms has cosine ≈ 0.99),
and near-duplicate atoms (each atom of the second half is a copy of one of the first half
plus 1e-2 noise) — solved as the non-negative elastic net
½‖x − Dz‖² + λ1 Σ z + (λ2/2)‖z‖² (canonical units).

scikit-learn's ElasticNet minimises 1/(2n)‖y − Dz‖² + α·r‖z‖₁ + ½α(1 − r)‖z‖², so
α = (λ1 + λ2)/n and r = λ1/(λ1 + λ2). Every method's codes are certified with *our*
duality gap; each competitor runs at the loosest of its tolerances whose certified
relative gap is ≤ 1e-8 on every sample (chosen in an untimed pass), as ours does.

The machine is shared: the timed repeats of the competitors are interleaved (ours,
scikit-learn, ours, scikit-learn, …) so that load hits both alike, and the table shows
the median of each. cvxpy solves a subset of the samples (it is ~1000× slower),
interleaved likewise, and its time per sample is extrapolated.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from geomsae.solvers import duality_gap, objective, solve

GAP = 1e-8
SKLEARN_MAX_ITER = 100_000
"""Coordinate-descent sweeps scikit-learn may take per signal; where it stops short of the gap, the
table's worst relative gap says so."""


def dictionary(rng: np.random.Generator, kind: str, n: int, m: int) -> np.ndarray:
    """(n, m) unit-norm atoms of geometry ``kind``: random, spiked0.99 or neardup."""
    U = rng.standard_normal((n, m))
    U /= np.linalg.norm(U, axis=0)
    if kind == "random":
        return U
    if kind == "spiked0.99":
        v = rng.standard_normal(n)
        v /= np.linalg.norm(v)
        D = np.sqrt(0.01) * U + np.sqrt(0.99) * v[:, None]
    elif kind == "neardup":
        D = U.copy()
        D[:, m // 2:] = U[:, : m - m // 2] + 1e-2 * rng.standard_normal((n, m - m // 2)) / np.sqrt(n)
    else:
        raise ValueError(f"kind == {kind!r}, must be random, spiked0.99 or neardup")
    return D / np.linalg.norm(D, axis=0)


def planted(rng: np.random.Generator, D: np.ndarray, k: int, B: int) -> np.ndarray:
    n, m = D.shape
    Z = np.zeros((B, m))
    for i in range(B):
        Z[i, rng.choice(m, k, replace=False)] = rng.uniform(1, 3, k)
    return Z @ D.T + 0.01 * rng.standard_normal((B, n))


def worst_rel_gap(X, D, Z, lam1, lam2) -> float:
    g = duality_gap(X, D, Z, lam1=lam1, lam2=lam2)
    return float((g / objective(X, D, Z, lam1=lam1, lam2=lam2)).max())


def run_ours(X, D, lam1, lam2, algorithm="auto"):
    return solve(X, D, lam1=lam1, lam2=lam2, tol=GAP, algorithm=algorithm, max_iter=200_000).codes


def run_sklearn(X, D, lam1, lam2, tol):
    from sklearn.exceptions import ConvergenceWarning as SkWarn
    from sklearn.linear_model import ElasticNet

    n = D.shape[0]
    model = ElasticNet(alpha=(lam1 + lam2) / n, l1_ratio=lam1 / (lam1 + lam2), positive=True, fit_intercept=False,
                       precompute=True, tol=tol, max_iter=SKLEARN_MAX_ITER, selection="cyclic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkWarn)
        model.fit(D, X.T)  # one multi-target fit: the targets are the B signals
    return np.atleast_2d(model.coef_)


def run_cvxpy(X, D, lam1, lam2, tol):
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


def loosest(run, X, D, lam1, lam2, tols):
    """The first (loosest) tolerance whose codes certify ≤ GAP on every one of the first 8 samples, untimed
    (a few samples: at ρ 0.99 one scikit-learn fit at the wrong tolerance takes minutes per sample)."""
    X = X[:8]
    for tol in tols:
        if worst_rel_gap(X, D, run(X, D, lam1, lam2, tol), lam1, lam2) <= GAP:
            return tol
    return tols[-1]


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, the repeats run round-robin."""
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench(kind, n, m, k, B, lam1, lam2, repeats, cvx_rows, seed=0):
    rng = np.random.default_rng(seed)
    D = dictionary(rng, kind, n, m)
    X = planted(rng, D, k, B)
    Xc = X[:cvx_rows]
    run_ours(X[:8], D, lam1, lam2)  # warm up BLAS threads
    sk_tol = loosest(run_sklearn, X, D, lam1, lam2, (1e-8, 1e-10, 1e-12, 1e-14))
    cvx_tol = loosest(run_cvxpy, Xc, D, lam1, lam2, (1e-8, 1e-10, 1e-12)) if cvx_rows else None
    codes = {}

    def keep(name, fn):
        def go():
            codes[name] = fn()
        return go

    fns = {"ours": keep("ours", lambda: run_ours(X, D, lam1, lam2, "working_set")),
           "fista": keep("fista", lambda: run_ours(X, D, lam1, lam2, "fista")),
           "sklearn": keep("sklearn", lambda: run_sklearn(X, D, lam1, lam2, sk_tol))}
    if cvx_rows:
        fns["ours_sub"] = keep("ours_sub", lambda: run_ours(Xc, D, lam1, lam2, "fista"))
        fns["cvxpy"] = keep("cvxpy", lambda: run_cvxpy(Xc, D, lam1, lam2, cvx_tol))
    t = interleaved(fns, repeats)
    per = {"ours": t["ours"] / B, "fista": t["fista"] / B, "sklearn": t["sklearn"] / B}
    gaps = {name: worst_rel_gap(X, D, codes[name], lam1, lam2) for name in ("ours", "fista", "sklearn")}
    support = (codes["ours"] > 0).sum(1).mean()
    print(f"\n## {kind}: n={n} m={m} k={k} B={B} lam1={lam1} lam2={lam2}  (mean support {support:.1f}; "
          f"median of {repeats} interleaved repeats; torch threads {torch.get_num_threads()})")
    print(f"{'method':54s} {'ms/sample':>10s} {'worst rel gap':>14s}")
    print(f"{'geomsae solve (working sets + active-set Newton)':54s} {1e3 * per['ours']:10.3f} {gaps['ours']:14.2e}")
    print(f"{'geomsae solve, algorithm=fista (FISTA + Cholesky polish)':54s} {1e3 * per['fista']:10.3f} {gaps['fista']:14.2e}")
    print(f"{f'scikit-learn ElasticNet (tol={sk_tol:g})':54s} {1e3 * per['sklearn']:10.3f} {gaps['sklearn']:14.2e}")
    line = (f"ratio working_set/scikit-learn: {per['sklearn'] / per['ours']:.1f}x   fista/scikit-learn: "
            f"{per['sklearn'] / per['fista']:.1f}x   working_set/fista: {per['fista'] / per['ours']:.1f}x")
    if cvx_rows:
        pc, po = t["cvxpy"] / cvx_rows, t["ours_sub"] / cvx_rows
        gc = worst_rel_gap(Xc, D, codes["cvxpy"], lam1, lam2)
        print(f"{f'cvxpy Clarabel (tol={cvx_tol:g}; {cvx_rows} samples)':54s} {1e3 * pc:10.3f} {gc:14.2e}")
        line += f"   fista/cvxpy (same {cvx_rows} samples): {pc / po:.0f}x"
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=512)
    ap.add_argument("--ill-B", type=int, default=32,
                    help="signals for the ill-conditioned geometries (spiked ρ 0.99, near-duplicates): each costs "
                    "scikit-learn up to seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cvxpy-rows", type=int, default=20, help="samples cvxpy solves at n 64")
    ap.add_argument("--cvxpy-large", action="store_true", help="also run cvxpy (3 samples) at n 512 (~20 s each)")
    ap.add_argument("--quick", action="store_true", help="B=64, one repeat, n 64 only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--sizes", default="64,512", help="which of the two problem sizes (n) to run")
    ap.add_argument("--kinds", nargs="+", default=["random", "spiked0.99", "neardup"],
                    choices=["random", "spiked0.99", "neardup"], help="which dictionary geometries to run")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {int(v) for v in args.sizes.split(",")}
    B, reps = (64, 1) if args.quick else (args.B, args.repeats)
    ill_B = min(B, args.ill_B)
    for kind in args.kinds:
        if 64 in sizes:
            bench(kind, 64, 512, 8, B if kind == "random" else ill_B, 0.1, 0.05, reps,
                  args.cvxpy_rows if kind == "random" else 0)
    if not args.quick and 512 in sizes:
        for kind in args.kinds:
            bench(kind, 512, 4096, 32, B if kind == "random" else ill_B, 0.1, 0.05, reps,
                  3 if args.cvxpy_large and kind == "random" else 0)


if __name__ == "__main__":
    main()

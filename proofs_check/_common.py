"""Shared pieces of the property checks: the :class:`Check` record, verdict words computed
from numbers, the exact solver wrapper with certified error bars, and data helpers.

Certified error bars. For any code z with certified duality gap g (from
:func:`geomsae.solvers.solve`), write Δ = z − z*. Since P = f(Dz) + h(z) with f(u) = ½‖y − u‖²
1-strongly convex in u and h λ2-strongly convex in z, and 0 ∈ ∂P(z*),

    ½‖DΔ‖² + (λ2/2)‖Δ‖² ≤ P(z) − P(z*) ≤ g,

so the fit is within √(2g) of the exact fit and (λ2 > 0) the code within √(2g/λ2) of z*.
Every bound check subtracts these error bars from the measured value before comparing, so
a check can fail only by more than the solver's certified inexactness.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from geomsae.solvers import ConvergenceWarning, duality_gap, objective, solve

# Verdict threshold: a bound is "tight" when the worst measured value reaches this share of it.
TIGHT = 0.9
# Relative slack on every bound comparison (float64 rounding of the bound itself).
RTOL = 1e-9
# Default certified relative duality gap of exact solves, and the first solve's looser one.
TOL = 1e-12
COARSE = 1e-6
COARSE_ITER = 500


class Check(NamedTuple):
    """One measured quantity against the bound a statement gives for it."""

    name: str
    """What is measured, in words (the statement and the case)."""
    measured: float
    """The measured value (the worst case over everything tried, unless the name says otherwise)."""
    bound: float | None
    """The statement's bound, tolerance or lower bound; None for a measurement without a claim."""
    holds: bool | None
    """Whether the claim holds after the certified error bars; None when no claim is made."""
    details: dict[str, Any]
    """Supporting numbers (error bars, sizes, counts, the case's parameters)."""
    kind: str = "bound"
    """'bound' (measured ≤ a theorem's constant; tightness reported), 'tolerance' (an identity
    or agreement: measured ≤ a numerical tolerance), 'lower' (measured ≥ bound, e.g. a
    non-uniqueness witness), or 'info' (no claim)."""


def upper(name: str, measured: float, bound: float, err: float = 0.0, kind: str = "bound", **details: Any) -> Check:
    """Check measured ≤ bound, allowing the certified error bar ``err`` and relative slack RTOL."""
    holds = bool(measured - err <= bound * (1 + RTOL) + 1e-300) if math.isfinite(bound) else True
    return Check(name, float(measured), float(bound), holds, dict(details, err=float(err)), kind)


def lower(name: str, measured: float, bound: float, ok: bool = True, **details: Any) -> Check:
    """Check measured > bound (and the extra condition ``ok``)."""
    return Check(name, float(measured), float(bound), bool(ok and measured > bound), dict(details), "lower")


def info(name: str, measured: float, **details: Any) -> Check:
    """A measurement reported without a claim."""
    return Check(name, float(measured), None, None, dict(details), "info")


def verdict(c: Check) -> str:
    """Words for a check, computed from its numbers (never typed by hand)."""
    if c.kind == "info" or c.holds is None:
        return "measured (no bound claimed)"
    if not c.holds:
        return "FAILED"
    if c.kind == "tolerance":
        return "holds (within tolerance)"
    if c.kind == "lower":
        return "holds (witness found)"
    if c.bound is None or not math.isfinite(c.bound) or c.bound <= 0:
        return "holds"
    r = c.measured / c.bound
    return f"tight ({r:.3f} of the bound)" if r >= TIGHT else f"loose ({r:.3g} of the bound)"


class Solved(NamedTuple):
    """Exact codes with their certificates, float64 numpy."""

    Z: np.ndarray
    """(B, m) codes."""
    gap: np.ndarray
    """(B,) certified absolute duality gap g ≥ P(z) − P(z*)."""
    rel_gap: np.ndarray
    """(B,) certified relative gap g / P(z)."""
    objective: np.ndarray
    """(B,) primal objective P(z)."""


def exact(X: np.ndarray, D: np.ndarray, *, lam1: float, lam2: float, weights: Any = None, nonneg: bool = True,
          tol: float = TOL, max_iter: int = 200_000) -> Solved:
    """Solve F exactly (certified relative gap ≤ tol) for each row of X (B, n); D (n, m).

    :func:`geomsae.solvers.solve` runs to the looser gap ``COARSE`` (at most ``COARSE_ITER``
    iterations); :func:`refine` finishes each row by an exact active-set method started from
    the solver's support; rows whose certificate (recomputed by
    :func:`geomsae.solvers.duality_gap`) is still above ``tol`` are solved again by the
    solver to ``tol`` and refined. Raises RuntimeError if a row does not reach the
    certificate: no silent inexactness.
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    D = np.asarray(D, dtype=np.float64)
    W = None if weights is None else np.asarray(weights, dtype=np.float64)
    kw = dict(lam1=lam1, lam2=lam2, nonneg=nonneg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve(X, D, weights=W, tol=max(tol, COARSE), max_iter=min(COARSE_ITER, max_iter), **kw)
    Z = refine(X, D, np.asarray(res.codes, dtype=np.float64), weights=W, **kw)
    gap = np.asarray(duality_gap(X, D, Z, weights=W, **kw))
    obj = np.asarray(objective(X, D, Z, weights=W, **kw))
    bad = np.flatnonzero(gap > tol * obj)
    if bad.size:
        Wb = W if W is None or W.ndim == 1 else W[bad]
        r2 = solve(X[bad], D, weights=Wb, tol=tol, max_iter=max_iter, init=Z[bad], **kw)
        conv = np.asarray(r2.converged)
        if not conv.all():
            raise RuntimeError(f"{int((~conv).sum())} of {len(X)} rows did not reach relative gap {tol:g}")
        Z[bad] = refine(X[bad], D, np.asarray(r2.codes, dtype=np.float64), weights=Wb, **kw)
        gap[bad] = np.asarray(duality_gap(X[bad], D, Z[bad], weights=Wb, **kw))
        obj[bad] = np.asarray(objective(X[bad], D, Z[bad], weights=Wb, **kw))
    gap = np.maximum(gap, 0.0)
    return Solved(Z, gap, np.where(obj > 0, gap / np.maximum(obj, 1e-300), 0.0), obj)


def active_set_nonneg(A: np.ndarray, c: np.ndarray, P0: np.ndarray, max_iter: int = 500) -> np.ndarray | None:
    """Lawson–Hanson active-set solution of min_z ½zᵀAz − cᵀz subject to z ≥ 0 (A = G + λ2 I),
    started from the passive set P0. Exact up to rounding; None if a subproblem is singular
    or the iteration limit is reached."""
    m = len(c)
    z = np.zeros(m)
    P = np.zeros(m, dtype=bool)
    P[P0] = True
    scale = max(float(np.abs(c).max()), 1e-300)

    def sub(P: np.ndarray) -> np.ndarray | None:
        s = np.zeros(m)
        idx = np.flatnonzero(P)
        if idx.size:
            try:
                s[idx] = np.linalg.solve(A[np.ix_(idx, idx)], c[idx])
            except np.linalg.LinAlgError:
                return None
        return s

    first = True
    for _ in range(max_iter):
        if not first:
            g = c - A @ z  # minus the gradient; optimal when ≤ 0 off P
            g[P] = -np.inf
            j = int(np.argmax(g))
            if g[j] <= 1e-14 * scale:
                return z
            P[j] = True
        first = False
        while True:
            s = sub(P)
            if s is None:
                return None
            neg = P & (s <= 0)
            if not neg.any():
                z = s
                break
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = np.min(np.where(neg, z / (z - s), np.inf))
            z = z + alpha * (s - z)
            P &= z > 1e-15 * max(float(np.abs(z).max()), 1e-300)
            z[~P] = 0.0
    return None


def refine(X: np.ndarray, D: np.ndarray, Z: np.ndarray, *, lam1: float, lam2: float, weights: Any = None,
           nonneg: bool = True) -> np.ndarray:
    """Finish each row exactly where that lowers the certified gap.

    z ≥ 0: Lawson–Hanson (:func:`active_set_nonneg`) on ½zᵀ(G + λ2 I)z − (Dᵀx − λ1 w)ᵀz,
    started from the solver's support. Signed: the closed form on the solver's support and
    signs, z_S = (D_SᵀD_S + λ2 I)⁻¹ (D_Sᵀx − λ1 w_S s_S). (The solver's own polish is
    limited to supports of at most n atoms and needs the support to have settled; these
    finishes are not, and the certificate decides which code is kept.)
    """
    kw = dict(lam1=lam1, lam2=lam2, nonneg=nonneg)
    n, m = D.shape
    G = D.T @ D
    A = G + lam2 * np.eye(m)
    DtX = X @ D
    Zr = Z.copy()
    for i in range(len(X)):
        S = np.flatnonzero(Z[i])
        w = np.ones(m) if weights is None else (weights if np.ndim(weights) == 1 else weights[i])
        if nonneg:
            z = active_set_nonneg(A, DtX[i] - lam1 * w, S)
            if z is not None:
                Zr[i] = z
            continue
        if S.size == 0 or (lam2 == 0 and S.size > n):
            continue
        s = np.sign(Z[i, S])
        try:
            zS = np.linalg.solve(A[np.ix_(S, S)], DtX[i, S] - lam1 * w[S] * s)
        except np.linalg.LinAlgError:
            continue
        if np.all(zS * s > 0):
            Zr[i, S] = zS
    g0 = np.asarray(duality_gap(X, D, Z, weights=weights, **kw))
    g1 = np.asarray(duality_gap(X, D, Zr, weights=weights, **kw))
    # A gap at the rounding floor (~1e-16·P) certifies codes only to ~√(gap/λ2); the finished
    # codes solve the KKT system to rounding, so they win whenever their gap is at that floor.
    floor = 1e-13 * np.abs(np.asarray(objective(X, D, Zr, weights=weights, **kw)))
    return np.where(((g1 <= g0) | (g1 <= floor))[:, None], Zr, Z)


def code_err(gap: np.ndarray, lam2: float) -> np.ndarray:
    """Certified ‖z − z*‖ ≤ √(2g/λ2) (inf for λ2 = 0: the lasso code has no such bound)."""
    return np.sqrt(2 * gap / lam2) if lam2 > 0 else np.full_like(gap, np.inf)


def fit_err(gap: np.ndarray) -> np.ndarray:
    """Certified ‖D(z − z*)‖ ≤ √(2g)."""
    return np.sqrt(2 * gap)


def spectral_norm(D: np.ndarray) -> float:
    """‖D‖₂, the largest singular value."""
    return float(np.linalg.norm(D, 2))


def gain(sig: np.ndarray, lam2: float) -> np.ndarray:
    """σ/(σ² + λ2) elementwise: the gains of the restricted map (D_SᵀD_S + λ2 I)⁻¹ D_Sᵀ."""
    return sig / (sig * sig + lam2)


def planted_X(codes: Any, D: np.ndarray) -> np.ndarray:
    """(N, n) float64 x = D z from the generator's sparse codes (recomputed in float64)."""
    Z = codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes)
    return Z.astype(np.float64) @ D.T


def equicorrelated(n: int, k: int, c: float) -> np.ndarray:
    """(n, k) unit atoms with pairwise cosine exactly c (needs −1/(k−1) < c < 1, k ≤ n)."""
    G = (1 - c) * np.eye(k) + c * np.ones((k, k))
    L = np.linalg.cholesky(G)  # G = L Lᵀ, atoms = rows of L embedded in R^n
    out = np.zeros((n, k))
    out[:k] = L.T
    return out


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch and the BLAS under numpy with one thread each.

    The problems here are small (n ≤ 128): on the shared 2-core machine OpenBLAS's second
    thread makes a 120×120 ``np.linalg.solve`` ~40x slower, and torch's does the same to the
    solver's GEMMs.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(limits=1)
    try:
        with limiter:
            yield
    finally:
        torch.set_num_threads(old)


def fmt(v: float | None) -> str:
    """4 significant digits, 'inf', or '—'."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return f"{v:.4g}"


@dataclass
class Config:
    """Everything that determines a proofs_check run (saved beside the report as config.json)."""

    seed: int = 0
    """Seed of every generator and random direction (the run is deterministic given it)."""
    n: int = 64
    """d_in of the spiked dictionaries."""
    m: int = 256
    """d_sae of the spiked dictionaries."""
    k: int = 8
    """Active features per sample for the Lipschitz, Jacobian and lasso checks."""
    lam1: float = 0.1
    """λ1 in canonical units (F = ½‖x − Dz‖² + λ1 Σ w|z| + (λ2/2)‖z‖²)."""
    rhos: tuple[float, ...] = (0.0, 0.5, 0.9, 0.99)
    """Coherences ρ of the spiked dictionary for the Lipschitz and Jacobian sweeps."""
    lam2s: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    """λ2 grid for the elastic net."""
    aen_lam2s: tuple[float, ...] = (1e-3, 1e-1, 10.0)
    """λ2 grid for the adaptive elastic net with fixed weights."""
    n_base: int = 12
    """Base inputs per configuration (and as many random partners)."""
    rounds: int = 2
    """Adversarial hill-climbing rounds."""
    perturb: float = 1e-2
    """Relative size δ of the random small perturbations."""
    jac_samples: int = 8
    """Inputs per configuration for the finite-difference Jacobian."""
    lasso_rhos: tuple[float, ...] = (0.0, 0.5, 0.9, 0.99, 0.999)
    """Coherences for the lasso instability sweep (ρ → 1)."""
    lasso_samples: int = 16
    """Inputs per ρ in the lasso instability sweep."""
    deltas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    """Relative perturbation sizes δ for the support-flip rate."""
    en_lam2: float = 1e-2
    """λ2 of the elastic net / AEN compared with the lasso (instability, recovery)."""
    pdw_rhos: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    """Coherences of the support-recovery phase diagram."""
    pdw_ks: tuple[int, ...] = (2, 4, 8, 16)
    """Sparsities k of the support-recovery phase diagram."""
    pdw_samples: int = 24
    """Samples per (ρ, k) cell."""
    pdw_lam1: float = 0.2
    """λ1 of the support-recovery runs."""
    pdw_noise: tuple[float, ...] = (0.0, 0.02)
    """Noise levels σ (x = D z + σ ε, ε ~ N(0, I)) of the recovery sweep at k = pdw_k_sweep."""
    pdw_mag_lows: tuple[float, ...] = (1.0, 0.1)
    """Smallest true magnitudes (magnitudes U[mag_low, 3]) of the recovery sweep."""
    pdw_k_sweep: int = 8
    """k of the noise / magnitude sweeps."""
    amortised_train: int = 38_400
    """Training samples of each SAE of the amortised-encoder check (300 steps × 128 tokens)."""
    tol: float = TOL
    """Certified relative duality gap of every exact solve."""

    @classmethod
    def quick(cls, seed: int = 0) -> "Config":
        """A reduced grid (well under a minute on 2 cores)."""
        return cls(seed=seed, n=32, m=128, rhos=(0.0, 0.9), lam2s=(1e-3, 1e-1, 10.0), aen_lam2s=(1e-1,), n_base=6,
                   rounds=1, jac_samples=3, lasso_rhos=(0.0, 0.9, 0.99), lasso_samples=8, deltas=(1e-3, 1e-1),
                   pdw_rhos=(0.0, 0.5, 0.9), pdw_ks=(2, 8), pdw_samples=8, pdw_noise=(0.0, 0.02), pdw_mag_lows=(1.0,))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

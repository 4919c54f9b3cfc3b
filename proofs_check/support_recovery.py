r"""Statement (docs/method.md §1, support recovery by the primal–dual witness), noiseless x = D_S z_S + b,
G = DᵀD, S the true support with signs s:

    restricted solution   ẑ_S = z_S − (G_SS + λ2 I)⁻¹ (λ2 z_S + λ1 W_S s_S);
    recovery needs        sign(ẑ_S) = s_S                                   (beta-min)
    and, for j ∉ S,       |G_jS (G_SS + λ2 I)⁻¹ (W_S s_S + (λ2/λ1) z_S)| < w_j   (strict dual
                          feasibility; upper side only when z ≥ 0).

λ2 = 0, w ≡ 1 is the irrepresentable condition; small w_S and large w_{Sᶜ} make it easy to
meet. For a spiked dictionary the lasso score ≈ kρ/(1 + (k−1)ρ).

With noise (x = D_S z_S + e; derived here, exact for the realised e). The restricted
problem min over z supported on S with signs s has the solution
ẑ_S = (G_SS + λ2 I)⁻¹ (D_Sᵀy − λ1 W_S s_S) = z_S − (G_SS + λ2 I)⁻¹(λ2 z_S + λ1 W_S s_S − D_Sᵀe),
and the witness's residual r = y − D_S ẑ_S = (I − D_S(G_SS + λ2 I)⁻¹D_Sᵀ) e + D_S(G_SS + λ2 I)⁻¹
(λ2 z_S + λ1 W_S s_S), so dual feasibility reads |d_jᵀr| < λ1 w_j. With e = 0 this is the
formula above (:func:`pdw_noiseless`; a test checks they agree).

Why the prediction is exact (not only sufficient) when both conditions are strict or one
fails strictly, given uniqueness (λ2 > 0, or λ2 = 0 with D_S of full column rank):
- both hold: (ẑ_S, 0) satisfies the KKT conditions, so it is the (unique) solution, and its
  support and signs are (S, s);
- either fails: a solution with support S and signs s would solve the restricted problem,
  hence equal ẑ; but ẑ has a wrong sign or violates dual feasibility — so the exact solver
  cannot return support S with signs s.
Only cases within a margin τ of a boundary (numerical ties) are excluded from the claim
"predicted = observed"; the confusion table counts them separately.

Methods compared (z ≥ 0): lasso (λ2 = 0, w ≡ 1), EN (λ2 > 0, w ≡ 1), adaptive lasso
(λ2 = 0) and AEN (λ2 > 0), the last two with Zou–Zhang weights w = (|ẑ| + ε)^(−γ) from the
EN fit ẑ of the same input (the pilot of :func:`geomsae.solvers.aen_solve`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from geomsae.solvers import adaptive_weights
from proofs_check._common import Check, exact, upper
from synthetic import spiked

# Margin below which a case counts as a numerical tie (relative to max|z_S| for the sign
# condition and to w_j for dual feasibility).
TAU = 1e-6
METHODS = ("lasso", "EN", "adaptive lasso", "AEN")


class PDW(NamedTuple):
    """The primal–dual witness prediction for one input."""

    z_hat: np.ndarray
    """(k,) restricted solution on the true support."""
    sign_margin: float
    """min_i s_i ẑ_i / max|z_S| (> 0: the sign condition holds)."""
    dual_margin: float
    """min_{j∉S} (w_j − score_j)/w_j, score_j = d_jᵀr/λ1 (|·| when signed); > 0: strict dual feasibility."""
    max_score: float
    """max_{j∉S} score_j/w_j (the irrepresentable score for the lasso)."""
    predicted: bool
    """Both conditions hold: the exact solution has support S and signs s."""
    strict: bool
    """Both margins exceed TAU in absolute value (the prediction is claimed exact)."""


def pdw(D: np.ndarray, y: np.ndarray, S: np.ndarray, s: np.ndarray, z_S: np.ndarray, *, lam1: float, lam2: float,
        w: np.ndarray, nonneg: bool = True, tau: float = TAU) -> PDW:
    """General (noisy) witness at input y (n,) (bias removed), true support S, signs s, true
    codes z_S (only their scale is used, for the sign margin)."""
    DS = D[:, S]
    z_hat = np.linalg.solve(DS.T @ DS + lam2 * np.eye(S.size), DS.T @ y - lam1 * w[S] * s)
    r = y - DS @ z_hat
    out = np.setdiff1d(np.arange(D.shape[1]), S)
    score = D[:, out].T @ r / lam1
    score = score if nonneg else np.abs(score)
    ratio = score / w[out]
    sm = float(np.min(s * z_hat) / np.max(np.abs(z_S)))
    dm = float(np.min(1 - ratio)) if out.size else np.inf
    return PDW(z_hat, sm, dm, float(np.max(ratio)) if out.size else -np.inf, sm > 0 and dm > 0,
               abs(sm) > tau and abs(dm) > tau)


def pdw_noiseless(D: np.ndarray, S: np.ndarray, s: np.ndarray, z_S: np.ndarray, *, lam1: float, lam2: float,
                  w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The noiseless formulas of docs/method.md §1.2: (ẑ_S, scores G_jS (G_SS+λ2 I)⁻¹ (W_S s_S + (λ2/λ1) z_S) for j ∉ S)."""
    G = D.T @ D
    A = G[np.ix_(S, S)] + lam2 * np.eye(S.size)
    z_hat = z_S - np.linalg.solve(A, lam2 * z_S + lam1 * w[S] * s)
    out = np.setdiff1d(np.arange(D.shape[1]), S)
    return z_hat, G[np.ix_(out, S)] @ np.linalg.solve(A, w[S] * s + (lam2 / lam1) * z_S)


def method_weights(method: str, pilot: np.ndarray, gamma: float = 1.0, eps: float = 1e-6) -> np.ndarray | None:
    """w for a method: None (w ≡ 1) for lasso and EN, Zou–Zhang weights of the pilot otherwise."""
    return None if method in ("lasso", "EN") else adaptive_weights(pilot, gamma=gamma, eps=eps)


def recovery(D: np.ndarray, X: np.ndarray, Z_true: np.ndarray, *, lam1: float, lam2: float, weights: Any = None,
             nonneg: bool = True, claimed_lam2: float | None = None, claimed_weights: Any = "same") -> dict[str, Any]:
    """Observed (exact solver at λ2, w) against predicted (witness at ``claimed_lam2``,
    ``claimed_weights``; the same unless deliberately broken) for each row of X (B, n).

    Returns per-row arrays: observed, predicted, strict, sign_margin, dual_margin, max_score.
    """
    lc = lam2 if claimed_lam2 is None else claimed_lam2
    wc = weights if isinstance(claimed_weights, str) else claimed_weights
    m = D.shape[1]
    sol = exact(X, D, lam1=lam1, lam2=lam2, weights=weights, nonneg=nonneg)
    res: dict[str, list[Any]] = {k: [] for k in ("observed", "predicted", "strict", "sign_margin", "dual_margin", "max_score")}
    for i in range(len(X)):
        S = np.flatnonzero(Z_true[i])
        s = np.sign(Z_true[i, S])
        w = np.ones(m) if wc is None else (np.asarray(wc) if np.ndim(wc) == 1 else np.asarray(wc)[i])
        p = pdw(D, X[i], S, s, Z_true[i, S], lam1=lam1, lam2=lc, w=w, nonneg=nonneg)
        obs = bool(np.array_equal(np.flatnonzero(sol.Z[i]), S) and np.array_equal(np.sign(sol.Z[i, S]), s))
        for k, v in zip(res, (obs, p.predicted, p.strict, p.sign_margin, p.dual_margin, p.max_score)):
            res[k].append(v)
    return {k: np.asarray(v) for k, v in res.items()}


def confusion(r: dict[str, np.ndarray]) -> dict[str, int]:
    """Counts of predicted × observed (recover/fail), strict cases and strict mismatches."""
    p, o, st = r["predicted"], r["observed"], r["strict"]
    return dict(pred_rec_obs_rec=int((p & o).sum()), pred_rec_obs_fail=int((p & ~o).sum()),
                pred_fail_obs_rec=int((~p & o).sum()), pred_fail_obs_fail=int((~p & ~o).sum()),
                strict=int(st.sum()), strict_mismatch=int((st & (p != o)).sum()), ties=int((~st).sum()),
                tie_mismatch=int((~st & (p != o)).sum()))


def agreement_check(name: str, r: dict[str, np.ndarray]) -> Check:
    """Strict cases where prediction ≠ observation; must be 0."""
    c = confusion(r)
    return upper(f"PDW prediction = exact solver's support, strict cases (mismatches) [{name}]", c["strict_mismatch"], 0,
                 kind="tolerance", **c)


def run(cfg: Any, progress: bool = True) -> tuple[list[Check], dict[str, Any]]:
    """Phase diagram ρ × k (noiseless, magnitudes U[1, 3]) and noise / smallest-magnitude
    sweeps at k = cfg.pdw_k_sweep, for the four methods. Returns (checks, cells)."""
    from tqdm.auto import tqdm


    cells = [(rho, k, 0.0, 1.0) for rho in cfg.pdw_rhos for k in cfg.pdw_ks]
    cells += [(rho, cfg.pdw_k_sweep, nz, ml) for rho in cfg.pdw_rhos for nz in cfg.pdw_noise for ml in cfg.pdw_mag_lows
              if (rho, cfg.pdw_k_sweep, nz, ml) not in cells]
    lam1, l2 = cfg.pdw_lam1, cfg.en_lam2
    out_cells: list[dict[str, Any]] = []
    pooled: dict[str, list[dict[str, np.ndarray]]] = {mt: [] for mt in METHODS}
    for rho, k, noise, mag_low in tqdm(cells, desc="support recovery", disable=not progress):
        d = spiked(n=cfg.n, m=cfg.m, k=k, rho=rho, n_samples=cfg.pdw_samples, mag_low=mag_low, seed=cfg.seed)
        D = d.dictionary
        Zt = d.codes.toarray().astype(np.float64)
        rng = np.random.default_rng([cfg.seed, int(1e3 * rho), k, int(1e6 * noise), int(1e3 * mag_low)])
        X = Zt @ D.T + noise * rng.standard_normal((len(Zt), cfg.n))
        pilot = exact(X, D, lam1=lam1, lam2=l2).Z
        cell: dict[str, Any] = dict(rho=rho, k=k, noise=noise, mag_low=mag_low)
        for mt in METHODS:
            lam2 = 0.0 if mt in ("lasso", "adaptive lasso") else l2
            r = recovery(D, X, Zt, lam1=lam1, lam2=lam2, weights=method_weights(mt, pilot))
            pooled[mt].append(r)
            cell[mt] = dict(observed=float(r["observed"].mean()), predicted=float(r["predicted"].mean()),
                            max_score=float(np.median(r["max_score"])), **confusion(r))
        out_cells.append(cell)
    checks = []
    for mt in METHODS:
        r = {key: np.concatenate([p[key] for p in pooled[mt]]) for key in pooled[mt][0]}
        checks.append(agreement_check(f"{mt}, all cells", r))
    return checks, dict(cells=out_cells, lam1=lam1, lam2=l2, k_sweep=cfg.pdw_k_sweep)

r"""Statement (docs/method.md §1): for the lasso (λ2 = 0) the local map on an active set S is
z_S = (D_SᵀD_S)⁻¹(D_Sᵀy − λ1 W_S s_S), with Jacobian norm 1/σ_min(D_S) — unbounded as the
dictionary grows coherent (ρ → 1); for duplicated columns the lasso solution is not unique;
the elastic net (λ2 > 0) stays below 1/(2√λ2) and splits duplicates equally.

What is checked, and why it must hold:

1. Local ratio. Inside a piece (step below the validity radius r(y) of
   :mod:`proofs_check.jacobian`) along the σ_min singular direction of D_S,
   ‖Δz‖/‖Δx‖ = 1/σ_min(D_S) exactly (lasso), and = max_i σ_i/(σ_i²+λ2) ≤ 1/(2√λ2) (EN).
2. Support flips. The support and signs cannot change for ‖Δx‖ < r(y) and must change just
   beyond r(y) along the binding direction (the piece's KKT system fails there, and the
   solution is unique for λ2 > 0, or for the lasso with D_S of full column rank and strict
   dual feasibility). Checked at 0.9·r and 1.1·r; the flip rate under random perturbations
   of relative size δ is measured for lasso and EN (no bound: it depends on the data).
3. Duplicates d_b = d_a. Lasso: with t = z_a + z_b at an optimum, every split of t between
   a and b has the same fit and the same penalty λ1(z_a + z_b), so the codes with all of t
   on a or all on b are both optimal (certified gap ≈ 0) and lie √2·t apart. Elastic net:
   the ridge term ½λ2(z_a² + z_b²) is strictly smaller for the equal split, so z_a = z_b.
4. Grouping effect (w_a = w_b, λ2 > 0; derived from the KKT conditions of both atoms,
   active or not, signed or z ≥ 0): λ2|z_a − z_b| ≤ |(d_a − d_b)ᵀr| with r = y − Dz*, and
   ‖r‖ ≤ ‖y‖ (F(z*) ≤ F(0)), hence |z_a − z_b| ≤ ‖d_a − d_b‖·‖y‖/λ2 = √(2(1−cos))‖y‖/λ2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geomsae.solvers import duality_gap, objective
from proofs_check._common import Check, code_err, exact, info, lower, planted_X, upper
from proofs_check.jacobian import active_piece, weights_row
from proofs_check.lipschitz import pilot_weights
from synthetic import spiked

# Relative tolerance of "ratio = 1/σ_min" inside a piece.
LOCAL_TOL = 1e-6
# Certified relative gap below which a code counts as optimal in the non-uniqueness witness.
OPT_TOL = 1e-10


def supports_equal(Z1: np.ndarray, Z2: np.ndarray) -> np.ndarray:
    """(B,) whether each row has the same support and signs."""
    return (np.sign(Z1) == np.sign(Z2)).all(axis=1)


def local_ratio_checks(D: np.ndarray, X: np.ndarray, *, lam1: float, lam2: float, weights: Any = None,
                       nonneg: bool = True, claimed_lam2: float | None = None, step: float = 1e-3,
                       min_radius: float = 1e-6, label: str = "") -> tuple[list[Check], dict[str, np.ndarray]]:
    """The local gain ‖J‖₂ of every row's piece (closed form at ``claimed_lam2``: 1/σ_min(D_S)
    for 0), verified by one exact step along the top-gain direction inside the piece.

    Rows whose validity radius is below ``min_radius``·‖x‖ keep their closed-form gain but get
    no finite step (rounding of the codes would dominate so short a step).
    """
    lc = lam2 if claimed_lam2 is None else claimed_lam2
    m = D.shape[1]
    kw = dict(lam1=lam1, lam2=lam2, weights=weights, nonneg=nonneg)
    base = exact(X, D, **kw)
    rows, X2, pred, gain_all = [], [], [], []
    for i in range(len(X)):
        p = active_piece(D, X[i], base.Z[i], lam1=lam1, lam2=lam2, w=weights_row(weights, m, i), nonneg=nonneg)
        if p.S.size == 0:
            continue
        g = float(1 / p.sig[-1]) if lc == 0 else float(np.max(p.sig / (p.sig**2 + lc)))
        gain_all.append(g)
        nx = np.linalg.norm(X[i])
        if p.radius <= min_radius * nx:
            continue
        rows.append(i)
        X2.append(X[i] + min(step * nx, 0.5 * p.radius) * p.top_dir)
        pred.append(g)
    gains = np.asarray(gain_all)
    tag = f" [{label}]" if label else ""
    checks: list[Check] = []
    ratio, pred_a, err = np.zeros(0), np.asarray(pred), np.zeros(0)
    if rows:
        rows_a = np.asarray(rows, dtype=int)
        W2 = weights if weights is None or np.ndim(weights) == 1 else np.asarray(weights)[rows_a]
        s2 = exact(np.asarray(X2), D, **dict(kw, weights=W2))
        dz = np.linalg.norm(s2.Z - base.Z[rows_a], axis=1)
        dx = np.linalg.norm(np.asarray(X2) - X[rows_a], axis=1)
        ratio = dz / dx
        same = supports_equal(s2.Z, base.Z[rows_a])
        rel = np.abs(ratio / pred_a - 1)
        err = (code_err(s2.gap, lc) + code_err(base.gap[rows_a], lc)) / dx if lc > 0 else np.zeros_like(rel)
        i = int(np.argmax(rel))
        name = "lasso ‖Δz‖/‖Δx‖ = 1/σ_min(D_S) inside a piece" if lc == 0 else "EN ‖Δz‖/‖Δx‖ = max σ/(σ²+λ2) inside a piece"
        checks.append(upper(f"{name} (rel. error){tag}", rel[i], LOCAL_TOL, kind="tolerance", certified_err=float(err[i] / pred_a[i]),
                            rows=len(rows), skipped=len(gains) - len(rows), same_support=int(same.sum())))
    if lc > 0:
        worst, e = float(gains.max()), 0.0
        if ratio.size and ratio.max() >= worst:
            j = int(np.argmax(ratio))
            worst, e = float(ratio[j]), float(err[j])
        checks.append(upper(f"EN local gain ≤ 1/(2√λ2) (closed form, all inputs; finite step, verified ones){tag}", worst,
                            1 / (2 * math.sqrt(lc)), err=e, verified_rows=len(rows)))
    else:
        checks.append(info(f"lasso local gain 1/σ_min(D_S), worst over inputs{tag}", gains.max(), median=float(np.median(gains)),
                           verified_rows=len(rows)))
    return checks, dict(ratio=ratio, predicted=pred_a, gains=gains)


def flip_checks(D: np.ndarray, X: np.ndarray, *, lam1: float, lam2: float, weights: Any = None, nonneg: bool = True,
                deltas: tuple[float, ...] = (1e-3,), radius_scale: float = 1.0, rng: np.random.Generator | None = None,
                label: str = "") -> tuple[list[Check], dict[str, Any]]:
    """Support flips: none inside the certified radius, always just beyond it along the
    binding direction; flip rates under random perturbations of relative size δ.

    ``radius_scale`` multiplies the computed radius (1 except in the deliberately broken test).
    Weights None or (m,).
    """
    rng = rng or np.random.default_rng(0)
    m = D.shape[1]
    w = weights_row(weights, m)
    kw = dict(lam1=lam1, lam2=lam2, weights=weights, nonneg=nonneg)
    base = exact(X, D, **kw)
    pcs = [active_piece(D, X[i], base.Z[i], lam1=lam1, lam2=lam2, w=w, nonneg=nonneg) for i in range(len(X))]
    nx = np.linalg.norm(X, axis=1)
    r = np.array([p.radius for p in pcs]) * radius_scale
    ok = r > 1e-7 * nx  # farther from a piece edge than rounding can blur
    idx = np.flatnonzero(ok)
    bdir = np.array([pcs[i].bind_dir for i in idx])
    flips_in = stays_out = 0
    if idx.size:
        inside = exact(X[idx] + 0.9 * r[idx, None] * bdir, D, **kw)
        beyond = exact(X[idx] + 1.1 * r[idx, None] * bdir, D, **kw)
        flips_in = int((~supports_equal(inside.Z, base.Z[idx])).sum())
        stays_out = int(supports_equal(beyond.Z, base.Z[idx]).sum())
    U = rng.standard_normal((len(deltas), *X.shape))
    U /= np.linalg.norm(U, axis=2, keepdims=True)
    Xp = np.concatenate([X + dl * nx[:, None] * U[a] for a, dl in enumerate(deltas)])
    sp = exact(Xp, D, **kw)
    flipped = ~supports_equal(sp.Z, np.concatenate([base.Z] * len(deltas)))
    size = np.concatenate([dl * nx for dl in deltas])
    rates = flipped.reshape(len(deltas), -1).mean(axis=1)
    early = int((flipped & (size < np.concatenate([r] * len(deltas)))).sum())
    tag = f" [{label}]" if label else ""
    checks = [
        upper(f"no support flip at 0.9·r(x) along the binding direction (count){tag}", flips_in, 0, kind="tolerance", rows=len(idx)),
        upper(f"support flips at 1.1·r(x) along the binding direction (count of non-flips){tag}", stays_out, 0, kind="tolerance", rows=len(idx)),
        upper(f"no support flip from random perturbations smaller than r(x) (count){tag}", early, 0, kind="tolerance",
              rows=int(flipped.size)),
    ]
    return checks, dict(rates=rates.tolist(), radius_rel=(r / nx).tolist(), skipped=int((~ok).sum()))


def duplicate_checks(D: np.ndarray, x: np.ndarray, *, lam1: float, lam2: float, nonneg: bool = True,
                     lasso_lam2: float = 0.0, label: str = "") -> list[Check]:
    """Append a copy of the atom carrying x's largest lasso code; lasso non-uniqueness and the
    elastic net's equal split. ``lasso_lam2`` > 0 only in the deliberately broken test. (The atom is
    chosen from the lasso's own code: one chosen from a ridge-heavy EN code may carry no lasso mass,
    and then there is nothing to split.)"""
    j = int(np.argmax(np.abs(exact(x[None], D, lam1=lam1, lam2=lasso_lam2, nonneg=nonneg).Z[0])))
    D2 = np.concatenate([D, D[:, j : j + 1]], axis=1)
    b = D2.shape[1] - 1
    kl = dict(lam1=lam1, lam2=lasso_lam2, nonneg=nonneg)
    z = exact(x[None], D2, **kl).Z[0]
    t = z[j] + z[b]
    zA, zB = z.copy(), z.copy()
    zA[j], zA[b], zB[j], zB[b] = t, 0.0, 0.0, t
    Zs = np.stack([zA, zB])
    X2 = np.stack([x, x])
    rel = np.asarray(duality_gap(X2, D2, Zs, **kl)) / np.asarray(objective(X2, D2, Zs, **kl))
    dobj = float(np.ptp(np.asarray(objective(X2, D2, Zs, **kl))))
    tag = f" [{label}]" if label else ""
    out = [lower(f"lasso non-unique on duplicated atoms: ‖z_A − z_B‖ with both certified optimal{tag}",
                 float(np.linalg.norm(zA - zB)), 0.0, ok=bool(rel.max() <= OPT_TOL), rel_gaps=rel.tolist(),
                 objective_spread=dobj, mass=float(t))]
    se = exact(x[None], D2, lam1=lam1, lam2=lam2, nonneg=nonneg)
    diff = abs(se.Z[0, j] - se.Z[0, b])
    out.append(upper(f"EN equal split on duplicated atoms |z_a − z_b| = 0 (λ2={lam2:g}){tag}", diff, 0.0,
                     err=math.sqrt(2) * float(code_err(se.gap, lam2)[0]) + 1e-12 * (1 + abs(se.Z[0, j])), kind="tolerance", z_a=float(se.Z[0, j])))
    return out


def grouping_checks(D: np.ndarray, x: np.ndarray, *, lam1: float, lam2: float, eps: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4),
                    nonneg: bool = True, solve_lam2: float | None = None, seed: int = 0, label: str = "") -> list[Check]:
    """Near-duplicates d_b = normalise(d_a + ε g): |z_a − z_b| ≤ ‖d_a − d_b‖‖y‖/λ2.
    ``solve_lam2`` ≠ λ2 only in the deliberately broken test (e.g. lasso codes)."""
    s2 = lam2 if solve_lam2 is None else solve_lam2
    rng = np.random.default_rng(seed)
    j = int(np.argmax(np.abs(exact(x[None], D, lam1=lam1, lam2=max(lam2, 1e-3), nonneg=nonneg).Z[0])))
    worst, wb, werr = -1.0, 1.0, 0.0
    for e in eps:
        db = D[:, j] + e * rng.standard_normal(D.shape[0])
        db /= np.linalg.norm(db)
        D2 = np.concatenate([D, db[:, None]], axis=1)
        sol = exact(x[None], D2, lam1=lam1, lam2=s2, nonneg=nonneg)
        diff = abs(sol.Z[0, j] - sol.Z[0, -1])
        bound = np.linalg.norm(D[:, j] - db) * np.linalg.norm(x) / lam2
        if diff / bound > worst / wb:
            worst, wb, werr = diff, bound, math.sqrt(2) * float(code_err(sol.gap, lam2)[0])
    tag = f" [{label}]" if label else ""
    return [upper(f"grouping |z_a − z_b| ≤ ‖d_a − d_b‖‖y‖/λ2, worst over ε (λ2={lam2:g}){tag}", worst, wb, err=werr)]


def run(cfg: Any, progress: bool = True) -> tuple[list[Check], dict[str, Any]]:
    """ρ → 1 sweep of the local ratio and the flip rates (lasso, EN, AEN with fixed weights),
    then duplicates and grouping on one dictionary. Returns (checks, rows for report/figures)."""
    from tqdm.auto import tqdm



    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    l2 = cfg.en_lam2
    for rho in tqdm(cfg.lasso_rhos, desc="lasso instability", disable=not progress):
        d = spiked(n=cfg.n, m=cfg.m, k=cfg.k, rho=rho, n_samples=cfg.lasso_samples, seed=cfg.seed)
        D, X = d.dictionary, planted_X(d.codes, d.dictionary)
        row: dict[str, Any] = dict(rho=rho)
        for method, lam2, w in (("lasso", 0.0, None), ("EN", l2, None), ("AEN", l2, pilot_weights(D, X, lam1=cfg.lam1, lam2=l2))):
            label = f"{method} ρ={rho:g}" + (f" λ2={lam2:g}" if lam2 else "")
            cs, lr = local_ratio_checks(D, X, lam1=cfg.lam1, lam2=lam2, weights=w, label=label)
            rng = np.random.default_rng([cfg.seed, int(1e6 * rho)])
            fc, fl = flip_checks(D, X, lam1=cfg.lam1, lam2=lam2, weights=w, deltas=cfg.deltas, rng=rng, label=label)
            checks += cs + fc
            row[method] = dict(ratio_max=float(lr["gains"].max()), ratio_median=float(np.median(lr["gains"])),
                               verified=int(lr["ratio"].size),
                               flip_rates=fl["rates"], radius_median=float(np.median(fl["radius_rel"])))
        row["en_bound"] = 1 / (2 * math.sqrt(l2))
        rows.append(row)
    rho0 = 0.5 if 0.5 in cfg.lasso_rhos else cfg.lasso_rhos[0]
    d = spiked(n=cfg.n, m=cfg.m, k=cfg.k, rho=rho0, n_samples=1, seed=cfg.seed)
    D, x = d.dictionary, planted_X(d.codes, d.dictionary)[0]
    for lam2 in (l2, 1.0):
        checks += duplicate_checks(D, x, lam1=cfg.lam1, lam2=lam2, label=f"ρ={rho0:g}")
        checks += grouping_checks(D, x, lam1=cfg.lam1, lam2=lam2, seed=cfg.seed, label=f"ρ={rho0:g}")
    return checks, dict(rows=rows, deltas=list(cfg.deltas), en_lam2=l2)

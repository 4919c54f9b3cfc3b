r"""Statement (docs/method.md §1, global Lipschitz bound, fixed weights w): for λ2 > 0 and every D,

    ‖z*(x) − z*(x′)‖ ≤ min(‖D‖₂/λ2, 1/(2√λ2)) ‖x − x′‖,
    ‖D(z*(x) − z*(x′))‖ ≤ ‖x − x′‖                    (the fit; also for the lasso, λ2 = 0).

Derivation. Write y = x − b, Δy = y − y′, Δz = z*(y) − z*(y′), u = DΔz. The optimality
conditions Dᵀ(y − Dz) − λ2 z ∈ λ1 W ∂‖·‖₁(z) (+ the normal cone of z ≥ 0) and the
monotonicity of the subdifferential of the convex penalty give

    ⟨DᵀΔy − DᵀDΔz − λ2Δz, Δz⟩ ≥ 0,   i.e.   ⟨Δy, u⟩ ≥ ‖u‖² + λ2‖Δz‖².             (*)

(a) Fit: ‖u‖² ≤ ⟨Δy, u⟩ ≤ ‖Δy‖‖u‖, so ‖u‖ ≤ ‖Δy‖ — no λ2 needed; for the lasso u is
    unique even where z* is not, and (*) holds for any pair of minimisers.
(b) 1/(2√λ2): λ2‖Δz‖² ≤ ‖Δy‖‖u‖ − ‖u‖² ≤ max_t (‖Δy‖t − t²) = ‖Δy‖²/4.
(c) ‖D‖₂/λ2: λ2‖Δz‖² ≤ ⟨DᵀΔy, Δz⟩ ≤ ‖D‖₂‖Δy‖‖Δz‖. The same line read in c = Dᵀy says
    the map is 1/λ2-Lipschitz in Dᵀx: ‖Δz‖ ≤ ‖DᵀΔx‖/λ2 (checked too).
Which applies: both always; (c) is the smaller only when λ2 > 4‖D‖₂², i.e. for very
strong ridge terms. The sharp constant follows from the piecewise-affine structure
(:mod:`proofs_check.jacobian`): along any segment the map is affine on finitely many pieces
of gain max_i σ_i/(σ_i²+λ2), σ_i ≤ ‖D‖₂, so the Lipschitz constant is at most
φ(‖D‖₂) = 1/(2√λ2) if ‖D‖₂ ≥ √λ2, else ‖D‖₂/(‖D‖₂² + λ2) (≤ both terms of docs/method.md §1.2). With w
recomputed from each input (two-stage AEN), no such bound is claimed (measured, for info).

Tightness. The bound 1/(2√λ2) is attained: a dictionary whose active block has a singular
value σ = √λ2 (two unit atoms with cosine 1 − λ2; for λ2 > 1, k > λ2 equicorrelated atoms)
has a piece of gain exactly 1/(2√λ2) (:func:`attainment_witness`). On the spiked
dictionaries the worst ratio is searched over random pairs, small random perturbations, and
adversarial pairs (:func:`adversarial_pairs`: the local top-gain direction of the Jacobian,
steps of several sizes, hill-climbing to pieces of larger gain).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from geomsae.solvers import aen_solve
from proofs_check._common import (
    Check,
    Solved,
    code_err,
    equicorrelated,
    exact,
    fit_err,
    gain,
    info,
    planted_X,
    spectral_norm,
    upper,
)
from proofs_check.jacobian import active_piece, weights_row
from synthetic import spiked


def spec_bound(D: np.ndarray, lam2: float) -> float:
    """min(‖D‖₂/λ2, 1/(2√λ2)); inf for λ2 = 0 (the lasso has no uniform bound)."""
    if lam2 <= 0:
        return math.inf
    return min(spectral_norm(D) / lam2, 1 / (2 * math.sqrt(lam2)))


def sharp_bound(D: np.ndarray, lam2: float) -> float:
    """φ(‖D‖₂) = sup_{0<σ≤‖D‖₂} σ/(σ²+λ2): 1/(2√λ2) if ‖D‖₂ ≥ √λ2, else ‖D‖₂/(‖D‖₂²+λ2)."""
    if lam2 <= 0:
        return math.inf
    s = spectral_norm(D)
    return 1 / (2 * math.sqrt(lam2)) if s >= math.sqrt(lam2) else s / (s * s + lam2)


class Pairs(NamedTuple):
    """Input pairs with their exact codes."""

    X1: np.ndarray
    """(P, n) first inputs."""
    X2: np.ndarray
    """(P, n) second inputs."""
    A: Solved
    """Exact codes of X1."""
    B: Solved
    """Exact codes of X2."""


def _take(s: Solved, idx: np.ndarray) -> Solved:
    return Solved(*(a[idx] for a in s))


def concat(pairs: list[Pairs]) -> Pairs:
    """Stack several :class:`Pairs`."""
    cat = np.concatenate
    sol = lambda f: Solved(*(cat([getattr(f(p), k) for p in pairs]) for k in Solved._fields))  # noqa: E731
    return Pairs(cat([p.X1 for p in pairs]), cat([p.X2 for p in pairs]), sol(lambda p: p.A), sol(lambda p: p.B))


def ratios(D: np.ndarray, p: Pairs) -> dict[str, np.ndarray]:
    """Per pair: ‖Δz‖/‖Δx‖ ('code'), ‖Δz‖/‖DᵀΔx‖ ('dual'), ‖DΔz‖/‖Δx‖ ('fit'), and ‖Δx‖."""
    dx = p.X1 - p.X2
    dz = p.A.Z - p.B.Z
    nx = np.linalg.norm(dx, axis=1)
    return dict(code=np.linalg.norm(dz, axis=1) / nx, dual=np.linalg.norm(dz, axis=1) / np.linalg.norm(dx @ D, axis=1),
                fit=np.linalg.norm(dz @ D.T, axis=1) / nx, dx=nx)


def pair_checks(D: np.ndarray, p: Pairs, *, lam2: float, label: str = "") -> tuple[list[Check], dict[str, np.ndarray]]:
    """The three Lipschitz statements on the pairs ``p``, for the λ2 the bound is claimed at.

    Error bars: √(2g/λ2) per code and √(2g) per fit (module :mod:`proofs_check._common`),
    divided by ‖Δx‖ (resp. ‖DᵀΔx‖), taken at the worst pair.
    """
    r = ratios(D, p)
    tag = f" [{label}]" if label else ""
    ce = (code_err(p.A.gap, lam2) + code_err(p.B.gap, lam2)) if lam2 > 0 else np.zeros(len(r["dx"]))
    fe = fit_err(p.A.gap) + fit_err(p.B.gap)
    i, j, k = int(np.argmax(r["code"])), int(np.argmax(r["dual"])), int(np.argmax(r["fit"]))
    ndual = np.linalg.norm((p.X1 - p.X2) @ D, axis=1)
    out = [upper(f"fit ‖DΔz‖/‖Δx‖ ≤ 1{tag}", r["fit"][k], 1.0, err=fe[k] / r["dx"][k], pairs=len(r["dx"]),
                 median=float(np.median(r["fit"])))]
    if lam2 > 0:
        out += [
            upper(f"code ‖Δz‖/‖Δx‖ ≤ min(‖D‖₂/λ2, 1/(2√λ2)){tag}", r["code"][i], spec_bound(D, lam2), err=ce[i] / r["dx"][i],
                  pairs=len(r["dx"]), median=float(np.median(r["code"])), sharp=sharp_bound(D, lam2),
                  norm_D=spectral_norm(D), lam2=lam2),
            upper(f"code ‖Δz‖/‖DᵀΔx‖ ≤ 1/λ2{tag}", r["dual"][j], 1 / lam2, err=ce[j] / ndual[j], pairs=len(r["dx"])),
        ]
    else:
        out.append(info(f"lasso code ‖Δz‖/‖Δx‖ (no uniform bound){tag}", r["code"][i], median=float(np.median(r["code"]))))
    return out, r


def random_pairs(D: np.ndarray, X1: np.ndarray, X2: np.ndarray, **kw: Any) -> Pairs:
    """Independent inputs paired row by row."""
    return Pairs(X1, X2, exact(X1, D, **kw), exact(X2, D, **kw))


def perturbation_pairs(D: np.ndarray, X: np.ndarray, rel: float, rng: np.random.Generator, base: Solved | None = None,
                       **kw: Any) -> Pairs:
    """x and x + δ·‖x‖·u, u a uniformly random unit direction, δ = ``rel``."""
    U = rng.standard_normal(X.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    X2 = X + rel * np.linalg.norm(X, axis=1, keepdims=True) * U
    return Pairs(X, X2, exact(X, D, **kw) if base is None else base, exact(X2, D, **kw))


def adversarial_pairs(D: np.ndarray, X: np.ndarray, *, lam1: float, lam2: float, weights: Any = None,
                      nonneg: bool = True, rounds: int = 3, steps: tuple[float, ...] = (1e-4, 1e-2, 1e-1, 0.5),
                      rng: np.random.Generator | None = None, base: Solved | None = None) -> tuple[Pairs, np.ndarray]:
    """Search for pairs of large ‖Δz‖/‖Δx‖ with fixed weights (None or (m,)).

    Each round, at every base point x: the piece's top-gain input direction u (the top
    singular direction of the local Jacobian, i.e. the gradient-ascent direction of the
    ratio) and one random direction; proposals x ± t‖x‖u for t in ``steps`` and
    x + 0.1‖x‖·random are solved exactly and every (x, proposal) pair is kept. The base then
    moves to the proposal whose own piece has the largest gain, if larger (hill-climbing
    over pieces: within a piece the ratio is constant, so the ascent is between pieces).
    Returns (all pairs evaluated, the largest local gain ‖J‖₂ visited per base row).
    """
    rng = rng or np.random.default_rng(0)
    kw = dict(lam1=lam1, lam2=lam2, weights=weights, nonneg=nonneg)
    m = D.shape[1]
    w = weights_row(weights, m)
    Xb = np.array(X, dtype=np.float64)
    sb = exact(Xb, D, **kw) if base is None else base
    B = len(Xb)

    def gains_dirs(Z: np.ndarray, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, U = np.zeros(len(Z)), np.zeros_like(Xs)
        for i in range(len(Z)):
            pc = active_piece(D, Xs[i], Z[i], lam1=lam1, lam2=lam2, w=w, nonneg=nonneg)
            g[i], U[i] = pc.top_gain, pc.top_dir
        return g, U

    g_base, U = gains_dirs(sb.Z, Xb)
    best = g_base.copy()
    out: list[Pairs] = []
    for _ in range(rounds):
        R = rng.standard_normal(Xb.shape)
        R /= np.linalg.norm(R, axis=1, keepdims=True)
        nx = np.linalg.norm(Xb, axis=1, keepdims=True)
        props = [Xb + sgn * t * nx * U for t in steps for sgn in (1.0, -1.0)] + [Xb + 0.1 * nx * R]
        P = np.concatenate(props)  # (len(props)·B, n), proposal-major
        sp = exact(P, D, **kw)
        reps = len(props)
        out.append(Pairs(np.concatenate([Xb] * reps), P, Solved(*(np.concatenate([a] * reps) for a in sb)), sp))
        g_p, U_p = gains_dirs(sp.Z, P)
        g_p = g_p.reshape(reps, B)
        j = np.argmax(g_p, axis=0)
        move = g_p[j, np.arange(B)] > g_base
        idx = j * B + np.arange(B)
        Xb = np.where(move[:, None], P[idx], Xb)
        sb = Solved(*(np.where(move[:, None] if a.ndim == 2 else move, a_p[idx], a) for a, a_p in zip(sb, sp)))
        U = np.where(move[:, None], U_p[idx], U)
        g_base = np.where(move, g_p[j, np.arange(B)], g_base)
        best = np.maximum(best, g_base)
    return concat(out), best


def attainment_witness(lam2: float, *, n: int = 16, lam1: float = 0.1, nonneg: bool = True,
                       step: float = 1e-3, claimed_lam2: float | None = None) -> Check:
    """A dictionary and a pair of inputs at which ‖Δz‖/‖Δx‖ = 1/(2√λ2) exactly.

    Active block: k unit atoms with pairwise cosine c, singular values √(1 + (k−1)c) (once)
    and √(1 − c); c chosen so that one of them is √λ2 (k = 2, c = 1 − λ2 for λ2 < 1;
    k = ⌊λ2⌋ + 1, c = (λ2 − 1)/(k − 1) otherwise; needs k ≤ n). x = 3·Σ d_i is coded on all k
    atoms; x′ = x + step·‖x‖·u with u the singular direction of σ = √λ2. The bound is
    computed at ``claimed_lam2`` (= λ2 except in the deliberately broken test).
    """
    lc = lam2 if claimed_lam2 is None else claimed_lam2
    if lam2 < 1:
        k, c = 2, 1 - lam2
    else:
        k = int(math.floor(lam2)) + 1
        c = (lam2 - 1) / (k - 1)
    if k > n:
        raise ValueError(f"lam2 == {lam2}: the witness needs {k} atoms, more than n={n}")
    D = equicorrelated(n, k, c)
    x = D @ np.full(k, 3.0)
    Us, sig, _ = np.linalg.svd(D, full_matrices=False)
    u = Us[:, int(np.argmin(np.abs(sig - math.sqrt(lam2))))]
    x2 = x + step * np.linalg.norm(x) * u
    p = Pairs(x[None], x2[None], exact(x[None], D, lam1=lam1, lam2=lam2, nonneg=nonneg),
              exact(x2[None], D, lam1=lam1, lam2=lam2, nonneg=nonneg))
    r = ratios(D, p)
    ce = (code_err(p.A.gap, lc) + code_err(p.B.gap, lc))[0] / r["dx"][0]
    full = bool((p.A.Z != 0).all() and (p.B.Z != 0).all())
    return upper(f"attainment: witness pair reaches 1/(2√λ2) [λ2={lam2:g}]", r["code"][0], 1 / (2 * math.sqrt(lc)),
                 err=ce, k=k, cosine=c, sigma=float(sig[np.argmin(np.abs(sig - math.sqrt(lam2)))]),
                 gain=float(gain(np.array([math.sqrt(lam2)]), lam2)[0]), full_support=full)


def pilot_weights(D: np.ndarray, X: np.ndarray, *, lam1: float, lam2: float, gamma: float = 1.0) -> np.ndarray:
    """Fixed per-latent AEN weights (m,) in the AEN-SAE manner (docs/method.md §2): mean EN activity
    a_j over X, ref = mean of the top 1 % of a, w_j = clamp((ref/a_j)^γ, 0.01, 10)."""
    a = np.abs(exact(X, D, lam1=lam1, lam2=lam2).Z).mean(axis=0)
    ref = np.sort(a)[-max(1, len(a) // 100):].mean()
    return np.clip((ref / np.maximum(a, 1e-12)) ** gamma, 0.01, 10.0)


def two_stage_ratio(D: np.ndarray, X: np.ndarray, *, lam1: float, lam2: float, rel: float,
                    rng: np.random.Generator) -> float:
    """Worst ‖Δz‖/‖Δx‖ of the two-stage AEN (weights recomputed from each input by an EN
    pilot, :func:`geomsae.solvers.aen_solve`) over random perturbations of relative size
    ``rel``. Not covered by the statement (w depends on x); reported for information."""
    U = rng.standard_normal(X.shape)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    X2 = X + rel * np.linalg.norm(X, axis=1, keepdims=True) * U
    Z = [np.asarray(aen_solve(A, D, lam1=lam1, lam2=lam2, tol=1e-10).codes) for A in (X, X2)]
    return float((np.linalg.norm(Z[0] - Z[1], axis=1) / np.linalg.norm(X - X2, axis=1)).max())


def run(cfg: Any, progress: bool = True) -> tuple[list[Check], dict[str, Any]]:
    """The Lipschitz sweep of the report: methods × ρ × λ2 on spiked dictionaries, plus the
    attainment witnesses. Returns (every check, table rows for the report and figures)."""
    from tqdm.auto import tqdm



    jobs = []
    for rho in cfg.rhos:
        jobs += [(rho, "lasso", 0.0)] + [(rho, "EN", l2) for l2 in cfg.lam2s] + [(rho, "AEN", l2) for l2 in cfg.aen_lam2s]
    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    data: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for rho, method, lam2 in tqdm(jobs, desc="lipschitz", disable=not progress):
        if rho not in data:
            d = spiked(n=cfg.n, m=cfg.m, k=cfg.k, rho=rho, n_samples=2 * cfg.n_base, seed=cfg.seed)
            data[rho] = (d.dictionary, planted_X(d.codes, d.dictionary))
        D, X = data[rho]
        X1, X2 = X[: cfg.n_base], X[cfg.n_base :]
        w = pilot_weights(D, X1, lam1=cfg.lam1, lam2=lam2) if method == "AEN" else None
        kw = dict(lam1=cfg.lam1, lam2=lam2, weights=w, tol=cfg.tol)
        rng = np.random.default_rng([cfg.seed, int(1e6 * rho), int(1e6 * lam2)])
        base = exact(X1, D, **kw)
        pr = random_pairs(D, X1, X2, **kw)
        pp = perturbation_pairs(D, X1, cfg.perturb, rng, base=base, **kw)
        pa, best = adversarial_pairs(D, X1, rounds=cfg.rounds, rng=rng, base=base, **{k: v for k, v in kw.items() if k != "tol"})
        label = f"{method} ρ={rho:g} λ2={lam2:g}"
        cs, r = pair_checks(D, concat([pr, pp, pa]), lam2=lam2, label=label)
        checks += cs
        rr, rp, ra = ratios(D, pr), ratios(D, pp), ratios(D, pa)
        rows.append(dict(method=method, rho=rho, lam2=lam2, worst=float(r["code"].max()), random_median=float(np.median(rr["code"])),
                         perturb_median=float(np.median(rp["code"])), adversarial=float(ra["code"].max()),
                         best_gain=float(best.max()), spec=spec_bound(D, lam2), sharp=sharp_bound(D, lam2),
                         fit_worst=float(r["fit"].max()), norm_D=spectral_norm(D),
                         holds=all(c.holds is not False for c in cs)))
    for lam2 in cfg.lam2s:
        checks.append(attainment_witness(lam2, n=max(16, int(lam2) + 2), lam1=cfg.lam1))
    D, X = data[cfg.rhos[-1]]
    rng = np.random.default_rng(cfg.seed)
    checks.append(info(f"two-stage AEN (w recomputed per input, not covered) worst ‖Δz‖/‖Δx‖, δ={cfg.perturb:g} "
                       f"[ρ={cfg.rhos[-1]:g} λ2={cfg.en_lam2:g}]",
                       two_stage_ratio(D, X[: cfg.n_base], lam1=cfg.lam1, lam2=cfg.en_lam2, rel=cfg.perturb, rng=rng),
                       en_bound=1 / (2 * math.sqrt(cfg.en_lam2))))
    return checks, dict(rows=rows)

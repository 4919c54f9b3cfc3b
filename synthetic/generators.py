"""Seeded synthetic generators with a planted dictionary (docs/method.md §4).

Every generator draws only from ``np.random.default_rng(seed)``, so the same arguments
give identical arrays, and returns a :class:`SyntheticData` (x = D z (+ noise), D with
unit-norm COLUMNS, z a float32 CSR array). Arguments are checked with ``ValueError``
naming the value and its range.

    spiked          coherent dictionary with one shared spike; exactly k active (docs/method.md §4)
    sharkey         frequency-decaying, correlated features (Sharkey et al. 2022 MMCS protocol)
    zipf_hierarchy  Zipf firing, parent/child hierarchy, correlated parents (SynthSAEBench-like)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from synthetic.data import (
    CHUNK,
    SyntheticData,
    assemble,
    check,
    copula_active,
    decode,
    load_synthetic,
    random_unit_columns,
    save_npy_pair,
    scale_to_budget,
)
from synthetic.diagnostics import SpikeDiagnostics, spike_diagnostics

__all__ = [
    "SyntheticData", "spiked", "spiked_dictionary", "sharkey", "zipf_hierarchy",
    "spike_diagnostics", "SpikeDiagnostics", "save_npy_pair", "load_synthetic",
]


def _check_common(n: int, m: int, n_samples: int, seed: int) -> None:
    check("n", n, 1, float("inf"))
    check("m", m, 1, float("inf"))
    check("n_samples", n_samples, 1, float("inf"))
    check("seed", seed, 0, float("inf"))


def spiked_dictionary(rng: np.random.Generator, n: int, m: int, rho: float,
                      orthogonal_u: bool = False) -> np.ndarray:
    """(n, m) spiked dictionary d_j = normalise(√(1−ρ) u_j + √ρ v).

    v is one random unit spike, u_j random unit vectors. With ``orthogonal_u`` each u_j is
    projected orthogonal to v first, so ‖√(1−ρ) u_j + √ρ v‖ = 1 exactly, every atom has
    cos(d_j, v) = √ρ, and cos(d_i, d_j) = ρ + (1−ρ)⟨u_i, u_j⟩: coherence ρ in expectation,
    fluctuations of order (1−ρ)/√n. Without it (the authors' construction, which
    reproduces docs/method.md §5's irrepresentable scores) cos(d_j, v) varies by about
    √(1−ρ)/√n from atom to atom, and the atoms most aligned with v push the lasso
    irrepresentable score above 1 for ρ ≥ 0.3 (see :func:`spike_diagnostics`).
    """
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    u = rng.standard_normal((n, m))
    if orthogonal_u:
        u -= np.outer(v, v @ u)
    u /= np.linalg.norm(u, axis=0, keepdims=True)
    d = np.sqrt(1.0 - rho) * u + np.sqrt(rho) * v[:, None]
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def _uniform_subsets(rng: np.random.Generator, b: int, m: int, k: int) -> np.ndarray:
    """(b, k) sorted rows, each a uniformly random k-subset of range(m)."""
    if k * k > m:  # duplicates likely: the k smallest of m i.i.d. uniform keys
        return np.sort(rng.random((b, m)).argpartition(k - 1, axis=1)[:, :k], axis=1)
    # rejection: k draws with replacement, redrawn while a row repeats an index
    # (P(repeat) ≈ k²/2m ≤ 1/2); an accepted row is uniform over k-subsets
    out = np.sort(rng.integers(0, m, (b, k)), axis=1)
    bad = np.flatnonzero((np.diff(out, axis=1) == 0).any(1))
    while bad.size:
        out[bad] = np.sort(rng.integers(0, m, (bad.size, k)), axis=1)
        bad = bad[(np.diff(out[bad], axis=1) == 0).any(1)]
    return out


def spiked(n: int = 256, m: int = 1024, k: int = 16, rho: float = 0.0, n_samples: int = 65_536,
           mag_low: float = 1.0, mag_high: float = 3.0, noise: float = 0.0, seed: int = 0,
           orthogonal_u: bool = False) -> SyntheticData:
    """Spiked synthetic model of docs/method.md §4.

    D = :func:`spiked_dictionary` (n, m, ρ, orthogonal_u). Each sample has exactly k active features, a
    uniformly random k-subset of the m, with i.i.d. magnitudes U[mag_low, mag_high] > 0
    (non-negative codes); x = D z + noise·ε, ε ~ N(0, I_n). the settings of docs/method.md §4: n 256, m 1024,
    k 16, U[1, 3], no noise, ρ ∈ {0, .3, .5, .7, .9}; high-dim n 1024, m 8192, k 32.

    Draw order: D, then supports, magnitudes, noise (so noise does not change D or z).
    """
    _check_common(n, m, n_samples, seed)
    check("k", k, 1, m)
    check("rho", rho, 0.0, 1.0, hi_open=True)
    check("mag_low", mag_low, 0.0, mag_high, lo_open=True)
    check("noise", noise, 0.0, float("inf"))
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, n, m, rho, orthogonal_u)
    x, codes = spiked_samples(rng, D, k, n_samples, mag_low, mag_high, noise)
    cfg = dict(generator="spiked", n=n, m=m, k=k, rho=rho, n_samples=n_samples,
               mag_low=mag_low, mag_high=mag_high, noise=noise, seed=seed, orthogonal_u=orthogonal_u)
    return SyntheticData(x, D, codes, cfg)


def spiked_samples(rng: np.random.Generator, D: np.ndarray, k: int, n_samples: int, mag_low: float = 1.0,
                   mag_high: float = 3.0, noise: float = 0.0) -> tuple[np.ndarray, sp.csr_array]:
    """(x (n_samples, n) float32, codes (n_samples, m) CSR) of the spiked model on a given dictionary D (n, m).

    Draws from ``rng`` in :func:`spiked`'s order after its dictionary: supports (in CHUNK rows), magnitudes,
    noise; so ``spiked(seed=s)`` equals this on ``default_rng(s)`` after :func:`spiked_dictionary`. Streams of
    fresh samples on a fixed D (``synthetic.stream``) call it once per chunk with their own generator."""
    m = D.shape[1]
    cols = np.empty((n_samples, k), dtype=np.int64)
    for start in range(0, n_samples, CHUNK):
        b = min(CHUNK, n_samples - start)
        cols[start : start + b] = _uniform_subsets(rng, b, m, k)
    rows = np.repeat(np.arange(n_samples), k)
    codes = assemble(rng, rows, cols.reshape(-1), n_samples, m, mag_low, mag_high)
    return decode(codes, D, noise, rng), codes


def sharkey(n: int = 256, m: int = 512, n_samples: int = 65_536, avg_active: float = 5.0,
            decay: float = 0.99, corr_rank: int = 16, corr_strength: float = 0.5,
            noise: float = 0.0, seed: int = 0) -> SyntheticData:
    """Correlated features with geometrically decaying firing rates (Sharkey et al. 2022).

    Generative process:
      1. D: m i.i.d. uniformly random unit atoms in R^n.
      2. Firing rates p_j = min(1, C·decay^j), j = 0..m−1, with C set so that
         Σ_j p_j = avg_active (the expected L0).
      3. Firing events through a rank-``corr_rank`` Gaussian copula
         (:func:`synthetic.data.copula_active`): a share ``corr_strength`` of each latent
         Gaussian's variance comes from ``corr_rank`` shared factors, and feature j fires iff
         its Gaussian exceeds Φ⁻¹(1 − p_j), so its marginal rate is exactly p_j while
         features co-fire (or avoid each other) according to their factor loadings.
      4. Magnitudes i.i.d. U(0, 1] on active features; x = D z + noise·ε.
    A sample may have no active feature. ``aux["firing_prob"]`` holds p (m,).
    """
    _check_common(n, m, n_samples, seed)
    check("avg_active", avg_active, 0.0, m, lo_open=True, hi_open=True)
    check("decay", decay, 0.0, 1.0, lo_open=True)
    check("corr_rank", corr_rank, 0, m)
    check("corr_strength", corr_strength, 0.0, 1.0, hi_open=True)
    check("noise", noise, 0.0, float("inf"))
    rng = np.random.default_rng(seed)
    D = random_unit_columns(rng, n, m)
    p = scale_to_budget(decay ** np.arange(m, dtype=np.float64), avg_active)
    rows, cols = copula_active(rng, p, n_samples, corr_rank, corr_strength)
    codes = assemble(rng, rows, cols, n_samples, m, 0.0, 1.0, open_low=True)
    x = decode(codes, D, noise, rng)
    cfg = dict(generator="sharkey", n=n, m=m, n_samples=n_samples, avg_active=avg_active, decay=decay,
               corr_rank=corr_rank, corr_strength=corr_strength, noise=noise, seed=seed)
    return SyntheticData(x, D, codes, cfg, {"firing_prob": p})


def zipf_hierarchy(n: int = 256, m: int = 1024, n_samples: int = 65_536, zipf_exponent: float = 1.0,
                   base_l0: float = 16.0, n_parents: int = 32, children_per_parent: int = 4,
                   child_fire_prob: float = 0.8, corr_rank: int = 8, corr_strength: float = 0.5,
                   mag_low: float = 0.5, mag_high: float = 1.5, noise: float = 0.0,
                   seed: int = 0) -> SyntheticData:
    """Zipf-distributed firing with a two-level hierarchy and correlated roots
    (SynthSAEBench-like).

    Layout of the m features: R = m − n_parents·children_per_parent *roots* at indices
    0..R−1, in decreasing order of firing rate; the first ``n_parents`` roots are the
    *parents* (the hierarchy sits on the most frequent features so that children fire
    often enough to be learnable); the children of parent q sit at indices
    R + q·c .. R + q·c + c − 1 (c = children_per_parent). ``aux["parent_of"]`` (m,) gives
    each child's parent and −1 for roots.

    Generative process:
      1. D: m i.i.d. uniformly random unit atoms in R^n (children are not aligned to
         parents).
      2. Root rates follow Zipf's law: p_r = min(1, C·(r + 1)^(−zipf_exponent)), r = 0..R−1.
      3. Roots fire through a rank-``corr_rank`` Gaussian copula (as in :func:`sharkey`):
         exact marginal rates p_r, low-rank correlation among parents and other roots.
      4. Each time parent q fires, with probability ``child_fire_prob`` exactly one of its
         children fires, child i chosen with probability ∝ (i + 1)^(−zipf_exponent). So a
         child fires only with its parent, and siblings are mutually exclusive.
      5. Magnitudes i.i.d. U[mag_low, mag_high] on every active feature; x = D z + noise·ε.
    C is set so that the expected L0, Σ_r p_r + child_fire_prob·Σ_q p_q, equals
    ``base_l0``. ``aux["firing_prob"]`` holds every feature's marginal rate (m,).
    """
    _check_common(n, m, n_samples, seed)
    c = children_per_parent
    check("children_per_parent", c, 0, float("inf"))
    check("n_parents", n_parents, 0, m // (c + 1) if c else m)
    R = m - n_parents * c
    check("zipf_exponent", zipf_exponent, 0.0, float("inf"))
    check("child_fire_prob", child_fire_prob, 0.0, 1.0)
    check("corr_rank", corr_rank, 0, R)
    check("corr_strength", corr_strength, 0.0, 1.0, hi_open=True)
    check("mag_low", mag_low, 0.0, mag_high, lo_open=True)
    check("noise", noise, 0.0, float("inf"))
    weight = np.ones(R)
    weight[:n_parents] += child_fire_prob if c else 0.0  # a firing parent brings a child along
    check("base_l0", base_l0, 0.0, float(weight.sum()), lo_open=True, hi_open=True)
    rng = np.random.default_rng(seed)
    D = random_unit_columns(rng, n, m)
    p_root = scale_to_budget((np.arange(R) + 1.0) ** (-zipf_exponent), base_l0, weight)
    rows, cols = copula_active(rng, p_root, n_samples, corr_rank, corr_strength)
    parent_of = np.full(m, -1, dtype=np.int64)
    p_all = np.concatenate([p_root, np.zeros(m - R)])
    if c and n_parents:
        w_child = (np.arange(c) + 1.0) ** (-zipf_exponent)
        w_child /= w_child.sum()
        parent_of[R:] = np.repeat(np.arange(n_parents), c)
        p_all[R:] = child_fire_prob * np.outer(p_root[:n_parents], w_child).reshape(-1)
        is_par = cols < n_parents
        pr, pc = rows[is_par], cols[is_par]
        fire = rng.random(pr.size) < child_fire_prob
        which = rng.choice(c, size=pr.size, p=w_child)
        rows = np.concatenate([rows, pr[fire]])
        cols = np.concatenate([cols, R + pc[fire] * c + which[fire]])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
    codes = assemble(rng, rows, cols, n_samples, m, mag_low, mag_high)
    x = decode(codes, D, noise, rng)
    cfg = dict(generator="zipf_hierarchy", n=n, m=m, n_samples=n_samples, zipf_exponent=zipf_exponent,
               base_l0=base_l0, n_parents=n_parents, children_per_parent=c, child_fire_prob=child_fire_prob,
               corr_rank=corr_rank, corr_strength=corr_strength, mag_low=mag_low, mag_high=mag_high,
               noise=noise, seed=seed)
    return SyntheticData(x, D, codes, cfg, {"firing_prob": p_all, "parent_of": parent_of})

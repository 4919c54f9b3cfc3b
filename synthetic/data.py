"""The container every generator returns, its on-disk form, and shared sampling helpers.

On disk (:func:`save_npy_pair`), a folder holds::

    activations.npy   (N, n) float32   -> ``geomsae train --data activations.npy``
    dictionary.npy    (n, m) float64   -> ``geomsae eval --true-dict dictionary.npy``
    codes.npz         (N, m) float32 scipy.sparse CSR (``scipy.sparse.load_npz``)
    config.json       the generator's name and arguments
    aux.npz           per-feature arrays (e.g. ``firing_prob``, ``parent_of``), if any
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtri

# Rows generated per chunk; part of the sampling order, so changing it changes the data.
CHUNK = 4096


@dataclass
class SyntheticData:
    """A synthetic dataset x = D z (+ noise) with its ground truth."""

    activations: np.ndarray
    """(N, n) float32 activations, row t = D @ codes[t] (+ Gaussian noise if asked)."""
    dictionary: np.ndarray
    """(n, m) float64 dictionary, unit-norm atoms as COLUMNS (the D of docs/method.md §1)."""
    codes: sp.csr_array
    """(N, m) float32 sparse codes as a scipy CSR array; ``codes.toarray()`` for dense.
    The support of a row is exactly its stored (nonzero) entries."""
    config: dict[str, Any]
    """JSON-serialisable generator name and arguments (what reproduces the data)."""
    aux: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-feature ground-truth arrays, e.g. ``firing_prob`` (m,), ``parent_of`` (m,)."""


def save_npy_pair(data: SyntheticData, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``data`` under ``out_dir`` (created if needed; files overwritten).

    :returns: (path of activations.npy, path of dictionary.npy).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acts_path, dict_path = out / "activations.npy", out / "dictionary.npy"
    np.save(acts_path, np.ascontiguousarray(data.activations, dtype=np.float32))
    np.save(dict_path, np.ascontiguousarray(data.dictionary, dtype=np.float64))
    sp.save_npz(out / "codes.npz", sp.csr_array(data.codes, dtype=np.float32))
    (out / "config.json").write_text(json.dumps(data.config, indent=2, sort_keys=True) + "\n")
    if data.aux:
        np.savez(out / "aux.npz", **data.aux)
    return acts_path, dict_path


def load_synthetic(out_dir: str | Path) -> SyntheticData:
    """Read back what :func:`save_npy_pair` wrote."""
    out = Path(out_dir)
    aux: dict[str, np.ndarray] = {}
    if (out / "aux.npz").exists():
        with np.load(out / "aux.npz") as f:
            aux = {k: f[k] for k in f.files}
    return SyntheticData(
        activations=np.load(out / "activations.npy"),
        dictionary=np.load(out / "dictionary.npy"),
        codes=sp.csr_array(sp.load_npz(out / "codes.npz")),
        config=json.loads((out / "config.json").read_text()),
        aux=aux,
    )


# --------------------------------------------------------------------------- helpers
def check(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ValueError("name == value, must be in [lo, hi]") unless lo ≤ value ≤ hi."""
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi):
        raise ValueError(f"{name} == {value}, must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def random_unit_columns(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """(n, m) float64 with i.i.d. uniformly random unit-norm columns."""
    d = rng.standard_normal((n, m))
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def assemble(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, n_samples: int, m: int,
             mag_low: float, mag_high: float, *, open_low: bool = False) -> sp.csr_array:
    """CSR codes from row-major sorted (rows, cols) supports with U[mag_low, mag_high]
    magnitudes (U(mag_low, mag_high] when ``open_low``, so a 0 lower bound stays nonzero)."""
    u = rng.random(rows.size)
    if open_low:
        u = 1.0 - u
    vals = (mag_low + (mag_high - mag_low) * u).astype(np.float32)
    indptr = np.zeros(n_samples + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_samples), out=indptr[1:])
    return sp.csr_array((vals, cols.astype(np.int64), indptr), shape=(n_samples, m))


def decode(codes: sp.csr_array, D: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(N, n) float32 activations D z (+ N(0, noise²) per coordinate)."""
    x = np.asarray(codes.astype(np.float64) @ D.T)
    if noise > 0:
        x += noise * rng.standard_normal(x.shape)
    return x.astype(np.float32)


def scale_to_budget(base: np.ndarray, budget: float, weight: np.ndarray | None = None) -> np.ndarray:
    """p = min(1, C·base) with C chosen (bisection) so that Σ weight·p == budget."""
    w = np.ones_like(base) if weight is None else weight
    if budget >= float((w * (base > 0)).sum()):
        raise ValueError(f"expected L0 == {budget}, must be < {float((w * (base > 0)).sum())} (every feature always on)")
    lo, hi = 0.0, 1.0
    while float((w * np.minimum(1.0, hi * base)).sum()) < budget:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float((w * np.minimum(1.0, mid * base)).sum()) < budget:
            lo = mid
        else:
            hi = mid
    return np.minimum(1.0, 0.5 * (lo + hi) * base)


def copula_active(rng: np.random.Generator, probs: np.ndarray, n_samples: int, corr_rank: int,
                  corr_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Bernoulli firing through a low-rank Gaussian copula.

    g = A f + √(1 − s) ε with f ~ N(0, I_r), ε ~ N(0, I), rows of A (R, r) random with
    ‖a_j‖² = s (= corr_strength), so each g_j ~ N(0, 1) and corr(g_i, g_j) = ⟨a_i, a_j⟩.
    Feature j fires iff g_j > Φ⁻¹(1 − p_j): marginal rate exactly p_j. r = 0 or s = 0
    gives independent features.

    :param probs: (R,) firing probabilities.
    :returns: (rows, cols) of the firing entries, row-major sorted.
    """
    R = probs.size
    thresh = ndtri(1.0 - probs)  # (R,) +inf where p = 0, -inf where p = 1
    A = rng.standard_normal((R, corr_rank)) if corr_rank > 0 else np.zeros((R, 0))
    if corr_rank > 0:
        A *= np.sqrt(corr_strength) / np.linalg.norm(A, axis=1, keepdims=True)
    idio = np.sqrt(1.0 - corr_strength) if corr_rank > 0 else 1.0
    rows, cols = [], []
    for start in range(0, n_samples, CHUNK):
        b = min(CHUNK, n_samples - start)
        g = idio * rng.standard_normal((b, R))
        if corr_rank > 0:
            g += rng.standard_normal((b, corr_rank)) @ A.T
        r, c = np.nonzero(g > thresh)
        rows.append(r + start)
        cols.append(c)
    return np.concatenate(rows), np.concatenate(cols)

"""Ground-truth metrics of docs/method.md §3 (synthetic data): atom matching (MMCS, recovery rate, the
one-to-one MMCS), the MCC of the identifiability literature on activations, the spike-only chance
dictionary, chance correction and support precision/recall. Re-exported by :mod:`geomsae.metrics`;
conventions as there (dictionaries hold atoms as COLUMNS, sums in float64, NaN/Inf rejected).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from geomsae.tensor_checks import checked_tensor, checked_tokens


def cosine_matrix(D_true: Any, D_learned: Any) -> Tensor:
    """Cosines between true and learned atoms.

    :param D_true: (d_in, n_true) atoms as columns.
    :param D_learned: (d_in, n_learned) atoms as columns.
    :returns: (n_true, n_learned) float64 tensor C[i, j] = cos(D_true[:, i], D_learned[:, j]).
    """
    a, b = checked_tensor(D_true, "D_true"), checked_tensor(D_learned, "D_learned")
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"D_true has shape {tuple(a.shape)} and D_learned has shape {tuple(b.shape)}; "
            "both must be (d_in, n_atoms) with the same d_in"
        )
    for name, m in (("D_true", a), ("D_learned", b)):
        if bool((m.norm(dim=0) == 0).any()):
            raise ValueError(f"{name} has zero-norm columns; cosines are undefined")
    b = b.to(a.device)
    return (a / a.norm(dim=0)).T @ (b / b.norm(dim=0))


def mmcs(D_true: Any, D_learned: Any, abs: bool = False) -> float:
    """Mean max cosine similarity: mean over true atoms of max_j cos(d_true_i, d_learned_j).

    Signed cosine by default (a sign-flipped atom does not count: SAE codes are
    non-negative); ``abs=True`` uses |cos|. Shapes as :func:`cosine_matrix`.
    """
    c = cosine_matrix(D_true, D_learned)
    return float((c.abs() if abs else c).max(dim=1).values.mean())


def recovery_rate(D_true: Any, D_learned: Any, threshold: float = 0.9, abs: bool = False) -> float:
    """Share of true atoms whose max cosine to a learned atom is > ``threshold``.
    Signed cosine unless ``abs``; shapes as :func:`cosine_matrix`."""
    c = cosine_matrix(D_true, D_learned)
    return float(((c.abs() if abs else c).max(dim=1).values > threshold).double().mean())


class Match(NamedTuple):
    """A one-to-one matching of true to learned atoms (from :func:`hungarian_match`)."""

    true_idx: Tensor
    """(P,) int64 indices into the true atoms, P = min(n_true, n_learned), ascending."""
    learned_idx: Tensor
    """(P,) int64 indices into the learned atoms, matched to ``true_idx`` elementwise."""
    cos: Tensor
    """(P,) float64 signed cosines of the matched pairs."""


def hungarian_match(D_true: Any, D_learned: Any) -> Match:
    """One-to-one matching maximising Σ |cos| (scipy ``linear_sum_assignment``).

    Shapes as :func:`cosine_matrix`; returns P = min(n_true, n_learned) pairs.
    """
    c = cosine_matrix(D_true, D_learned).cpu()
    rows, cols = linear_sum_assignment(c.abs().numpy(), maximize=True)
    ti, li = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    return Match(ti, li, c[ti, li])


def mmcs_1to1(D_true: Any, D_learned: Any) -> float:
    """One-to-one MMCS: mean |cos| over the Hungarian matching of decoder atoms
    (:func:`hungarian_match`), averaged over P = min(n_true, n_learned) pairs; sign-invariant.
    Shapes as :func:`cosine_matrix`. (Until issue 12 this was reported as "MCC"; the MCC of
    the identifiability literature is :func:`mcc`, on activations.)"""
    return float(hungarian_match(D_true, D_learned).cos.abs().mean())


class CorrelationAccumulator:
    """Streaming Pearson correlations between true codes (N, n_true) and learned codes (N, d_sae).

    Keeps in float64 N, Σa, Σb, Σa², Σb² and Σ aᵀb, so :meth:`value` equals
    :func:`correlation_matrix` on the concatenation of all batches (up to rounding).
    """

    def __init__(self) -> None:
        self.n = 0
        self._sa = self._sb = self._saa = self._sbb = self._sab = None  # type: Tensor | None

    def update(self, z_true: Any, z_learned: Any) -> None:
        """Add a batch: z_true (B, n_true), z_learned (B, d_sae)."""
        a, b = checked_tokens(z_true, "z_true"), checked_tokens(z_learned, "z_learned").to(torch.float64)
        b = b.to(a.device)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"z_true has {a.shape[0]} tokens but z_learned has {b.shape[0]}")
        if self._sa is not None and (self._sa.shape[0] != a.shape[1] or self._sb.shape[0] != b.shape[1]):
            raise ValueError(f"batch widths ({a.shape[1]}, {b.shape[1]}) differ from earlier batches "
                             f"({self._sa.shape[0]}, {self._sb.shape[0]})")
        parts = (a.sum(0), b.sum(0), a.pow(2).sum(0), b.pow(2).sum(0), a.T @ b)
        if self._sa is None:
            self._sa, self._sb, self._saa, self._sbb, self._sab = parts
        else:
            self._sa, self._sb, self._saa, self._sbb, self._sab = (
                u + v for u, v in zip((self._sa, self._sb, self._saa, self._sbb, self._sab), parts))
        self.n += a.shape[0]

    def value(self) -> Tensor:
        """(n_true, d_sae) float64 Pearson correlations; 0 where either side is constant."""
        if self.n < 2:
            raise ValueError(f"correlations need at least 2 tokens, got N == {self.n}")
        n = self.n
        cov = self._sab / n - torch.outer(self._sa / n, self._sb / n)
        va = (self._saa / n - (self._sa / n).pow(2)).clamp_min(0)
        vb = (self._sbb / n - (self._sb / n).pow(2)).clamp_min(0)
        den = torch.outer(va.sqrt(), vb.sqrt())
        # a constant column (never fires, or always the same value) has no correlation: 0
        tiny = 1e-12 * max(float(va.max()), float(vb.max()), 1e-300)
        ok = torch.outer(va > tiny, vb > tiny)
        return torch.where(ok, cov / den.clamp_min(1e-300), torch.zeros_like(cov)).clamp(-1.0, 1.0)


def correlation_matrix(z_true: Any, z_learned: Any) -> Tensor:
    """Pearson correlations over tokens: C[i, j] = corr_t(z_true[t, i], z_learned[t, j]).

    :param z_true: (N, n_true); :param z_learned: (N, d_sae); N ≥ 2.
    :returns: (n_true, d_sae) float64; 0 where a column is constant over the tokens.
    """
    acc = CorrelationAccumulator()
    acc.update(z_true, z_learned)
    return acc.value()


def mcc(corr: Any) -> float:
    """Mean correlation coefficient of the identifiability literature (Hyvärinen & Morioka 2016;
    Khemakhem et al. 2020): the true and learned latents are matched one-to-one by the Hungarian
    algorithm on |corr| (scipy ``linear_sum_assignment``, maximising Σ|corr|), and MCC is the
    mean |corr| of the P = min(n_true, d_sae) matched pairs.

    :param corr: (n_true, d_sae) Pearson correlations of true and learned *activations*
        (:func:`correlation_matrix`, or :meth:`CorrelationAccumulator.value`).
    """
    c = checked_tensor(corr, "corr").abs().cpu()
    if c.dim() != 2 or min(c.shape) == 0:
        raise ValueError(f"corr has shape {tuple(c.shape)}, must be (n_true, d_sae), both >= 1")
    rows, cols = linear_sum_assignment(c.numpy(), maximize=True)
    return float(c[torch.as_tensor(rows), torch.as_tensor(cols)].mean())


def spike_only_dictionary(D_true: Any, n_atoms: int, seed: int = 0) -> Tensor:
    """The chance dictionary: atoms that share only the true atoms' common (spike) direction.

    v = the normalised mean true atom, c = mean_i cos(d_i, v) (≈ √ρ for the spiked model).
    Atom 0 is v itself; atoms 1 … n_atoms−1 are normalise(c·v + √(1 − c²)·g_j) with g_j
    independent random unit vectors orthogonal to v (``seed``), so each has cosine c with v
    and no other relation to the true atoms. An SAE that learned only the spike scores the
    chance level (recovery rate, one-to-one MMCS, MCC) of this dictionary.

    :param D_true: (d_in, n_true) atoms as columns; their mean must be nonzero.
    :returns: (d_in, n_atoms) float64 unit columns.
    """
    D = checked_tensor(D_true, "D_true")
    if D.dim() != 2:
        raise ValueError(f"D_true has shape {tuple(D.shape)}, must be (d_in, n_true)")
    if not (isinstance(n_atoms, int) and n_atoms >= 1):
        raise ValueError(f"n_atoms == {n_atoms!r}, must be an integer >= 1")
    Dn = D / D.norm(dim=0).clamp_min(1e-300)
    mean = Dn.mean(1)
    if float(mean.norm()) == 0.0:
        raise ValueError("D_true's mean atom is zero: there is no shared direction")
    v = mean / mean.norm()
    c = float((Dn.T @ v).mean())
    g = torch.randn(D.shape[0], n_atoms - 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = g - torch.outer(v, v @ g)
    g = g / g.norm(dim=0).clamp_min(1e-300)
    atoms = c * v[:, None] + math.sqrt(max(0.0, 1.0 - c * c)) * g
    return torch.cat([v[:, None], atoms / atoms.norm(dim=0)], dim=1)


def chance_corrected(score: float, chance: float) -> float:
    """(score − chance) / (1 − chance): 0 at the chance level, 1 at a perfect score (NaN if chance ≥ 1)."""
    for name, v in (("score", score), ("chance", chance)):
        if not math.isfinite(v):
            raise ValueError(f"{name} == {v!r}, must be finite")
    return (score - chance) / (1.0 - chance) if chance < 1.0 else math.nan


def support_prf(z_true: Any, z_learned: Any, match: Any, tol: float = 0.0) -> dict[str, float]:
    """Support precision / recall / F1 of matched latent pairs, token by token.

    For each matched pair (i, j) let S_true = {t : |z_true[t, i]| > tol} and
    S_learned = {t : |z_learned[t, j]| > tol}. Then, summing over matched pairs only,

        precision = Σ |S_true ∩ S_learned| / Σ |S_learned|
        recall    = Σ |S_true ∩ S_learned| / Σ |S_true|
        f1        = 2 precision recall / (precision + recall)

    Unmatched latents are ignored. A ratio with a zero denominator is 0 (and then f1 = 0).

    :param z_true: (N, n_true) ground-truth codes (dense; ``scipy.sparse`` → ``.toarray()``).
    :param z_learned: (N, d_sae) learned codes.
    :param match: a :class:`Match` or any (true_idx, learned_idx, ...) sequence of (P,) indices.
    :param tol: magnitude threshold for membership of the support.
    """
    zt, zl = checked_tensor(z_true, "z_true"), checked_tensor(z_learned, "z_learned")
    if zt.dim() != 2 or zl.dim() != 2 or zt.shape[0] != zl.shape[0]:
        raise ValueError(
            f"z_true has shape {tuple(zt.shape)} and z_learned has shape {tuple(zl.shape)}; "
            "both must be (N, n_latents) with the same N"
        )
    ti = torch.as_tensor(match[0], dtype=torch.int64).reshape(-1).cpu()
    li = torch.as_tensor(match[1], dtype=torch.int64).reshape(-1).cpu()
    if ti.shape != li.shape:
        raise ValueError(f"match has {ti.numel()} true indices but {li.numel()} learned indices")
    for name, idx, size in (("true", ti, zt.shape[1]), ("learned", li, zl.shape[1])):
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
            raise ValueError(f"match {name} indices must lie in [0, {size})")
    st = zt[:, ti.to(zt.device)].abs() > tol  # (N, P)
    sl = zl[:, li.to(zl.device)].abs().to(st.device) > tol  # (N, P)
    inter = float((st & sl).sum())
    n_l, n_t = float(sl.sum()), float(st.sum())
    p = inter / n_l if n_l > 0 else 0.0
    r = inter / n_t if n_t > 0 else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f1": f1}

"""The metrics of docs/method.md §3, one definition each, as pure functions.

Inputs are torch tensors (numpy arrays are accepted and converted with
``torch.as_tensor``); scalar metrics return python floats, vector results return tensors.
Sums are taken in float64. Any NaN/Inf input raises ``ValueError`` naming the argument;
mismatched shapes raise ``ValueError`` naming both shapes.

Conventions shared by every function here:

- ``x``, ``x_hat``: (N, d_in) activations and reconstructions (leading dims beyond one
  are flattened into the token dim N).
- ``codes``: (N, d_sae). The functions here count a latent as firing where the array they
  are given is nonzero (``l0(codes) == firing_counts(codes).sum() / N`` is an identity). The
  evaluation (docs/method.md §3) gives them the *folded* firing mask of :func:`fires`:
  z_j‖d_j‖ > FIRE_REL · RMS(x), the same rule for every architecture; raw z_j > 0 is the
  second, "raw" column.
- Dictionaries ``D_true`` (d_in, n_true) and ``D_learned`` (d_in, n_learned) hold atoms
  as COLUMNS (the D of docs/method.md §1, an SAE's ``W_dec``); columns are normalised here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geomsae.tensor_checks import checked_tensor, checked_tokens

__all__ = [
    "fvu", "explained_variance", "fvu_per_token_mean", "FVUAccumulator",
    "l0", "firing_counts", "FiringTracker", "dead_fraction", "dense_fraction",
    "firing_histogram", "l2_ratio", "relative_reconstruction_bias",
    "cosine_matrix", "mmcs", "recovery_rate", "hungarian_match", "mmcs_1to1", "mcc", "support_prf",
    "Match", "FIRE_REL", "RARE_THRESHOLDS", "fires", "rms_norm", "rare_fraction", "is_collapsed",
    "COLLAPSE_FVU", "COLLAPSE_L0", "CorrelationAccumulator", "correlation_matrix", "spike_only_dictionary",
    "chance_corrected", "outlier_severity",
]

FIRE_REL = 1e-3
"""A latent fires on a token when its folded contribution z_j‖d_j‖ exceeds FIRE_REL · RMS(x)
(:func:`fires`; docs/method.md §3)."""
RARE_THRESHOLDS = (1e-4, 1e-5)
"""Firing frequencies below which a latent counts as near-starved (:func:`rare_fraction`)."""
COLLAPSE_FVU = 0.95
"""A run with held-out FVU ≥ this is collapsed (:func:`is_collapsed`)."""
COLLAPSE_L0 = 0.5
"""A run with held-out L0 < this is collapsed (:func:`is_collapsed`)."""


def _pair(x: Any, x_hat: Any) -> tuple[Tensor, Tensor]:
    xs, xh = checked_tensor(x, "x"), checked_tensor(x_hat, "x_hat")
    if xs.shape != xh.shape:
        raise ValueError(f"x has shape {tuple(xs.shape)} but x_hat has shape {tuple(xh.shape)}")
    return checked_tokens(xs, "x"), checked_tokens(xh, "x_hat")


# --------------------------------------------------------------------------- FVU
def fvu(x: Any, x_hat: Any) -> float:
    """Fraction of variance unexplained over the whole set (docs/method.md §3).

    FVU = Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖²,  x̄ = (1/N) Σ_i x_i  (mean over tokens).

    :param x: (N, d_in) activations.
    :param x_hat: (N, d_in) reconstructions.
    :returns: FVU as a float (0 is perfect; 1 is as good as predicting x̄).
    :raises ValueError: on NaN/Inf, shape mismatch, or zero total variance (FVU undefined).
    """
    acc = FVUAccumulator()
    acc.update(x, x_hat)
    return acc.value()


def explained_variance(x: Any, x_hat: Any) -> float:
    """1 − :func:`fvu`; shapes as there."""
    return 1.0 - fvu(x, x_hat)


def fvu_per_token_mean(x: Any, x_hat: Any) -> float:
    """WRONG definition, kept only so tests can exhibit the trap: do not report it.

    mean_i ‖x_i − x̂_i‖² / ‖x_i − x̄‖² — a mean of per-token ratios (x̄ the set mean).
    Tokens that lie near x̄ get huge weight, so it can differ arbitrarily from
    :func:`fvu`; it is inf when some x_i == x̄ exactly.

    :param x: (N, d_in); :param x_hat: (N, d_in).
    """
    xs, xh = _pair(x, x_hat)
    err = (xs - xh).pow(2).sum(-1)  # (N,)
    var = (xs - xs.mean(0)).pow(2).sum(-1)  # (N,)
    return float((err / var).mean())


class FVUAccumulator:
    """Streaming FVU over batches, equal (up to float64 rounding) to :func:`fvu` on the
    concatenation of all batches.

    Keeps in float64 the token count N, the running mean x̄ (d_in,), the centred sum of
    squares M2 = Σ‖x_i − x̄‖² and Σ‖x_i − x̂_i‖². Batches are merged with Chan et al.'s
    rule M2 = M2_a + M2_b + ‖x̄_a − x̄_b‖² N_a N_b / (N_a + N_b), which is the identity
    Σ‖x − x̄‖² = Σ‖x‖² − N‖x̄‖² rearranged so that it does not cancel catastrophically when
    ‖x̄‖ ≫ the spread (LM residual streams have large means).
    """

    def __init__(self) -> None:
        self.n_tokens = 0
        self._mean: Tensor | None = None  # (d_in,) float64
        self._m2 = 0.0
        self._err = 0.0

    def update(self, x: Any, x_hat: Any) -> None:
        """Add a batch: x, x_hat (B, d_in)."""
        xs, xh = _pair(x, x_hat)
        b = xs.shape[0]
        if b == 0:
            return
        if self._mean is not None and self._mean.shape[0] != xs.shape[1]:
            raise ValueError(f"batch has d_in={xs.shape[1]}, earlier batches had d_in={self._mean.shape[0]}")
        mean_b = xs.mean(0)
        m2_b = float((xs - mean_b).pow(2).sum())
        self._err += float((xs - xh).pow(2).sum())
        if self._mean is None:
            self._mean, self._m2, self.n_tokens = mean_b, m2_b, b
            return
        mean_b = mean_b.to(self._mean.device)
        n_a, n = self.n_tokens, self.n_tokens + b
        delta = mean_b - self._mean
        self._m2 += m2_b + float(delta.pow(2).sum()) * n_a * b / n
        self._mean = self._mean + delta * (b / n)
        self.n_tokens = n

    def value(self) -> float:
        """Aggregate FVU of everything seen so far."""
        if self.n_tokens == 0:
            raise ValueError("FVUAccumulator.value() called before any update (N == 0)")
        if self._m2 <= 0.0:
            raise ValueError(f"x has zero variance over the N={self.n_tokens} tokens seen; FVU is undefined")
        return self._err / self._m2

    def explained_variance(self) -> float:
        """1 − :meth:`value`."""
        return 1.0 - self.value()

    def mean(self) -> Tensor:
        """(d_in,) float64 mean x̄ of the tokens seen."""
        if self._mean is None:
            raise ValueError("FVUAccumulator.mean() called before any update (N == 0)")
        return self._mean

    def rms(self) -> float:
        """√(Σ‖x_i − x̄‖² / N) of the tokens seen (:func:`rms_norm` streamed)."""
        if self.n_tokens == 0 or self._m2 <= 0.0:
            raise ValueError(f"RMS(x) is undefined: N == {self.n_tokens}, centred sum of squares {self._m2}")
        return math.sqrt(self._m2 / self.n_tokens)


# --------------------------------------------------------------------------- firing
def l0(codes: Any) -> float:
    """Mean number of nonzero latents per token. codes: (N, d_sae)."""
    c = checked_tokens(codes, "codes", dtype=None)
    if c.shape[0] == 0:
        raise ValueError("codes has no tokens (N == 0)")
    return float((c != 0).sum(dtype=torch.float64) / c.shape[0])


def firing_counts(codes: Any) -> Tensor:
    """Number of tokens on which each latent fires (code nonzero).

    :param codes: (N, d_sae).
    :returns: (d_sae,) int64 tensor, on the device of ``codes``.
    """
    return (checked_tokens(codes, "codes", dtype=None) != 0).sum(0, dtype=torch.int64)


def dead_fraction(counts: Any) -> float:
    """Share of latents with zero firings. counts: (d_sae,) firing counts (or frequencies)."""
    c = checked_tensor(counts, "counts").reshape(-1)
    if c.numel() == 0:
        raise ValueError("counts is empty")
    return float((c == 0).double().mean())


def dense_fraction(freqs: Any, threshold: float = 0.1) -> float:
    """Share of latents with firing frequency > ``threshold`` (docs/method.md §3: 0.1 and 0.01).

    :param freqs: (d_sae,) firing frequencies in [0, 1] (counts / N).
    """
    f = checked_tensor(freqs, "freqs").reshape(-1)
    if f.numel() == 0:
        raise ValueError("freqs is empty")
    return float((f > threshold).double().mean())


def firing_histogram(freqs: Any, bins: int = 50, lo: float = -8.0) -> tuple[Tensor, Tensor]:
    """Histogram of log10 firing frequency, with dead latents in their own first bin.

    :param freqs: (d_sae,) firing frequencies in [0, 1].
    :param bins: number of log-spaced bins over [lo, 0].
    :param lo: log10 of the smallest frequency binned; alive latents rarer than 10**lo are
        clipped into the first finite bin.
    :returns: ``(hist, edges)``: ``hist`` (bins + 1,) int64 and ``edges`` (bins + 2,)
        float64 with ``edges[0] = -inf``. ``hist[0]`` counts the dead latents (freq == 0,
        log10 = −inf) and ``hist[i]`` for i ≥ 1 counts alive latents with
        log10(freq) in [edges[i], edges[i+1]) (the last bin includes 0, i.e. freq == 1).
        Plot ``hist[1:]`` against ``edges[1:]``; report ``hist[0]`` as the dead count.
    """
    if bins < 1:
        raise ValueError(f"bins == {bins}, must be >= 1")
    if not lo < 0:
        raise ValueError(f"lo == {lo}, must be < 0 (log10 of a frequency)")
    f = checked_tensor(freqs, "freqs").reshape(-1).cpu()
    if bool((f < 0).any()) or bool((f > 1).any()):
        raise ValueError("freqs must lie in [0, 1] (firing frequencies, not counts)")
    alive = f[f > 0]
    width = -lo / bins
    idx = ((alive.log10() - lo) / width).floor().long().clamp_(0, bins - 1)
    hist = torch.zeros(bins + 1, dtype=torch.int64)
    hist[0] = int((f == 0).sum())
    hist[1:] = torch.bincount(idx, minlength=bins)
    edges = torch.cat([torch.tensor([-math.inf], dtype=torch.float64),
                       torch.linspace(lo, 0.0, bins + 1, dtype=torch.float64)])
    return hist, edges


class FiringTracker:
    """Accumulates firing counts over streamed code batches and reports dead fractions at
    several token counts (docs/method.md §3: dead = never fired in the first N tokens).

    It records, for each latent, the global index of the first token on which it fired,
    so ``dead_fraction(N)`` is exact for any N ≤ tokens seen, even when N falls inside a
    batch. Windows larger than the number of tokens seen are not reported.

    :param d_sae: number of latents.
    :param windows: token counts N at which :meth:`dead_fractions` reports.
    """

    def __init__(self, d_sae: int, windows: Sequence[int] = (10_000, 100_000, 1_000_000, 10_000_000)):
        if d_sae < 1:
            raise ValueError(f"d_sae == {d_sae}, must be >= 1")
        if any(int(w) < 1 for w in windows):
            raise ValueError(f"windows == {tuple(windows)}, each must be >= 1")
        self.d_sae = int(d_sae)
        self.windows = tuple(sorted(int(w) for w in windows))
        self.n_tokens = 0
        self.counts = torch.zeros(self.d_sae, dtype=torch.int64)  # (d_sae,)
        self.first_fire = torch.full((self.d_sae,), -1, dtype=torch.int64)  # (d_sae,) -1 = never

    def update(self, codes: Any) -> None:
        """Add a batch of codes (B, d_sae)."""
        c = checked_tokens(codes, "codes", dtype=None)
        if c.shape[1] != self.d_sae:
            raise ValueError(f"codes has shape {tuple(c.shape)}, expected (B, d_sae={self.d_sae})")
        fired = c != 0  # (B, d_sae)
        any_fired = fired.any(0).cpu()
        first = fired.to(torch.uint8).argmax(0).cpu()  # first True row (argmax returns the first max)
        new = any_fired & (self.first_fire < 0)
        self.first_fire[new] = first[new] + self.n_tokens
        self.counts += fired.sum(0, dtype=torch.int64).cpu()
        self.n_tokens += c.shape[0]

    def dead_fraction(self, n: int | None = None) -> float:
        """Share of latents that did not fire in the first ``n`` tokens (default: all seen)."""
        if self.n_tokens == 0:
            raise ValueError("FiringTracker has seen no tokens")
        n = self.n_tokens if n is None else int(n)
        if not 1 <= n <= self.n_tokens:
            raise ValueError(f"n == {n}, must be in [1, tokens seen={self.n_tokens}]")
        alive = (self.first_fire >= 0) & (self.first_fire < n)
        return float(1.0 - alive.double().mean())

    def dead_fractions(self) -> dict[int, float]:
        """{N: dead fraction in the first N tokens} for each window N ≤ tokens seen, plus
        the total under the key N = tokens seen."""
        out = {w: self.dead_fraction(w) for w in self.windows if w <= self.n_tokens}
        out[self.n_tokens] = self.dead_fraction()
        return out

    def firing_frequencies(self) -> Tensor:
        """(d_sae,) float64 counts / tokens seen."""
        if self.n_tokens == 0:
            raise ValueError("FiringTracker has seen no tokens")
        return self.counts.double() / self.n_tokens


def rms_norm(x: Any) -> float:
    """RMS(x) = √(Σ_i ‖x_i − x̄‖² / N), the centred root-mean-square token norm (x̄ the set mean).

    The scale of the firing rule (:func:`fires`): centred, because b_dec models the mean.
    :param x: (N, d_in) activations, N ≥ 1; zero spread raises ValueError.
    """
    xs = checked_tokens(x, "x")
    if xs.shape[0] == 0:
        raise ValueError("x has no tokens (N == 0)")
    v = float((xs - xs.mean(0)).pow(2).sum(-1).mean())
    if v <= 0.0:
        raise ValueError(f"x has zero spread over its N={xs.shape[0]} tokens; RMS(x) is 0")
    return math.sqrt(v)


def outlier_severity(x: Any, center: Any = None) -> float:
    """γ = ‖μ − c‖ / ‖σ‖: how far the data's mean sits from ``center`` in units of its spread.

    μ (d_in,) is the per-dimension mean of ``x``, σ (d_in,) the per-dimension standard deviation
    (1/N), c the centre (zeros by default). Simon, Adams & Zou (arXiv 2605.31518) call γ with c = 0
    the outlier severity of a layer's activations and find it predicts latents dead at
    initialisation; an SAE that starts b_dec at c sees the encoder inputs x − c, whose γ is this
    value with that c (≈ √(d_in/N') when c is the mean of N' other tokens of the same data).
    Invariant under x → a·x, c → a·c (a > 0) and under a common shift of x and c.

    :param x: (N, d_in) activations, N ≥ 2; zero spread raises ValueError.
    :param center: (d_in,) centre c, or None for zeros.
    """
    xs = checked_tokens(x, "x").double()
    if xs.shape[0] < 2:
        raise ValueError(f"x has N == {xs.shape[0]} tokens, must be >= 2 for a spread")
    mu = xs.mean(0)
    if center is not None:
        c = checked_tensor(center, "center", dtype=torch.float64).reshape(-1).to(xs.device)
        if c.shape[0] != xs.shape[1]:
            raise ValueError(f"center has {c.shape[0]} entries but x has d_in == {xs.shape[1]}")
        mu = mu - c
    spread = float((xs - xs.mean(0)).pow(2).mean(0).sum().sqrt())
    if spread <= 0.0:
        raise ValueError(f"x has zero spread over its N={xs.shape[0]} tokens; γ is undefined")
    return float(mu.norm()) / spread


def fires(codes: Any, decoder_norms: Any, rms: float, rel: float = FIRE_REL) -> Tensor:
    """The folded firing mask: latent j fires on token i when z_ij·‖d_j‖ > rel · rms.

    z_ij‖d_j‖ is the norm of latent j's contribution to x̂_i, the code of the *folded* SAE
    (unit-norm decoder columns, scale moved into the codes), so a latent whose decoder column
    has shrunk to nothing (relu_l1's collapse) does not count as alive however large its
    code. The same rule for every architecture; codes ≤ 0 never fire.

    :param codes: (N, d_sae) codes of the SAE as stored (raw space).
    :param decoder_norms: (d_sae,) norms ‖d_j‖ of the decoder columns in the same space.
    :param rms: the data's RMS norm (:func:`rms_norm`), > 0.
    :param rel: the relative threshold (:data:`FIRE_REL`), ≥ 0.
    :returns: (N, d_sae) bool, on the device of ``codes``.
    """
    c = checked_tokens(codes, "codes", dtype=None)
    n = checked_tensor(decoder_norms, "decoder_norms", dtype=c.dtype if c.is_floating_point() else torch.float64)
    n = n.reshape(-1).to(c.device)
    if n.shape[0] != c.shape[1]:
        raise ValueError(f"decoder_norms has {n.shape[0]} entries but codes has d_sae == {c.shape[1]}")
    if not (math.isfinite(rms) and rms > 0):
        raise ValueError(f"rms == {rms!r}, must be a finite number > 0")
    if not (math.isfinite(rel) and rel >= 0):
        raise ValueError(f"rel == {rel!r}, must be a finite number >= 0")
    return (c * n) > rel * rms


def rare_fraction(freqs: Any, threshold: float) -> float:
    """Near-starvation: share of latents firing on fewer than ``threshold`` of the tokens
    (dead latents included, so it is ≥ the dead fraction).

    :param freqs: (d_sae,) firing frequencies in [0, 1].
    :param threshold: a frequency in (0, 1], e.g. 1e-4 or 1e-5 (:data:`RARE_THRESHOLDS`). With N
        evaluation tokens an alive latent has frequency ≥ 1/N, so below N = 1/threshold this
        equals the dead fraction: the caller reports it as NaN there (``evaluate`` does).
    """
    if not (math.isfinite(threshold) and 0 < threshold <= 1):
        raise ValueError(f"threshold == {threshold!r}, must be in (0, 1]")
    f = checked_tensor(freqs, "freqs").reshape(-1)
    if f.numel() == 0:
        raise ValueError("freqs is empty")
    return float((f < threshold).double().mean())


def is_collapsed(fvu: float, l0: float) -> bool:
    """A collapsed run: FVU ≥ :data:`COLLAPSE_FVU` (explains almost nothing) or L0 < :data:`COLLAPSE_L0`
    (almost no latent fires). Such runs are kept in results.csv but never interpolated between."""
    for name, v in (("fvu", fvu), ("l0", l0)):
        if not math.isfinite(v):
            raise ValueError(f"{name} == {v!r}, must be finite")
    return bool(fvu >= COLLAPSE_FVU or l0 < COLLAPSE_L0)


# --------------------------------------------------------------------------- shrinkage
def l2_ratio(x: Any, x_hat: Any) -> float:
    """mean_i ‖x̂_i‖ / ‖x_i‖ (< 1 indicates shrinkage). x, x_hat: (N, d_in); no ‖x_i‖ = 0."""
    xs, xh = _pair(x, x_hat)
    nx = xs.norm(dim=-1)
    if bool((nx == 0).any()):
        raise ValueError(f"x has {int((nx == 0).sum())} zero-norm rows; the l2 ratio is undefined there")
    return float((xh.norm(dim=-1) / nx).mean())


def relative_reconstruction_bias(x: Any, x_hat: Any) -> float:
    """γ* = argmin_γ Σ_i ‖γ x̂_i − x_i‖² = Σ⟨x̂_i, x_i⟩ / Σ‖x̂_i‖² (Wright & Sharkey; docs/method.md §3).

    γ* > 1 means the reconstructions must be scaled *up* to fit x: shrinkage. If x̂ = c x
    then γ* = 1/c. Computed over the whole set, on raw (uncentred) vectors.

    :param x: (N, d_in); :param x_hat: (N, d_in), not all zero.
    """
    xs, xh = _pair(x, x_hat)
    den = float(xh.pow(2).sum())
    if den == 0.0:
        raise ValueError("x_hat is identically zero; the relative reconstruction bias is undefined")
    return float((xh * xs).sum()) / den


from geomsae.metrics_truth import (  # noqa: E402 (re-exported: one import for every metric)
    CorrelationAccumulator,
    Match,
    chance_corrected,
    correlation_matrix,
    cosine_matrix,
    hungarian_match,
    mcc,
    mmcs,
    mmcs_1to1,
    recovery_rate,
    spike_only_dictionary,
    support_prf,
)

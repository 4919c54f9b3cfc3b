"""Evaluate a trained SAE on held-out activations in one streaming pass (SPEC §3).

Every number comes from :mod:`geomsae.metrics`; here they are only accumulated over
batches: FVU with :class:`~geomsae.metrics.FVUAccumulator`, firing with
:class:`~geomsae.metrics.FiringTracker` (L0 = Σ firing counts / N, an identity of the
metrics module), the l2 ratio as a token-weighted mean of per-batch means, and the
relative reconstruction bias γ* = Σ⟨x̂, x⟩ / Σ‖x̂‖² from per-batch numerators and
denominators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from geomsae import metrics
from geomsae.data import open_source

DEFAULT_WINDOWS = (10_000, 100_000, 1_000_000, 10_000_000)


class FiringHistogram(NamedTuple):
    """Histogram of log10 firing frequency (:func:`geomsae.metrics.firing_histogram`)."""

    counts: list[int]
    """(bins + 1,) latents per bin; ``counts[0]`` counts the dead latents (frequency 0)."""
    edges: list[float]
    """(bins + 2,) log10-frequency bin edges, ``edges[0] = -inf`` (the dead bin)."""


class DeadAtWindow(NamedTuple):
    """The dead fraction after the first ``window`` tokens."""

    window: int
    """Tokens read, N."""
    dead_fraction: float
    """Fraction of latents that did not fire in the first N tokens."""


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Metrics of one SAE on one stream of activations (:func:`evaluate`)."""

    n_tokens: int
    """Tokens evaluated."""
    fvu: float
    """Fraction of variance unexplained, Σ_i ‖x_i − x̂_i‖² / Σ_i ‖x_i − x̄‖² (x̄ the mean over the tokens)."""
    explained_variance: float
    """1 − fvu."""
    l0: float
    """Mean number of active latents per token."""
    dead_fraction: float
    """Fraction of latents that never fired on these tokens."""
    dead_windows: tuple[DeadAtWindow, ...]
    """Dead fractions after the first N tokens, for the requested windows N ≤ n_tokens, N ascending."""
    dense_fraction: float
    """Fraction of latents firing on more than 10 % of the tokens."""
    dense_fraction_001: float
    """Fraction of latents firing on more than 1 % of the tokens."""
    l2_ratio: float
    """mean_i ‖x̂_i‖ / ‖x_i‖ over the tokens (< 1: shrinkage)."""
    rel_bias: float
    """Relative reconstruction bias γ* = Σ⟨x̂, x⟩ / Σ‖x̂‖² (1: no shrinkage); nan when x̂ ≡ 0."""
    firing_frequencies: np.ndarray
    """(d_sae,) float64 fraction of the tokens on which each latent fired."""
    firing_histogram: FiringHistogram
    """Histogram of log10 firing_frequencies, dead latents apart."""
    mmcs: float | None = None
    """Mean over the true atoms of their max (signed) cosine to an atom of W_dec; None without ``true_dict``."""
    recovery_rate: float | None = None
    """Share of the true atoms whose max cosine to an atom of W_dec is > 0.9; None without ``true_dict``."""
    mcc: float | None = None
    """Mean |cos| over the Hungarian matching of true atoms to W_dec atoms; None without ``true_dict``."""

    def dead_fraction_at(self, window: int) -> float:
        """The dead fraction after the first ``window`` tokens (a window evaluated)."""
        for w in self.dead_windows:
            if w.window == window:
                return w.dead_fraction
        raise KeyError(f"window {window} was not evaluated (windows: {[w.window for w in self.dead_windows]})")

    def to_json(self) -> dict[str, Any]:
        """Strict-JSON form (``eval.json``, ``geomsae eval --json``): every scalar of
        :meth:`to_dict`, no firing frequencies, inf and nan as null."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(u) for u in v]
            return v

        return {k: clean(v) for k, v in self.to_dict().items() if k != "firing_frequencies"}

    def to_dict(self) -> dict[str, Any]:
        """Legacy form, for callers not yet reading the fields (to be removed): the dict
        :func:`evaluate` used to return, keys ``dead_fraction_at_{N}`` for ``dead_windows``,
        ``firing_histogram`` as ``{"counts", "edges"}``, mmcs / recovery_rate / mcc only with
        a true dictionary."""
        out: dict[str, Any] = {"n_tokens": self.n_tokens, "fvu": self.fvu, "explained_variance": self.explained_variance,
                               "l0": self.l0, "dead_fraction": self.dead_fraction}
        out.update({f"dead_fraction_at_{w.window}": w.dead_fraction for w in self.dead_windows})
        out.update({"dense_fraction": self.dense_fraction, "dense_fraction_001": self.dense_fraction_001,
                    "l2_ratio": self.l2_ratio, "rel_bias": self.rel_bias, "firing_frequencies": self.firing_frequencies,
                    "firing_histogram": self.firing_histogram._asdict()})
        if self.mmcs is not None:
            out.update({"mmcs": self.mmcs, "recovery_rate": self.recovery_rate, "mcc": self.mcc})
        return out

    def __getitem__(self, key: str) -> Any:
        """Legacy read-only ``result["fvu"]`` (a key of :meth:`to_dict`), to be removed."""
        return self.to_dict()[key]


def evaluate(sae: Any, source: Any, *, n_tokens: int | None = None, batch_size: int = 4096,
             true_dict: Any = None, windows: tuple[int, ...] = DEFAULT_WINDOWS,
             device: str | torch.device | None = None) -> EvalResult:
    """Metrics of ``sae`` on the first ``n_tokens`` tokens of ``source`` (all by default).

    :param sae: a trained SAE taking raw activations (as :func:`geomsae.load` returns).
    :param source: anything :func:`geomsae.data.open_source` opens; read in order, once.
    :param true_dict: (d_in, n_true) ground-truth atoms as columns, for mmcs,
        recovery_rate and mcc against ``sae.W_dec``.
    :param windows: token counts N for :attr:`EvalResult.dead_windows` (those ≤ tokens read).
    :returns: an :class:`EvalResult`; mmcs, recovery_rate and mcc only with ``true_dict``.
    """
    if n_tokens is not None and not (isinstance(n_tokens, int) and n_tokens >= 1):
        raise ValueError(f"n_tokens == {n_tokens!r}, must be an integer >= 1 or None")
    src = open_source(source)
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    if src.d_in != d_in:
        raise ValueError(f"the SAE has d_in == {d_in} but the activations have d_in == {src.d_in}")
    D_true = None
    if true_dict is not None:
        D_true = torch.as_tensor(np.array(true_dict, dtype=np.float64))
        if D_true.ndim != 2 or D_true.shape[0] != d_in:
            raise ValueError(f"true_dict has shape {tuple(D_true.shape)}, "
                             f"must be (d_in={d_in}, n_true) with atoms as columns")
    dev = torch.device(device) if device is not None else next(sae.parameters()).device
    fvu_acc = metrics.FVUAccumulator()
    tracker = metrics.FiringTracker(d_sae, windows)
    l2_sum = num = den = 0.0
    seen = 0
    with torch.no_grad():
        for x in src.batches(batch_size, shuffle=False, epochs=1):
            if n_tokens is not None:
                x = x[: n_tokens - seen]
            x = x.to(dev)
            out = sae(x)
            fvu_acc.update(x, out.x_hat)
            tracker.update(out.codes)
            l2_sum += metrics.l2_ratio(x, out.x_hat) * x.shape[0]
            den_b = float(out.x_hat.double().pow(2).sum())
            if den_b > 0:
                num += metrics.relative_reconstruction_bias(x, out.x_hat) * den_b
                den += den_b
            seen += x.shape[0]
            if n_tokens is not None and seen >= n_tokens:
                break
    if seen == 0:
        raise ValueError("the activation source yielded no tokens")
    freqs = tracker.firing_frequencies()
    hist, edges = metrics.firing_histogram(freqs)
    fvu = fvu_acc.value()
    match: dict[str, float] = {}
    if D_true is not None:
        D_learned = sae.W_dec.detach().double().cpu()
        match = {"mmcs": metrics.mmcs(D_true, D_learned), "recovery_rate": metrics.recovery_rate(D_true, D_learned),
                 "mcc": metrics.mcc(D_true, D_learned)}
    return EvalResult(
        n_tokens=seen,
        fvu=fvu,
        explained_variance=1.0 - fvu,
        l0=float(tracker.counts.sum()) / seen,
        dead_fraction=metrics.dead_fraction(tracker.counts),
        dead_windows=tuple(DeadAtWindow(n, frac) for n, frac in sorted(tracker.dead_fractions().items())
                           if n in tracker.windows),
        dense_fraction=metrics.dense_fraction(freqs, 0.1),
        dense_fraction_001=metrics.dense_fraction(freqs, 0.01),
        l2_ratio=l2_sum / seen,
        rel_bias=num / den if den > 0 else float("nan"),
        firing_frequencies=freqs.numpy(),
        firing_histogram=FiringHistogram(hist.tolist(), edges.tolist()),
        **match,
    )

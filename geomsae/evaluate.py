"""Evaluate a trained SAE on held-out activations in two streaming passes (docs/method.md §3).

Every number comes from :mod:`geomsae.metrics`; here they are only accumulated over
batches. The first pass reads x alone for the data's mean and RMS norm (skipped when ``rms``
is given); the second runs the SAE: FVU with :class:`~geomsae.metrics.FVUAccumulator`, firing
with two :class:`~geomsae.metrics.FiringTracker` (the folded rule of
:func:`~geomsae.metrics.fires`, z_j‖d_j‖ > FIRE_REL·RMS(x), and the raw z_j > 0; L0 = Σ firing
counts / N for each), the l2 ratio as a token-weighted mean of per-batch means, the relative
reconstruction bias γ* = Σ⟨x̂, x⟩ / Σ‖x̂‖² from per-batch numerators and denominators, and,
with true codes, the activation correlations of the MCC
(:class:`~geomsae.metrics.CorrelationAccumulator`).
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
    """Mean number of firing latents per token (folded rule: z_j‖d_j‖ > fire_rel·rms)."""
    dead_fraction: float
    """Fraction of latents that never fired on these tokens (folded rule)."""
    dead_windows: tuple[DeadAtWindow, ...]
    """Dead fractions after the first N tokens, for the requested windows N ≤ n_tokens, N ascending."""
    dense_fraction: float
    """Fraction of latents firing on more than 10 % of the tokens."""
    dense_fraction_001: float
    """Fraction of latents firing on more than 1 % of the tokens."""
    l2_ratio: float
    """mean_i ‖x̂_i‖ / ‖x_i‖ over the tokens with ‖x_i‖ > 0 (< 1: shrinkage; nan if there is none)."""
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
    mmcs_1to1: float | None = None
    """Mean |cos| over the Hungarian (one-to-one) matching of true atoms to W_dec atoms; None without ``true_dict``."""
    recovery_chance: float | None = None
    """recovery_rate of the spike-only dictionary (:func:`geomsae.metrics.spike_only_dictionary`)."""
    mmcs_1to1_chance: float | None = None
    """mmcs_1to1 of the spike-only dictionary."""
    mcc: float | None = None
    """Mean |Pearson correlation| of Hungarian-matched true and learned activations; None without ``true_codes``."""
    mcc_chance: float | None = None
    """mcc of the codes ReLU(Aᵀ(x − x̄)) of the spike-only dictionary A; None without ``true_codes``."""
    l0_raw: float = math.nan
    """Mean number of latents with z_j > 0 per token (the raw count, before the folded rule)."""
    dead_fraction_raw: float = math.nan
    """Fraction of latents with z_j > 0 on no token."""
    rare_fraction_1e4: float = math.nan
    """Fraction of latents firing (folded rule) on fewer than 1e-4 of the tokens, dead included; nan when N < 1e4."""
    rare_fraction_1e5: float = math.nan
    """Fraction of latents firing on fewer than 1e-5 of the tokens, dead included; nan when N < 1e5."""
    collapsed: bool = False
    """FVU ≥ 0.95 or L0 < 0.5 (:func:`geomsae.metrics.is_collapsed`)."""
    rms: float = math.nan
    """The data's RMS norm √(Σ‖x_i − x̄‖²/N) used by the firing rule (√d_in for a per-token-normalised SAE)."""
    fire_rel: float = metrics.FIRE_REL
    """The relative firing threshold used."""

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
        out.update({"l0_raw": self.l0_raw, "dead_fraction_raw": self.dead_fraction_raw,
                    "rare_fraction_1e4": self.rare_fraction_1e4, "rare_fraction_1e5": self.rare_fraction_1e5,
                    "collapsed": self.collapsed, "rms": self.rms, "fire_rel": self.fire_rel})
        for k in ("mmcs", "recovery_rate", "mmcs_1to1", "recovery_chance", "mmcs_1to1_chance", "mcc", "mcc_chance"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def __getitem__(self, key: str) -> Any:
        """Legacy read-only ``result["fvu"]`` (a key of :meth:`to_dict`), to be removed."""
        return self.to_dict()[key]


def _chance_dict(D_true: torch.Tensor) -> torch.Tensor | None:
    """The spike-only dictionary with as many atoms as true atoms (None when the mean atom is 0)."""
    try:
        return metrics.spike_only_dictionary(D_true, D_true.shape[1], seed=0)
    except ValueError:
        return None


def evaluate(sae: Any, source: Any, *, n_tokens: int | None = None, batch_size: int = 4096,
             true_dict: Any = None, true_codes: Any = None, windows: tuple[int, ...] = DEFAULT_WINDOWS,
             device: str | torch.device | None = None, rms: float | None = None,
             fire_rel: float = metrics.FIRE_REL, progress: bool = False) -> EvalResult:
    """Metrics of ``sae`` on the first ``n_tokens`` tokens of ``source`` (all by default).

    :param sae: a trained SAE taking raw activations (as :func:`geomsae.load` returns).
    :param source: anything :func:`geomsae.data.open_source` opens; read in order, twice
        (once for the mean and RMS norm) unless ``rms`` is given.
    :param true_dict: (d_in, n_true) ground-truth atoms as columns, for mmcs, recovery_rate,
        mmcs_1to1 and their spike-only chance levels, against ``sae.W_dec``.
    :param true_codes: (N, n_true) ground-truth codes of the same tokens in the same order
        (needs ``true_dict``): adds mcc and mcc_chance.
    :param windows: token counts N for :attr:`EvalResult.dead_windows` (those ≤ tokens read).
    :param rms: the data's RMS norm for the firing rule (skips the first pass); > 0.
    :param fire_rel: the relative firing threshold (docs/method.md §3), ≥ 0.
    :param progress: show a tqdm bar of the tokens read on stderr (one per pass).
    :returns: an :class:`EvalResult`.
    """
    if n_tokens is not None and not (isinstance(n_tokens, int) and n_tokens >= 1):
        raise ValueError(f"n_tokens == {n_tokens!r}, must be an integer >= 1 or None")
    if rms is not None and not (math.isfinite(rms) and rms > 0):
        raise ValueError(f"rms == {rms!r}, must be a finite number > 0 or None")
    src = open_source(source)
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    if src.d_in != d_in:
        raise ValueError(f"the SAE has d_in == {d_in} but the activations have d_in == {src.d_in}")
    D_true = Z_true = None
    if true_dict is not None:
        D_true = torch.as_tensor(np.array(true_dict, dtype=np.float64))
        if D_true.ndim != 2 or D_true.shape[0] != d_in:
            raise ValueError(f"true_dict has shape {tuple(D_true.shape)}, "
                             f"must be (d_in={d_in}, n_true) with atoms as columns")
    if true_codes is not None:
        if D_true is None:
            raise ValueError("true_codes needs true_dict (the chance level uses the true atoms)")
        Z_true = torch.as_tensor(np.asarray(true_codes.toarray() if hasattr(true_codes, "toarray") else true_codes,
                                            dtype=np.float64))
        if Z_true.ndim != 2 or Z_true.shape[1] != D_true.shape[1]:
            raise ValueError(f"true_codes has shape {tuple(Z_true.shape)}, must be (N, n_true={D_true.shape[1]})")
    dev = torch.device(device) if device is not None else next(sae.parameters()).device

    total = src.n_tokens if n_tokens is None else (n_tokens if src.n_tokens is None else min(n_tokens, src.n_tokens))

    def stream(desc: str):
        from tqdm.auto import tqdm

        seen = 0
        with tqdm(total=total, disable=not progress, unit="tok", unit_scale=True, desc=desc,
                  dynamic_ncols=True) as bar:
            for x in src.batches(batch_size, shuffle=False, epochs=1):
                if n_tokens is not None:
                    x = x[: n_tokens - seen]
                yield seen, x.to(dev)
                seen += x.shape[0]
                bar.update(x.shape[0])
                if n_tokens is not None and seen >= n_tokens:
                    break

    per_token = getattr(sae.cfg, "input_norm", "none") == "per_token"
    x_mean = None
    if rms is None or Z_true is not None:
        pre = metrics.FVUAccumulator()
        for _, x in stream("eval: mean and RMS"):
            pre.update(x, x)
        if pre.n_tokens == 0:
            raise ValueError("the activation source yielded no tokens")
        x_mean = pre.mean()
        if rms is None:
            rms = math.sqrt(d_in) if per_token else pre.rms()
    norms = sae.W_dec.detach().norm(dim=0).to(dev)  # (d_sae,) ‖d_j‖ of the stored (raw-space) decoder
    A = _chance_dict(D_true) if D_true is not None else None
    fvu_acc = metrics.FVUAccumulator()
    tracker = metrics.FiringTracker(d_sae, windows)
    raw = metrics.FiringTracker(d_sae, windows)
    corr = metrics.CorrelationAccumulator() if Z_true is not None else None
    corr_chance = metrics.CorrelationAccumulator() if Z_true is not None and A is not None else None
    l2_sum = num = den = 0.0
    l2_n = 0
    seen = 0
    with torch.no_grad():
        for start, x in stream("eval"):
            out = sae(x)
            fvu_acc.update(x, out.x_hat)
            tracker.update(metrics.fires(out.codes, norms, rms, fire_rel))
            raw.update(out.codes > 0)
            if corr is not None:
                zt = Z_true[start: start + x.shape[0]]
                if zt.shape[0] != x.shape[0]:
                    raise ValueError(f"true_codes has {Z_true.shape[0]} rows, fewer than the tokens read")
                corr.update(zt, out.codes * norms)
                if corr_chance is not None:
                    corr_chance.update(zt, torch.relu((x.double().cpu() - x_mean.cpu()) @ A))
            live = x.norm(dim=-1) > 0  # an all-zero token has no l2 ratio; it counts everywhere else
            n_live = int(live.sum())
            if n_live:
                l2_sum += metrics.l2_ratio(x[live], out.x_hat[live]) * n_live
                l2_n += n_live
            den_b = float(out.x_hat.double().pow(2).sum())
            if den_b > 0:
                num += metrics.relative_reconstruction_bias(x, out.x_hat) * den_b
                den += den_b
            seen += x.shape[0]
    if seen == 0:
        raise ValueError("the activation source yielded no tokens")
    freqs = tracker.firing_frequencies()
    hist, edges = metrics.firing_histogram(freqs)
    fvu = fvu_acc.value()
    l0 = float(tracker.counts.sum()) / seen
    extra: dict[str, Any] = {}
    if D_true is not None:
        D_learned = sae.W_dec.detach().double().cpu()
        extra = {"mmcs": metrics.mmcs(D_true, D_learned), "recovery_rate": metrics.recovery_rate(D_true, D_learned),
                 "mmcs_1to1": metrics.mmcs_1to1(D_true, D_learned)}
        if A is not None:
            extra.update(recovery_chance=metrics.recovery_rate(D_true, A), mmcs_1to1_chance=metrics.mmcs_1to1(D_true, A))
    if corr is not None:
        extra["mcc"] = metrics.mcc(corr.value())
        if corr_chance is not None:
            extra["mcc_chance"] = metrics.mcc(corr_chance.value())
    rare = {f"rare_fraction_1e{-int(round(math.log10(t)))}": (metrics.rare_fraction(freqs, t) if seen * t >= 1
                                                             else math.nan) for t in metrics.RARE_THRESHOLDS}
    return EvalResult(
        n_tokens=seen,
        fvu=fvu,
        explained_variance=1.0 - fvu,
        l0=l0,
        dead_fraction=metrics.dead_fraction(tracker.counts),
        dead_windows=tuple(DeadAtWindow(n, frac) for n, frac in sorted(tracker.dead_fractions().items())
                           if n in tracker.windows),
        dense_fraction=metrics.dense_fraction(freqs, 0.1),
        dense_fraction_001=metrics.dense_fraction(freqs, 0.01),
        l2_ratio=l2_sum / l2_n if l2_n else math.nan,
        rel_bias=num / den if den > 0 else float("nan"),
        firing_frequencies=freqs.numpy(),
        firing_histogram=FiringHistogram(hist.tolist(), edges.tolist()),
        l0_raw=float(raw.counts.sum()) / seen,
        dead_fraction_raw=metrics.dead_fraction(raw.counts),
        collapsed=metrics.is_collapsed(fvu, l0),
        rms=float(rms),
        fire_rel=float(fire_rel),
        **rare,
        **extra,
    )

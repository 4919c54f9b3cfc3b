"""Evaluate a trained SAE on held-out activations in one streaming pass (SPEC §3).

Every number comes from :mod:`geomsae.metrics`; here they are only accumulated over
batches: FVU with :class:`~geomsae.metrics.FVUAccumulator`, firing with
:class:`~geomsae.metrics.FiringTracker` (L0 = Σ firing counts / N, an identity of the
metrics module), the l2 ratio as a token-weighted mean of per-batch means, and the
relative reconstruction bias γ* = Σ⟨x̂, x⟩ / Σ‖x̂‖² from per-batch numerators and
denominators.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geomsae import metrics
from geomsae.data import open_source

DEFAULT_WINDOWS = (10_000, 100_000, 1_000_000, 10_000_000)


def evaluate(sae: Any, source: Any, *, n_tokens: int | None = None, batch_size: int = 4096,
             true_dict: Any = None, windows: tuple[int, ...] = DEFAULT_WINDOWS,
             device: str | torch.device | None = None) -> dict[str, Any]:
    """Metrics of ``sae`` on the first ``n_tokens`` tokens of ``source`` (all by default).

    :param sae: a trained SAE taking raw activations (as :func:`geomsae.load` returns).
    :param source: anything :func:`geomsae.data.open_source` opens; read in order, once.
    :param true_dict: (d_in, n_true) ground-truth atoms as columns, for mmcs,
        recovery_rate and mcc against ``sae.W_dec``.
    :param windows: token counts N for ``dead_fraction_at_{N}`` (those ≤ tokens read).
    :returns: dict with n_tokens, fvu, explained_variance, l0, dead_fraction,
        dead_fraction_at_{N}, dense_fraction (freq > 0.1), dense_fraction_001 (> 0.01),
        l2_ratio, rel_bias, firing_frequencies (d_sae,) numpy, firing_histogram
        {"counts", "edges"} (log10 frequency, dead latents in counts[0]), and with
        ``true_dict`` mmcs, recovery_rate, mcc.
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
    res: dict[str, Any] = {
        "n_tokens": seen,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "l0": float(tracker.counts.sum()) / seen,
        "dead_fraction": metrics.dead_fraction(tracker.counts),
    }
    for n, frac in tracker.dead_fractions().items():
        if n in tracker.windows:
            res[f"dead_fraction_at_{n}"] = frac
    res.update({
        "dense_fraction": metrics.dense_fraction(freqs, 0.1),
        "dense_fraction_001": metrics.dense_fraction(freqs, 0.01),
        "l2_ratio": l2_sum / seen,
        "rel_bias": num / den if den > 0 else float("nan"),
        "firing_frequencies": freqs.numpy(),
        "firing_histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
    })
    if D_true is not None:
        D_learned = sae.W_dec.detach().double().cpu()
        res["mmcs"] = metrics.mmcs(D_true, D_learned)
        res["recovery_rate"] = metrics.recovery_rate(D_true, D_learned)
        res["mcc"] = metrics.mcc(D_true, D_learned)
    return res

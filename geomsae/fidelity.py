"""LM fidelity: splice an SAE's reconstruction into a language model and measure what is lost.

For held-out token contexts (N, T) and the hook point (layer, hook) the SAE was trained on:

- clean: the model as it is; L_clean = mean next-token cross-entropy over the N·(T − 1)
  predicted positions;
- patched: the hidden states h at the hook are replaced by the SAE's reconstruction
  x̂(h) = sae(h).x_hat; L_patch;
- zero ablation: h replaced by 0; L_zero;  mean ablation: h replaced by a mean activation
  (by default the mean of the SAE's training activations); L_mean.

CE loss recovered = (L_ablate − L_patch)/(L_ablate − L_clean) for each ablation (docs/method.md §3),
and KL = mean over positions of KL(p_clean ‖ p_patch) in nats.

Normalisation: a SAE returned by :func:`geomsae.load` takes *raw* activations. A dataset scale
is folded into its weights, and ``input_norm='per_token'`` is applied inside ``forward`` and
undone on its output, so ``sae(h).x_hat`` is in the model's own units — the normalisation is
applied before the SAE and undone after it, never skipped (docs/method.md §5 notes what happens otherwise).

BOS: with ``skip_bos`` (the default, matching a harvest that dropped BOS) position 0 keeps
its clean hidden state in every variant, so the SAE is only asked about tokens of the kind it
was trained on; the cross-entropy covers the same positions in every variant either way.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from geomsae import lm


def _splice(start: int, fn: Any) -> Any:
    def hook(h: Tensor) -> Tensor:
        out = h.clone()
        body = h[:, start:]
        out[:, start:] = fn(body.reshape(-1, h.shape[-1])).reshape(body.shape).to(h.dtype)
        return out

    return hook


def _ce_and_logp(model: Any, ids: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of next-token CE, (B, T−1, V) log-probabilities) of one batch."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    ce = -logp.gather(-1, ids[:, 1:, None]).sum()
    return ce, logp


@torch.no_grad()
def mean_hidden(model: Any, contexts: Tensor, layer: int, hook: str = "resid_post", *, batch_contexts: int = 8,
                start: int = 1) -> Tensor:
    """(d_model,) float32 mean hidden state at the hook over positions ``start:`` of ``contexts``."""
    dev = next(model.parameters()).device
    total, n = None, 0
    for i in range(0, contexts.shape[0], batch_contexts):
        h = lm.capture(model, contexts[i:i + batch_contexts].to(dev), layer, hook)[:, start:].float()
        s = h.reshape(-1, h.shape[-1]).sum(0)
        total = s if total is None else total + s
        n += h.shape[0] * h.shape[1]
    return (total / max(n, 1)).cpu()


@torch.no_grad()
def lm_fidelity(model: Any, sae: Any, contexts: Tensor, layer: int, hook: str = "resid_post", *,
                mean_activation: Tensor | None = None, batch_contexts: int = 8, skip_bos: bool = True,
                ablations: dict[str, float] | None = None) -> dict[str, float]:
    """CE loss recovered and KL of splicing ``sae`` into ``model`` at ``hook`` of block ``layer``.

    :param contexts: (N, T) int64 token ids, T >= 2.
    :param mean_activation: (d_model,) the activation of mean ablation (default: the mean hidden
        state at the hook over the non-BOS positions of ``contexts``; pass the training mean instead).
    :param ablations: ``{"ce_zero": ..., "ce_mean": ...}`` from an earlier call on the same contexts
        with the same mean, to skip those passes (they do not depend on the SAE).
    :returns: ce_clean, ce_patched, ce_zero, ce_mean, ce_recovered_zero, ce_recovered_mean,
        kl_patched (nats/position), n_positions.
    """
    if not (isinstance(contexts, Tensor) and contexts.ndim == 2 and contexts.shape[1] >= 2):
        raise ValueError(f"contexts must be a (N, T) tensor of token ids with T >= 2, got "
                         f"{tuple(getattr(contexts, 'shape', ()))}")
    if not (isinstance(batch_contexts, int) and batch_contexts >= 1):
        raise ValueError(f"batch_contexts == {batch_contexts!r}, must be an integer >= 1")
    dev = next(model.parameters()).device
    sdev = next(sae.parameters()).device
    sdt = next(sae.parameters()).dtype
    start = 1 if skip_bos else 0
    if mean_activation is None and ablations is None:
        mean_activation = mean_hidden(model, contexts, layer, hook, batch_contexts=batch_contexts, start=start)
    mean = None if mean_activation is None else torch.as_tensor(mean_activation).to(dev)

    def recon(x: Tensor) -> Tensor:
        return sae(x.to(sdev, sdt)).x_hat.to(dev)

    variants = {"patched": recon}
    if ablations is None:
        variants.update(zero=lambda x: torch.zeros_like(x), mean=lambda x: mean.to(x.dtype).expand_as(x))
    sums = dict.fromkeys(["clean", *variants], 0.0)
    kl_sum, n_pos = 0.0, 0
    was = sae.training
    sae.eval()
    try:
        for i in range(0, contexts.shape[0], batch_contexts):
            ids = contexts[i:i + batch_contexts].to(dev)
            ce, logp_clean = _ce_and_logp(model, ids)
            sums["clean"] += float(ce)
            n_pos += ids.shape[0] * (ids.shape[1] - 1)
            for name, fn in variants.items():
                with lm.patched(model, layer, hook, _splice(start, fn)):
                    ce, logp = _ce_and_logp(model, ids)
                sums[name] += float(ce)
                if name == "patched":
                    kl_sum += float((logp_clean.exp() * (logp_clean - logp)).sum())
    finally:
        sae.train(was)
    res = {f"ce_{k}": v / n_pos for k, v in sums.items()}
    if ablations is not None:
        res.update({k: ablations[k] for k in ("ce_zero", "ce_mean")})
    for abl in ("zero", "mean"):
        denom = res[f"ce_{abl}"] - res["ce_clean"]
        res[f"ce_recovered_{abl}"] = (res[f"ce_{abl}"] - res["ce_patched"]) / denom if denom > 0 else math.nan
    res["kl_patched"] = kl_sum / n_pos
    res["n_positions"] = n_pos
    return res


__all__ = ["lm_fidelity", "mean_hidden"]

"""BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from geomsae.saes.base import BaseSAE, SAEOutput
from geomsae.saes.topk import TopKConfig, TopKSAE


@dataclass
class BatchTopKConfig(TopKConfig):
    """Config of :class:`BatchTopKSAE` (k is the *average* number of active latents)."""

    threshold_momentum: float = 0.01
    """EMA momentum m of the inference threshold: θ ← (1 − m)·θ + m·θ_batch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.threshold_momentum
        if not (isinstance(m, (int, float)) and math.isfinite(m) and 0 < m <= 1):
            raise ValueError(f"threshold_momentum == {m!r}, must be in (0, 1]")


def batch_topk_relu_reference(pre: Tensor, k: int | Tensor) -> Tensor:
    """(N, d_sae) keep the N·k largest ReLU(pre) over the whole batch, zero the rest (the plain
    formula: one top-k over the flattened batch, then a scatter).

    A stack (pre (S, N, d_sae)) keeps each member's N·k largest over that member's batch;
    ``k`` may then be an (S,) tensor of per-member k (values past a member's N·k are zeroed).
    """
    flat = pre.relu().flatten(-2)
    n = pre.shape[-2]
    if not isinstance(k, Tensor):
        vals, idx = flat.topk(min(n * k, flat.shape[-1]), dim=-1, sorted=False)
    else:
        n_max = min(n * int(k.max()), flat.shape[-1])
        vals, idx = flat.topk(n_max, dim=-1, sorted=True)
        vals = vals * (torch.arange(n_max, device=pre.device) < (n * k).view(-1, 1))
    return torch.zeros_like(flat).scatter(-1, idx, vals).view_as(pre)


SAMPLE = 65_536
"""Entries of the batch read to guess a lower bound of the threshold (:func:`batch_threshold`)."""


def batch_threshold(pre: Tensor, m: int, sample: int | None = None) -> float | None:
    """The m-th largest entry t of pre (N, d_sae) when t > 0 and no other entry equals it, else None.

    The plain way, a top-m over all N·d_sae entries, cost as much as a fifth of a training step
    at N 4096, d_sae 4096, m 4096·64 on CPU. Here: a strided sample of about ``sample`` entries (default ``SAMPLE``) gives a
    value t_lo that about 1.3 m entries exceed; one comparison pass keeps the entries ≥ t_lo
    (checked to be at least m of them, else None), and the m-th largest is selected among those
    few. No random numbers are drawn (the training RNG stream is untouched).
    """
    sample = SAMPLE if sample is None else sample
    flat = pre.detach().reshape(-1)
    total = flat.numel()
    if m >= total:
        return None
    stride = total // sample + 1  # not a divisor of d_sae in general: the sample visits every latent
    if stride == 1:  # a small batch: select among all entries
        cand = flat
    else:
        sub = flat[::stride]
        r = m / total * sub.numel()
        r_lo = math.ceil(1.3 * r + 4 * math.sqrt(r) + 8)
        if r_lo >= sub.numel():
            return None
        t_lo = sub.kthvalue(sub.numel() - r_lo + 1).values
        if not bool(t_lo > 0):
            return None
        cand = flat[flat >= t_lo]
        if cand.numel() < m:
            return None
    t = cand.kthvalue(cand.numel() - m + 1).values
    if not bool(t > 0) or int((cand >= t).sum()) != m:  # t <= 0, or a tie at t: let the top-k choose
        return None
    return float(t)


def batch_topk_relu(pre: Tensor, k: int | Tensor) -> Tensor:
    """:func:`batch_topk_relu_reference` (same value and gradient), for one SAE faster.

    With t the (N·k)-th largest entry of pre (N, d_sae), found by :func:`batch_threshold`, the
    N·k largest of ReLU(pre) are the entries ≥ t when t > 0 and no other entry ties with it;
    they are kept by ``threshold(pre, t⁻, 0)`` (t⁻ the float below t), whose gradient is that of
    the reference's scatter. A stack, a per-member k, or a threshold that cannot be certified
    take the reference path.
    """
    if pre.ndim == 2 and not isinstance(k, Tensor):
        t = batch_threshold(pre, pre.shape[0] * k)
        if t is not None:
            below = float(torch.nextafter(torch.tensor(t, dtype=pre.dtype), torch.tensor(-math.inf, dtype=pre.dtype)))
            return F.threshold(pre, below, 0.0)
    return batch_topk_relu_reference(pre, k)


class BatchTopKSAE(TopKSAE):
    """BatchTopK SAE: TopK over the whole batch in training, a global threshold at inference.

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = BatchTopK_{N·k}(ReLU(pre))        # training (module.train()): N tokens share N·k slots
        z   = pre · 1[pre > θ]                   # inference (module.eval())
        x̂   = W_dec z + b_dec                    # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + α · AuxK        # as TopKSAE

    θ (buffer ``threshold``, scalar) is an EMA of the smallest positive code kept in each
    training batch (set to the first batch's value at step 0; θ = 0 before any training,
    i.e. plain ReLU). Updated by :meth:`on_step_end`. λ units as TopKSAE (exact=False).
    """

    arch = "batchtopk"
    config_class = BatchTopKConfig
    cfg: BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))

    # Codes are not k per row (N·k per batch, or a threshold): decode through the density rule.
    _encode_decode = BaseSAE._encode_decode

    def activation(self, pre: Tensor) -> Tensor:
        if self.training:
            return batch_topk_relu(pre, self.hp("k"))
        return torch.where(pre > self._per_member(self.threshold, 2), pre, torch.zeros_like(pre))

    @torch.no_grad()
    def on_step_end(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Update θ from this batch's codes (each member's from its own), then the base trackers."""
        z = self.codes_2d(out)
        t = z.masked_fill(z <= 0, float("inf")).amin(dim=(-2, -1)).to(self.threshold.dtype)  # () or (S,)
        m = self.hp("threshold_momentum")
        new = t if self._step() == 0 else torch.lerp(self.threshold, t, m if isinstance(m, Tensor) else float(m))
        self.threshold.copy_(torch.where(torch.isfinite(t), new, self.threshold))
        return super().on_step_end(x, out)

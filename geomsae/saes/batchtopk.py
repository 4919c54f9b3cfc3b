"""BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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


def batch_topk_relu(pre: Tensor, k: int | Tensor) -> Tensor:
    """(N, d_sae) keep the N·k largest ReLU(pre) over the whole batch, zero the rest.

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

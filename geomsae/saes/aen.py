"""Adaptive elastic-net SAE (AEN-SAE), the architecture under test (docs/method.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from geomsae.saes.adaptive import AdaptiveConfig, adaptive_weights, ramped_weights, update_ema_, warmup_factor
from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEOutput, check_nonneg
from geomsae.saes.terms import elastic_net_terms


@dataclass
class AENConfig(AdaptiveConfig):
    """Config of :class:`AENSAE` (adaptive-weight fields documented in AdaptiveConfig)."""

    lam1: float = 5e-3
    """Adaptive l1 coefficient λ1 (SAE units: per-element MSE + λ1 Σ w̃_j|z_j| + λ2‖z‖²)."""
    lam2: float = 1e-3
    """Squared-l2 coefficient λ2 (SAE units); λ2 > 0 makes the coding problem strongly convex."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam1", self.lam1)
        check_nonneg("lam2", self.lam2)


class AENSAE(BaseSAE):
    """ReLU SAE with an adaptive elastic-net penalty and a unit-norm decoder.

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = ReLU(pre)
        x̂   = W_dec z + b_dec               # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + λ1 Σ_j w̃_j |z_j| + λ2 ‖z‖²

    w̃ (detached) comes from the ``ema`` buffer (d_sae,) of mean |z_j|, updated by
    :meth:`on_step_end`, through the recipe of :mod:`geomsae.saes.adaptive`; it is
    ≡ 1 during warm-up and rarely-firing latents get larger weights. No resampling, no
    hard masks. Canonical units (exact=True): λ1′ = d_in·λ1/2, λ2′ = d_in·λ2, w = w̃.
    """

    arch = "aen"
    sparse_decode_ok = True
    config_class = AENConfig
    cfg: AENConfig

    def __init__(self, cfg: AENConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("ema", torch.zeros(cfg.d_sae))

    @property
    def lam2(self) -> Any:
        """λ2 (0 for the adaptive lasso); an (S,) tensor for a stack whose members differ."""
        v = self.hp("lam2")
        return v if isinstance(v, Tensor) else float(v)

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    @torch.no_grad()
    def adaptive_weights(self) -> Tensor:
        """(d_sae,) the current ramped weights w̃ (≡ 1 before warm-up ends)."""
        f = warmup_factor(self._step(), self.hp("warmup_steps"), self.hp("ramp_steps"))
        if not bool(torch.as_tensor(f).any()):
            return torch.ones_like(self.ema)
        w = adaptive_weights(self.ema, *(self.hp(n) for n in ("q", "gamma", "w_min", "w_max", "eps")))
        return ramped_weights(w, f)

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        z = self.codes_2d(out)
        w = self.adaptive_weights()
        l1, l2 = elastic_net_terms(z, w)  # z >= 0 (ReLU): |z| = z
        sparsity = self.hp("lam1") * l1 + self.lam2 * l2
        return LossOutput(mse + sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach(),
                                           "l1": l1.detach(), "l2": l2.detach()})

    @torch.no_grad()
    def on_step_end(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """EMA ← β·EMA + (1 − β)·mean_batch|z|, then the base trackers (step += 1)."""
        update_ema_(self.ema, self.codes_2d(out), self.hp("beta"), nonneg=True)  # ReLU codes
        return super().on_step_end(x, out)

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(self.cfg.lam1, self.lam2, self.adaptive_weights(), exact=True)

"""Adaptive per-latent l1 weights shared by the AEN and adaptive-lasso SAEs (SPEC §2).

The recipe (from the AEN-SAE authors' public code)::

    ema_j ← β ema_j + (1 − β) mean_batch |z_j|          (detached, a buffer)
    ref   = mean of the top q % of ema
    w_j   = clamp((ref / (ema_j + eps))^γ, w_min, w_max)
    w̃_j   = 1 + (w_j − 1)·f(t),  f(t) = clamp((t − warmup_steps) / ramp_steps, 0, 1)

t is the number of optimizer steps taken. Rarely-firing latents (small ema) get heavier
penalties; the loss uses w̃ detached. The EMA starts at 0: its bias factor (1 − β^t) is
common to every latent and cancels in ref/ema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geomsae.saes.base import SAEConfig


@dataclass
class AdaptiveConfig(SAEConfig):
    """Fields of the adaptive-weight machinery (shared by ``aen`` and ``adaptive_lasso``)."""

    beta: float = 0.999
    """EMA decay β of mean_batch |z_j| (the paper uses 0.999 or 0.9999)."""
    q: float = 1.0
    """Reference level: ref = mean of the top q percent of the EMA (e.g. 0.5, 1, 5)."""
    gamma: float = 1.0
    """Exponent γ of the weights w_j = (ref / ema_j)^γ (e.g. 0.5 or 1)."""
    w_min: float = 0.01
    """Lower clamp of the adaptive weights."""
    w_max: float = 10.0
    """Upper clamp of the adaptive weights."""
    warmup_steps: int = 1000
    """Steps with w ≡ 1 before the adaptive weights are phased in."""
    ramp_steps: int = 1000
    """Steps of the linear ramp from w ≡ 1 to the adaptive weights (0 = switch at once)."""
    eps: float = 1e-8
    """Added to ema_j in the division ref / (ema_j + eps)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.beta, (int, float)) and 0 <= self.beta < 1):
            raise ValueError(f"beta == {self.beta!r}, must be in [0, 1)")
        if not (isinstance(self.q, (int, float)) and 0 < self.q <= 100):
            raise ValueError(f"q == {self.q!r}, must be in (0, 100] (percent)")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma == {self.gamma!r}, must be a finite number >= 0")
        if not (isinstance(self.w_min, (int, float)) and isinstance(self.w_max, (int, float))
                and 0 < self.w_min <= self.w_max < math.inf):
            raise ValueError(f"w_min == {self.w_min!r}, w_max == {self.w_max!r}, must satisfy 0 < w_min <= w_max < inf")
        for name in ("warmup_steps", "ramp_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 0")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps == {self.eps!r}, must be a finite number > 0")


def adaptive_weights(ema: Tensor, q: float, gamma: float, w_min: float, w_max: float, eps: float) -> Tensor:
    """(d_sae,) w_j = clamp((ref / (ema_j + eps))^γ, w_min, w_max), ref = mean of top q % of ema."""
    n_top = max(1, math.ceil(q / 100.0 * ema.numel()))
    ref = ema.topk(n_top).values.mean()
    return ((ref / (ema + eps)) ** gamma).clamp(w_min, w_max)


def warmup_factor(step: int, warmup_steps: int, ramp_steps: int) -> float:
    """f(t) = 0 for t <= warmup_steps, then linear to 1 over ramp_steps (1 after)."""
    if step <= warmup_steps:
        return 0.0
    if ramp_steps == 0:
        return 1.0
    return min(1.0, (step - warmup_steps) / ramp_steps)


def ramped_weights(w: Tensor, f: float) -> Tensor:
    """w̃ = 1 + (w − 1)·f."""
    return 1.0 + (w - 1.0) * f


@torch.no_grad()
def update_ema_(ema: Tensor, z: Tensor, beta: float) -> None:
    """In place: ema ← β ema + (1 − β) mean over rows of |z| (z (N, d_sae))."""
    ema.mul_(beta).add_(z.abs().mean(0).to(ema.dtype), alpha=1.0 - beta)

"""Adaptive per-latent l1 weights shared by the AEN and adaptive-lasso SAEs (docs/method.md §2).

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
from typing import Any

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


def adaptive_weights(ema: Tensor, q: Any, gamma: Any, w_min: Any, w_max: Any, eps: Any) -> Tensor:
    """(d_sae,) w_j = clamp((ref / (ema_j + eps))^γ, w_min, w_max), ref = mean of top q % of ema.

    A stack passes ema (S, d_sae) and gets (S, d_sae); any hyper-parameter may then be an (S,)
    tensor of per-member values.
    """
    if ema.ndim == 1:
        n_top = max(1, math.ceil(q / 100.0 * ema.numel()))
        ref = ema.topk(n_top).values.mean()
        return ((ref / (ema + eps)) ** gamma).clamp(w_min, w_max)
    col = [v.view(-1, 1) if isinstance(v, Tensor) else v for v in (q, gamma, w_min, w_max, eps)]
    q, gamma, w_min, w_max, eps = col
    m = ema.shape[-1]
    if isinstance(q, Tensor):  # per-member top-q means from one sort
        n_top = torch.clamp(torch.ceil(q.double() / 100.0 * m), min=1).long()  # (S, 1)
        srt = ema.sort(dim=-1, descending=True).values
        ref = srt.cumsum(-1).gather(-1, n_top - 1) / n_top.to(ema.dtype)
    else:
        ref = ema.topk(max(1, math.ceil(q / 100.0 * m)), dim=-1).values.mean(-1, keepdim=True)
    w = (ref / (ema + eps)) ** gamma
    if isinstance(w_min, Tensor) or isinstance(w_max, Tensor):
        return torch.maximum(torch.minimum(w, torch.as_tensor(w_max, dtype=w.dtype)), torch.as_tensor(w_min, dtype=w.dtype))
    return w.clamp(w_min, w_max)


def warmup_factor(step: int, warmup_steps: Any, ramp_steps: Any) -> Any:
    """f(t) = 0 for t <= warmup_steps, then linear to 1 over ramp_steps (1 after).

    A float; an (S,) float32 tensor when warmup_steps or ramp_steps are per-member tensors."""
    if isinstance(warmup_steps, Tensor) or isinstance(ramp_steps, Tensor):
        w = torch.as_tensor(warmup_steps, dtype=torch.float64)
        r = torch.as_tensor(ramp_steps, dtype=torch.float64)
        lin = ((step - w) / r.clamp(min=1)).clamp(0.0, 1.0)
        f = torch.where(step <= w, torch.zeros_like(lin), torch.where(r == 0, torch.ones_like(lin), lin))
        return f.to(torch.float32)
    if step <= warmup_steps:
        return 0.0
    if ramp_steps == 0:
        return 1.0
    return min(1.0, (step - warmup_steps) / ramp_steps)


def ramped_weights(w: Tensor, f: Any) -> Tensor:
    """w̃ = 1 + (w − 1)·f (f a float, or (S,) per member of a stack with w (S, d_sae))."""
    if isinstance(f, Tensor):
        f = f.to(w.device).view(-1, 1)
    return 1.0 + (w - 1.0) * f


@torch.no_grad()
def update_ema_(ema: Tensor, z: Tensor, beta: Any, nonneg: bool = False) -> None:
    """In place: ema ← β ema + (1 − β) mean over rows of |z| (z (N, d_sae); a stack: ema
    (S, d_sae), z (S, N, d_sae), β a float or (S,) per member). ``nonneg=True`` promises
    z ≥ 0 (ReLU codes) and skips the pass that takes |z|."""
    mean = (z if nonneg else z.abs()).mean(-2).to(ema.dtype)
    if isinstance(beta, Tensor):
        b = beta.to(ema.device).view(-1, 1)
        ema.mul_(b).add_(mean * (1.0 - b))
    else:
        ema.mul_(beta).add_(mean, alpha=1.0 - beta)

"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction
Fidelity with JumpReLU Sparse Autoencoders")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEConfig, SAEOutput, check_nonneg


@dataclass
class JumpReLUConfig(SAEConfig):
    """Config of :class:`JumpReLUSAE`."""

    lam: float = 1e-3
    """L0 coefficient λ (SAE units: per-element MSE + λ·L0)."""
    bandwidth: float = 1e-3
    """Width ε of the rectangle kernel of the straight-through pseudo-derivative."""
    theta_init: float = 1e-3
    """Initial threshold θ of every latent."""
    threshold_lr_scale: float = 1.0
    """log θ = threshold_lr_scale · log_threshold. Adam moves every parameter by about lr per step
    whatever its gradient's scale, so this is log θ's own learning rate, threshold_lr_scale × lr:
    at short runs (a few hundred steps) θ can otherwise not travel far from theta_init."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam", self.lam)
        for name in ("bandwidth", "theta_init", "threshold_lr_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} == {v!r}, must be a finite number > 0")


def _rect(u: Tensor) -> Tensor:
    """Rectangle kernel K(u) = 1[|u| < 1/2]."""
    return (u.abs() < 0.5).to(u.dtype)


def _band(pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:
    """bool K((pre − θ)/ε) ≠ 0, in three passes over pre written in place (no float kernel tensor)."""
    return (pre - theta).div_(eps).abs_() < 0.5


class _JumpReLU(torch.autograd.Function):
    """y = pre·H(pre − θ); ∂y/∂pre = H(pre − θ); ∂y/∂θ := −(θ/ε) K((pre − θ)/ε).

    The backward sums g·K over tokens from a bool band instead of the float products of the plain
    formula (:class:`_JumpReLUReference`): fewer passes over the (N, d_sae) tensors, same value."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return torch.where(pre > theta, pre, 0.0)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = torch.where(pre > theta, g, 0.0)
        # θ and ε are constant over tokens: sum g·K over tokens first, then scale the (…, d_sae) row
        g_theta = -(theta / eps) * torch.where(_band(pre, theta, eps), g, 0.0).sum_to_size(theta.shape)
        return g_pre, g_theta, None


class _StepL0(torch.autograd.Function):
    """l0 = mean over tokens of Σ_j H(pre_nj − θ_j); ∂/∂pre = 0; ∂H/∂θ := −(1/ε) K((pre − θ)/ε).

    pre (…, N, d_sae) → (…) (a scalar alone, (S,) for a stack). The count is taken from a bool
    comparison (no float H tensor); the backward counts the band per latent (no (N, d_sae) float
    gradient) and returns None for pre (autograd adds nothing). The plain formula is
    ``_StepReference.apply(pre, θ, ε).sum(-1).mean(-1)``."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).sum((-2, -1)).to(pre.dtype) / pre.shape[-2]

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        scale = (g / pre.shape[-2]).reshape(g.shape + (1, 1)) / eps  # (…, 1, 1)
        count = _band(pre, theta, eps).sum(-2, keepdim=True).to(pre.dtype)  # (…, 1, d_sae)
        return None, (-scale * count).sum_to_size(theta.shape), None


class _JumpReLUReference(torch.autograd.Function):
    """The plain formula of :class:`_JumpReLU` (the reference its tests compare with)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_pre = g * (pre > theta).to(g.dtype)
        g_theta = (-(theta / eps) * _rect((pre - theta) / eps) * g).sum_to_size(theta.shape)
        return g_pre, g_theta, None


class _StepReference(torch.autograd.Function):
    """y = H(pre − θ) with the pseudo-derivative of :class:`_StepL0` (the plain formula its tests compare with)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        g_theta = (-(1.0 / eps) * _rect((pre - theta) / eps) * g).sum_to_size(theta.shape)
        return torch.zeros_like(pre), g_theta, None


def _step_l0(pre: Tensor, theta: Tensor, eps: float | Tensor) -> Tensor:
    """(…) mean over tokens of the number of codes above θ, with the straight-through θ gradient."""
    return _StepL0.apply(pre, theta, eps)


class JumpReLUSAE(BaseSAE):
    """JumpReLU SAE with an L0 penalty trained through straight-through estimators.

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = pre · H(pre − θ),     θ = exp(c · log_threshold) > 0 (per latent, learned; c = threshold_lr_scale)
        x̂   = W_dec z + b_dec       # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + λ Σ_j H(pre_j − θ_j)

    The pseudo-derivatives (rectangle kernel K of bandwidth ε) give θ a gradient:
    ∂z/∂θ := −(θ/ε)K((pre−θ)/ε) and ∂H/∂θ := −(1/ε)K((pre−θ)/ε); H has no gradient in
    pre. The L0 penalty has no l1 equivalent, so :meth:`canonical_penalty` returns
    λ1′ = λ2′ = 0 with exact=False (calibrate λ1 before comparing with an exact solver).
    The factor c gives log θ its own learning rate c·lr under Adam (c = 1: the original
    parametrisation, log_threshold = log θ).
    """

    arch = "jumprelu"
    config_class = JumpReLUConfig
    cfg: JumpReLUConfig

    def __init__(self, cfg: JumpReLUConfig) -> None:
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.theta_init) / cfg.threshold_lr_scale))

    @property
    def threshold(self) -> Tensor:
        """(d_sae,) θ = exp(threshold_lr_scale · log_threshold); (S, d_sae) for a stack."""
        return (self._per_member(self.hp("threshold_lr_scale"), 1) * self.log_threshold).exp()

    def activation(self, pre: Tensor) -> Tensor:
        return _JumpReLU.apply(pre, self._row(self.threshold), self._per_member(self.hp("bandwidth"), 2))

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        pre = out.pre_acts if self.n_stack else out.pre_acts.reshape(-1, self.cfg.d_sae)
        l0 = _step_l0(pre, self._row(self.threshold), self._per_member(self.hp("bandwidth"), 2))
        sparsity = self.hp("lam") * l0
        return LossOutput(mse + sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach(), "l0": l0.detach()})

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(0.0, 0.0, None, exact=False)

"""ReLU SAE with a decoder-norm-weighted l1 penalty (Anthropic, "Towards Monosemanticity"
2023 and the April 2024 update), with optional resampling of dead latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEConfig, SAEOutput, check_nonneg


@dataclass
class ReLUL1Config(SAEConfig):
    """Config of :class:`ReLUL1SAE`."""

    lam: float = 5e-3
    """l1 coefficient λ (SAE units: per-element MSE + λ Σ_j ‖W_dec,j‖ z_j)."""
    resample: bool = False
    """Re-initialise dead latents from high-loss inputs every `resample_every` steps."""
    resample_every: int = 25_000
    """Steps between resampling checks (only with --resample)."""
    dead_window: int = 10_000_000
    """A latent is dead (to be resampled) when it has not fired in this many training tokens."""
    resample_enc_scale: float = 0.2
    """Resampled encoder rows get this times the mean norm of the alive encoder rows."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam", self.lam)
        check_nonneg("resample_enc_scale", self.resample_enc_scale)
        if not (isinstance(self.resample_every, int) and self.resample_every >= 1):
            raise ValueError(f"resample_every == {self.resample_every!r}, must be an integer >= 1 (steps)")
        if not (isinstance(self.dead_window, int) and self.dead_window >= 1):
            raise ValueError(f"dead_window == {self.dead_window!r}, must be an integer >= 1 (tokens)")


class ReLUL1SAE(BaseSAE):
    """ReLU SAE, l1 penalty weighted by decoder column norms; decoder *not* renormalised.

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = ReLU(pre)
        x̂   = W_dec z + b_dec
        L   = (1/d_in)‖x − x̂‖² + λ Σ_j ‖W_dec,j‖ z_j

    Weighting by ‖W_dec,j‖ makes the loss invariant to moving scale between z_j and its
    column, so no unit-norm constraint is needed (``normalize_decoder_`` and
    ``remove_parallel_grads_`` are no-ops). Canonical units: with D = W_dec as stored,
    F has λ1′ = d_in·λ/2 and weights w_j = ‖W_dec,j‖ (exact=True).

    Resampling (``cfg.resample``): every ``resample_every`` steps, each latent dead for
    ``dead_window`` tokens is re-initialised from an input of the current batch drawn
    with probability ∝ (per-token squared error)²: its decoder column becomes the unit
    residual direction r = (x − x̂)/‖x − x̂‖, its encoder row
    ``resample_enc_scale`` · (mean alive encoder-row norm) · r, its b_enc 0.
    :meth:`on_step_end` then returns the bool mask of re-initialised latents so the
    trainer can reset their optimizer moments.
    """

    arch = "relu_l1"
    config_class = ReLUL1Config
    unit_norm_decoder = False
    cfg: ReLUL1Config

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        z = self.codes_2d(out)
        l1 = (z * self.decoder_norms()).sum(-1).mean()
        sparsity = self.cfg.lam * l1
        return LossOutput(mse + sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach(), "l1": l1.detach()})

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(self.cfg.lam, 0.0, self.decoder_norms(), exact=True)

    @torch.no_grad()
    def on_step_end(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Base trackers; then, if resampling is due, re-initialise dead latents and return their mask."""
        super().on_step_end(x, out)
        if not self.cfg.resample or int(self.step) % self.cfg.resample_every != 0:
            return None
        return self.resample_(x, out)

    @torch.no_grad()
    def resample_(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Re-initialise the latents dead for ``dead_window`` tokens; returns the mask or None."""
        dead = self.dead_mask(self.cfg.dead_window)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return None
        resid = self.residual(x, out)  # (N, d_in) training space
        err = resid.pow(2).sum(-1)
        if not bool((err > 0).any()):
            return None
        rows = torch.multinomial(err.pow(2), n_dead, replacement=True)
        r = resid[rows]
        r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (n_dead, d_in)
        alive = ~dead
        enc_norm = self.W_enc[alive].norm(dim=-1).mean() if bool(alive.any()) else self.W_enc.new_tensor(1.0)
        # Raw-space decoder column of norm 1/input_scale is unit norm in training space;
        # the encoder-row norm is taken from the alive rows (already in raw space).
        self.W_dec[:, dead] = r.t() / self.input_scale
        self.W_enc[dead] = r * (self.cfg.resample_enc_scale * enc_norm)
        self.b_enc[dead] = 0.0
        self.tokens_since_fired[dead] = 0
        return dead

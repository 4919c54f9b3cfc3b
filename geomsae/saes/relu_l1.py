"""ReLU SAE with a decoder-norm-weighted l1 penalty (Anthropic, "Towards Monosemanticity"
2023 and the April 2024 update), with optional resampling of dead latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geomsae.saes.base import (
    BaseSAE,
    CanonicalPenalty,
    LossOutput,
    SAEConfig,
    SAEOutput,
    check_nonneg,
)
from geomsae.saes.terms import mean_weighted_l1


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
    sparse_decode_ok = True
    config_class = ReLUL1Config
    unit_norm_decoder = False
    cfg: ReLUL1Config

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        z = self.codes_2d(out)
        l1 = mean_weighted_l1(z, self.decoder_norms())
        sparsity = self.hp("lam") * l1
        return LossOutput(mse + sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach(), "l1": l1.detach()})

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(self.cfg.lam, 0.0, self.decoder_norms(), exact=True)

    @torch.no_grad()
    def on_step_end(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Base trackers; then, if resampling is due, re-initialise dead latents and return their
        mask ((S, d_sae) for a stack, each member resampling on its own schedule and RNG)."""
        super().on_step_end(x, out)
        if not self.n_stack:
            if not self.cfg.resample or self._step() % self.cfg.resample_every != 0:
                return None
            return self.resample_(x, out)
        due = [i for i, c in enumerate(self.cfg.members) if c.resample and self._step() % c.resample_every == 0]
        if not due:
            return None
        resid = self.residual(x, out)
        mask = torch.zeros_like(self.tokens_since_fired, dtype=torch.bool)
        for i in due:
            with self.member_rng(i):
                got = _resample(self.W_dec[i], self.W_enc[i], self.b_enc[i], self.tokens_since_fired[i],
                                self.cfg.members[i].dead_window, resid[i], self.input_scale[i],
                                self.cfg.members[i].resample_enc_scale)
            if got is not None:
                mask[i] = got
        return mask if bool(mask.any()) else None

    @torch.no_grad()
    def resample_(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Re-initialise the latents dead for ``dead_window`` tokens; returns the mask or None."""
        return _resample(self.W_dec, self.W_enc, self.b_enc, self.tokens_since_fired, self.cfg.dead_window,
                         self.residual(x, out), self.input_scale, self.cfg.resample_enc_scale)


@torch.no_grad()
def _resample(W_dec: Tensor, W_enc: Tensor, b_enc: Tensor, tokens_since_fired: Tensor, dead_window: int,
              resid: Tensor, input_scale: Tensor, enc_scale: float) -> Tensor | None:
    """Resample one SAE in place (its tensors, or views of one member of a stack).

    W_dec (d_in, d_sae), W_enc (d_sae, d_in), b_enc and tokens_since_fired (d_sae,),
    resid (N, d_in) in training space; returns the (d_sae,) mask of re-initialised latents or None.
    """
    dead = tokens_since_fired >= dead_window
    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    err = resid.pow(2).sum(-1)
    if not bool((err > 0).any()):
        return None
    rows = torch.multinomial(err.pow(2), n_dead, replacement=True)
    r = resid[rows]
    r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (n_dead, d_in)
    alive = ~dead
    enc_norm = W_enc[alive].norm(dim=-1).mean() if bool(alive.any()) else W_enc.new_tensor(1.0)
    # Raw-space decoder column of norm 1/input_scale is unit norm in training space;
    # the encoder-row norm is taken from the alive rows (already in raw space).
    W_dec[:, dead] = r.t() / input_scale
    W_enc[dead] = r * (enc_scale * enc_norm)
    b_enc[dead] = 0.0
    tokens_since_fired[dead] = 0
    return dead

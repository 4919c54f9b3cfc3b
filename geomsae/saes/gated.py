"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated
Sparse Autoencoders")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEConfig, SAEOutput, check_nonneg


@dataclass
class GatedConfig(SAEConfig):
    """Config of :class:`GatedSAE`."""

    lam: float = 5e-3
    """l1 coefficient λ on ReLU(π_gate) (SAE units)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam", self.lam)


class GatedSAE(BaseSAE):
    """Gated SAE: a gate path decides which latents fire, a magnitude path how much.

    Implements (W_gate = W_enc, b_gate = b_enc; r_mag, b_mag per latent)::

        π_gate = W_gate (x − b_dec) + b_gate                 # = pre_acts
        π_mag  = exp(r_mag) ⊙ (W_gate (x − b_dec)) + b_mag   # W_mag = exp(r_mag) ⊙ W_gate (rows)
        z      = 1[π_gate > 0] · ReLU(π_mag)
        x̂      = W_dec z + b_dec                             # unit-norm columns (renormalised)
        x̂_gate = sg(W_dec) ReLU(π_gate) + sg(b_dec)          # sg = stop-gradient (frozen decoder)
        L      = (1/d_in)‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + (1/d_in)‖x − x̂_gate‖²

    The Heaviside gate passes no gradient: the gate path learns from the l1 and the
    auxiliary reconstruction terms only. Init: r_mag = 0, b_mag = 0 (both paths agree).
    :meth:`canonical_penalty` returns λ1′ = d_in·λ/2 (w ≡ 1) as a surrogate, exact=False:
    the l1 acts on the gate, not on z.
    """

    arch = "gated"
    sparse_decode_ok = True
    config_class = GatedConfig
    cfg: GatedConfig

    def __init__(self, cfg: GatedConfig) -> None:
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pi_gate = self.pre_acts(x)
        pi_mag = self._row(self.r_mag).exp() * (pi_gate - self._row(self.b_enc)) + self._row(self.b_mag)
        z = (pi_gate > 0).to(x.dtype) * pi_mag.relu()
        return z, pi_gate

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        gate = (out.pre_acts if self.n_stack else out.pre_acts.reshape(-1, self.cfg.d_sae)).relu()
        l1 = gate.sum(-1).mean(-1)
        sparsity = self.hp("lam") * l1
        x2 = x if self.n_stack else x.reshape(-1, self.cfg.d_in)
        xn = self._normalise(x2)[0]
        x_gate = gate @ self.W_dec.detach().mT + self._row(self.b_dec.detach())
        aux = self._token_mean((xn - x_gate).mul(self._per_member(self.input_scale, 2)).pow(2))
        parts = {"mse": mse.detach(), "sparsity": sparsity.detach(), "aux": aux.detach(), "l1": l1.detach()}
        return LossOutput(mse + sparsity + aux, parts)

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(self.cfg.lam, 0.0, None, exact=False)

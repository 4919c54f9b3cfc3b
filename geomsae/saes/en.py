"""Elastic-net ReLU SAE (the λ2 > 0, w ≡ 1 ablation of the AEN-SAE)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEConfig, SAEOutput, check_nonneg
from geomsae.saes.terms import elastic_net_terms


@dataclass
class ENConfig(SAEConfig):
    """Config of :class:`ENSAE`."""

    lam1: float = 5e-3
    """l1 coefficient λ1 (SAE units: per-element MSE + λ1 Σ|z| + λ2‖z‖²)."""
    lam2: float = 1e-3
    """Squared-l2 coefficient λ2 (SAE units)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam1", self.lam1)
        check_nonneg("lam2", self.lam2)


class ENSAE(BaseSAE):
    """ReLU SAE with an elastic-net penalty and a unit-norm decoder.

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = ReLU(pre)
        x̂   = W_dec z + b_dec               # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + λ1 Σ_j |z_j| + λ2 ‖z‖²

    Canonical units (docs/method.md §1, exact=True): λ1′ = d_in·λ1/2, λ2′ = d_in·λ2, w ≡ 1.
    """

    arch = "en"
    sparse_decode_ok = True
    config_class = ENConfig
    cfg: ENConfig

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        z = self.codes_2d(out)
        l1, l2 = elastic_net_terms(z)  # z >= 0 (ReLU): |z| = z
        sparsity = self.hp("lam1") * l1 + self.hp("lam2") * l2
        return LossOutput(mse + sparsity, {"mse": mse.detach(), "sparsity": sparsity.detach(),
                                           "l1": l1.detach(), "l2": l2.detach()})

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(self.cfg.lam1, self.cfg.lam2, None, exact=True)

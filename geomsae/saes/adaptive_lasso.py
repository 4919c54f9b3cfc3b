"""Adaptive-lasso ReLU SAE: the λ2 = 0 ablation of the AEN-SAE (docs/method.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

from geomsae.saes.adaptive import AdaptiveConfig
from geomsae.saes.aen import AENSAE
from geomsae.saes.base import check_nonneg


@dataclass
class AdaptiveLassoConfig(AdaptiveConfig):
    """Config of :class:`AdaptiveLassoSAE` (adaptive-weight fields documented in AdaptiveConfig)."""

    lam1: float = 5e-3
    """Adaptive l1 coefficient λ1 (SAE units: per-element MSE + λ1 Σ w̃_j|z_j|)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonneg("lam1", self.lam1)

    @property
    def lam2(self) -> float:
        """Always 0: no l2 term."""
        return 0.0


class AdaptiveLassoSAE(AENSAE):
    """ReLU SAE with an adaptive l1 penalty and a unit-norm decoder (AEN with λ2 = 0).

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = ReLU(pre)
        x̂   = W_dec z + b_dec               # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + λ1 Σ_j w̃_j |z_j|

    with exactly the adaptive weights of :class:`~geomsae.saes.aen.AENSAE` (``ema``
    buffer, warm-up and ramp). Canonical units (exact=True): λ1′ = d_in·λ1/2, λ2′ = 0, w = w̃.
    """

    arch = "adaptive_lasso"
    config_class = AdaptiveLassoConfig  # type: ignore[assignment]

"""What every SAE architecture shares: the output tuples, the config base and helpers.

Shared shape (SPEC §2)::

    pre   = W_enc (x − b_dec) + b_enc          # (B, d_sae)
    z     = act(pre)                            # (B, d_sae)
    x̂     = W_dec z + b_dec                     # (B, d_in)

``W_enc`` is (d_sae, d_in); ``W_dec`` is (d_in, d_sae) so that its *columns* are the
dictionary atoms, exactly the D of SPEC §1. Losses use per-element-MSE units
("SAE units")::

    L = (1/d_in) ‖x − x̂‖² + λ1 Σ_j w_j |z_j| + λ2 ‖z‖²        (mean over the batch)

and :meth:`BaseSAE.canonical_penalty` converts them to the canonical F units of SPEC §1
(multiply by d_in/2: λ1′ = d_in·λ1/2, λ2′ = d_in·λ2).

Input normalisation: ``input_norm="per_token"`` rescales every token to norm √d_in before
encoding and undoes it after decoding (it cannot be folded into linear weights, so it is
stored in the config); a single dataset scale *is* folded into the weights by
:func:`fold_input_scale`, so a loaded SAE always takes raw activations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn


class SAEOutput(NamedTuple):
    """What ``forward`` returns."""

    x_hat: Tensor
    """(B, d_in) reconstruction, in the same space as the input."""
    codes: Tensor
    """(B, d_sae) the sparse code z (post-activation)."""
    pre_acts: Tensor
    """(B, d_sae) pre-activations W_enc (x − b_dec) + b_enc (before the nonlinearity)."""


class LossOutput(NamedTuple):
    """What ``loss`` returns."""

    loss: Tensor
    """Scalar total loss to minimise (SAE units)."""
    parts: dict[str, Tensor]
    """Detached scalar components, e.g. ``mse``, ``sparsity``, ``aux``, for logging."""


class CanonicalPenalty(NamedTuple):
    """The SAE's sparsity penalty written as F(z; x) of SPEC §1 (canonical units)."""

    lam1: float
    """λ1′ in F units."""
    lam2: float
    """λ2′ in F units."""
    weights: Tensor | None
    """(d_sae,) positive per-latent weights w, or None for w ≡ 1."""
    exact: bool
    """True when the SAE's loss *is* this penalty (l1/EN/AEN); False for a surrogate
    (TopK, JumpReLU, gated), where λ1 must be calibrated, e.g. to match L0."""


@dataclass
class SAEConfig:
    """Fields every architecture has. Architecture configs subclass this."""

    d_in: int = 0
    """Input width n (the activation dimension)."""
    d_sae: int = 0
    """Number of latents m (dictionary size)."""
    input_norm: Literal["none", "per_token"] = "none"
    """Per-token normalisation applied inside forward/encode: 'per_token' rescales each
    token to norm sqrt(d_in) and undoes it on the output; 'none' takes inputs as they are."""

    def __post_init__(self) -> None:
        if not (isinstance(self.d_in, int) and self.d_in >= 1):
            raise ValueError(f"d_in == {self.d_in!r}, must be an integer >= 1")
        if not (isinstance(self.d_sae, int) and self.d_sae >= 1):
            raise ValueError(f"d_sae == {self.d_sae!r}, must be an integer >= 1")
        if self.input_norm not in ("none", "per_token"):
            raise ValueError(f"input_norm == {self.input_norm!r}, must be 'none' or 'per_token'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_nonneg(name: str, value: float) -> None:
    """Raise if a hyper-parameter is negative or not finite."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} == {value!r}, must be a finite number >= 0")


def per_token_scale(x: Tensor) -> Tensor:
    """(B, 1) factors s with ‖s·x‖ = √d_in for each row (1 for all-zero rows)."""
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, math.sqrt(x.shape[-1]) / norm.clamp_min(1e-30), torch.ones_like(norm))

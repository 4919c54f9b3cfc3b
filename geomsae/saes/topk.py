"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geomsae.saes.base import BaseSAE, CanonicalPenalty, LossOutput, SAEConfig, SAEOutput, check_nonneg
from geomsae.saes.sparse import decode_topk


@dataclass
class TopKConfig(SAEConfig):
    """Config of :class:`TopKSAE`."""

    k: int = 32
    """Number of active latents per token (TopK)."""
    auxk: bool = True
    """Add the AuxK loss: dead latents reconstruct the residual (Gao et al. 2024)."""
    auxk_alpha: float = 1 / 32
    """Weight α of the AuxK loss."""
    k_aux: int | None = None
    """Number of dead latents used by AuxK per token; None means d_in // 2."""
    dead_window: int = 10_000_000
    """A latent is dead for AuxK when it has not fired in this many training tokens."""
    tied_init: bool = True
    """Initialise W_enc = W_decᵀ; otherwise W_enc gets independent random unit-norm rows."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.k, int) and 1 <= self.k <= self.d_sae):
            raise ValueError(f"k == {self.k!r}, must be in [1, d_sae={self.d_sae}]")
        check_nonneg("auxk_alpha", self.auxk_alpha)
        if self.k_aux is not None and not (isinstance(self.k_aux, int) and 1 <= self.k_aux <= self.d_sae):
            raise ValueError(f"k_aux == {self.k_aux!r}, must be None or in [1, d_sae={self.d_sae}]")
        if not (isinstance(self.dead_window, int) and self.dead_window >= 1):
            raise ValueError(f"dead_window == {self.dead_window!r}, must be an integer >= 1 (tokens)")

    @property
    def k_aux_eff(self) -> int:
        """k_aux with the default d_in // 2 filled in (at least 1, at most d_sae)."""
        k_aux = self.d_in // 2 if self.k_aux is None else self.k_aux
        return max(1, min(k_aux, self.d_sae))


def topk_indices(pre: Tensor, k: int | Tensor) -> tuple[Tensor, Tensor]:
    """(values, indices), both (..., N, k_max): the k largest pre-activations per row, ReLU'd.

    ``k`` is an int, or for a stack (pre (S, N, d_sae)) an (S,) tensor of per-member k: then
    k_max = max k, and each member's values past its own k (in descending order) are zeroed.
    """
    if not isinstance(k, Tensor):
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        return vals.relu(), idx
    k_max = int(k.max())
    vals, idx = pre.topk(k_max, dim=-1, sorted=True)
    keep = torch.arange(k_max, device=pre.device) < k.view(-1, *([1] * (pre.ndim - 1)))
    return vals.relu() * keep, idx


def topk_relu(pre: Tensor, k: int | Tensor) -> Tensor:
    """(N, d_sae) keep the k largest pre-activations per row, ReLU them, zero the rest
    ((S, N, d_sae) with per-member k for a stack, see :func:`topk_indices`)."""
    vals, idx = topk_indices(pre, k)
    return torch.zeros_like(pre).scatter(-1, idx, vals)


def auxk_loss(pre: Tensor, residual: Tensor, W_dec: Tensor, dead: Tensor, k_aux: int) -> Tensor:
    """AuxK loss (Gao et al. 2024, §A.2, as in EleutherAI/sparsify), per-element-MSE units.

    ê = W_dec · TopK_{k_aux}(ReLU(pre restricted to dead latents)) reconstructs the
    detached residual e = x − x̂; loss = min(n_dead/k_aux, 1) · mean_tokens (1/d_in)‖e − ê‖².
    It is in the same units as the main MSE, so α weighs the two as in sparsify, where both
    are divided by the same total variance. Exactly 0 when no latent is dead.

    pre (N, d_sae) and residual (N, d_in) in training space; dead (d_sae,) bool. A stack has
    a leading member dimension S on all four and gets an (S,) loss: each member uses
    min(k_aux, its own n_dead) latents (slots past its n_dead hold −inf, which ReLU zeroes).
    """
    n_dead = dead.sum(-1)
    if not bool(n_dead.any()):
        return pre.new_zeros(dead.shape[:-1])
    k = min(k_aux, int(n_dead.max()))
    masked = pre.masked_fill(~dead.unsqueeze(-2), float("-inf"))
    vals, idx = masked.topk(k, dim=-1, sorted=False)
    z_aux = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    e_hat = z_aux @ W_dec.mT
    scale = (n_dead / k_aux).clamp(max=1.0).to(pre.dtype)
    err = (e_hat - residual.detach()).pow(2)
    return scale * (err.mean(dim=(-2, -1)) if dead.ndim > 1 else err.mean())


class TopKSAE(BaseSAE):
    """TopK SAE with optional AuxK and tied init (Gao et al. 2024).

    Implements::

        pre = W_enc (x − b_dec) + b_enc
        z   = TopK_k(ReLU(pre))                 # exactly ≤ k nonzeros per token
        x̂   = W_dec z + b_dec                   # unit-norm columns (renormalised)
        L   = (1/d_in)‖x − x̂‖² + α · AuxK       # α = auxk_alpha when cfg.auxk

    AuxK (see :func:`auxk_loss`) uses latents dead for ``dead_window`` tokens, tracked in
    the ``tokens_since_fired`` buffer by :meth:`on_step_end`. There is no penalty term:
    :meth:`canonical_penalty` returns λ1′ = λ2′ = 0 with exact=False; compare with an
    exact solver only after calibrating λ1 (e.g. to match L0).
    """

    arch = "topk"
    config_class = TopKConfig
    sparse_decode_ok = True
    cfg: TopKConfig

    def __init__(self, cfg: TopKConfig) -> None:
        super().__init__(cfg)
        if not cfg.tied_init:
            W = torch.randn(cfg.d_sae, cfg.d_in)
            self.W_enc = nn.Parameter(W / W.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def activation(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.hp("k"))

    def _encode_decode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(codes, pre_acts, x̂): the decoder reads the k (index, value) pairs directly
        (:func:`geomsae.saes.sparse.decode_topk`, no scan for nonzeros) when the sparse path
        is chosen; otherwise the dense decoder of the scattered code."""
        pre = self.pre_acts(x)
        vals, idx = topk_indices(pre, self.hp("k"))
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        k = idx.shape[-1]
        if self._sparse_path(z, topk=k):
            return z, pre, decode_topk(idx, vals, self.W_dec, self.b_dec)
        return z, pre, self.decode(z)

    def aux_loss(self, x: Tensor, out: SAEOutput) -> Tensor:
        """Scalar AuxK loss (unweighted, with graph; (S,) for a stack); zero when no latent is dead."""
        pre = out.pre_acts if self.n_stack else out.pre_acts.reshape(-1, self.cfg.d_sae)
        k_aux = self.hp("k_aux_eff")
        if isinstance(k_aux, Tensor):
            raise ValueError("the members of a TopK stack must share k_aux")
        return auxk_loss(pre, self.residual(x, out), self.W_dec * self._per_member(self.input_scale, 2),
                         self.dead_mask(self.hp("dead_window")), k_aux)

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        mse = self.mse(x, out)
        zero = mse.detach() * 0.0
        auxk = self.hp("auxk")  # a bool, or (S,) for a stack whose members differ
        if auxk is False:
            return LossOutput(mse, {"mse": mse.detach(), "sparsity": zero, "aux": zero})
        aux = self.aux_loss(x, out)
        alpha = self.hp("auxk_alpha")
        weight = alpha if auxk is True else auxk.to(mse.dtype) * alpha
        return LossOutput(mse + weight * aux, {"mse": mse.detach(), "sparsity": zero, "aux": aux.detach()})

    def canonical_penalty(self) -> CanonicalPenalty:
        return self._canonical(0.0, 0.0, None, exact=False)

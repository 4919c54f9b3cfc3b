"""What every SAE architecture shares: the output tuples, the config base and helpers.

Shared shape (docs/method.md §2)::

    pre   = W_enc (x − b_dec) + b_enc          # (B, d_sae)
    z     = act(pre)                            # (B, d_sae)
    x̂     = W_dec z + b_dec                     # (B, d_in)

``W_enc`` is (d_sae, d_in); ``W_dec`` is (d_in, d_sae) so that its *columns* are the
dictionary atoms, exactly the D of docs/method.md §1. Losses use per-element-MSE units
("SAE units")::

    L = (1/d_in) ‖x − x̂‖² + λ1 Σ_j w_j |z_j| + λ2 ‖z‖²        (mean over the batch)

and :meth:`BaseSAE.canonical_penalty` converts them to the canonical F units of docs/method.md §1
(multiply by d_in/2: λ1′ = d_in·λ1/2, λ2′ = d_in·λ2).

Input normalisation: ``input_norm="per_token"`` rescales every token to norm √d_in before
encoding and undoes it after decoding (it cannot be folded into linear weights, so it is
stored in the config); a single dataset scale *is* folded into the weights by
:func:`fold_input_scale`, so a loaded SAE always takes raw activations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from geomsae.saes.sparse import decode_sparse, sparse_wins
from geomsae.saes.terms import column_norms


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
    """The SAE's sparsity penalty written as F(z; x) of docs/method.md §1 (canonical units)."""

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


def _as_2d(x: Tensor, width: int, name: str, width_name: str = "d_in") -> Tensor:
    """Validate ``x`` (..., width) and flatten it to (N, width)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != width:
        raise ValueError(f"{name} last dimension == {tuple(x.shape)[-1:]}, must equal {width_name}={width}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x.reshape(-1, width)


class BaseSAE(nn.Module):
    """Shared parameters, encode/decode/forward, state trackers and decoder constraints.

    Subclasses set ``arch`` and ``config_class``, implement :meth:`activation` (or
    override :meth:`_encode`) and :meth:`loss`, and may extend :meth:`on_step_end`.

    Parameters: ``W_enc`` (d_sae, d_in), ``b_enc`` (d_sae,), ``W_dec`` (d_in, d_sae) whose
    columns are the atoms, ``b_dec`` (d_in,). Init (seeded by the caller's
    ``torch.manual_seed``): random unit-norm decoder columns, ``W_enc = W_decᵀ``, zero biases.

    Buffers (all state lives in ``state_dict``):

    - ``step`` (int64 scalar): optimizer steps seen by :meth:`on_step_end`;
    - ``tokens_since_fired`` (int64, d_sae): tokens since each latent was last > 0 in a
      training batch (dead-latent tracker for AuxK, resampling and logging);
    - ``input_scale`` (float scalar): the dataset scale ``s`` folded in by
      :func:`fold_input_scale` (1 when nothing was folded). The model was trained on
      ``s·x``; every loss and penalty is reported in those training units.

    Decoder constraint: when ``unit_norm_decoder`` is True the trainer's calls to
    :meth:`remove_parallel_grads_` and :meth:`normalize_decoder_` keep every column at norm
    1 in training space (``1/input_scale`` in raw space); when False both are no-ops and
    the architecture weights its penalty by the column norms instead.
    """

    arch: str = ""
    config_class: type[SAEConfig] = SAEConfig
    unit_norm_decoder: bool = True
    sparse_decode_ok: bool = False
    """True when the activation's derivative is 0 wherever z == 0 (ReLU, TopK, gated), so
    :func:`geomsae.saes.sparse.decode_sparse`, which sends no gradient to zero codes, trains
    exactly like the dense decoder. False for JumpReLU (its straight-through estimator
    reaches θ through zero codes)."""
    decoder_impl: Literal["auto", "dense", "sparse"] = "auto"
    """How :meth:`forward` decodes (set it per instance with :meth:`set_decoder_impl`):
    'dense' is ``z @ W_decᵀ``; 'sparse' uses only the nonzeros of z
    (:mod:`geomsae.saes.sparse`; TopK-type codes through their k indices); 'auto' takes the
    sparse path on CPU float32/64 when the measured cost model
    (:func:`geomsae.saes.sparse.use_sparse_decode`) predicts a win for this batch's code
    density, and the dense path otherwise (GPU included: not measured there)."""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise ValueError(
                f"cfg is a {type(cfg).__name__}, must be a {self.config_class.__name__} for arch {self.arch!r}"
            )
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        W_dec = torch.randn(d_in, d_sae)
        W_dec /= W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.t().contiguous())  # contiguous: safetensors refuses strided views
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))
        self.register_buffer("input_scale", torch.ones(()))
        self.n_stack: int | None = None
        """None for one SAE; S when :func:`geomsae.saes.stacking.stack_saes` built this module from S."""
        self.rng_states: list[Tensor] | None = None
        """Stacked only: each member's torch RNG state, swapped in by :meth:`member_rng`."""

    # ----------------------------------------------------------------- stacking
    def hp(self, name: str) -> Any:
        """Hyper-parameter ``name`` of the config: its value, or for a stack whose members
        differ in it an (S,) tensor on the parameters' device (see StackedConfig)."""
        v = getattr(self.cfg, name)
        return v.to(self.W_dec.device) if isinstance(v, Tensor) else v

    def _row(self, t: Tensor) -> Tensor:
        """A per-latent or per-input vector as a row over tokens: (S, 1, d) stacked, (d,) alone."""
        return t.unsqueeze(-2) if self.n_stack else t

    def _per_member(self, v: Any, ndim: int) -> Any:
        """A per-member value (an (S,) tensor) viewed as (S, 1, …) with ``ndim`` trailing ones;
        numbers and the 0-d buffers of a single SAE pass through."""
        if isinstance(v, Tensor) and v.ndim == 1 and self.n_stack:
            return v.view(-1, *([1] * ndim))
        return v

    def _step(self) -> int:
        """Optimizer steps taken (members of a stack move in lockstep)."""
        return int(self.step.reshape(-1)[0])

    def _token_mean(self, t: Tensor) -> Tensor:
        """Mean over tokens and features: a scalar alone, (S,) per member of a stack."""
        return t.mean(dim=(-2, -1)) if self.n_stack else t.mean()

    @contextlib.contextmanager
    def member_rng(self, i: int) -> Iterator[None]:
        """Run a block with member ``i``'s own RNG state (a stack trained by
        :func:`geomsae.train_stack.train_stack`), so each member draws what it would alone."""
        if self.rng_states is None:
            yield
            return
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng_states[i])
        try:
            yield
        finally:
            self.rng_states[i] = torch.get_rng_state()
            torch.set_rng_state(saved)

    # ----------------------------------------------------------------- decoder
    def set_decoder_impl(self, impl: str) -> BaseSAE:
        """Choose how :meth:`forward` decodes ('auto', 'dense' or 'sparse'); returns self."""
        if impl not in ("auto", "dense", "sparse"):
            raise ValueError(f"decoder impl == {impl!r}, must be 'auto', 'dense' or 'sparse'")
        if impl == "sparse" and not self.sparse_decode_ok:
            raise ValueError(f"decoder impl 'sparse' is not exact for arch {self.arch!r}: its activation "
                             "passes gradient through zero codes; use 'dense' or 'auto'")
        self.decoder_impl = impl  # type: ignore[assignment]
        return self

    def _sparse_path(self, z: Tensor, topk: int | None = None) -> bool:
        """Whether :meth:`forward` decodes ``z`` ((N, d_sae) or (S, N, d_sae)) sparsely.

        'dense', an architecture whose activation passes gradient through zero codes, or
        codes of another dtype than the decoder (bf16 under autocast) decode densely;
        'sparse' decodes sparsely; 'auto' asks :func:`geomsae.saes.sparse.sparse_wins`
        (``topk``: (index, value) pairs per row of a TopK code)."""
        impl = self.decoder_impl
        if impl == "dense" or not self.sparse_decode_ok or z.dtype != self.W_dec.dtype:
            return False  # e.g. bf16 codes under autocast against an fp32 decoder: dense
        if impl == "sparse":
            return True
        return sparse_wins(z, self.cfg.d_in, topk)

    def _decode_codes(self, z: Tensor) -> Tensor:
        """(…, N, d_in) forward's decoder: :meth:`decode` or, by :attr:`decoder_impl`, the
        sparse path (same value; same gradients for architectures with ``sparse_decode_ok``)."""
        if self._sparse_path(z):
            return decode_sparse(z, self.W_dec, self.b_dec)
        return self.decode(z)

    def _encode_decode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(codes, pre_acts, x̂) for normalised x: encode, then decode (dense or sparse)."""
        z, pre = self._encode(x)
        return z, pre, self._decode_codes(z)

    # ----------------------------------------------------------------- forward
    def _normalise(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(N, d_in) inputs in training space and the per-token factors (or None)."""
        if self.cfg.input_norm == "per_token":
            scale = per_token_scale(x)
            return x * scale, scale
        return x, None

    def pre_acts(self, x: Tensor) -> Tensor:
        """(N, d_sae) W_enc (x − b_dec) + b_enc for already-normalised x (N, d_in); stacked:
        x (N, d_in) shared or (S, N, d_in) per member → (S, N, d_sae)."""
        # b_dec's gradient through the encoder is −W_encᵀ Σ_n ∂L/∂pre_n: a matrix-vector product.
        # Centring x with a *detached* b_dec keeps autograd from computing ∂L/∂(x − b_dec), a full
        # (N, d_sae) @ (d_sae, d_in) product (a sixth of a step's FLOPs); the term v.detach() − v,
        # exactly 0 in value, routes that gradient through v = W_enc b_dec instead.
        xc = x - self._row(self.b_dec.detach())
        bias = self.b_enc
        if self.b_dec.requires_grad and torch.is_grad_enabled():
            v = (self.W_enc.detach() @ self.b_dec.unsqueeze(-1)).squeeze(-1)  # (d_sae,) or (S, d_sae)
            bias = bias + (v.detach() - v)
        if self.n_stack:  # one batched GEMM with the bias added by it (no separate pass over the codes)
            if xc.ndim == 2:
                xc = xc.expand(self.n_stack, *xc.shape)
            return torch.baddbmm(bias.unsqueeze(-2), xc, self.W_enc.mT)
        return torch.addmm(bias, xc, self.W_enc.mT)

    def activation(self, pre: Tensor) -> Tensor:
        """(N, d_sae) codes from pre-activations. Implemented by each architecture."""
        raise NotImplementedError

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(codes, pre_acts), both (N, d_sae), for normalised x (N, d_in)."""
        pre = self.pre_acts(x)
        return self.activation(pre), pre

    def encode(self, x: Tensor) -> Tensor:
        """(..., d_sae) codes z for inputs x (..., d_in) (per-token normalised first if configured)."""
        x2 = _as_2d(x, self.cfg.d_in, "input x")
        z, _ = self._encode(self._normalise(x2)[0])
        return z.reshape(*x.shape[:-1], self.cfg.d_sae)

    def decode(self, z: Tensor) -> Tensor:
        """(..., d_in) W_dec z + b_dec. With ``input_norm='per_token'`` this is the
        reconstruction in the *normalised* space (forward divides by the token's factor)."""
        if z.ndim == 0 or z.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"codes last dimension == {tuple(z.shape)[-1:]}, must equal d_sae={self.cfg.d_sae}")
        return z @ self.W_dec.mT + self._row(self.b_dec)

    def forward(self, x: Tensor) -> SAEOutput:
        """x (..., d_in) → SAEOutput(x_hat (..., d_in) in the input's space, codes, pre_acts).

        A stack takes x (N, d_in) shared by its members or (S, N, d_in), one batch each, and
        returns (S, N, ·) tensors."""
        if self.n_stack:
            return self._forward_stacked(x)
        x2 = _as_2d(x, self.cfg.d_in, "input x")
        xn, scale = self._normalise(x2)
        z, pre, x_hat = self._encode_decode(xn)
        if scale is not None:
            x_hat = x_hat / scale
        lead = x.shape[:-1]
        return SAEOutput(
            x_hat.reshape(*lead, self.cfg.d_in),
            z.reshape(*lead, self.cfg.d_sae),
            pre.reshape(*lead, self.cfg.d_sae),
        )

    def _forward_stacked(self, x: Tensor) -> SAEOutput:
        if not isinstance(x, Tensor) or x.ndim not in (2, 3) or x.shape[-1] != self.cfg.d_in or (
                x.ndim == 3 and x.shape[0] != self.n_stack):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"input x of a stack of {self.n_stack} has shape {shape}, must be "
                             f"(N, d_in={self.cfg.d_in}) or ({self.n_stack}, N, {self.cfg.d_in})")
        xn, scale = self._normalise(x)
        z, pre, x_hat = self._encode_decode(xn)
        return SAEOutput(x_hat if scale is None else x_hat / scale, z, pre)

    # -------------------------------------------------------------------- loss
    def residual(self, x: Tensor, out: SAEOutput) -> Tensor:
        """(N, d_in) x − x̂ in training space: per-token normalised and times input_scale
        ((S, N, d_in) for a stack)."""
        x2 = x if self.n_stack else x.reshape(-1, self.cfg.d_in)
        diff = x2 - (out.x_hat if self.n_stack else out.x_hat.reshape(-1, self.cfg.d_in))
        if self.cfg.input_norm == "per_token":
            diff = diff * per_token_scale(x2)
        return diff * self._per_member(self.input_scale, 2)

    def mse(self, x: Tensor, out: SAEOutput) -> Tensor:
        """Scalar (1/d_in)‖x − x̂‖² averaged over tokens, in training units ((S,) for a stack)."""
        return self._token_mean(self.residual(x, out).pow(2))

    def loss(self, x: Tensor, out: SAEOutput) -> LossOutput:
        """The training loss in SAE units (mean over tokens).

        ``parts`` holds detached scalars: 'mse' (per-element), 'sparsity' (the penalty as it
        enters the loss, λ included), 'aux' where the architecture has one (unweighted), and
        raw terms such as 'l1', 'l2', 'l0' for logging.
        """
        raise NotImplementedError

    def codes_2d(self, out: SAEOutput) -> Tensor:
        """(N, d_sae) codes ((S, N, d_sae) for a stack)."""
        return out.codes if self.n_stack else out.codes.reshape(-1, self.cfg.d_sae)

    # ----------------------------------------------------- state and decoder
    @torch.no_grad()
    def on_step_end(self, x: Tensor, out: SAEOutput) -> Tensor | None:
        """Update the state buffers after an optimizer step (call under no_grad).

        Base: ``step += 1``; ``tokens_since_fired`` += batch tokens, reset to 0 for latents
        that fired (z > 0) in ``out``. Returns None, or (for resampling architectures) a bool
        (d_sae,) mask of latents whose parameters were re-initialised.
        """
        z = self.codes_2d(out)
        fired = z.amax(dim=-2) > 0  # one reduction pass; (z > 0).any(-2) is ~10x slower on CPU
        self.tokens_since_fired += z.shape[-2]
        self.tokens_since_fired.masked_fill_(fired, 0)
        self.step += 1
        return None

    def dead_mask(self, window: Any) -> Tensor:
        """(d_sae,) bool ((S, d_sae) for a stack): latents that have not fired in the last
        ``window`` training tokens (a number, or an (S,) tensor of per-member windows)."""
        return self.tokens_since_fired >= self._per_member(window, 1)

    def decoder_norms(self) -> Tensor:
        """(d_sae,) column norms of W_dec in training space (input_scale · ‖W_dec,j‖); (S, d_sae) stacked."""
        return column_norms(self.W_dec) * self._per_member(self.input_scale, 1)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale W_dec columns to norm 1 in training space (no-op if not unit_norm_decoder)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.decoder_norms().unsqueeze(-2).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_grads_(self) -> None:
        """Project out of W_dec.grad the component parallel to each column (call before the
        optimizer step; no-op if not unit_norm_decoder or no grad)."""
        g = self.W_dec.grad
        if not self.unit_norm_decoder or g is None:
            return
        W = self.W_dec
        # g ← g − W_j (g_j·W_j)/‖W_j‖² per column j, without materialising the unit columns
        coef = torch.linalg.vecdot(g, W, dim=-2) / torch.linalg.vecdot(W, W, dim=-2).clamp_min(1e-24)
        g.addcmul_(W, coef.unsqueeze(-2), value=-1.0)

    def canonical_penalty(self) -> CanonicalPenalty:
        """The penalty in F units of docs/method.md §1 for the dictionary D = W_dec, b = b_dec as stored
        (raw space after :func:`fold_input_scale`; normalised space for input_norm='per_token')."""
        raise NotImplementedError

    def _canonical(self, lam1: float, lam2: float, weights: Tensor | None, exact: bool) -> CanonicalPenalty:
        """Convert SAE-unit λ's to F units: λ1′ = d_in·λ1/(2s²), λ2′ = d_in·λ2/s² (s = input_scale).

        Training loss on s·x is s²·(1/d_in)‖x − x̂‖² + pen(z) with x̂ in raw space; multiply
        by d_in/(2s²) to get F for raw x with the raw decoder: the minimiser z* is unchanged.
        """
        if self.n_stack:
            raise ValueError("canonical_penalty of a stack: unstack it first (geomsae.saes.stacking.unstack_sae)")
        s2 = float(self.input_scale) ** 2
        n = self.cfg.d_in
        w = None if weights is None else weights.detach().clone()
        return CanonicalPenalty(n * lam1 / (2 * s2), n * lam2 / s2, w, exact)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}"


@torch.no_grad()
def fold_input_scale(sae: BaseSAE, s: float) -> BaseSAE:
    """Fold a dataset scale into the weights, in place, and return ``sae``.

    ``sae`` was trained on x_n = s·x. Afterwards it takes raw x and returns a raw-space x̂
    with identical codes: W_enc ← s·W_enc, b_dec ← b_dec/s, W_dec ← W_dec/s (so decoder
    columns have norm 1/s); ``input_scale`` is multiplied by s, which keeps
    :meth:`BaseSAE.loss` equal to the training loss and makes
    :meth:`BaseSAE.canonical_penalty` the penalty of the raw-space problem (λ′/s²,
    relu_l1 weights s·‖W_dec,j‖), whose minimiser is the same z.
    Refused for ``input_norm='per_token'``: that SAE is already scale invariant.
    """
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        raise ValueError(f"s == {s!r}, must be a finite number > 0")
    if sae.cfg.input_norm != "none":
        raise ValueError(
            f"input_norm == {sae.cfg.input_norm!r}: a per-token normalised SAE is scale invariant, "
            "fold_input_scale needs input_norm='none'"
        )
    sae.W_enc.mul_(s)
    sae.b_dec.div_(s)
    sae.W_dec.div_(s)
    sae.input_scale.mul_(s)
    return sae

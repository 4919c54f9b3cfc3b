"""Sparse decoding: x̂ = W_dec z + b_dec computed from the nonzeros of z only.

The dense decoder of every SAE (:meth:`geomsae.saes.base.BaseSAE.decode`) is::

    x̂ = z @ W_dec.mT + b_dec[..., None, :]          # z (B, d_sae), W_dec (d_in, d_sae)

It costs O(B·d_sae·d_in) forward and twice that backward, although a TopK code has k ≪ d_sae
nonzeros per row. Here the same x̂ is a weighted sum of the active columns,
``x̂[b] = Σ_j vals[b, j] · W_dec[:, idx[b, j]] + b_dec``, computed with
``torch.nn.functional.embedding_bag(mode="sum", per_sample_weights=vals)`` on the
transposed decoder (the approach of EleutherAI/sparsify's ``decoder_impl``). Forward and
backward then cost O(nnz·d_in), plus O(d_sae·d_in) for one transposed copy of W_dec and
the zero-filled dense gradient of W_dec (which any dense parameter gradient needs).

Stacked SAEs (S independent decoders: W_dec (S, d_in, d_sae), b_dec (S, d_in), codes
(S, B, ·)) go through one embedding_bag on the flattened (S·d_sae, d_in) weight, with the
indices of SAE s offset by s·d_sae.

torch's embedding_bag backward on CPU is not dense-slow: it sorts the B·k indices and
accumulates rows, so its time grows with B·k (and with the unavoidable zero fill of the
weight gradient), and it beat a custom ``autograd.Function`` whose backward uses
``index_add_`` and gathers (``python bench/sparse_decode.py --backward-variants``), so it
is used as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class DecodeCost:
    """Measured time model, in ms, of one decoder forward + backward (grads wrt z, W_dec, b_dec).

    dense  ≈ dense_fixed + dense_per_mac · B·d_sae·d_in
    sparse ≈ sparse_fixed + sparse_per_code · B·d_sae + (sparse_per_nnz + sparse_per_nnz_dim · d_in) · nnz

    Fitted (non-negative least squares on relative error) by ``python bench/sparse_decode.py
    --fit``; the constants depend on the machine, the thread count and the BLAS.
    """

    dense_fixed: float
    """ms per call of the dense decoder (dispatch, autograd)."""
    dense_per_mac: float
    """ms per multiply-add of one of the three (B, d_sae, d_in) matmuls, times 3."""
    sparse_fixed: float
    """ms per call of :func:`decode_sparse` (about 20 small ops and their autograd nodes)."""
    sparse_per_code: float
    """ms per entry of z: the scan for nonzeros and the dense zero-filled gradient wrt z."""
    sparse_per_nnz: float
    """ms per nonzero independent of d_in (the index sort of embedding_bag's backward, gathers)."""
    sparse_per_nnz_dim: float
    """ms per nonzero and input dimension (reading and accumulating the d_in-long atom rows)."""


CPU_2_THREADS = DecodeCost(
    dense_fixed=0.124,
    dense_per_mac=4.66e-8,
    sparse_fixed=0.372,
    sparse_per_code=2.7e-6,
    sparse_per_nnz=1.04e-4,
    sparse_per_nnz_dim=2.21e-7,
)
"""torch 2.13 CPU, 2 threads, float32; see :func:`use_sparse_decode` for the measurement."""


def decode_dense(z: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """The dense reference decoder, solo or stacked.

    z (B, d_sae) with W_dec (d_in, d_sae), b_dec (d_in,) → (B, d_in); or z (S, B, d_sae)
    with W_dec (S, d_in, d_sae), b_dec (S, d_in) → (S, B, d_in). Returns
    ``z @ W_dec.mT + b_dec[..., None, :]``.
    """
    S, d_in, d_sae = _check_decoder(W_dec, b_dec)
    _check_codes("z", z, S, d_sae, W_dec)
    return z @ W_dec.mT + b_dec[..., None, :]


def decode_topk(idx: Tensor, vals: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """Decode k (index, value) pairs per row, touching only the k active columns.

    Solo: idx, vals (B, k), W_dec (d_in, d_sae), b_dec (d_in,) → (B, d_in).
    Stacked: idx, vals (S, B, k), W_dec (S, d_in, d_sae), b_dec (S, d_in) → (S, B, d_in).

    ``out[..., b, :] = Σ_j vals[..., b, j] · W_dec[..., :, idx[..., b, j]] + b_dec``, which is
    the dense decoder applied to ``z = zeros(..., d_sae).scatter_add(-1, idx, vals)``
    (repeated indices in a row add up). Gradients flow to vals, W_dec and b_dec and equal the
    dense path's (the gradient wrt vals is the dense gradient wrt z gathered at idx). k = 0
    gives b_dec. idx is int64 (int32 accepted) in [0, d_sae); vals has W_dec's dtype.
    """
    S, d_in, d_sae = _check_decoder(W_dec, b_dec)
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx dtype == {getattr(idx, 'dtype', type(idx).__name__)!r}, must be torch.int64")
    want = "(B, k)" if S == 0 else f"(S={S}, B, k)"
    ndim = 2 if S == 0 else 3
    if idx.ndim != ndim or (S and idx.shape[0] != S):
        raise ValueError(f"idx shape == {tuple(idx.shape)}, must be {want} for W_dec {tuple(W_dec.shape)}")
    _check_values("vals", vals, W_dec)
    if vals.shape != idx.shape:
        raise ValueError(f"vals shape == {tuple(vals.shape)}, must equal idx shape {tuple(idx.shape)}")
    if idx.numel() and bool(((idx < 0) | (idx >= d_sae)).any()):
        bad = idx[(idx < 0) | (idx >= d_sae)][0].item()
        raise ValueError(f"idx contains {bad!r}, must be in [0, d_sae={d_sae})")
    k = idx.shape[-1]
    rows = idx.reshape(math.prod(idx.shape[:-1]), k).long()  # (S·B or B, k)
    if S:
        rows = rows + _stack_offsets(S, idx.shape[1], d_sae, idx.device)[:, None]
    offsets = torch.arange(rows.shape[0] + 1, device=idx.device) * k
    x_hat = _bag(rows.reshape(-1), vals.reshape(-1), offsets, W_dec)
    return x_hat.reshape(*idx.shape[:-1], d_in) + b_dec[..., None, :]


def decode_sparse(z: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """Decode a mostly-zero dense code through the sparse path (ReLU-type codes only).

    Solo: z (B, d_sae), W_dec (d_in, d_sae), b_dec (d_in,) → (B, d_in).
    Stacked: z (S, B, d_sae), W_dec (S, d_in, d_sae), b_dec (S, d_in) → (S, B, d_in).

    The nonzeros of z (a variable number per row, rows with none give b_dec) are decoded
    with one embedding_bag over bag offsets. The value equals :func:`decode_dense`'s. The
    gradients wrt W_dec and b_dec equal the dense ones; the gradient wrt z equals the dense
    one at the nonzeros of z and is 0 where z == 0 (the dense gradient there is W_decᵀ·g,
    generally nonzero).

    Precondition for training: use it only when the activation's derivative is zero
    wherever z == 0, so that the dense gradient at those positions is multiplied by 0
    anyway: ReLU (torch's ReLU has derivative 0 at 0), TopK and BatchTopK (masked or
    clipped entries), gated SAEs (z = 1[gate > 0]·ReLU(mag)). NOT JumpReLU: its
    straight-through estimator sends a gradient to the threshold θ from positions with
    pre just below θ, where z == 0, and that gradient would be silently dropped.
    Finding the nonzeros scans all B·d_sae entries; see :func:`use_sparse_decode` for
    when this beats the dense decoder.
    """
    S, d_in, d_sae = _check_decoder(W_dec, b_dec)
    _check_codes("z", z, S, d_sae, W_dec)
    n_bags = z.numel() // d_sae
    flat = z.reshape(n_bags, d_sae)
    bag, col = flat.detach().nonzero(as_tuple=True)  # row-major: bags sorted, as embedding_bag needs
    offsets = torch.zeros(n_bags + 1, dtype=torch.long, device=z.device)
    offsets[1:] = torch.bincount(bag, minlength=n_bags).cumsum(0)
    rows = col if not S else col + (bag // z.shape[1]) * d_sae
    x_hat = _bag(rows, flat[bag, col], offsets, W_dec)
    return x_hat.reshape(*z.shape[:-1], d_in) + b_dec[..., None, :]


def sparse_density_max(d_in: int, d_sae: int, batch: int, cost: DecodeCost = CPU_2_THREADS) -> float:
    """The code density below which :func:`decode_sparse` is predicted to beat the dense decoder.

    Solves dense = sparse of :class:`DecodeCost` for nnz = p·batch·d_sae::

        p* = (dense_fixed + dense_per_mac·B·d_sae·d_in − sparse_fixed − sparse_per_code·B·d_sae)
             / ((sparse_per_nnz + sparse_per_nnz_dim·d_in) · B·d_sae)

    clipped to [0, 1]; 0 means the dense decoder wins at every density. With
    :data:`CPU_2_THREADS`: 0.105 at (d_in 512, d_sae 4096, batch 4096), 0 at (64, 256, 128).
    """
    for name, v in (("d_in", d_in), ("d_sae", d_sae), ("batch", batch)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
    codes = batch * d_sae
    gain = cost.dense_fixed + cost.dense_per_mac * codes * d_in - cost.sparse_fixed - cost.sparse_per_code * codes
    per_density = (cost.sparse_per_nnz + cost.sparse_per_nnz_dim * d_in) * codes
    return min(1.0, max(0.0, gain / per_density))


def topk_sparse_wins(k: int, d_in: int, d_sae: int, batch: int, cost: DecodeCost = CPU_2_THREADS) -> bool:
    """True when :func:`decode_topk` is predicted to beat the dense decoder for k codes per row.

    The model of :class:`DecodeCost` without the per-code scan (the indices are given)::

        sparse_fixed + (sparse_per_nnz + sparse_per_nnz_dim·d_in)·batch·k  <  dense_fixed + dense_per_mac·batch·d_sae·d_in

    With :data:`CPU_2_THREADS`, k 32: 29 ms against 400 ms at (d_in 512, d_sae 4096, batch
    4096), measured 37 ms against 310 ms (8.3x); 0.86 ms against 0.22 ms at (64, 256, 128),
    measured 0.73 against 0.21 (``python bench/sparse_decode.py``).
    """
    for name, v in (("k", k), ("d_in", d_in), ("d_sae", d_sae), ("batch", batch)):
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
    dense = cost.dense_fixed + cost.dense_per_mac * batch * d_sae * d_in
    sparse = cost.sparse_fixed + (cost.sparse_per_nnz + cost.sparse_per_nnz_dim * d_in) * batch * k
    return sparse < dense


def use_sparse_decode(
    density: float, d_in: int, d_sae: int, batch: int, cost: DecodeCost = CPU_2_THREADS
) -> bool:
    """True when :func:`decode_sparse` is predicted to beat the dense decoder, forward + backward.

    density = nonzeros / (batch·d_sae) of a ReLU-type code; the rule is
    ``density < sparse_density_max(d_in, d_sae, batch, cost)``. A single density threshold
    does not work: the crossover grows with the problem, because the dense matmul gets more
    efficient with size while the sparse path pays a fixed ~0.3 ms and a scan of all
    B·d_sae entries. Measured crossovers (CPU, torch 2.13, 2 threads, float32, median of 7
    repeats, decoder forward + backward wrt z, W_dec, b_dec)::

        python bench/sparse_decode.py --fit --sizes 512,4096,4096 64,256,128 64,512,256 \
            128,1024,256 128,1024,1024 256,2048,1024

    - d_in 512, d_sae 4096, batch 4096: sparse/dense 0.17 at density 0.001, 0.24 at 0.01,
      0.70 at 0.07, 1.0 at 0.1, 2.0 at 0.2: crossover ≈ 0.1 (model 0.105);
    - d_in 64, d_sae 256, batch 128: the dense decoder wins at every density (sparse/dense
      2.0 at density 0.001, 0.17 ms dense against 0.33 ms sparse): crossover 0 (model 0);
    - in between, (256, 2048, 1024): ≈ 0.055 (model 0.059); (128, 1024, 1024): ≈ 0.02
      (model 0.016); (64, 512, 256): dense always (model 0).

    The fitted model classifies all 40 measured (size, density) points correctly. For
    TopK-type codes with k per row, :func:`decode_topk` needs no scan (10x at k 32 on the
    big size) but loses to the dense decoder on the small one too.
    """
    if not (isinstance(density, (int, float)) and 0 <= density <= 1):
        raise ValueError(f"density == {density!r}, must be a number in [0, 1]")
    return density < sparse_density_max(d_in, d_sae, batch, cost)


DENSITY_ROWS = 256
"""Rows of a batch's codes counted to estimate its density (counting all of a (4096, 4096)
batch took ~37 ms, 5 % of a training step; 256 rows estimate a density of 0.1 to ±0.002)."""


def code_density(z: Tensor) -> float:
    """Fraction of nonzero entries of z (…, N, d_sae), counted on its first DENSITY_ROWS rows
    (per member of a stack)."""
    head = z.detach()[..., :DENSITY_ROWS, :]
    return int(torch.count_nonzero(head)) / max(1, head.numel())


def sparse_wins(z: Tensor, d_in: int, topk: int | None = None, cost: DecodeCost = CPU_2_THREADS) -> bool:
    """The 'auto' choice: True when the sparse path is predicted to beat the dense decoder for z.

    z (N, d_sae) or (S, N, d_sae), the batch's codes. ``topk`` (pairs per row of a TopK code,
    decoded without a scan) asks :func:`topk_sparse_wins`; otherwise the density of z is
    counted (:func:`code_density`), only when :func:`sparse_density_max` is above 0 at this
    size. Off the CPU it is False: the cost model was measured on the CPU only.
    """
    if z.device.type != "cpu" or z.numel() == 0:
        return False
    d_sae = z.shape[-1]
    batch = z.numel() // d_sae
    if topk is not None:
        return topk_sparse_wins(topk, d_in, d_sae, batch, cost)
    p_max = sparse_density_max(d_in, d_sae, batch, cost)
    return p_max > 0.0 and code_density(z) < p_max


# ------------------------------------------------------------------ helpers
def _bag(rows: Tensor, weights: Tensor, offsets: Tensor, W_dec: Tensor) -> Tensor:
    """(n_bags, d_in) Σ over each bag of weights · W_flat[rows]: rows, weights (nnz,),
    offsets (n_bags + 1,) starts of the bags plus nnz, W_dec (d_in, d_sae) or (S, d_in, d_sae)."""
    W_flat = W_dec.mT.contiguous().reshape(-1, W_dec.shape[-2])  # (S·d_sae, d_in): atoms as rows
    return F.embedding_bag(
        rows, W_flat, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True
    )


def _stack_offsets(S: int, B: int, d_sae: int, device: torch.device) -> Tensor:
    """(S·B,) s·d_sae for the rows of SAE s in a flattened (S·B, ·) batch."""
    return torch.arange(S, device=device).repeat_interleave(B) * d_sae


def _check_decoder(W_dec: Tensor, b_dec: Tensor) -> tuple[int, int, int]:
    """(S, d_in, d_sae) with S = 0 for a solo decoder; raise on bad shapes."""
    if not isinstance(W_dec, Tensor) or W_dec.ndim not in (2, 3) or not W_dec.is_floating_point():
        shape = tuple(W_dec.shape) if isinstance(W_dec, Tensor) else type(W_dec).__name__
        raise ValueError(f"W_dec shape == {shape!r}, must be a float (d_in, d_sae) or (S, d_in, d_sae) tensor")
    if not isinstance(b_dec, Tensor) or b_dec.shape != W_dec.shape[:-1]:
        shape = tuple(b_dec.shape) if isinstance(b_dec, Tensor) else type(b_dec).__name__
        raise ValueError(f"b_dec shape == {shape!r}, must be {tuple(W_dec.shape[:-1])} for W_dec {tuple(W_dec.shape)}")
    if W_dec.shape[-2] < 1 or W_dec.shape[-1] < 1:
        raise ValueError(f"W_dec shape == {tuple(W_dec.shape)}, must have d_in >= 1 and d_sae >= 1")
    S = W_dec.shape[0] if W_dec.ndim == 3 else 0
    return S, W_dec.shape[-2], W_dec.shape[-1]


def _check_values(name: str, v: Tensor, W_dec: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dtype != W_dec.dtype or v.device != W_dec.device:
        got = (v.dtype, str(v.device)) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"{name} dtype, device == {got!r}, must be W_dec's {(W_dec.dtype, str(W_dec.device))!r}")


def _check_codes(name: str, z: Tensor, S: int, d_sae: int, W_dec: Tensor) -> None:
    _check_values(name, z, W_dec)
    want = f"(B, d_sae={d_sae})" if S == 0 else f"(S={S}, B, d_sae={d_sae})"
    if z.ndim != (2 if S == 0 else 3) or z.shape[-1] != d_sae or (S and z.shape[0] != S):
        raise ValueError(f"{name} shape == {tuple(z.shape)}, must be {want}")

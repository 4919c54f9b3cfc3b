"""Sparse decoders (geomsae.saes.sparse) against the dense decoder: values and gradients.

Every check runs in float64 with ``TOL`` (rtol 1e-9, atol 1e-10: the paths differ only in
the order of the sums, ~1e-15), plus one float32 check at rtol/atol 1e-5. References are
written out here from the definition (einsum, or a loop over the active columns), not
taken from the module.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from torch import Tensor

from geomsae.saes.sparse import (
    decode_dense,
    decode_sparse,
    decode_topk,
    sparse_density_max,
    topk_sparse_wins,
    use_sparse_decode,
)
from geomsae.saes.topk import topk_relu

TOL = {"rtol": 1e-9, "atol": 1e-10}
F64 = torch.float64


def decoder(S: int, d_in: int, d_sae: int, gen: torch.Generator, dtype=F64) -> tuple[Tensor, Tensor]:
    """Leaf W_dec (d_in, d_sae) / (S, d_in, d_sae) and b_dec; S = 0 means solo."""
    lead = (S,) if S else ()
    W = torch.randn(*lead, d_in, d_sae, generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(*lead, d_in, generator=gen, dtype=dtype).requires_grad_()
    return W, b


def dense_ref(z: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """x̂[..., b, i] = Σ_j W[..., i, j] z[..., b, j] + b[..., i], written as an einsum."""
    return torch.einsum("...ij,...bj->...bi", W, z) + b.unsqueeze(-2)


def grads(out: Tensor, g: Tensor, *leaves: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(out, leaves, g, allow_unused=False)


def topk_case(S: int, d_in: int, d_sae: int, B: int, k: int, seed_: int = 0):
    gen = torch.Generator().manual_seed(seed_)
    W, b = decoder(S, d_in, d_sae, gen)
    lead = (S,) if S else ()
    idx = torch.randint(0, d_sae, (*lead, B, k), generator=gen)
    vals = torch.randn(*lead, B, k, generator=gen, dtype=F64)
    g = torch.randn(*lead, B, d_in, generator=gen, dtype=F64)
    return W, b, idx, vals, g


def check_topk_against_dense(W: Tensor, b: Tensor, idx: Tensor, vals: Tensor, g: Tensor, tol=TOL) -> None:
    """decode_topk and the dense decoder of z = scatter_add(idx, vals): values and gradients."""
    d_sae = W.shape[-1]
    v1 = vals.clone().requires_grad_()
    out = decode_topk(idx, v1, W, b)
    got = grads(out, g, v1, W, b)
    v2 = vals.clone().requires_grad_()
    z = torch.zeros(*vals.shape[:-1], d_sae, dtype=vals.dtype).scatter_add(-1, idx, v2)
    ref = dense_ref(z, W, b)
    want = grads(ref, g, v2, W, b)
    torch.testing.assert_close(out, ref, **tol)
    for name, a, e in zip(("vals", "W_dec", "b_dec"), got, want):
        torch.testing.assert_close(a, e, **tol, msg=lambda m, n=name: f"grad wrt {n}: {m}")


def check_sparse_against_dense(W: Tensor, b: Tensor, z: Tensor, g: Tensor, tol=TOL) -> None:
    """decode_sparse vs dense: same value, W/b gradients; z gradient = dense at nonzeros, 0 elsewhere."""
    z1 = z.clone().requires_grad_()
    out = decode_sparse(z1, W, b)
    gz, gW, gb = grads(out, g, z1, W, b)
    z2 = z.clone().requires_grad_()
    ref = dense_ref(z2, W, b)
    ez, eW, eb = grads(ref, g, z2, W, b)
    nz = z != 0
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(gW, eW, **tol)
    torch.testing.assert_close(gb, eb, **tol)
    torch.testing.assert_close(gz[nz], ez[nz], **tol)
    assert (gz[~nz] == 0).all()


# ------------------------------------------------------------------ decode_topk
@pytest.mark.parametrize("S", [0, 3])
@pytest.mark.parametrize("k", [1, 2, 7])
def test_decode_topk_matches_dense(S: int, k: int) -> None:
    W, b, idx, vals, g = topk_case(S, d_in=5, d_sae=11, B=6, k=k)
    row = idx[..., 0, :]  # row 0: one latent repeated k times (the values add up)
    row[...] = 4
    vals[..., 1, :] = 0.0  # row 1: no nonzeros, decodes to b_dec; grad wrt its vals still W·g
    idx[..., 2, 0] = 10  # last latent, first latent: the edges of the index range
    idx[..., 3, 0] = 0
    check_topk_against_dense(W, b, idx, vals, g)


def test_decode_topk_is_the_sum_of_active_columns() -> None:
    """The definition, term by term: out[b] = Σ_j vals[b, j] · W_dec[:, idx[b, j]] + b_dec."""
    W, b, idx, vals, _ = topk_case(0, d_in=4, d_sae=9, B=5, k=3, seed_=1)
    out = decode_topk(idx, vals, W, b)
    for r in range(5):
        want = b.detach().clone()
        for j in range(3):
            want += vals[r, j] * W.detach()[:, idx[r, j]]
        torch.testing.assert_close(out[r].detach(), want, **TOL)


def test_decode_topk_stacked_is_each_sae_alone() -> None:
    """SAE s of a stack only sees its own W_dec[s], b_dec[s] (catches wrong index offsets)."""
    W, b, idx, vals, _ = topk_case(3, d_in=4, d_sae=6, B=5, k=3, seed_=2)
    out = decode_topk(idx, vals, W, b)
    for s in range(3):
        torch.testing.assert_close(out[s], decode_topk(idx[s], vals[s], W[s], b[s]), **TOL)


@pytest.mark.parametrize("S", [0, 3])
def test_decode_topk_k0_and_empty_batch(S: int) -> None:
    W, b, idx, vals, g = topk_case(S, d_in=4, d_sae=6, B=5, k=0)
    check_topk_against_dense(W, b, idx, vals, g)
    torch.testing.assert_close(decode_topk(idx, vals, W, b), b.unsqueeze(-2).expand_as(g), **TOL)
    W, b, idx, vals, g = topk_case(S, d_in=4, d_sae=6, B=0, k=2)
    assert decode_topk(idx, vals, W, b).shape == g.shape


def test_decode_topk_float32_and_int32() -> None:
    gen = torch.Generator().manual_seed(3)
    W, b = decoder(0, 64, 256, gen, dtype=torch.float32)
    idx = torch.randint(0, 256, (32, 16), generator=gen)
    vals = torch.rand(32, 16, generator=gen)
    g = torch.randn(32, 64, generator=gen)
    check_topk_against_dense(W, b, idx, vals, g, tol={"rtol": 1e-5, "atol": 1e-5})
    torch.testing.assert_close(decode_topk(idx.int(), vals, W, b), decode_topk(idx, vals, W, b), rtol=0, atol=0)


# ---------------------------------------------------------------- decode_sparse
def relu_codes(S: int, B: int, d_sae: int, density: float, gen: torch.Generator) -> Tensor:
    lead = (S,) if S else ()
    mask = torch.rand(*lead, B, d_sae, generator=gen) < density
    return mask * torch.randn(*lead, B, d_sae, generator=gen, dtype=F64)


@pytest.mark.parametrize("S", [0, 3])
def test_decode_sparse_matches_dense(S: int) -> None:
    gen = torch.Generator().manual_seed(4)
    W, b = decoder(S, 5, 12, gen)
    z = relu_codes(S, 7, 12, 0.3, gen)
    z[..., 0, :] = 0.0  # a row with no nonzeros
    z[..., 1, :] = 0.0
    z[..., 1, 11] = 2.5  # a row whose only nonzero is the last latent
    z[..., 2, :] = 1.0 + torch.rand(z.shape[-1], generator=gen, dtype=F64)  # a fully dense row
    g = torch.randn(*z.shape[:-1], 5, generator=gen, dtype=F64)
    check_sparse_against_dense(W, b, z, g)


@pytest.mark.parametrize("S", [0, 3])
def test_decode_sparse_all_zero_and_empty(S: int) -> None:
    gen = torch.Generator().manual_seed(5)
    W, b = decoder(S, 4, 6, gen)
    lead = (S,) if S else ()
    z = torch.zeros(*lead, 3, 6, dtype=F64, requires_grad=True)
    out = decode_sparse(z, W, b)
    torch.testing.assert_close(out, b.unsqueeze(-2).expand(*lead, 3, 4), **TOL)
    gz, gW = grads(out, torch.ones_like(out), z, W)
    assert (gz == 0).all() and (gW == 0).all()
    assert decode_sparse(torch.zeros(*lead, 0, 6, dtype=F64), W, b).shape == (*lead, 0, 4)


def test_decode_sparse_stacked_uses_its_own_sae() -> None:
    gen = torch.Generator().manual_seed(6)
    W, b = decoder(3, 4, 6, gen)
    z = relu_codes(3, 5, 6, 0.4, gen)
    out = decode_sparse(z, W, b)
    for s in range(3):
        torch.testing.assert_close(out[s], dense_ref(z[s], W[s], b[s]), **TOL)


@pytest.mark.parametrize("act", ["relu", "topk"])
def test_sparse_gradient_exact_through_relu_and_topk(act: str) -> None:
    """The precondition holds: d loss/d pre through ReLU / TopK equals the dense path's."""
    gen = torch.Generator().manual_seed(7)
    W, b = decoder(0, 6, 20, gen)
    pre0 = torch.randn(9, 20, generator=gen, dtype=F64) - 1.0
    x = torch.randn(9, 6, generator=gen, dtype=F64)
    out = []
    for dec in (decode_sparse, dense_ref):
        pre = pre0.clone().requires_grad_()
        z = pre.relu() if act == "relu" else topk_relu(pre, 4)
        loss = (dec(z, W, b) - x).pow(2).sum()
        out.append((loss, *torch.autograd.grad(loss, (pre, W, b))))
    assert (pre0.relu() == 0).any()  # there are zeros whose dense z-gradient is nonzero
    for a, e in zip(*out):
        torch.testing.assert_close(a, e, **TOL)


def test_sparse_gradient_wrong_when_derivative_nonzero_at_zero() -> None:
    """The precondition matters: a straight-through activation (derivative 1/2 where z == 0,
    as JumpReLU's θ-estimator is nonzero there) loses its gradient at those positions."""
    gen = torch.Generator().manual_seed(8)
    W, b = decoder(0, 6, 20, gen)
    pre0 = torch.randn(9, 20, generator=gen, dtype=F64)
    res = []
    for dec in (decode_sparse, dense_ref):
        pre = pre0.clone().requires_grad_()
        z = pre.relu() + 0.5 * (pre - pre.detach()) * (pre0 <= 0)  # value relu(pre), slope 1/2 at zeros
        res.append(torch.autograd.grad(dec(z, W, b).pow(2).sum(), pre)[0])
    zero = pre0 <= 0
    torch.testing.assert_close(res[0][~zero], res[1][~zero], **TOL)
    assert (res[0][zero] == 0).all() and (res[1][zero].abs() > 1e-6).all()


# ------------------------------------------------------------ random shapes
@seed(20240611)
@settings(max_examples=60, deadline=None)
@given(
    S=st.sampled_from([0, 1, 3]),
    d_in=st.integers(1, 6),
    d_sae=st.integers(1, 9),
    B=st.integers(0, 5),
    k_frac=st.floats(0, 1),
    density=st.floats(0, 1),
    data_seed=st.integers(0, 2**16),
)
def test_random_shapes_match_dense(S, d_in, d_sae, B, k_frac, density, data_seed) -> None:
    k = round(k_frac * d_sae)  # 0 .. d_sae, indices drawn with repetition
    W, b, idx, vals, g = topk_case(S, d_in, d_sae, B, k, seed_=data_seed)
    check_topk_against_dense(W, b, idx, vals, g)
    z = relu_codes(S, B, d_sae, density, torch.Generator().manual_seed(data_seed))
    check_sparse_against_dense(W, b, z, g)


# ------------------------------------------------------------------ bad input
def _bad_cases():
    W, b = torch.zeros(4, 6, dtype=F64), torch.zeros(4, dtype=F64)
    Ws, bs = torch.zeros(3, 4, 6, dtype=F64), torch.zeros(3, 4, dtype=F64)
    i, v = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=F64)
    i_s, v_s = torch.zeros(3, 2, 3, dtype=torch.long), torch.zeros(3, 2, 3, dtype=F64)
    z, z_s = torch.zeros(2, 6, dtype=F64), torch.zeros(3, 2, 6, dtype=F64)
    return [
        (decode_topk, (torch.tensor([[0, 6, 1]]), v[:1], W, b), r"idx contains 6, must be in \[0, d_sae=6\)"),
        (decode_topk, (torch.tensor([[0, -1, 1]]), v[:1], W, b), r"idx contains -1"),
        (decode_topk, (i_s.clone().fill_(6), v_s, Ws, bs), r"idx contains 6"),
        (decode_topk, (i.double(), v, W, b), r"idx dtype == torch.float64"),
        (decode_topk, (i, v[:, :2], W, b), r"vals shape == \(2, 2\), must equal idx shape \(2, 3\)"),
        (decode_topk, (i, v.float(), W, b), r"vals dtype, device == \(torch.float32"),
        (decode_topk, (i, v, W, torch.zeros(6, dtype=F64)), r"b_dec shape == \(6,\), must be \(4,\)"),
        (decode_topk, (i, v, W[0], b), r"W_dec shape == \(6,\)"),
        (decode_topk, (i_s, v_s, W, b), r"idx shape == \(3, 2, 3\), must be \(B, k\)"),
        (decode_topk, (i_s[:2], v_s[:2], Ws, bs), r"idx shape == \(2, 2, 3\), must be \(S=3, B, k\)"),
        (decode_topk, (i, v, Ws, bs), r"idx shape == \(2, 3\), must be \(S=3, B, k\)"),
        (decode_sparse, (z[:, :5], W, b), r"z shape == \(2, 5\), must be \(B, d_sae=6\)"),
        (decode_sparse, (z_s[:2], Ws, bs), r"z shape == \(2, 2, 6\), must be \(S=3, B, d_sae=6\)"),
        (decode_sparse, (z, Ws, bs), r"z shape == \(2, 6\)"),
        (decode_sparse, (z.float(), W, b), r"z dtype, device == \(torch.float32"),
        (decode_dense, (z_s, W, b), r"z shape == \(3, 2, 6\)"),
        (use_sparse_decode, (1.5, 512, 4096, 4096), r"density == 1.5, must be a number in \[0, 1\]"),
        (use_sparse_decode, (0.01, 0, 4096, 4096), r"d_in == 0, must be an integer >= 1"),
        (use_sparse_decode, (0.01, 512, 4096, 4096.0), r"batch == 4096.0"),
    ]


@pytest.mark.parametrize("fn, args, match", _bad_cases())
def test_bad_input_raises(fn, args, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)


# -------------------------------------------------------------- decision rule
def test_use_sparse_decode_rule() -> None:
    big = (512, 4096, 4096)
    p = sparse_density_max(*big)
    assert 0.05 < p < 0.2  # measured crossover ≈ 0.1 at this size
    assert use_sparse_decode(0.0, *big) and use_sparse_decode(0.99 * p, *big)
    assert not use_sparse_decode(p, *big) and not use_sparse_decode(min(1.0, 2 * p), *big)
    assert sparse_density_max(64, 256, 128) == 0.0
    assert not use_sparse_decode(0.001, 64, 256, 128)  # too small: overhead wins (measured)


def test_topk_sparse_wins_rule() -> None:
    assert topk_sparse_wins(32, 512, 4096, 4096)  # measured 8.3x faster
    assert not topk_sparse_wins(32, 64, 256, 128)  # measured 3.5x slower
    assert not topk_sparse_wins(4096, 512, 4096, 4096)  # k = d_sae: all the work and more
    with pytest.raises(ValueError, match=r"k == 0, must be an integer >= 1"):
        topk_sparse_wins(0, 512, 4096, 4096)

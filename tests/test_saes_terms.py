"""The loss and norm terms of geomsae.saes.terms against their plain formulas."""

from __future__ import annotations

import torch


# ------------------------------------------------- loss terms written for speed
def test_mean_weighted_l1_and_sum_squares_equal_their_definitions() -> None:
    """The column-sum l1 and the norm-based l2 equal the plain formulas, values and gradients,
    solo and stacked; an all-zero code gives a zero (not NaN) gradient."""
    from geomsae.saes.terms import mean_weighted_l1, sum_squares

    gen = torch.Generator().manual_seed(0)
    for lead in ((), (3,)):
        z0 = torch.rand(*lead, 7, 5, generator=gen, dtype=torch.float64) * (torch.rand(*lead, 7, 5, generator=gen) > 0.5)
        w0 = torch.rand(*lead, 5, generator=gen, dtype=torch.float64) + 0.5
        got, want = [], []
        for fast, out in ((True, got), (False, want)):
            z, w = z0.clone().requires_grad_(), w0.clone().requires_grad_()
            if fast:
                v = mean_weighted_l1(z, w) + 0.3 * sum_squares(z) + mean_weighted_l1(z)
            else:
                wr = w.unsqueeze(-2)
                v = (z * wr).sum(-1).mean(-1) + 0.3 * z.pow(2).sum((-2, -1)) + z.sum(-1).mean(-1)  # z >= 0
            out.extend([v, *torch.autograd.grad(v.sum(), (z, w))])
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    z = torch.zeros(4, 5, requires_grad=True)
    sum_squares(z).backward()
    assert torch.equal(z.grad, torch.zeros(4, 5))


def test_column_norms_equal_the_norm_and_survive_a_zero_column() -> None:
    from geomsae.saes.terms import column_norms

    W = torch.randn(3, 5, 7, dtype=torch.float64)
    W[1, :, 2] = 0.0
    Wg = W.clone().requires_grad_()
    got = column_norms(Wg)
    torch.testing.assert_close(got, W.norm(dim=-2), rtol=1e-12, atol=1e-14)
    got.sum().backward()
    want = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-300)
    torch.testing.assert_close(Wg.grad, want, rtol=1e-12, atol=1e-14)
    assert torch.isfinite(Wg.grad).all() and (Wg.grad[1, :, 2] == 0).all()

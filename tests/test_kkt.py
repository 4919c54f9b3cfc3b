"""kkt_residual against hand-computed violations (it feeds the KKT rows of every compare report,
so a residual that returned zeros must fail here)."""

from __future__ import annotations

import torch

from geomsae.solvers.problem import prepare
from geomsae.solvers.objective import gap_terms, kkt_residual


def _res(Z, nonneg=True, lam2=0.0):
    # D = I (2 x 2), y = (3, 0.5), λ1 = 1: the optimum is z = (3 - 1, 0) / (1 + λ2)
    prob = prepare(torch.tensor([[3.0, 0.5]], dtype=torch.float64), torch.eye(2, dtype=torch.float64),
                   lam1=1.0, lam2=lam2, nonneg=nonneg)
    Z = torch.tensor([Z], dtype=torch.float64)
    return float(kkt_residual(Z, gap_terms(Z, prob)[2], prob)[0])


def test_kkt_residual_is_zero_at_the_closed_form_optimum():
    assert abs(_res([2.0, 0.0])) < 1e-12
    assert abs(_res([1.0, 0.0], lam2=1.0)) < 1e-12  # (3 - 1) / 2


def test_kkt_residual_measures_each_kind_of_violation():
    assert abs(_res([0.0, 0.0]) - 2.0) < 1e-12  # off support: v_1 - λ1 = 3 - 1
    assert abs(_res([1.0, 0.0]) - 1.0) < 1e-12  # on support: |(3 - 1) - 1|
    assert abs(_res([2.0, -0.5]) - 2.5) < 1e-12  # j=2: |v - λ1·sign(z)| = |1 + 1|, plus z < 0 itself: 0.5
    assert abs(_res([0.0, 0.0], nonneg=False) - 2.0) < 1e-12
    assert abs(_res([2.0, 0.0], nonneg=False)) < 1e-12

"""geomsae.metrics against hand computations, the FVU trap, and limit cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomsae import metrics as M


def _unit_cols(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=0, keepdims=True)


# --------------------------------------------------------------------------- FVU
def test_fvu_hand_computed():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])  # mean (2, 0); Σ‖x − x̄‖² = 8
    x_hat = torch.tensor([[1.0, 0.0], [2.0, 1.0], [4.0, 0.0]])  # Σ‖x − x̂‖² = 2
    assert M.fvu(x, x_hat) == pytest.approx(0.25, abs=1e-12)
    assert M.explained_variance(x, x_hat) == pytest.approx(0.75, abs=1e-12)
    assert M.fvu(x, x) == 0.0
    # predicting the mean everywhere gives exactly 1
    assert M.fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-12)


def test_fvu_accepts_numpy_and_leading_dims():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 3))
    x_hat = x + 0.1 * rng.standard_normal(x.shape)
    assert M.fvu(x, x_hat) == pytest.approx(M.fvu(x.reshape(20, 3), x_hat.reshape(20, 3)), rel=1e-12)


def test_fvu_trap_per_token_mean_differs():
    # two far tokens reconstructed with the same small error as two tokens near the mean
    x = torch.tensor([[-10.0], [10.0], [0.1], [-0.1]], dtype=torch.float64)  # mean 0; Σ‖x − x̄‖² = 200.02
    x_hat = x + 0.1  # every token has error 0.01
    assert M.fvu(x, x_hat) == pytest.approx(0.04 / 200.02, rel=1e-9)
    # per-token ratios 1e-4, 1e-4, 1, 1 -> mean 0.50005
    assert M.fvu_per_token_mean(x, x_hat) == pytest.approx(0.50005, rel=1e-9)
    assert M.fvu_per_token_mean(x, x_hat) > 1000 * M.fvu(x, x_hat)


def test_fvu_accumulator_three_batches_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    # large mean offset: the naive Σ‖x‖² − N‖x̄‖² would lose digits in float32
    x = 1000.0 + torch.randn(301, 16, generator=g)
    x_hat = x + 0.3 * torch.randn(301, 16, generator=g)
    acc = M.FVUAccumulator()
    for sl in (slice(0, 7), slice(7, 200), slice(200, 301)):
        acc.update(x[sl], x_hat[sl])
    assert acc.n_tokens == 301
    assert acc.value() == pytest.approx(M.fvu(x, x_hat), rel=1e-10)
    assert acc.explained_variance() == pytest.approx(M.explained_variance(x, x_hat), rel=1e-10)
    # and the batch-mean of per-batch FVUs is NOT the aggregate (batches of different spread)
    x2 = torch.cat([torch.randn(100, 4, generator=g) * 0.01, torch.randn(100, 4, generator=g) * 10])
    x2_hat = x2 + 0.05
    per_batch = (M.fvu(x2[:100], x2_hat[:100]) + M.fvu(x2[100:], x2_hat[100:])) / 2
    acc2 = M.FVUAccumulator()
    acc2.update(x2[:100], x2_hat[:100])
    acc2.update(x2[100:], x2_hat[100:])
    assert acc2.value() == pytest.approx(M.fvu(x2, x2_hat), rel=1e-10)
    assert per_batch > 10 * acc2.value()


def test_fvu_errors():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\) but x_hat has shape \(3, 3\)"):
        M.fvu(x, torch.zeros(3, 3))
    bad = torch.ones(3, 2)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="x_hat contains NaN or Inf"):
        M.fvu(torch.randn(3, 2), bad)
    with pytest.raises(ValueError, match="^x contains NaN or Inf"):
        M.fvu(bad * float("inf"), torch.randn(3, 2))
    with pytest.raises(ValueError, match="zero variance"):
        M.fvu(torch.ones(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="before any update"):
        M.FVUAccumulator().value()


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 20),
    d=st.integers(1, 6),
    shift=st.floats(-50, 50),
    scale=st.floats(0.1, 10),
)
def test_fvu_invariant_to_shift_and_scale(seed, n, d, shift, scale):
    # x̄ moves with x and x − x̂ is unchanged by a common shift; both sums scale by s².
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_hat = x + torch.randn(n, d, generator=g, dtype=torch.float64)
    c = shift * torch.randn(d, generator=g, dtype=torch.float64)
    base = M.fvu(x, x_hat)
    assert M.fvu(x + c, x_hat + c) == pytest.approx(base, rel=1e-7)
    assert M.fvu(scale * x, scale * x_hat) == pytest.approx(base, rel=1e-9)
    # and any split into two batches gives the aggregate
    cut = int(torch.randint(0, n + 1, (1,), generator=g))
    acc = M.FVUAccumulator()
    acc.update(x[:cut] + c, x_hat[:cut] + c)
    acc.update(x[cut:] + c, x_hat[cut:] + c)
    assert acc.value() == pytest.approx(base, rel=1e-7)


# --------------------------------------------------------------------------- firing
def test_l0_counts_dead_dense_hand_computed():
    codes = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    assert M.l0(codes) == pytest.approx(1.0)
    counts = M.firing_counts(codes)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [0, 2, 1]
    assert M.dead_fraction(counts) == pytest.approx(1 / 3)
    assert M.l0(codes) == pytest.approx(float(counts.sum()) / 3)
    freqs = torch.tensor([0.0, 0.05, 0.2, 0.5])
    assert M.dense_fraction(freqs) == pytest.approx(0.5)
    assert M.dense_fraction(freqs, threshold=0.01) == pytest.approx(0.75)
    assert M.l0(np.array([[1, 0, 0, 2]])) == 2.0


def test_firing_histogram_dead_bin_and_clipping():
    freqs = torch.tensor([0.0, 0.0, 10**-2.5, 10**-2.5, 1.0, 1e-10, 10**-0.5])
    hist, edges = M.firing_histogram(freqs, bins=8, lo=-8)
    assert hist.shape == (9,) and edges.shape == (10,)
    assert edges[0] == -math.inf and edges[1] == -8 and edges[-1] == 0
    expected = [0] * 9
    expected[0] = 2  # dead
    expected[1 + 5] = 2  # log10 = -2.5 in [-3, -2)
    expected[1 + 7] = 2  # 1.0 (right edge included) and 10**-0.5 in [-1, 0]
    expected[1 + 0] = 1  # 1e-10 clipped into the first finite bin
    assert hist.tolist() == expected
    assert int(hist.sum()) == freqs.numel()
    with pytest.raises(ValueError, match=r"freqs must lie in \[0, 1\]"):
        M.firing_histogram(torch.tensor([3.0]))


def test_firing_tracker_windows():
    d_sae, N = 3, 256
    codes = torch.zeros(N, d_sae)
    codes[150, 0] = 1.0  # first fires at token 150: dead at 100, alive at 200
    codes[0, 1] = 2.0
    codes[200:, 1] = 1.0
    # latent 2 never fires
    for bs in (64, 300, 1):
        tr = M.FiringTracker(d_sae, windows=(100, 200, 10_000))
        for i in range(0, N, bs):
            tr.update(codes[i : i + bs])
        assert tr.n_tokens == N
        assert tr.dead_fraction(100) == pytest.approx(2 / 3)
        assert tr.dead_fraction(150) == pytest.approx(2 / 3)
        assert tr.dead_fraction(151) == pytest.approx(1 / 3)
        assert tr.dead_fractions() == pytest.approx({100: 2 / 3, 200: 1 / 3, 256: 1 / 3})
        assert tr.counts.tolist() == [1, 57, 0]
        assert tr.firing_frequencies().tolist() == pytest.approx([1 / 256, 57 / 256, 0.0])
    with pytest.raises(ValueError, match=r"n == 300, must be in \[1, tokens seen=256\]"):
        tr.dead_fraction(300)
    with pytest.raises(ValueError, match=r"expected \(B, d_sae=3\)"):
        tr.update(torch.zeros(2, 4))


# --------------------------------------------------------------------------- shrinkage
def test_l2_ratio_and_bias_hand_computed():
    x = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    x_hat = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert M.l2_ratio(x, x_hat) == pytest.approx((3 / 5 + 1 / 2) / 2)
    # γ = Σ⟨x̂, x⟩ / Σ‖x̂‖² = (9 + 2) / (9 + 1)
    assert M.relative_reconstruction_bias(x, x_hat) == pytest.approx(1.1)


@pytest.mark.parametrize("c", [0.5, 0.8, 1.0, 1.7])
def test_scaled_reconstruction(c):
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert M.l2_ratio(x, c * x) == pytest.approx(c, rel=1e-9)
    assert M.relative_reconstruction_bias(x, c * x) == pytest.approx(1 / c, rel=1e-9)


def test_shrinkage_errors():
    with pytest.raises(ValueError, match="zero-norm rows"):
        M.l2_ratio(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="identically zero"):
        M.relative_reconstruction_bias(torch.ones(2, 3), torch.zeros(2, 3))


# --------------------------------------------------------------------------- ground truth
def test_ground_truth_hand_computed():
    D_true = np.eye(2)
    D_learned = np.array([[2.0, 1.0], [0.0, 1.0]])  # columns (1, 0) and (1, 1)/√2 after normalising
    C = M.cosine_matrix(D_true, D_learned)
    r = 1 / math.sqrt(2)
    assert C.numpy() == pytest.approx(np.array([[1.0, r], [0.0, r]]))
    assert M.mmcs(D_true, D_learned) == pytest.approx((1 + r) / 2)
    assert M.recovery_rate(D_true, D_learned) == pytest.approx(0.5)
    assert M.recovery_rate(D_true, D_learned, threshold=0.7) == pytest.approx(1.0)
    m = M.hungarian_match(D_true, D_learned)
    assert m.true_idx.tolist() == [0, 1] and m.learned_idx.tolist() == [0, 1]
    assert m.cos.tolist() == pytest.approx([1.0, r])
    assert M.mmcs_1to1(D_true, D_learned) == pytest.approx((1 + r) / 2)


def test_permuted_and_sign_flipped_copy():
    rng = np.random.default_rng(0)
    D = _unit_cols(rng.standard_normal((32, 48)))
    perm = rng.permutation(48)
    signs = np.where(np.arange(48) % 2 == 0, 1.0, -1.0)
    D_perm = D[:, perm] * 3.0  # column scale must not matter
    assert M.mmcs(D, D_perm) == pytest.approx(1.0)
    assert M.mmcs_1to1(D, D_perm) == pytest.approx(1.0)
    m = M.hungarian_match(D, D_perm)
    assert (perm[m.learned_idx.numpy()] == m.true_idx.numpy()).all()
    D_flip = D_perm * signs
    assert M.mmcs_1to1(D, D_flip) == pytest.approx(1.0)
    assert M.mmcs(D, D_flip, abs=True) == pytest.approx(1.0)
    assert M.mmcs(D, D_flip) < 0.8
    assert M.recovery_rate(D, D_flip) == pytest.approx(0.5)


def test_recovery_rate_half_replaced():
    rng = np.random.default_rng(1)
    D = _unit_cols(rng.standard_normal((64, 200)))
    D_l = D.copy()
    D_l[:, 100:] = _unit_cols(rng.standard_normal((64, 100)))
    rr = M.recovery_rate(D, D_l)
    assert rr == pytest.approx(0.5, abs=0.02)
    assert M.mmcs(D, D_l) < 0.8
    # mmcs_1to1 with fewer learned atoms: averaged over the min(n_true, n_learned) matched pairs
    assert M.mmcs_1to1(D, D[:, :50]) == pytest.approx(1.0)
    assert len(M.hungarian_match(D, D[:, :50]).true_idx) == 50


def test_ground_truth_errors():
    with pytest.raises(ValueError, match=r"D_true has shape \(3, 4\) and D_learned has shape \(5, 4\)"):
        M.cosine_matrix(np.ones((3, 4)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="D_learned has zero-norm columns"):
        M.mmcs(np.eye(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="D_true contains NaN"):
        M.mmcs_1to1(np.full((3, 3), np.nan), np.eye(3))


def test_support_prf_hand_computed():
    z_true = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    z_learned = torch.tensor([[0.0, 9.0, 1.0], [1.0, 9.0, 1.0], [1.0, 9.0, 0.0], [1.0, 9.0, 1.0]])
    match = (torch.tensor([0, 1]), torch.tensor([2, 0]))  # latent 1 (always on) is unmatched: ignored
    # pair (0, 2): S_true {0, 1}, S_learned {0, 1, 3}: ∩ 2
    # pair (1, 0): S_true {1, 2}, S_learned {1, 2, 3}: ∩ 2
    out = M.support_prf(z_true, z_learned, match)
    assert out["precision"] == pytest.approx(4 / 6)
    assert out["recall"] == pytest.approx(4 / 4)
    assert out["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert M.support_prf(z_true, z_learned, match, tol=0.5)["precision"] == pytest.approx(4 / 6)
    assert M.support_prf(z_true, torch.zeros(4, 3), match) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match=r"z_true has shape \(4, 2\) and z_learned has shape \(3, 3\)"):
        M.support_prf(z_true, z_learned[:3], match)
    with pytest.raises(ValueError, match=r"learned indices must lie in \[0, 3\)"):
        M.support_prf(z_true, z_learned, (torch.tensor([0]), torch.tensor([3])))


def test_support_prf_with_hungarian_match_identity():
    rng = np.random.default_rng(2)
    D = _unit_cols(rng.standard_normal((16, 24)))
    perm = rng.permutation(24)
    z = (rng.random((100, 24)) < 0.2) * rng.random((100, 24))
    m = M.hungarian_match(D, D[:, perm])
    out = M.support_prf(z, z[:, perm], m)
    assert out == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0})

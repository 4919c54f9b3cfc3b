"""Issue 12 measurements (docs/method.md §3): the folded firing rule, near-starvation, collapse,
the MCC on activations, the one-to-one MMCS and their spike-only chance levels — each against a
hand computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from geomsae import metrics as M
from geomsae.evaluate import evaluate
from geomsae.saes import make


def test_fires_hand_computed():
    codes = torch.tensor([[2.0, 0.5], [0.0, 1.0], [3.0, -1.0]])
    norms = torch.tensor([1e-3, 1.0])
    # contributions z·‖d‖: [[2e-3, 0.5], [0, 1], [3e-3, −1]] against 1e-3·rms = 2e-3 (rms 2)
    got = M.fires(codes, norms, rms=2.0)
    assert got.tolist() == [[False, True], [False, True], [True, False]]
    assert M.fires(codes, norms, rms=2.0, rel=0.0).tolist() == [[True, True], [False, True], [True, False]]
    with pytest.raises(ValueError, match=r"rms == 0.0, must be a finite number > 0"):
        M.fires(codes, norms, rms=0.0)
    with pytest.raises(ValueError, match="decoder_norms has 3 entries but codes has d_sae == 2"):
        M.fires(codes, torch.ones(3), rms=1.0)
    with pytest.raises(ValueError, match="decoder_norms contains NaN"):
        M.fires(codes, torch.tensor([1.0, math.nan]), rms=1.0)


def test_rms_norm_hand_computed():
    assert M.rms_norm([[1.0, 0.0], [-1.0, 0.0]]) == pytest.approx(1.0)
    # mean (1, 1); deviations (−1, −1), (1, 1): squared norms 2 and 2 -> rms √2 (uncentred would be 2)
    assert M.rms_norm([[0.0, 0.0], [2.0, 2.0]]) == pytest.approx(math.sqrt(2))
    acc = M.FVUAccumulator()
    acc.update(torch.tensor([[0.0, 0.0]]), torch.zeros(1, 2))
    acc.update(torch.tensor([[2.0, 2.0]]), torch.zeros(1, 2))
    assert acc.rms() == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="zero spread"):
        M.rms_norm([[1.0, 2.0], [1.0, 2.0]])


def test_rare_fraction_and_collapse():
    f = torch.tensor([0.0, 5e-6, 5e-5, 2e-4, 0.5])
    assert M.rare_fraction(f, 1e-4) == pytest.approx(3 / 5)
    assert M.rare_fraction(f, 1e-5) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match=r"threshold == 0.0, must be in \(0, 1\]"):
        M.rare_fraction(f, 0.0)
    assert M.is_collapsed(0.95, 3.0) and M.is_collapsed(0.2, 0.49)
    assert not M.is_collapsed(0.94, 0.5)
    with pytest.raises(ValueError, match="fvu == nan, must be finite"):
        M.is_collapsed(math.nan, 3.0)


def test_correlation_and_mcc_hand_computed():
    zt = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    zl = np.array([[0.0, 2.0, 5.0], [1.0, 0.0, 5.0], [0.0, 2.0, 5.0], [1.0, 0.0, 5.0]])
    C = M.correlation_matrix(zt, zl)
    ref = np.corrcoef(zt.T, zl[:, :2].T)[:2, 2:]
    assert C[:, :2].numpy() == pytest.approx(ref)
    assert C[:, 2].tolist() == [0.0, 0.0]  # a constant learned latent correlates with nothing
    # |C| = [[1, 1, 0], [1/√3, 1/√3, 0]]: any one-to-one matching of the two true latents scores (1 + 1/√3)/2
    best = max(sum(abs(C[i, j]) for i, j in zip(range(2), p)) / 2 for p in itertools.permutations(range(3), 2))
    assert M.mcc(C) == pytest.approx(float(best)) and M.mcc(C) == pytest.approx((1 + 1 / math.sqrt(3)) / 2)
    # one-to-one: both true latents prefer learned latent 0, but only one may have it
    assert M.mcc(torch.tensor([[0.9, 0.1], [-0.8, 0.7]])) == pytest.approx((0.9 + 0.7) / 2)  # not (0.9 + 0.8)/2
    assert M.mcc(torch.tensor([[0.9], [0.8]])) == pytest.approx(0.9)  # P = min(n_true, d_sae) = 1 pair
    # streaming equals one shot
    acc = M.CorrelationAccumulator()
    acc.update(zt[:3], zl[:3])
    acc.update(zt[3:], zl[3:])
    assert acc.value().numpy() == pytest.approx(C.numpy())


def test_mcc_permuted_scaled_codes_is_one_and_independent_is_low():
    rng = np.random.default_rng(0)
    z = (rng.random((2000, 20)) < 0.2) * rng.uniform(1, 3, (2000, 20))
    perm = rng.permutation(20)
    assert M.mcc(M.correlation_matrix(z, 3.0 * z[:, perm])) == pytest.approx(1.0)
    other = (rng.random((2000, 20)) < 0.2) * rng.uniform(1, 3, (2000, 20))
    assert M.mcc(M.correlation_matrix(z, other)) < 0.1


def test_spike_only_dictionary_and_chance_correction():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(32)
    v /= np.linalg.norm(v)
    U = rng.standard_normal((32, 40))
    D = np.sqrt(0.1) * U / np.linalg.norm(U, axis=0) + np.sqrt(0.9) * v[:, None]
    D /= np.linalg.norm(D, axis=0)
    A = M.spike_only_dictionary(D, 40, seed=0).numpy()
    assert A.shape == (32, 40) and np.linalg.norm(A, axis=0) == pytest.approx(np.ones(40))
    mean = D.mean(1) / np.linalg.norm(D.mean(1))
    c = float((D.T @ mean).mean())
    assert A[:, 0] == pytest.approx(mean)
    assert A[:, 1:].T @ mean == pytest.approx(np.full(39, c))
    # the spike alone scores high at ρ = 0.9: the chance level is far from 0
    assert M.mmcs_1to1(D, A) > 0.8
    assert M.chance_corrected(0.5, 0.5) == 0.0 and M.chance_corrected(1.0, 0.3) == pytest.approx(1.0)
    assert M.chance_corrected(0.65, 0.3) == pytest.approx(0.5)
    assert math.isnan(M.chance_corrected(1.0, 1.0))


def _sae(d: int, arch: str = "relu_l1"):
    sae = make(arch, d, d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_collapsed_relu_l1_counts_dead_by_the_folded_rule():
    rng = np.random.default_rng(2)
    x = (np.abs(rng.standard_normal((512, 8))) + 0.1).astype(np.float32)  # every code well above the threshold
    healthy = _sae(8)
    ev = evaluate(healthy, x, windows=(256,))
    assert ev.dead_fraction == 0.0 and ev.dead_fraction_raw == 0.0 and not ev.collapsed
    assert ev.l0 == pytest.approx(ev.l0_raw)
    # relu_l1 collapse: codes fire (z > 0) but every decoder column has shrunk to ~1e-5, so x̂ ≈ b_dec
    ghost = _sae(8)
    with torch.no_grad():
        ghost.W_dec.mul_(1e-5)
    ev = evaluate(ghost, x, windows=(256,))
    assert ev.dead_fraction_raw == 0.0 and ev.l0_raw == pytest.approx(8.0)  # alive by z > 0
    assert ev.dead_fraction == 1.0 and ev.l0 == 0.0  # dead by z‖d‖ > 1e-3 · RMS(x)
    assert ev.collapsed and ev.fvu > 0.95
    assert ev.rms == pytest.approx(M.rms_norm(x), rel=1e-6)
    assert math.isnan(ev.rare_fraction_1e4)  # 512 tokens cannot resolve a 1e-4 frequency


def test_evaluate_mcc_and_chance_on_a_perfect_sae():
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    z = (rng.random((4000, 16)) < 0.25) * rng.uniform(1, 3, (4000, 16))
    z[:, 0] = rng.uniform(1, 3, 4000)  # no all-zero token (the l2 ratio needs ‖x‖ > 0)
    x = (z @ Q.T).astype(np.float32)
    sae = _sae(16, "en")
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(Q.T, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(Q, dtype=torch.float32))
    ev = evaluate(sae, x, true_dict=Q, true_codes=z, windows=(1000,))
    assert ev.mcc == pytest.approx(1.0, abs=1e-5) and ev.mmcs_1to1 == pytest.approx(1.0, abs=1e-6)
    assert ev.fvu == pytest.approx(0.0, abs=1e-6)
    A = M.spike_only_dictionary(Q, 16, seed=0)
    assert ev.mmcs_1to1_chance == pytest.approx(M.mmcs_1to1(Q, A))
    assert ev.recovery_chance == pytest.approx(M.recovery_rate(Q, A))
    zc = torch.relu((torch.as_tensor(x, dtype=torch.float64) - torch.as_tensor(x, dtype=torch.float64).mean(0)) @ A)
    assert ev.mcc_chance == pytest.approx(M.mcc(M.correlation_matrix(z, zc)), abs=1e-9)
    assert ev.mcc_chance < 0.9
    with pytest.raises(ValueError, match="true_codes needs true_dict"):
        evaluate(sae, x, true_codes=z)

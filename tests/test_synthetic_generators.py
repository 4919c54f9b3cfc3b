"""synthetic.generators: shapes, exact sparsity, geometry, hierarchy, seeds, round trip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from synthetic import (
    load_synthetic,
    save_npy_pair,
    sharkey,
    spike_diagnostics,
    spiked,
    zipf_hierarchy,
)

SMALL = dict(n=64, m=256, n_samples=3000)


def _check_common(d, n, m, N):
    assert d.activations.shape == (N, n) and d.activations.dtype == np.float32
    assert d.dictionary.shape == (n, m) and d.dictionary.dtype == np.float64
    assert d.codes.shape == (N, m) and d.codes.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d.dictionary, axis=0), 1.0, atol=1e-12)
    # x = D z exactly (no noise) up to float32 rounding
    x = d.codes.toarray().astype(np.float64) @ d.dictionary.T
    np.testing.assert_allclose(d.activations, x, rtol=0, atol=1e-4 * max(1.0, np.abs(x).max()))
    assert (d.codes.data > 0).all()  # non-negative, and stored entries are the support


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_spiked_shapes_sparsity_norms(rho):
    d = spiked(k=8, rho=rho, **SMALL)
    _check_common(d, 64, 256, 3000)
    assert (np.diff(d.codes.indptr) == 8).all()  # exactly k per row
    dense = d.codes.toarray()
    assert ((dense != 0).sum(1) == 8).all()
    assert dense[dense != 0].min() >= 1.0 and dense.max() <= 3.0
    # supports uniform: every feature fires at rate k/m = 1/32 (binomial sd ≈ 9.6 of 94)
    counts = (dense != 0).sum(0)
    assert abs(counts.mean() - 3000 * 8 / 256) < 1e-9
    assert counts.min() > 50 and counts.max() < 140


@pytest.mark.parametrize("m, k", [(6, 2), (5, 3)])  # rejection branch, argpartition branch
def test_spiked_supports_uniform_over_subsets(m, k):
    from itertools import combinations

    from synthetic.generators import _uniform_subsets

    rows = _uniform_subsets(np.random.default_rng(0), 30_000, m, k)
    assert (np.diff(rows, axis=1) > 0).all()
    subsets = list(combinations(range(m), k))
    counts = np.array([np.all(rows == np.array(c), axis=1).sum() for c in subsets])
    expected = 30_000 / len(subsets)  # 2000 or 3000, sd ≈ √expected ≤ 55
    assert counts.sum() == 30_000
    np.testing.assert_allclose(counts, expected, rtol=0.1)


@pytest.mark.parametrize("orthogonal_u", [False, True])
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5, 0.7, 0.9])
def test_spiked_coherence(rho, orthogonal_u):
    D = spiked(n=256, m=1024, rho=rho, n_samples=1, orthogonal_u=orthogonal_u).dictionary
    G = D.T @ D
    off = G[~np.eye(1024, dtype=bool)]
    # mean: ρ + (1−ρ)·mean⟨u_i, u_j⟩, whose sd is ≈ √(2/(n m²)) ≈ 1e-4
    assert off.mean() == pytest.approx(rho, abs=2e-3)
    if orthogonal_u:
        # spread of individual cosines: (1−ρ)/√(n−1) (the u_j ⟂ v construction only;
        # without it the atoms' varying alignment with v widens the spread)
        assert off.std() == pytest.approx((1 - rho) / np.sqrt(255), rel=0.05)
    diag = spike_diagnostics(D, 16, rho, n_supports=5)
    assert diag.mean_coherence == pytest.approx(off.mean(), abs=1e-12)


# docs/method.md §5 reference, n 256, m 1024, k 16: cond(G_SS) and ‖G_{AᶜA} G_AA⁻¹ 1‖∞ by ρ.
SPEC5 = {0.0: (2.3, 0.87), 0.3: (12.6, 1.09), 0.5: (27.2, 1.05), 0.7: (61.2, 1.02), 0.9: (230.0, 1.003)}


@pytest.mark.parametrize("rho", sorted(SPEC5))
def test_spike_diagnostics_against_spec5(rho):
    cond_ref, irr_ref = SPEC5[rho]
    authors = spike_diagnostics(spiked(rho=rho, n_samples=1).dictionary, 16, rho, n_supports=30)  # default = docs/method.md §4 literal
    ours = spike_diagnostics(spiked(rho=rho, n_samples=1, orthogonal_u=True).dictionary, 16, rho, n_supports=30)
    # The "active-block condition number" of docs/method.md §5 is cond(G_SS) = cond(D_S)², for both constructions
    for diag in (authors, ours):
        assert diag.cond_gram == pytest.approx(cond_ref, rel=0.1)
        assert diag.cond_gram == pytest.approx(diag.cond_DS**2, rel=0.2)
    # the irrepresentable score matches docs/method.md §5 only for the non-orthogonalised spike ...
    assert authors.irrepresentable == pytest.approx(irr_ref, abs=0.04)
    # ... while u_j ⟂ v keeps it below 1 (lasso support recovery possible) and near theory
    assert ours.irrepresentable < 1.0
    assert ours.irrepresentable >= ours.irrepresentable_theory
    if rho >= 0.5:
        assert ours.irrepresentable == pytest.approx(ours.irrepresentable_theory, abs=0.06)


def test_spiked_noise_and_seeds():
    a, b = spiked(seed=3, **SMALL), spiked(seed=3, **SMALL)
    np.testing.assert_array_equal(a.activations, b.activations)
    np.testing.assert_array_equal(a.dictionary, b.dictionary)
    assert (a.codes != b.codes).nnz == 0
    c = spiked(seed=4, **SMALL)
    assert not np.allclose(a.dictionary, c.dictionary)
    assert (a.codes != c.codes).nnz > 0
    noisy = spiked(seed=3, noise=0.1, **SMALL)
    np.testing.assert_array_equal(noisy.dictionary, a.dictionary)  # noise is drawn last
    assert (noisy.codes != a.codes).nnz == 0
    assert np.std(noisy.activations - a.activations) == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("gen", [spiked, sharkey, zipf_hierarchy])
def test_every_generator_reproducible(gen):
    kw = dict(n=32, m=128, n_samples=500)
    if gen is zipf_hierarchy:
        kw.update(n_parents=8, children_per_parent=3, base_l0=6)
    a, b, c = gen(seed=7, **kw), gen(seed=7, **kw), gen(seed=8, **kw)
    np.testing.assert_array_equal(a.activations, b.activations)
    assert (a.codes != b.codes).nnz == 0
    assert not np.array_equal(a.activations, c.activations)
    assert a.config == b.config and a.config["seed"] == 7


@pytest.mark.parametrize(
    "gen, kwargs, match",
    [
        (spiked, dict(k=300, m=256), r"k == 300, must be in \[1, 256\]"),
        (spiked, dict(rho=1.0), r"rho == 1.0, must be in \[0.0, 1.0\)"),
        (spiked, dict(rho=-0.1), r"rho == -0.1"),
        (spiked, dict(n_samples=0), r"n_samples == 0, must be in \[1, inf\]"),
        (spiked, dict(mag_low=0.0), r"mag_low == 0.0, must be in \(0.0, 3.0\]"),
        (spiked, dict(noise=-1.0), r"noise == -1.0"),
        (sharkey, dict(avg_active=600, m=512), r"avg_active == 600, must be in \(0.0, 512\)"),
        (sharkey, dict(decay=1.5), r"decay == 1.5, must be in \(0.0, 1.0\]"),
        (zipf_hierarchy, dict(n_parents=300, children_per_parent=4), r"n_parents == 300, must be in \[0, 204\]"),
        (zipf_hierarchy, dict(base_l0=2000.0), r"base_l0 == 2000.0, must be in \(0.0, "),
        (zipf_hierarchy, dict(child_fire_prob=1.5), r"child_fire_prob == 1.5"),
    ],
)
def test_argument_validation(gen, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gen(**kwargs)


def test_sharkey_rates_and_correlation():
    d = sharkey(n=64, m=128, n_samples=20_000, avg_active=5, decay=0.97, corr_rank=4, corr_strength=0.6)
    _check_common(d, 64, 128, 20_000)
    p = d.aux["firing_prob"]
    assert p.sum() == pytest.approx(5.0, rel=1e-9)
    assert (np.diff(p) <= 0).all()
    on = d.codes.toarray() != 0
    assert on.sum(1).mean() == pytest.approx(5.0, rel=0.03)
    freq = on.mean(0)
    # marginal rates match p: binomial sd √(p(1−p)/N) ≤ 0.0036
    np.testing.assert_allclose(freq, p, atol=0.015)
    # the copula induces correlated firing (independent features would give ≈ 0)
    top = on[:, :20].astype(float)
    cc = np.corrcoef(top, rowvar=False)[~np.eye(20, dtype=bool)]
    assert np.abs(cc).mean() > 0.05
    ind = sharkey(n=64, m=128, n_samples=20_000, decay=0.97, corr_rank=0).codes.toarray()[:, :20] != 0
    assert np.abs(np.corrcoef(ind.astype(float), rowvar=False)[~np.eye(20, dtype=bool)]).mean() < 0.02
    assert 0 < d.codes.data.min() and d.codes.data.max() <= 1.0


def test_zipf_hierarchy_structure():
    n_par, c = 16, 4
    d = zipf_hierarchy(n=64, m=512, n_samples=20_000, base_l0=12, n_parents=n_par, children_per_parent=c,
                       child_fire_prob=0.8, seed=1)
    _check_common(d, 64, 512, 20_000)
    R = 512 - n_par * c
    parent_of = d.aux["parent_of"]
    assert (parent_of[:R] == -1).all() and (parent_of[R:] == np.repeat(np.arange(n_par), c)).all()
    on = d.codes.toarray() != 0
    assert on.sum(1).mean() == pytest.approx(12, rel=0.03)
    assert d.aux["firing_prob"].sum() == pytest.approx(12, rel=1e-9)
    fired_any_child = False
    for q in range(n_par):
        kids = on[:, R + q * c : R + (q + 1) * c]
        assert (kids.sum(1) <= 1).all()  # siblings mutually exclusive
        assert not (kids.any(1) & ~on[:, q]).any()  # child active ⇒ parent active
        fired_any_child |= bool(kids.any())
        # given the parent fires, some child fires with probability child_fire_prob
        if on[:, q].sum() > 500:
            assert kids[on[:, q]].any(1).mean() == pytest.approx(0.8, abs=0.06)
    assert fired_any_child
    # Zipf: root rates decrease with rank, ∝ (r + 1)^-1 where not clipped at 1
    p = d.aux["firing_prob"][:R]
    assert (np.diff(p) <= 0).all()
    assert p[9] / p[99] == pytest.approx(10.0, rel=1e-9)
    freq = on[:, :R].mean(0)
    assert spearmanr(np.arange(R), freq).statistic < -0.9
    assert freq[:10].mean() > freq[100:200].mean() > freq[300:].mean()
    np.testing.assert_allclose(on.mean(0), d.aux["firing_prob"], atol=0.015)


def test_zipf_without_hierarchy():
    d = zipf_hierarchy(n=32, m=128, n_samples=500, base_l0=4, n_parents=0, children_per_parent=0, corr_rank=0)
    assert (d.aux["parent_of"] == -1).all()
    assert (np.diff(d.aux["firing_prob"]) <= 0).all()


@pytest.mark.parametrize("gen", [spiked, zipf_hierarchy])
def test_npy_pair_round_trip(tmp_path, gen):
    kw = dict(n_parents=8, children_per_parent=3, base_l0=6) if gen is zipf_hierarchy else {}
    d = gen(n=32, m=128, n_samples=400, seed=2, **kw)
    acts_path, dict_path = save_npy_pair(d, tmp_path / "out")
    assert acts_path.name == "activations.npy" and dict_path.name == "dictionary.npy"
    x, D = np.load(acts_path), np.load(dict_path)
    assert x.dtype == np.float32 and x.shape == (400, 32)
    assert D.shape == (32, 128)
    np.testing.assert_array_equal(x, d.activations)
    np.testing.assert_array_equal(D, d.dictionary)
    back = load_synthetic(tmp_path / "out")
    assert (back.codes != d.codes).nnz == 0 and back.codes.shape == d.codes.shape
    assert back.config == d.config
    assert set(back.aux) == set(d.aux)
    for key in d.aux:
        np.testing.assert_array_equal(back.aux[key], d.aux[key])


def test_cli_writes_the_pair_that_train_and_eval_read(tmp_path, capsys):
    from geomsae.cli import main as geomsae_main
    from synthetic.__main__ import main

    assert main(["spiked", "--rho", "0.5", "--n", "16", "--m", "32", "--k", "2", "--n-samples", "1024",
                 "--out", str(tmp_path / "d")]) == 0
    X, D = np.load(tmp_path / "d" / "activations.npy"), np.load(tmp_path / "d" / "dictionary.npy")
    assert X.shape == (1024, 16) and D.shape == (16, 32)
    np.testing.assert_allclose(np.linalg.norm(D, axis=0), 1.0, rtol=1e-12)
    assert main(["spiked", "--rho", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "rho == 1.5, must be in [0.0, 1.0)" in capsys.readouterr().err
    run = tmp_path / "run"
    assert geomsae_main(["train", "--arch", "topk", "--k", "2", "--data", str(tmp_path / "d" / "activations.npy"),
                         "--d-sae", "32", "--steps", "30", "--batch-size", "64", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert geomsae_main(["eval", str(run), "--data", str(tmp_path / "d" / "activations.npy"),
                         "--true-dict", str(tmp_path / "d" / "dictionary.npy"), "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert {"fvu", "l0", "dead_fraction", "dense_fraction", "l2_ratio", "rel_bias", "mmcs", "recovery_rate",
            "mmcs_1to1"} <= set(doc)

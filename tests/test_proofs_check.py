"""proofs_check: every statement's bound holds on sampled dictionaries, λ's and inputs, and
every check reports ``holds=False`` on a deliberately broken input (a check that cannot
fail is a defect).

Tolerances: bound checks compare measured − certified error bar ≤ bound·(1 + 1e-9)
(proofs_check._common.RTOL); identities use the module constants FD_TOL = 1e-6 (finite
differences), LOCAL_TOL = 1e-6 (ratio inside a piece), 1e-9 (‖J‖₂ identity), 1e-10
(noiseless witness formula against the general one); counts (flips, PDW mismatches) must be 0.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs_check import jacobian as J
from proofs_check import lasso_instability as LI
from proofs_check import lipschitz as L
from proofs_check import support_recovery as SR
from proofs_check._common import Config, equicorrelated, exact, single_thread, upper, verdict
from synthetic import spiked, spiked_dictionary

SET = settings(derandomize=True, max_examples=5, deadline=None)
RHOS = st.sampled_from([0.0, 0.5, 0.9, 0.99])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def planted(rng: np.random.Generator, D: np.ndarray, B: int, k: int, signed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(X, Z) with k active features per row, magnitudes U[1, 3] (random signs if ``signed``)."""
    m = D.shape[1]
    Z = np.zeros((B, m))
    for i in range(B):
        Z[i, rng.choice(m, k, replace=False)] = rng.uniform(1, 3, k) * (rng.choice([-1, 1], k) if signed else 1)
    return Z @ D.T, Z


def near_duplicate_pair(n: int = 8, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two atoms with cosine 1 − eps, x coded on both, x′ moved along d_a − d_b (σ_min direction)."""
    D = equicorrelated(n, 2, 1 - eps)
    x = D @ np.array([3.0, 3.0])
    u = (D[:, 0] - D[:, 1]) / np.linalg.norm(D[:, 0] - D[:, 1])
    return D, x[None], (x + 1e-4 * np.linalg.norm(x) * u)[None]


# ---------------------------------------------------------------- lipschitz
@SET
@given(seed=st.integers(0, 10_000), rho=RHOS, log_lam2=st.floats(-3, 1), nonneg=st.booleans())
def test_lipschitz_bounds_hold(seed, rho, log_lam2, nonneg):
    lam2 = 10.0**log_lam2
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 10, 30, rho)
    X, _ = planted(rng, D, 12, 3, signed=not nonneg)
    kw = dict(lam1=0.1, lam2=lam2, nonneg=nonneg)
    base = exact(X[:6], D, **kw)
    pairs = L.concat([L.random_pairs(D, X[:6], X[6:], **kw),
                      L.perturbation_pairs(D, X[:6], 1e-2, rng, base=base, **kw),
                      L.adversarial_pairs(D, X[:6], rounds=1, rng=rng, base=base, **kw)[0]])
    checks, r = L.pair_checks(D, pairs, lam2=lam2)
    assert len(checks) == 3 and all(c.holds for c in checks), [(c.name, c.measured, c.bound) for c in checks]
    assert r["code"].max() <= L.spec_bound(D, lam2) * (1 + 1e-6)
    assert L.sharp_bound(D, lam2) <= L.spec_bound(D, lam2) * (1 + 1e-12)
    # the fit is 1-Lipschitz for the lasso too
    kl = dict(kw, lam2=0.0)
    lasso, _ = L.pair_checks(D, L.random_pairs(D, X[:6], X[6:], **kl), lam2=0.0)
    assert lasso[0].name.startswith("fit") and lasso[0].holds


def test_lipschitz_check_fails_on_lasso_posing_as_en():
    D, x, x2 = near_duplicate_pair()
    kw = dict(lam1=0.1, lam2=0.0)
    p = L.Pairs(x, x2, exact(x, D, **kw), exact(x2, D, **kw))
    checks, _ = L.pair_checks(D, p, lam2=1e-2)  # claimed λ2: bound 1/(2√λ2) = 5
    code = next(c for c in checks if c.name.startswith("code ‖Δz‖/‖Δx‖"))
    assert code.holds is False and code.measured > 100 * code.bound
    assert verdict(code) == "FAILED"
    assert checks[0].holds  # ... while the lasso's fit stays 1-Lipschitz


def test_fit_check_fails_on_non_optimal_codes():
    rng = np.random.default_rng(1)
    D = spiked_dictionary(rng, 10, 30, 0.5)
    X, _ = planted(rng, D, 4, 3)
    X2 = X + 1e-3 * rng.standard_normal(X.shape)
    good = exact(X, D, lam1=0.1, lam2=0.1)
    wrong = exact(X2, D, lam1=1.0, lam2=0.1)  # codes of another λ1 posing as z*(x′)
    checks, _ = L.pair_checks(D, L.Pairs(X, X2, good, wrong), lam2=0.1)
    assert checks[0].name.startswith("fit") and checks[0].holds is False


@SET
@given(log_lam2=st.floats(-4, math.log10(12)))
def test_attainment_witness_is_tight(log_lam2):
    lam2 = 10.0**log_lam2
    c = L.attainment_witness(lam2, n=16)
    assert c.holds and c.details["full_support"]
    assert c.measured / c.bound == pytest.approx(1.0, abs=1e-6)
    broken = L.attainment_witness(lam2, n=16, claimed_lam2=4 * lam2)  # bound halves
    assert broken.holds is False


# ---------------------------------------------------------------- jacobian
@SET
@given(seed=st.integers(0, 10_000), rho=RHOS, log_lam2=st.floats(-3, 0.5), nonneg=st.booleans())
def test_jacobian_matches_closed_form_and_bound(seed, rho, log_lam2, nonneg):
    lam2 = 10.0**log_lam2
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 12, 36, rho)
    X, _ = planted(rng, D, 4, 3, signed=not nonneg)
    checks, data = J.jacobian_checks(D, X, lam1=0.1, lam2=lam2, nonneg=nonneg, seed=seed)
    assert checks, "every row was on the edge of its piece"
    claims = [c for c in checks if c.kind != "info"]
    assert len(claims) == 2 and all(c.holds for c in claims), [(c.name, c.measured, c.bound) for c in checks]
    assert max(data["gains"]) <= 1 / (2 * math.sqrt(lam2)) * (1 + 1e-9)


def test_jacobian_checks_fail_on_wrong_lam2():
    rng = np.random.default_rng(3)
    D = spiked_dictionary(rng, 12, 36, 0.5)
    X, _ = planted(rng, D, 4, 3)
    checks, _ = J.jacobian_checks(D, X, lam1=0.1, lam2=0.1, claimed_lam2=0.5)
    fd = next(c for c in checks if c.name.startswith("finite differences"))
    assert fd.holds is False and fd.measured > 1e-3
    Dd, x, _ = near_duplicate_pair()
    lasso, _ = J.jacobian_checks(Dd, x, lam1=0.1, lam2=0.0, claimed_lam2=1e-2)  # lasso posing as EN
    norm = [c for c in lasso if "≤ 1/(2√λ2), exact map" in c.name]
    assert len(norm) == 1 and norm[0].holds is False and norm[0].measured > 100 * norm[0].bound


# ---------------------------------------------------------------- lasso instability
@SET
@given(seed=st.integers(0, 10_000), rho=RHOS, lam2=st.sampled_from([0.0, 1e-2, 1.0]))
def test_local_ratio_and_flips(seed, rho, lam2):
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 10, 30, rho)
    X, _ = planted(rng, D, 6, 3)
    checks, data = LI.local_ratio_checks(D, X, lam1=0.1, lam2=lam2)
    flips, _ = LI.flip_checks(D, X, lam1=0.1, lam2=lam2, deltas=(1e-3, 1e-1), rng=rng)
    for c in checks + flips:
        assert c.holds is not False, (c.name, c.measured, c.bound)
    if lam2 == 0:  # the lasso ratio inside a piece is exactly 1/σ_min(D_S)
        np.testing.assert_allclose(data["ratio"], data["predicted"], rtol=1e-6)


def test_local_ratio_and_flip_checks_fail_when_broken():
    rng = np.random.default_rng(5)
    D = spiked_dictionary(rng, 10, 30, 0.9)
    X, _ = planted(rng, D, 6, 3)
    checks, _ = LI.local_ratio_checks(D, X, lam1=0.1, lam2=0.0, claimed_lam2=0.05)  # lasso posing as EN
    assert checks[0].holds is False and checks[1].holds is False
    flips, _ = LI.flip_checks(D, X, lam1=0.1, lam2=1e-2, radius_scale=20.0, rng=rng)  # overstated radius
    assert flips[0].holds is False  # flips "inside" the claimed radius
    assert flips[1].holds  # and beyond it, as they must


@SET
@given(seed=st.integers(0, 10_000), lam2=st.sampled_from([1e-2, 0.1, 1.0]), rho=st.sampled_from([0.0, 0.5, 0.9]))
def test_duplicates_and_grouping(seed, lam2, rho):
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 10, 30, rho)
    X, _ = planted(rng, D, 1, 3)
    dup = LI.duplicate_checks(D, X[0], lam1=0.1, lam2=lam2)
    grp = LI.grouping_checks(D, X[0], lam1=0.1, lam2=lam2, seed=seed)
    for c in dup + grp:
        assert c.holds, (c.name, c.measured, c.bound, c.details)
    assert dup[0].measured > 1e-3  # the two lasso codes are genuinely different


def test_duplicate_and_grouping_checks_fail_when_broken():
    rng = np.random.default_rng(7)
    D = spiked_dictionary(rng, 10, 30, 0.5)
    X, _ = planted(rng, D, 1, 3)
    # the elastic net is strictly convex: mass on one copy is not optimal
    dup = LI.duplicate_checks(D, X[0], lam1=0.1, lam2=1e-2, lasso_lam2=0.1)
    assert dup[0].holds is False
    # lasso codes on near-duplicates posing as EN codes break the grouping bound
    grp = LI.grouping_checks(D, X[0], lam1=0.1, lam2=1.0, solve_lam2=0.0, eps=(1e-4,))
    assert grp[0].holds is False


# ---------------------------------------------------------------- support recovery
@SET
@given(seed=st.integers(0, 10_000), rho=st.sampled_from([0.0, 0.5, 0.9]), k=st.integers(1, 5),
       method=st.sampled_from(SR.METHODS), noise=st.sampled_from([0.0, 0.01]), nonneg=st.booleans())
def test_pdw_agrees_with_solver_where_strict(seed, rho, k, method, noise, nonneg):
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 16, 48, rho)
    X, Z = planted(rng, D, 8, k, signed=not nonneg)
    X = X + noise * rng.standard_normal(X.shape)
    lam1, l2 = 0.1, 1e-2
    pilot = exact(X, D, lam1=lam1, lam2=l2, nonneg=nonneg).Z
    lam2 = 0.0 if method in ("lasso", "adaptive lasso") else l2
    r = SR.recovery(D, X, Z, lam1=lam1, lam2=lam2, weights=SR.method_weights(method, pilot), nonneg=nonneg)
    c = SR.agreement_check(method, r)
    assert c.holds, c.details
    assert r["strict"].mean() >= 0.5  # the claim is not vacuous


@SET
@given(seed=st.integers(0, 10_000), rho=st.sampled_from([0.0, 0.5, 0.9]), lam2=st.sampled_from([0.0, 1e-2, 1.0]))
def test_noiseless_witness_formula_equals_general(seed, rho, lam2):
    rng = np.random.default_rng(seed)
    D = spiked_dictionary(rng, 16, 48, rho)
    X, Z = planted(rng, D, 1, 4)
    S = np.flatnonzero(Z[0])
    w = rng.uniform(0.5, 2.0, 48)
    p = SR.pdw(D, X[0], S, np.ones(S.size), Z[0, S], lam1=0.2, lam2=lam2, w=w)
    z_hat, scores = SR.pdw_noiseless(D, S, np.ones(S.size), Z[0, S], lam1=0.2, lam2=lam2, w=w)
    np.testing.assert_allclose(p.z_hat, z_hat, rtol=1e-10, atol=1e-10)
    out = np.setdiff1d(np.arange(48), S)
    assert p.max_score == pytest.approx(float(np.max(scores / w[out])), rel=1e-10, abs=1e-10)


def test_pdw_check_fails_with_wrong_weights():
    # AEN observed, but predicted as if w ≡ 1 (the EN's witness): strict mismatches appear
    rng = np.random.default_rng(0)
    D = spiked_dictionary(rng, 32, 128, 0.5)
    X, Z = planted(rng, D, 12, 8)
    pilot = exact(X, D, lam1=0.2, lam2=1e-2).Z
    w = SR.method_weights("AEN", pilot)
    r = SR.recovery(D, X, Z, lam1=0.2, lam2=1e-2, weights=w, claimed_weights=None)
    assert SR.agreement_check("broken", r).holds is False
    assert SR.agreement_check("sound", SR.recovery(D, X, Z, lam1=0.2, lam2=1e-2, weights=w)).holds


# ---------------------------------------------------------------- amortised encoders
@pytest.fixture(scope="module")
def small_saes():
    from proofs_check import amortised as A

    d = spiked(n=16, m=48, k=3, rho=0.7, n_samples=4096 + 8, seed=3)
    X = d.activations.astype(np.float64)
    return {arch: A.train_sae(arch, X[:4096], 48, seed=0, steps=100) for arch in ("aen", "relu_l1")}, X[4096:]


def test_encoder_jacobian_and_bound_hold(small_saes):
    from proofs_check import amortised as A

    saes, X = small_saes
    for arch, sae in saes.items():
        checks, data = A.encoder_checks(sae, X, label=arch)
        assert all(c.holds for c in checks), [(c.name, c.measured, c.bound) for c in checks]
        assert 0 < data["gain_max"] <= data["norm"] * (1 + 1e-9)
        p = A.sae_problem(sae)
        assert p["D"].shape == (16, 48) and (p["lam2"] > 0) == (arch == "aen")


def test_encoder_checks_fail_when_broken(small_saes):
    """Claiming a global bound below the encoder's actual ‖W_enc‖₂ must fail."""
    from proofs_check import amortised as A

    saes, X = small_saes
    checks, data = A.encoder_checks(saes["aen"], X, claimed_norm=0.5 * A.encoder_checks(saes["aen"], X)[1]["gain_max"])
    assert [c.holds for c in checks] == [True, False]


# ---------------------------------------------------------------- report plumbing
def test_verdict_words_come_from_numbers():
    assert verdict(upper("a", 0.95, 1.0)).startswith("tight")
    assert verdict(upper("a", 0.5, 1.0)).startswith("loose")
    assert verdict(upper("a", 1.5, 1.0)) == "FAILED"
    assert upper("a", 1.0 + 1e-3, 1.0, err=2e-3).holds  # within the certified error bar
    assert not upper("a", 1.0 + 1e-3, 1.0, err=1e-4).holds


def test_tiny_end_to_end_run(tmp_path):
    from proofs_check import FIGURES, make_figures, run_all, write_report

    cfg = Config(n=12, m=36, k=3, rhos=(0.0, 0.9), lam2s=(0.1,), aen_lam2s=(0.1,), n_base=3, rounds=1, jac_samples=2,
                 lasso_rhos=(0.0, 0.9), lasso_samples=3, deltas=(1e-3,), pdw_rhos=(0.0, 0.9), pdw_ks=(2,), pdw_samples=3,
                 pdw_noise=(0.0,), pdw_mag_lows=(1.0,), pdw_k_sweep=2, amortised_train=2048)
    res = run_all(cfg, quick=True, progress=False)
    assert not [c.name for v in res.checks.values() for c in v if c.holds is False]
    figs = make_figures(tmp_path / "figures", results=res)
    assert [p.name for p in figs] == [f for f, _ in FIGURES] and all(p.stat().st_size > 0 for p in figs)
    text = write_report(res, tmp_path, figs).read_text()
    assert "0 failed" in text and "tight" in text
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
    again = run_all(cfg, quick=True, progress=False)  # deterministic given the seed
    assert [c.measured for v in again.checks.values() for c in v] == [c.measured for v in res.checks.values() for c in v]

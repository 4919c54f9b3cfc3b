"""geomsae compare: encoder vs exact solver on the SAE's own problem."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomsae.checkpoint import save_sae
from geomsae.cli import main
from geomsae.compare import CompareConfig, compare_sae
from geomsae.compare_report import write_reports
from geomsae.saes import make
from geomsae.solvers import solve
from geomsae.solvers.problem import prepare
from geomsae.solvers.objective import gap_terms, kkt_residual


def lista_aen(d: int, lam1: float, lam2: float, seed: int = 0):
    """An aen SAE whose encoder IS the exact map: orthonormal decoder Q, W_enc = Qᵀ/(1+λ2′),
    b_enc = −λ1′/(1+λ2′) (weights ≡ 1 before warm-up), so z = ReLU(Qᵀ(x−b) − λ1′)/(1+λ2′)."""
    torch.manual_seed(seed)
    sae = make("aen", d, d, lam1=lam1, lam2=lam2, warmup_steps=10_000)
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    pen = sae.canonical_penalty()
    with torch.no_grad():
        sae.W_dec.copy_(Q.float())
        sae.W_enc.copy_((Q.T / (1 + pen.lam2)).float())
        sae.b_enc.fill_(-pen.lam1 / (1 + pen.lam2))
        sae.b_dec.copy_(0.1 * torch.randn(d))
    return sae


def test_orthonormal_tied_aen_has_zero_gap():
    sae = lista_aen(16, lam1=0.02, lam2=0.01)
    X = torch.randn(300, 16)
    rep = compare_sae(sae, X, CompareConfig(lipschitz_tokens=16))
    s = rep.summary
    assert abs(s.objective_gap.max) < 1e-5
    assert s.support_jaccard.mean == 1.0
    assert s.rel_code_error.max < 1e-5
    assert s.kkt_violation_encoder.max < 1e-5
    # the exact map of an orthonormal D is 1/(1+λ2′)-Lipschitz, the encoder the same map
    lam2 = rep.penalty.lam2
    assert s.lipschitz_exact.max <= 1 / (1 + lam2) + 1e-6
    assert s.lipschitz_encoder.max == pytest.approx(s.lipschitz_exact.max, rel=1e-3)


def test_detuned_encoder_has_positive_gap_and_lower_jaccard():
    """The same SAE with its encoder bias shifted is no longer optimal: the check can fail."""
    sae = lista_aen(16, lam1=0.02, lam2=0.01)
    with torch.no_grad():
        sae.b_enc.add_(0.3)
    rep = compare_sae(sae, torch.randn(300, 16), CompareConfig(lipschitz_tokens=8))
    assert rep.summary.objective_gap.median > 1e-3
    assert rep.summary.support_jaccard.mean < 0.9


@settings(derandomize=True, max_examples=12, deadline=None)
@given(st.sampled_from(["aen", "en", "relu_l1", "topk"]), st.integers(0, 1000))
def test_gap_nonnegative_and_exact_kkt(arch, seed):
    torch.manual_seed(seed)
    kw = {"k": 4} if arch == "topk" else {}
    sae = make(arch, 12, 24, **kw)
    X = torch.randn(64, 12) * 2
    rep = compare_sae(sae, X, CompareConfig(lipschitz_tokens=4, calibrate_iters=8, tol=1e-10))
    s = rep.summary
    assert s.min_objective_gap_minus_certificate >= -1e-9
    assert s.kkt_violation_exact_max < 1e-4
    # independent recomputation of the encoder's objective gap on a few tokens
    p = rep.penalty
    D, b = sae.W_dec.detach().double(), sae.b_dec.detach().double()
    w = sae.canonical_penalty().weights if not p.calibrated else None
    with torch.no_grad():
        z_enc = sae.eval().encode(X).double()
    res = solve(X.double(), D, lam1=p.lam1, lam2=p.lam2, weights=w, bias=b, tol=1e-12)
    prob = prepare(X.double(), D, lam1=p.lam1, lam2=p.lam2, weights=w, bias=b)
    P_enc = gap_terms(z_enc, prob)[0]
    np.testing.assert_allclose(rep.arrays.objective_gap, (P_enc - res.objective).numpy(), atol=1e-6)
    assert kkt_residual(res.codes, gap_terms(res.codes, prob)[2], prob).max() < 1e-5


def test_calibrated_lasso_matches_topk_l0():
    torch.manual_seed(0)
    sae = make("topk", 16, 48, k=5)
    rep = compare_sae(sae, torch.randn(200, 16), CompareConfig(lipschitz_tokens=4, calibrate_tokens=200))
    assert rep.penalty.calibrated and "secant search" in rep.penalty.how
    assert rep.summary.l0_encoder == pytest.approx(5.0)
    assert rep.summary.l0_exact == pytest.approx(5.0, abs=0.5)


def test_cli_reports_parse_and_are_reproducible(tmp_path):
    sae = lista_aen(16, lam1=0.02, lam2=0.01)
    run = save_sae(sae, tmp_path / "aen_run")
    torch.manual_seed(1)
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32))
    sae2 = make("relu_l1", 16, 32)
    run2 = save_sae(sae2, tmp_path / "l1_run")
    out = tmp_path / "cmp"
    texts = []
    for _ in range(2):  # the same input into the same folder twice: byte-identical report.json
        rc = main(["compare", str(run), str(run2), "--data", str(tmp_path / "acts.npy"), "--n-tokens", "40",
                   "--held-out", "1.0", "--lipschitz-tokens", "4", "--out", str(out)])
        assert rc == 0
        texts.append((out / "report.json").read_text())
    assert texts[0] == texts[1]
    outs = [out]
    docs = [json.loads(t) for t in texts]
    assert [r["name"] for r in docs[0]["runs"]] == ["aen_run", "l1_run"]
    assert len(docs[0]["runs"][0]["per_latent"]["freq_encoder"]) == 16
    html = (outs[0] / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 8  # four figures per run, inline
    assert "src=\"http" not in html
    assert "| support Jaccard, mean |" in (outs[0] / "report.md").read_text()


def test_bad_config_and_input():
    with pytest.raises(ValueError, match=r"n_tokens == 0, must be an integer >= 1"):
        CompareConfig(n_tokens=0)
    with pytest.raises(ValueError, match=r"held_out == 0, must be in \(0, 1\]"):
        CompareConfig(held_out=0)
    sae = make("aen", 8, 16)
    with pytest.raises(ValueError, match=r"activations have shape \(5, 7\), must be \(N, d_in=8\)"):
        compare_sae(sae, torch.randn(5, 7))
    X = torch.randn(5, 8)
    X[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        compare_sae(sae, X)


def test_write_reports_single(tmp_path):
    sae = lista_aen(8, lam1=0.02, lam2=0.01)
    rep = compare_sae(sae, torch.randn(50, 8), CompareConfig(lipschitz_tokens=4))
    write_reports([rep], tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["arch"] == "aen" and "summary" in doc
    assert json.loads((tmp_path / "timing.json").read_text())[0]["solver_s"] >= 0


def test_typed_result_and_its_legacy_dict(tmp_path):
    """The typed result and its legacy to_dict() (the dict compare_sae returned before) hold
    the same values, and report.json writes exactly that dict's JSON part."""
    sae = lista_aen(8, lam1=0.02, lam2=0.01)
    rep = compare_sae(sae, torch.randn(60, 8), CompareConfig(lipschitz_tokens=4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.name = "x"
    d = rep.to_dict()
    assert set(d) == {"arch", "sae_cfg", "config", "penalty", "summary", "arrays", "timing"}
    assert d["config"] == dataclasses.asdict(CompareConfig(lipschitz_tokens=4))
    assert set(d["summary"]["objective_gap"]) == {"mean", "median", "p90", "max"}
    assert set(d["summary"]["lipschitz_encoder"]) == {"median", "max", "global_bound_norm_W_enc"}
    assert set(d["summary"]["lipschitz_exact"]) == {"median", "max", "theory_bound"}
    assert set(d["penalty"]) == {"lam1", "lam2", "adaptive_weights", "calibrated", "how", "units", "input_space"}
    assert set(d["timing"]) == {"total_s", "solver_s", "calibrate_s", "lipschitz_s", "solver_share"}
    assert d["summary"]["dead_both"] == rep.summary.dead_both and rep["penalty"] == d["penalty"]
    json.dumps(d["summary"])  # plain JSON, no named tuples turned into lists
    assert json.loads(json.dumps(d["summary"]))["objective_gap"]["max"] == rep.summary.objective_gap.max
    named = dataclasses.replace(rep, name="run1")
    assert named.label == "run1" and rep.label == "aen" and named.to_dict()["name"] == "run1"
    write_reports([named], tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["name"] == "run1" and doc["summary"] == json.loads(json.dumps(d["summary"]))
    assert doc["penalty"] == d["penalty"] and doc["config"] == d["config"]

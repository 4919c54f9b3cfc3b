"""Issue 12 sweeps and statistics on crafted data with known answers: the 1.25× L0 refinement, collapsed
runs left out, the cliff rule, and the paired t-interval verdicts (better, worse, equivalent, underpowered,
non-inferiority, the flipped ablation)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from geomsae.study.matched import interpolate_at, matched_seeds, matched_table
from geomsae.study.sweep import l0_gap, propose
from geomsae.study.verdicts import Claim, Comparison, claim_label, compare, interval, outcome, reading

T95_2 = 4.302652729911275  # t_{0.975, 2 df}


def test_t_interval_hand_computed():
    # paired advantages d = (0.10, 0.12, 0.14): mean 0.12, sd 0.02, half = t·0.02/√3
    a, b = [0.5, 0.6, 0.7], [0.6, 0.72, 0.84]  # lower is better: d = b − a
    diff, lo, hi, n = interval(a, b, False, paired=True)
    half = T95_2 * 0.02 / math.sqrt(3)
    assert (diff, lo, hi, n) == (pytest.approx(0.12), pytest.approx(0.12 - half), pytest.approx(0.12 + half), 3)
    assert T95_2 == pytest.approx(stats.t.ppf(0.975, 2))
    # unpaired (Welch) on the same numbers: the seed-to-seed spread (0.1, 0.12) swamps the 0.12 difference
    d2, lo2, hi2, _ = interval(a, b, False, paired=False)
    va, vb = 0.01 / 3, 0.0144 / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert d2 == pytest.approx(0.12) and hi2 - d2 == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert lo2 < 0 < lo
    with pytest.raises(ValueError, match="at least 2 pairs"):
        interval([0.1], [0.2], True, paired=True)
    with pytest.raises(ValueError, match="NaN"):
        interval([0.1, math.nan], [0.2, 0.3], True, paired=True)


def test_outcomes_with_known_answers():
    d = 0.01  # one point of dead fraction
    better = compare([0.5, 0.6, 0.7], [0.6, 0.72, 0.84], False, d, paired=True)
    assert better.outcome == "better"
    assert compare([0.6, 0.72, 0.84], [0.5, 0.6, 0.7], False, d, paired=True).outcome == "worse"
    # differences of a fraction of a point, tight: equivalent (a difference of 2 latents in 2304 is not a verdict)
    eq = compare([0.100, 0.201, 0.302, 0.400], [0.101, 0.200, 0.302, 0.401], False, d, paired=True)
    assert eq.outcome == "equivalent" and abs(eq.diff) < d and -d < eq.lo and eq.hi < d
    # mean 0.02 but the interval straddles 0: underpowered
    up = compare([0.0, 0.0, 0.0], [0.05, -0.03, 0.04], False, d, paired=True)
    assert up.diff == pytest.approx(0.02) and up.lo < 0 < up.hi and up.outcome == "underpowered"
    # significant but possibly below δ: underpowered too (the interval crosses δ)
    assert outcome(0.008, 0.002, 0.014, d) == "underpowered"
    assert outcome(0.006, 0.002, 0.009, d) == "equivalent"
    # pairing removes the seed effect: each seed 0.05 better, seeds spread 0.1 … 0.9
    a, b = [0.1, 0.5, 0.9], [0.15, 0.55, 0.95]
    assert compare(a, b, False, d, paired=True).outcome == "better"
    assert compare(a, b, False, d, paired=False).outcome == "underpowered"
    assert compare([0.1], [0.2], False, d, paired=True).outcome == "n/a"
    assert compare([0.1, math.nan], [0.2, 0.3], False, d, paired=True).outcome == "n/a"
    with pytest.raises(ValueError, match="min_effect == 0"):
        outcome(0.1, 0.0, 0.2, 0)


def test_claim_labels_superiority_flip_and_noninferiority():
    sup = Claim("a", "fewer dead", "dead_fraction", False)
    flip = Claim("d", "EN as good", "dead_fraction", False, other="en", flip=True)
    noninf = Claim("b", "FVU at least as good", "fvu", False, margin=0.02)
    mk = lambda diff, lo, hi: Comparison(diff, lo, hi, 3, True, outcome(diff, lo, hi, 0.01))  # noqa: E731
    assert claim_label(sup, mk(0.1, 0.05, 0.15)) == "holds" and claim_label(flip, mk(0.1, 0.05, 0.15)) == "does not hold"
    assert claim_label(sup, mk(0.0, -0.005, 0.005)) == "equivalent" and claim_label(flip, mk(0.0, -0.005, 0.005)) == "holds"
    assert claim_label(sup, mk(-0.1, -0.15, -0.05)) == "does not hold" and claim_label(flip, mk(-0.1, -0.15, -0.05)) == "holds"
    assert claim_label(sup, mk(0.02, -0.05, 0.09)) == "underpowered" == claim_label(flip, mk(0.02, -0.05, 0.09))
    # non-inferiority, margin 0.02 FVU: AEN worse by 0.005 ± 0.01 is competitive; by 0.04 ± 0.01 is not
    assert claim_label(noninf, mk(-0.005, -0.015, 0.005)) == "holds"
    assert claim_label(noninf, mk(-0.04, -0.05, -0.03)) == "does not hold"
    assert claim_label(noninf, mk(-0.02, -0.04, 0.0)) == "underpowered"
    with pytest.raises(ValueError, match="has no minimum effect"):
        Claim("x", "?", "nonexistent_metric", True).delta()


def test_reading_counts_by_label_and_arm():
    comps = [dict(verdict=v, other=o) for v, o in (("holds", "relu_l1"), ("holds", "relu_l1"), ("holds", "en"),
                                                   ("equivalent", "topk"), ("underpowered", "gated"), ("n/a", "gated"))]
    assert reading(comps) == ("holds in 3/5 (relu_l1 2, en 1); equivalent in 1/5 (topk 1); underpowered in 1/5 "
                              "(gated 1); 1 n/a")
    assert reading([dict(verdict="n/a", other="x")]) == "no defined comparison (1 n/a)"


def test_sweep_refines_until_bracketing_pair_is_within_125x():
    # L0 8 and 5 bracket 6: 1.6× apart -> bisect; 8 and 6.8 (1.18×) -> done
    assert propose([(0.01, 8.0), (0.02, 5.0), (0.04, 3.0)], (4.0, 6.0), 4) == [0.0283, 0.0141]  # widest gap (5→3, 1.67×) first
    assert l0_gap(8.0, 5.0) == pytest.approx(1.6)
    assert propose([(0.01, 8.0), (0.0141, 6.8), (0.02, 5.6), (0.0283, 4.4), (0.0336, 3.8)], (4.0, 6.0), 4) == []
    # λ pair already within 1.05 but L0 still 6× apart: a cliff, no more bisection
    assert propose([(0.0100, 9.0), (0.0104, 1.5)], (4.0, 6.0), 3) == []


def _pts(*runs):
    return [(v, l0, {"fvu": f, "dead_fraction": d}) for v, l0, f, d in runs]


def test_cliff_rule_on_a_crafted_sweep():
    # a healthy run (L0 6.8, 3.5 % dead) and a collapsed-looking one (L0 1.1, 94.5 % dead) bracket L0 4
    pts = _pts((0.01, 6.8, 0.3, 0.035), (0.02, 1.1, 0.9, 0.945))
    got = interpolate_at(pts, 4.0, ["fvu", "dead_fraction"])
    assert got["cliff"] == 1.0 and "fvu" not in got
    assert (got["l0_dense"], got["dead_dense"], got["l0_sparse"], got["dead_sparse"]) == (6.8, 0.035, 1.1, 0.945)
    # a 9-point jump is not a cliff: interpolated
    ok = interpolate_at(_pts((0.01, 8.0, 0.3, 0.01), (0.02, 2.0, 0.5, 0.10)), 4.0, ["dead_fraction"])
    assert ok["cliff"] == 0.0 and ok["dead_fraction"] == pytest.approx(0.055)


def test_matched_table_reports_cliffs_and_leaves_collapsed_runs_out():
    def rows(arm, seed, runs):
        return [dict(arm=arm, seed=seed, value=v, l0=l0, fvu=f, dead_fraction=d) for v, l0, f, d in runs]

    data = (rows("aen", 0, [(0.01, 6.8, 0.3, 0.035), (0.02, 1.1, 0.9, 0.945)])  # cliff at L0 4
            + rows("aen", 1, [(0.01, 8.0, 0.3, 0.02), (0.015, 3.0, 0.4, 0.05)])  # healthy bracket
            + rows("aen", 2, [(0.01, 8.0, 0.3, 0.02), (0.015, 3.0, 0.4, 0.06)])
            # relu_l1 ghost: L0 3 but FVU 1.0 — collapsed, so L0 4 is not bracketed for this seed
            + rows("relu_l1", 0, [(0.05, 9.0, 0.4, 0.0), (0.131, 3.0, 1.0, 0.0)]))
    per = matched_seeds(data, [4.0], ["fvu", "dead_fraction"])
    status = {(r["arm"], r["seed"]): r["status"] for r in per}
    assert status == {("aen", 0): "cliff", ("aen", 1): "ok", ("aen", 2): "ok", ("relu_l1", 0): "unbracketed"}
    assert next(r for r in per if r["arm"] == "relu_l1")["n_collapsed"] == 1
    aen, relu = matched_table(data, [4.0], ["fvu", "dead_fraction"])
    assert aen["n_seeds"] == 2 and aen["n_cliff"] == 1 and aen["cliff_dead_sparse"] == pytest.approx(0.945)
    t = math.log(4 / 8) / math.log(3 / 8)
    assert aen["dead_fraction_mean"] == pytest.approx(0.02 + 0.035 * t)  # seeds 1, 2: 0.02 + 0.03t and 0.02 + 0.04t
    assert relu["n_seeds"] == 0 and relu["n_collapsed"] == 1 and math.isnan(relu["fvu_mean"])


def test_topk_arms_switch_one_thing_at_a_time_and_aen_grid():
    from geomsae.study.arms import AEN_GRID, ARMS, aen_grid_name, arm_fields
    from geomsae.study.settings import StudySettings

    s = StudySettings()
    assert arm_fields(s, "topk", 4) == {"auxk": False, "tied_init": False, "k": 4}
    assert arm_fields(s, "topk_tied", 4) == {"auxk": False, "tied_init": True, "k": 4}
    assert {k: v for k, v in arm_fields(s, "topk_auxk", 4).items() if k != "dead_window"} == {
        "auxk": True, "tied_init": True, "k": 4}
    assert len(AEN_GRID) == 12 and {g for g, _, _ in AEN_GRID} == {0.5, 1.0} and {q for _, q, _ in AEN_GRID} == {1.0, 5.0}
    f = arm_fields(s, aen_grid_name(0.5, 5.0, 4.0), 0.01)
    assert (f["gamma"], f["q"], f["lam2"], f["lam1"]) == (0.5, 5.0, 4.0 * s.lam2, 0.01)
    assert ARMS["aen_g1_q1_l2x1"].arch == "aen"


def test_jumprelu_threshold_learning_rate():
    from geomsae.saes import make

    moves = {}
    for c in (1.0, 10.0):
        torch.manual_seed(0)
        sae = make("jumprelu", 8, 16, theta_init=0.5, bandwidth=1.0, threshold_lr_scale=c, lam=0.1)
        assert sae.threshold.detach().tolist() == pytest.approx([0.5] * 16)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
        before = sae.threshold.log().detach().clone()
        sae.loss(x, sae(x)).loss.backward()
        opt.step()
        moves[c] = (sae.threshold.log().detach() - before).abs().max().item()
    # Adam's first step moves the parameter by lr whatever the gradient: log θ moves c·lr
    assert moves[1.0] == pytest.approx(1e-3, rel=1e-3) and moves[10.0] == pytest.approx(1e-2, rel=1e-3)
    with pytest.raises(ValueError, match="threshold_lr_scale == 0"):
        make("jumprelu", 8, 16, threshold_lr_scale=0)


def test_a_run_at_the_target_is_used_as_it_is_not_a_cliff():
    # TopK: k = 4 has folded L0 3.99, k = 3 has 3.0 and 12 points more dead; target 4 is k = 4 itself
    pts = _pts((3, 3.0, 0.4, 0.38), (4, 3.99, 0.3, 0.26), (5, 4.98, 0.25, 0.20))
    got = interpolate_at(pts, 4.0, ["dead_fraction"])
    assert got["cliff"] == 0.0 and got["dead_fraction"] == 0.26 and got["value"] == 4
    # 2 % away is not "at the target": the pair (3.0, 3.99) does not bracket 4.0 -> (3.99, 4.98) does, no cliff
    far = interpolate_at(_pts((3, 3.0, 0.4, 0.38), (4, 3.92, 0.3, 0.26), (5, 4.9, 0.25, 0.2)), 4.0, ["dead_fraction"])
    assert far["cliff"] == 0.0 and 0.2 < far["dead_fraction"] < 0.26


def test_grid_selection_on_a_validation_run():
    from geomsae.study.tuning import select

    rows = [dict(arm=a, rho=r, l0_target=t, n_seeds=n, fvu_mean=f)
            for a, r, t, n, f in (("g1", 0.9, 4.0, 3, 0.30), ("g2", 0.9, 4.0, 3, 0.25), ("g3", 0.9, 4.0, 1, 0.10),
                                  ("g2", 0.0, 4.0, 3, 0.01), ("g1", 0.9, 6.0, 3, 0.01))]
    got = select(rows, ["g1", "g2", "g3"], l0_target=4.0, metric="fvu", higher_is_better=False, cell={"rho": 0.9})
    assert got.arm == "g2" and got.score == 0.25  # g3 has one seed only; other cells and targets ignored
    assert [a for a, _ in got.ranking] == ["g2", "g1"]
    assert select(rows, ["g1", "g2"], l0_target=4.0, metric="fvu", higher_is_better=True, cell={"rho": 0.9}).arm == "g1"
    with pytest.raises(ValueError, match="no candidate"):
        select(rows, ["g3"], l0_target=4.0, metric="fvu", higher_is_better=False, cell={"rho": 0.9})

"""Issue 24's measurements: the authors' last-batch dead count, the outlier severity γ, the start of b_dec in
the solo and stacked trainers and in the synthetic runner, and designs extended on resume."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomsae.metrics import outlier_severity
from geomsae.train import train
from geomsae.train_stack import train_stack
from geomsae.training.config import TrainConfig
from geomsae.training.stream import start_b_dec
from synthetic import budget, cells, resume, starvation
from synthetic.starvation import PRESETS


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=1, batch_size=64, lr=1e-12, lr_warmup_steps=1, log_every=1, progress=False,
                input_scale_tokens=256)
    base.update(kw)
    return TrainConfig(**base)


def _data(n=256, d=16, shift=3.0, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


# --------------------------------------------------------------------------- γ
def test_gamma_is_the_planted_mean_over_the_planted_spread_exactly():
    # rows μ + σ⊙s and μ − σ⊙s: mean exactly μ, per-dimension (1/N) standard deviation exactly |σ|
    mu = torch.tensor([3.0, -4.0, 0.0, 0.0], dtype=torch.float64)
    sigma = torch.tensor([1.0, 2.0, 2.0, 4.0], dtype=torch.float64)
    s = torch.tensor([[1, -1, 1, -1], [1, 1, -1, -1]], dtype=torch.float64)
    x = torch.cat([mu + sigma * s, mu - sigma * s])
    assert outlier_severity(x) == pytest.approx(5.0 / 5.0, rel=1e-12)  # ‖μ‖ = 5, ‖σ‖ = √25 = 5
    assert outlier_severity(x, center=mu) == pytest.approx(0.0, abs=1e-12)
    assert outlier_severity(x, center=mu / 2) == pytest.approx(0.5, rel=1e-12)


def test_gamma_of_sampled_data_with_a_planted_mean():
    g = torch.Generator().manual_seed(1)
    d, n = 64, 200_000
    mu = torch.full((d,), 0.5)
    x = mu + 2.0 * torch.randn(n, d, generator=g)
    want = float(mu.norm()) / (2.0 * math.sqrt(d))  # 4 / 16 = 0.25
    assert outlier_severity(x) == pytest.approx(want, rel=0.02)
    # centred by the mean of N' = 50,000 other tokens: about √(d/N') = 0.036 is left (sampling error)
    other = mu + 2.0 * torch.randn(50_000, d, generator=g)
    assert outlier_severity(x, center=other.mean(0)) < 3 * math.sqrt(d / 50_000)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(a=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0), seed=st.integers(0, 2**16))
def test_gamma_is_invariant_to_scale_and_to_a_common_shift(a, shift, seed):
    x = _data(64, 8, 1.0, seed).double()
    c = x[:3].mean(0)
    g0 = outlier_severity(x, c)
    assert outlier_severity(a * x, a * c) == pytest.approx(g0, rel=1e-9, abs=1e-12)
    assert outlier_severity(x + shift, c + shift) == pytest.approx(g0, rel=1e-6, abs=1e-9)


def test_gamma_refuses_bad_input():
    with pytest.raises(ValueError, match="must be >= 2"):
        outlier_severity(torch.ones(1, 3))
    with pytest.raises(ValueError, match="zero spread"):
        outlier_severity(torch.ones(5, 3))
    with pytest.raises(ValueError, match="center has 2 entries but x has d_in == 3"):
        outlier_severity(torch.randn(5, 3), center=torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        outlier_severity(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


# --------------------------------------------------------------------------- the last training batch's dead count
def _dead_on(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        z = sae.encode(x)
    return float(((z != 0).sum(0) == 0).double().mean())


def test_the_last_batch_dead_count_is_read_on_the_last_training_batch():
    # one batch holding every token (the shuffle only permutes it) and lr ≈ 0: the count is the trained SAE's
    # dead fraction on exactly these tokens; TopK with k = 1 on 4 tokens leaves at least d_sae − 4 latents dead
    x = _data(4, 16, 0.0)
    res = train({"arch": "topk", "d_sae": 64, "k": 1}, x, _cfg(batch_size=4, input_scale_tokens=4))
    got = res.metrics["dead_last_batch"]
    assert got == pytest.approx(_dead_on(res.sae, x), abs=1e-12)
    assert got >= (64 - 4) / 64
    # a penalty architecture reads it the same way
    res = train({"arch": "relu_l1", "d_sae": 32, "lam": 0.1}, x, _cfg(batch_size=4, input_scale_tokens=4))
    assert res.metrics["dead_last_batch"] == pytest.approx(_dead_on(res.sae, x), abs=1e-12)


def test_the_last_batch_dead_count_of_each_stack_member_is_its_own():
    xs = [_data(8, 16, 0.0, seed=s) for s in (0, 1)]
    specs = [{"arch": "topk", "d_sae": 64, "k": k} for k in (1, 3)]
    res = train_stack(specs, xs, _cfg(batch_size=8, input_scale_tokens=8), seeds=[0, 1])
    for r, x in zip(res, xs):
        assert r.metrics["dead_last_batch"] == pytest.approx(_dead_on(r.sae, x), abs=1e-12)
    assert res[0].metrics["dead_last_batch"] > res[1].metrics["dead_last_batch"]  # k 1 leaves more dead than k 3


# --------------------------------------------------------------------------- the start of b_dec
@pytest.mark.parametrize("init", ["mean", "zeros"])
def test_start_b_dec_is_where_the_solo_and_stacked_trainers_start(init):
    xs = [_data(512, 16, 3.0, seed=s) for s in (0, 1)]
    cfg = _cfg(b_dec_init=init)
    solo = train({"arch": "en", "d_sae": 32}, xs[0], cfg)
    torch.testing.assert_close(solo.sae.b_dec.detach(), start_b_dec(xs[0], cfg), rtol=1e-5, atol=1e-5)
    res = train_stack([{"arch": "en", "d_sae": 32}] * 2, xs, cfg, seeds=[3, 4])
    for r, x, s in zip(res, xs, (3, 4)):  # each member reads its own source with its own seed
        want = start_b_dec(x, dataclasses.replace(cfg, seed=s, data_seed=s))
        torch.testing.assert_close(r.sae.b_dec.detach(), want, rtol=1e-5, atol=1e-5)
    if init == "mean":  # the mean of 256 of the 512 tokens: near the data mean, not equal to it
        assert float((start_b_dec(xs[0], cfg) - xs[0].mean(0)).norm()) < 0.5
        assert float(start_b_dec(xs[0], cfg).norm()) > 10
    else:
        assert float(start_b_dec(xs[0], cfg).abs().max()) == 0.0


def test_the_synthetic_runner_records_gamma_about_each_start(tmp_path):
    base = dataclasses.replace(PRESETS["tiny"], rhos=(0.7,), seeds=(0,), arms=("topk",), out=str(tmp_path / "m"))
    stack = [cells.Member("topk", (0.7,), 0, 2)]
    mean = cells.train_stack_job(base, stack)[0].row
    zeros = cells.train_stack_job(dataclasses.replace(base, b_dec_init="zeros"), stack)[0].row
    data = cells.cell_data(base, 0.7, 0)
    assert mean["gamma"] == zeros["gamma"] == pytest.approx(outlier_severity(data.x_eval))
    assert zeros["gamma_start"] == pytest.approx(zeros["gamma"])  # nothing subtracted
    assert mean["gamma"] > 1.0 and mean["gamma_start"] < 0.2 * mean["gamma"]  # the spike's mean removed
    assert 0.0 <= mean["dead_last_batch"] <= 1.0 and 0.0 <= zeros["dead_last_batch"] <= 1.0


# --------------------------------------------------------------------------- designs extended on resume
def test_rhos_and_seeds_may_grow_on_resume_and_never_shrink():
    cur = json.loads(json.dumps(dataclasses.asdict(PRESETS["tiny"])))
    assert resume.same_config(cur, {**cur, "rhos": [*cur["rhos"], 0.9]})
    assert resume.same_config(cur, {**cur, "seeds": [*cur["seeds"], 7]})
    assert not resume.same_config(cur, {**cur, "rhos": cur["rhos"][:1]})
    assert not resume.same_config(cur, {**cur, "seeds": [5, 6]})
    assert not resume.same_config(cur, {**cur, "l0_targets": [9.0]})
    assert resume.same_config(cur, {**cur, "arms": [*cur["arms"], "jumprelu"]})
    assert resume.same_config(cur, {**cur, "topk_ks": [*cur["topk_ks"], 99]})
    assert not resume.same_config(cur, {**cur, "arms": cur["arms"][:1]})
    assert not resume.same_config(cur, {**cur, "topk_ks": cur["topk_ks"][:1]})
    # an added arm may bring its own length; an arm already trained keeps its length
    grown = {**cur, "arms": [*cur["arms"], "topk"], "arm_steps": ["topk=30"]}
    assert resume.same_config(cur, grown)
    assert not resume.same_config(cur, {**grown, "arm_steps": ["topk=30", f"{cur['arms'][0]}=30"]})
    assert not resume.same_config(grown, {**grown, "arm_steps": []})


def test_a_run_extended_by_a_rho_keeps_its_saes_and_trains_only_the_new_cells(tmp_path):
    import csv
    import shutil

    small = dataclasses.replace(PRESETS["tiny"], rhos=(0.0,), seeds=(0, 1), out=str(tmp_path / "a"))
    starvation.run(small)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    big = dataclasses.replace(small, rhos=(0.0, 0.7), out=str(tmp_path / "b"))
    starvation.run(big)
    read = lambda p: {(r["arm"], r["rho"], r["seed"], r["value"]): r for r in csv.DictReader(open(p / "results.csv"))}
    before, after = read(tmp_path / "a"), read(tmp_path / "b")
    assert all(after[k] == before[k] for k in before)  # kept as they were, not retrained
    assert {k[1] for k in after} == {"0", "0.7"} and {k[1] for k in set(after) - set(before)} == {"0.7"}
    # and its matched table has every target of the design at both ρ
    matched = list(csv.DictReader(open(tmp_path / "b" / "matched.csv")))
    assert {(r["rho"], float(r["l0_target"])) for r in matched} == {(r, t) for r in ("0", "0.7")
                                                                     for t in small.l0_targets}


def test_a_run_extended_by_an_arm_and_a_k_keeps_its_saes_and_trains_only_the_new_ones(tmp_path):
    import csv
    import shutil

    small = dataclasses.replace(PRESETS["tiny"], rhos=(0.7,), seeds=(0, 1), arms=("relu_l1", "topk"), topk_ks=(2,),
                                out=str(tmp_path / "a"))
    starvation.run(small)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    big = dataclasses.replace(small, arms=("relu_l1", "topk", "topk_auxk"), topk_ks=(2, 4), out=str(tmp_path / "b"))
    starvation.run(big)
    read = lambda p: {(r["arm"], r["rho"], r["seed"], r["value"]): r for r in csv.DictReader(open(p / "results.csv"))}
    before, after = read(tmp_path / "a"), read(tmp_path / "b")
    assert all(after[k] == before[k] for k in before)  # kept as they were, not retrained
    new = set(after) - set(before)
    assert {(a, float(v)) for a, _, _, v in new} == {("topk", 4.0), ("topk_auxk", 2.0), ("topk_auxk", 4.0)}
    assert json.loads((tmp_path / "b" / "config.json").read_text())["arms"] == list(big.arms)


def test_the_centering_preset_is_the_authors_design_with_both_topk_arms():
    cfg = PRESETS["centering"]
    assert (cfg.n, cfg.m, cfg.k, cfg.batch_size, cfg.steps) == (256, 1024, 16, 256, 5000)
    assert set(cfg.arms) == {"aen", "adaptive_lasso", "en", "relu_l1", "topk", "topk_auxk"}
    assert cfg.rhos == (0.0, 0.3, 0.5, 0.7, 0.9) and len(cfg.seeds) >= 2 and cfg.l0_targets == (16.0,)
    assert cfg.stream_chunk and cfg.checkpoint_every  # fits in memory, resumes inside a stack
    assert np.isclose(budget.planned_flops(cfg), 220 * 5000 * 256 * 10 * 256 * 1024)


# --------------------------------------------------------------------------- the reading (synthetic.centering)
def _run_folder(path, start, cells):
    """A crafted run folder: ``cells`` {(arm, ρ, seed): (held-out dead, last-batch dead)}; a penalty arm gets two λ
    bracketing L0 16 with the same values (so L0 16 reads them exactly), TopK its k = 16 run."""
    from geomsae.study.tables import write_csv

    path.mkdir()
    (path / "config.json").write_text(json.dumps({"b_dec_init": start, "steps": 5000}))
    rows = []
    for (arm, rho, seed), (dead, last) in cells.items():
        common = dict(arm=arm, rho=rho, seed=seed, fvu=0.3, dead_fraction=dead, dead_last_batch=last, gamma=2.5,
                      gamma_start=2.5 if start == "zeros" else 0.05, collapsed=0)
        if arm.startswith("topk"):
            rows.append({**common, "value": 16.0, "l0": 15.9})
        else:
            rows += [{**common, "value": 1e-3, "l0": 20.0}, {**common, "value": 2e-3, "l0": 12.0}]
    write_csv(path / "results.csv", ["arm", "rho", "seed", "value", "l0", "fvu", "dead_fraction", "dead_last_batch",
                                     "gamma", "gamma_start", "collapsed"], rows)
    return path


def test_the_centering_reading_on_crafted_runs(tmp_path):
    from synthetic import centering

    zeros = {("aen", 0.3, s): (0.05, 0.50) for s in (0, 1)}
    zeros |= {("topk", 0.3, 0): (0.90, 0.96), ("topk", 0.3, 1): (0.90, 0.95),
              ("topk", 0.9, 0): (0.95, 0.98), ("topk", 0.9, 1): (0.95, 0.99)}
    zeros |= {("aen", 0.9, s): (0.05, 0.40) for s in (0, 1)}
    mean = {("aen", rho, s): (0.0, 0.0) for rho in (0.3, 0.9) for s in (0, 1)}
    mean |= {("topk", rho, s): (0.10, 0.10) for rho in (0.3, 0.9) for s in (0, 1)}
    folders = [_run_folder(tmp_path / "z", "zeros", zeros), _run_folder(tmp_path / "m", "mean", mean)]
    (folders[1] / "timing.json").write_text("{}")  # the mean-start sweep has finished, the zero-start one not
    assert centering.main([*map(str, folders), "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "centering.md").read_text()
    assert "**PARTIAL**: the sweep of `zeros, 5000 steps` (z) has not finished" in text and "(m)" not in text
    # penalty arms read at L0 16 between their two λ; TopK at k 16; last batch / held-out in %, seed count
    assert "| 0.3 | aen | 0.3 | 50.0 ± 0.0 / 5.0 ± 0.0 (2) ✗ | 0.0 ± 0.0 / 0.0 ± 0.0 (2) ✓ |" in text
    assert "| 0.3 | topk | 96.4 | 95.5 ± 0.7 / 90.0 ± 0.0 (2) ✓ | 10.0 ± 0.0 / 10.0 ± 0.0 (2) ✗ |" in text
    # ρ 0.3: aen ✗ ✓, topk ✓ ✗; ρ 0.9, theirs aen 44.9 (zero start 40 ✓, mean 0 ✗), topk 97.5 (98.5 ✓, 10 ✗)
    assert "zeros, 5000 steps: 3 of 4; mean, 5000 steps: 1 of 4" in text
    # growth with ρ: the mean start's AEN is flat (0 at both ρ, every seed); the zero start's TopK +3 points with a
    # 2-seed interval of ±12.7 × 1.41 / √2 points: underpowered
    assert "| aen | mean, 5000 steps | +0.0 [+0.0, +0.0] flat (n 2) |" in text
    assert "| topk | zeros, 5000 steps | +3.0 [-9.7, +15.7] underpowered (n 2) |" in text
    # AEN against TopK at the mean start: 10 points fewer dead in both seeds: holds
    assert "| mean, 5000 steps | a | 0.3 | topk | 2 | +10.0 [+10.0, +10.0] | holds |" in text
    assert "| 0.3 | 2.50 | 2.500 | 0.050 |" in text  # γ, and γ about each start
    got = centering.read_csv(tmp_path / "o" / "centering.csv")
    assert {(r["start"], r["arm"], r["status"]) for r in got} >= {("zeros, 5000 steps", "aen", "ok")}
    assert (tmp_path / "o" / "centering_dead.png").stat().st_size > 10_000
    assert centering.main([str(tmp_path / "nothing")]) == 2
    assert centering.main([str(folders[0]), str(folders[0]), "--out", str(tmp_path / "p")]) == 2


def test_the_l0_range_preset_can_bracket_each_of_its_targets():
    cfg = PRESETS["l0-range"]
    assert cfg.l0_targets == (4.0, 6.0, 8.0, 12.0, 16.0)
    # a TopK-type arm needs a k on each side of every target; its folded L0 sits at or a hair below k
    assert all(min(cfg.topk_ks) <= t and max(cfg.topk_ks) > t for t in cfg.l0_targets)
    assert cfg.sweep_points >= 2 * len(cfg.l0_targets)  # two λ per target at the least
    std = PRESETS["standard"]
    assert (cfg.n, cfg.m, cfg.k, cfg.rhos, cfg.seeds, cfg.arms) == (std.n, std.m, std.k, std.rhos, std.seeds, std.arms)

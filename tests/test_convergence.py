"""Issue 12 convergence record: every training run reports the slope of its loss over the last 10 % of the steps."""

from __future__ import annotations

import math

import pytest
import torch

from geomsae.train import train
from geomsae.train_stack import train_stack
from geomsae.training.config import TrainConfig
from geomsae.training.log import LossWindow, loss_trend


def test_loss_trend_hand_computed():
    # y = 2 − 0.1 t on t = 0..3: slope −0.1, mean 1.85, change over 4 steps −0.4 -> −0.4/1.85
    slope, rel = loss_trend([0, 1, 2, 3], [2.0, 1.9, 1.8, 1.7])
    assert slope == pytest.approx(-0.1) and rel == pytest.approx(-0.4 / 1.85)
    # least squares, not end points: (0, 1), (1, 3), (2, 2) -> slope 0.5
    assert loss_trend([0, 1, 2], [1.0, 3.0, 2.0])[0] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in loss_trend([5], [1.0]))
    with pytest.raises(ValueError, match="must be finite"):
        loss_trend([0, 1], [1.0, math.nan])


def test_loss_window_keeps_the_last_tenth():
    w = LossWindow(100)
    assert w.start == 90
    for t in range(100):
        w.add(t, torch.tensor([float(t), 5.0]))  # member 0 rises by 1 per step, member 1 is flat
    assert w.steps == list(range(90, 100))
    assert w.summary(0)["loss_slope"] == pytest.approx(1.0) and w.summary(1)["loss_slope"] == pytest.approx(0.0)
    assert LossWindow(10).start == 8  # at least 2 steps


def test_training_runs_record_their_loss_trend():
    x = torch.randn(64 * 40, 8, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=40, batch_size=64, lr=1e-2, log_every=10, progress=False)
    res = train({"arch": "relu_l1", "d_sae": 16, "lam": 1e-3}, x, cfg)
    assert math.isfinite(res.metrics["loss_slope"]) and math.isfinite(res.metrics["loss_rel_change"])
    stacked = train_stack([{"arch": "relu_l1", "d_sae": 16, "lam": 1e-3}] * 2, x, cfg, seeds=[cfg.seed, 1])
    assert stacked[0].metrics["loss_slope"] == pytest.approx(res.metrics["loss_slope"], rel=1e-3, abs=1e-6)
    assert stacked[1].metrics["loss_slope"] != stacked[0].metrics["loss_slope"]


def test_length_ablation_table_from_crafted_runs(tmp_path):
    import json

    from geomsae.study.tables import write_csv
    from synthetic import length

    cols = ["claim", "metric", "rho", "l0_target", "other", "aen_advantage", "min_effect", "verdict"]
    mcols = ["arm", "rho", "l0_target", "dead_fraction_mean", "fvu_mean"]
    # comparisons vs topk at ρ 0 / 0.5 / 0.9: 400 → 12800 moves one soft (underpowered → holds, effects 0.03 and
    # 0.05 ≥ δ 0.01 at both lengths) and one n/a → equivalent (soft, no effect at 400)
    for steps, verdicts, effects, rel, dead in (
            (400, ["holds", "underpowered", "n/a"], [0.05, 0.03, float("nan")], [-0.05, -0.002], (0.2, 0.4, "nan")),
            (12800, ["holds", "holds", "equivalent"], [0.05, 0.05, 0.001], [-0.001, 0.0], (0.1, 0.3, 0.5))):
        d = tmp_path / f"length_{steps}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"steps": steps}))
        write_csv(d / "verdicts.csv", cols, [{"claim": "a", "metric": "dead_fraction", "rho": rho, "l0_target": 4,
                                              "other": "topk", "aen_advantage": e, "min_effect": 0.01, "verdict": v}
                                             for rho, v, e in zip((0.0, 0.5, 0.9), verdicts, effects)])
        write_csv(d / "results.csv", ["loss_rel_change"], [{"loss_rel_change": v} for v in rel])
        write_csv(d / "matched.csv", mcols, [{"arm": "aen", "rho": rho, "l0_target": 4, "dead_fraction_mean": x,
                                              "fvu_mean": 0.5} for rho, x in zip((0.0, 0.5, 0.9), dead)])
    assert length.main([str(tmp_path / "length_12800"), str(tmp_path / "length_400"), "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "length.md").read_text()
    assert "2 lengths spanning 32×" in text
    assert "| (a) | 400 | 1 | 0 | 0 | 1 | 1 | 50 % |" in text  # one of two runs still falling by > 1 %
    assert "| (a) | 12800 | 2 | 0 | 1 | 0 | 0 | 0 % |" in text
    assert "| 400 → 12800 | 3 | 1 | 2 | 0 | 0 | 1 |" in text
    # the metric rows average only the cells known at both lengths (ρ 0 and 0.5): 0.3 → 0.2
    assert "| aen | dead_fraction | 2 | 0.300 | 0.200 |" in text
    assert (tmp_path / "o" / "length_verdicts.png").exists()
    assert length.main([str(tmp_path / "length_400"), "--out", str(tmp_path / "o")]) == 2
    # the AEN FVU moved 0 at matched L0 but its dead fraction −10 points in both common cells (no per-seed rows:
    # only the minimum-effect test applies): not stable from 400 to 12800
    assert ("| aen | 400 → 12800 | 2 | 0 | 0.500 → 0.500 (largest +0.000) | 0.300 → 0.200 (largest -0.100) | 0 / 0 / 2 "
            "| no (moved: 0.0/4.0 0.5/4.0) |") in text
    assert "aen not within 12800 steps" in text
    # a longer run of one arm only enters the doubling and metric tables, not the verdict tables
    d = tmp_path / "length_25600"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"steps": 25600, "arms": ["aen"]}))
    write_csv(d / "verdicts.csv", cols, [])
    write_csv(d / "results.csv", ["loss_rel_change"], [{"loss_rel_change": 0.0}])
    write_csv(d / "matched.csv", mcols, [{"arm": "aen", "rho": rho, "l0_target": 4, "dead_fraction_mean": x,
                                          "fvu_mean": 0.5} for rho, x in zip((0.0, 0.5, 0.9), (0.1, 0.305, 0.5))])
    (tmp_path / "length_400" / "config.json").write_text(json.dumps({"steps": 400, "arms": ["aen", "topk"]}))
    (tmp_path / "length_12800" / "config.json").write_text(json.dumps({"steps": 12800, "arms": ["aen", "topk"]}))
    assert length.main([str(tmp_path / f"length_{s}") for s in (400, 12800, 25600)] + ["--out", str(tmp_path / "p")]) == 0
    text = (tmp_path / "p" / "length.md").read_text()
    assert "`length_25600` trained only aen" in text and "| (a) | 25600 |" not in text
    assert ("| aen | 12800 → 25600 | 3 | 0 | 0.500 → 0.500 (largest +0.000) | 0.300 → 0.302 (largest +0.005) "
            "| 3 / 0 / 0 | yes |") in text
    assert "aen 12800." in text
    # an arm added at one length (topk_tied at 12800) enters the doubling and metric tables; its comparison stays
    # out of the verdict counts, so every length counts the same comparisons
    (tmp_path / "length_12800" / "config.json").write_text(json.dumps({"steps": 12800,
                                                                       "arms": ["aen", "topk", "topk_tied"]}))
    with open(tmp_path / "length_12800" / "verdicts.csv", "a") as f:
        f.write("a,dead_fraction,0.0,4,topk_tied,0.2,0.01,holds\n")
    assert length.main([str(tmp_path / f"length_{s}") for s in (400, 12800, 25600)] + ["--out", str(tmp_path / "q")]) == 0
    text = (tmp_path / "q" / "length.md").read_text()
    assert "`length_12800` also trained topk_tied" in text
    assert "| (a) | 12800 | 2 | 0 | 1 | 0 | 0 | 0 % |" in text and "| 400 → 12800 | 3 | 1 | 2 | 0 | 0 | 1 |" in text


def test_aen_grid_validation_run_and_tune_cli(tmp_path, capsys):
    import dataclasses
    import json

    from synthetic import starvation, tune

    arms = ("aen_g0.5_q5_l2x4", "aen_g1_q1_l2x1")
    cfg = dataclasses.replace(starvation.PRESETS["tiny"], arms=arms, rhos=(0.7,), out=str(tmp_path / "val"))
    out = starvation.run(cfg)
    rows = starvation.tables.read_csv(out / "results.csv")
    hp = {r["arm"]: json.loads(r["hparams"]) for r in rows}
    assert (hp[arms[0]]["gamma"], hp[arms[0]]["q"], hp[arms[0]]["lam2"]) == (0.5, 5.0, 4 * cfg.lam2)
    # the choice, on a crafted validation matched.csv (tiny runs bracket nothing)
    from geomsae.study.tables import write_csv

    val = tmp_path / "crafted"
    val.mkdir()
    (val / "config.json").write_text(json.dumps({"lam2": 1e-3}))
    write_csv(val / "matched.csv", ["arm", "rho", "l0_target", "n_seeds", "fvu_mean"],
              [dict(arm=a, rho=0.9, l0_target=4.0, n_seeds=3, fvu_mean=f) for a, f in zip(arms, (0.2, 0.3))])
    capsys.readouterr()
    assert tune.main([str(val), "--rho", "0.9", "--l0-target", "4", "--metric", "fvu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["arm"] == arms[0] and got["flags"] == "--adaptive-gamma 0.5 --adaptive-q 5 --lam2 0.004"

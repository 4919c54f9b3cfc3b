"""llm_eval.long: starvation over training on the tiny random Llama model — the evaluation schedule,
resuming a killed run to the same curve, and the partial/final marking of the summary."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from geomsae.study.curves import eval_steps, still_growing  # noqa: E402
from geomsae.study.tables import read_csv  # noqa: E402
from llm_eval import curve_report, long, starvation  # noqa: E402
from llm_eval.config import PRESETS, LLMStarvationConfig, n_expected  # noqa: E402
from tests.tiny_lm import save_tiny, write_text

CFG = PRESETS["tiny-long"]


def _argv(model, corpus, out, res):
    return ["--preset", "tiny-long", "--model", str(model), "--text", str(corpus), "--out", str(out),
            "--results", str(res)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("long")
    model = save_tiny(base / "llama", "llama", trained=True)
    corpus = write_text(base / "text", copies=12)
    argv = _argv(model, corpus, base / "out", base / "results")
    runner = {}
    real = long.LongRunner.run

    def keep(self):
        runner["r"] = self
        return real(self)

    long.LongRunner.run = keep
    try:
        assert starvation.main(argv) == 0
    finally:
        long.LongRunner.run = real
    return base, model, corpus, runner["r"]


def _curves(res):
    return {(r["arm"], r["seed"], r["point"]): r for r in read_csv(res / "curves.csv")}


def test_schedule_fires_at_the_right_token_counts(full_run):
    base, *_ = full_run
    assert eval_steps(2500, (0.01, 0.03, 0.1, 0.3, 1.0)) == [25, 75, 250, 750, 2500]  # smollm2-long: 0.1 … 10 M
    assert CFG.curve_steps == 100 and eval_steps(100, CFG.curve_points) == [1, 3, 10, 30, 100]
    rows = read_csv(base / "results" / "curves.csv")
    runs = {(r["arm"], r["seed"]) for r in rows}
    assert runs == {("topk", 0), ("topk", 1), ("relu_l1", 0), ("aen", 0)}
    for arm, seed in runs:
        mine = sorted((r for r in rows if (r["arm"], r["seed"]) == (arm, seed)), key=lambda r: r["point"])
        assert [int(r["step"]) for r in mine] == [1, 3, 10, 30, 100]
        assert [int(r["tokens_seen"]) for r in mine] == [128, 384, 1280, 3840, 12800]
        assert all(math.isnan(r["ce_recovered_mean"]) for r in mine[:-1])  # CE at the end only
        assert math.isfinite(mine[-1]["ce_recovered_mean"])
    topk = [r for r in rows if r["arm"] == "topk"]
    assert all(r["l0"] == pytest.approx(6.0, abs=0.05) for r in topk)
    with pytest.raises(ValueError, match=r"fractions == \(0.5, 0.3\), must be strictly increasing"):
        eval_steps(100, (0.5, 0.3))
    with pytest.raises(ValueError, match=r"give the same step twice"):
        eval_steps(10, (0.01, 0.03))
    with pytest.raises(ValueError, match=r"curve_l0 == 9999.0, must be in \[1, d_sae=64\]"):
        LLMStarvationConfig(curve_tokens=1_000_000, curve_l0=9999.0, d_sae=64, topk_ks=(4,), eval_windows=(100,),
                            eval_tokens=1000)
    assert still_growing([1e5, 1e6], [0.01, 0.05]) == (True, pytest.approx(0.04))
    assert still_growing([1e5, 1e6], [0.05, 0.0505])[0] is False


def test_final_summary_and_figure(full_run):
    base, *_ = full_run
    res = base / "results"
    summary = (res / "summary.md").read_text()
    assert not summary.startswith("# PARTIAL") and "## Is starvation still growing?" in summary
    assert "tokens/s" in summary and "Total wall time" in summary
    assert json.loads((res / "timing.json").read_text())["final"] is True
    assert (res / "llm_long_starvation.png").stat().st_size > 5000
    values = json.loads((res / "values.json").read_text())
    assert values["topk"] == 6.0 and values["relu_l1"] > 0


def test_killed_run_resumes_to_the_same_curve(full_run, tmp_path, monkeypatch):
    """Stop the first long stack at step 17 (KeyboardInterrupt from a step callback); the summary is
    PARTIAL; a rerun trains only the steps left (counted) and gives the uninterrupted curves."""
    base, model, corpus, first = full_run
    out, res = tmp_path / "out", tmp_path / "results"
    for name in ("acts_train", "acts_eval", "saes"):
        shutil.copytree(base / "out" / name, out / name)
    shutil.copytree(base / "results" / "sweep", res / "sweep")
    argv = _argv(model, corpus, out, res)
    runners = []
    real = long.LongRunner.run

    def keep(self):
        runners.append(self)
        return real(self)

    on_disk = {}

    def stop(step):
        if step == 17:  # what a SIGKILL here would leave: the timing written every TIMING_EVERY steps
            on_disk.update(json.loads((res / "timing.json").read_text()))
            raise KeyboardInterrupt

    monkeypatch.setattr(long, "TIMING_EVERY", 5)
    monkeypatch.setattr(long.LongRunner, "run", keep)
    monkeypatch.setattr(long.LongRunner, "step_hook", staticmethod(stop))
    with pytest.raises(KeyboardInterrupt):
        starvation.main(argv)
    assert runners[0].steps_trained == 17
    assert [t["steps"] for t in on_disk["long_training"].values()] == [15]
    assert 0 < on_disk["long_training"]["topk_s0+topk_s1"]["train_s"] <= on_disk["wall_s_total"]
    summary = (res / "summary.md").read_text()
    assert summary.startswith("# PARTIAL: 6 of 20 evaluation points")  # topk seeds 0, 1 at 1, 3, 10
    monkeypatch.setattr(long.LongRunner, "step_hook", None)
    assert starvation.main(argv) == 0
    assert runners[1].steps_trained == 3 * CFG.curve_steps - 17  # resumed, not restarted
    assert first.steps_trained == 3 * CFG.curve_steps
    a, b = _curves(base / "results"), _curves(res)
    assert a.keys() == b.keys()
    for k in a:
        for m in ("l0", "fvu", "dead_fraction", "rare_fraction_1e4", "dense_fraction", "ce_recovered_mean"):
            assert b[k][m] == pytest.approx(a[k][m], rel=1e-5, abs=1e-7, nan_ok=True), (k, m)
    assert not (res / "summary.md").read_text().startswith("# PARTIAL")


def test_partial_marking_from_curves(full_run, tmp_path):
    base, model, corpus, _ = full_run
    res = tmp_path / "results"
    res.mkdir()
    lines = (base / "results" / "curves.csv").read_text().splitlines()
    (res / "curves.csv").write_text("\n".join(lines[:-2]) + "\n")
    cfg, _ = starvation.parse_config(_argv(model, corpus, tmp_path / "out", res))
    assert n_expected(cfg) == 20
    curve_report.report(cfg)
    assert (res / "summary.md").read_text().startswith("# PARTIAL: 18 of 20 evaluation points")
    (res / "curves.csv").write_text("\n".join(lines) + "\n")
    curve_report.report(cfg)
    assert not (res / "summary.md").read_text().startswith("# PARTIAL")
    assert long.pick_value([(0.01, 40.0), (0.04, 10.0)], 20.0) == pytest.approx(0.02)


def test_figures_draws_the_curves_from_csv_or_skips(full_run, tmp_path, monkeypatch):
    import dataclasses

    import figures

    base, *_ = full_run
    monkeypatch.setitem(PRESETS, "smollm2-long", dataclasses.replace(CFG, results=str(tmp_path / "none")))
    skipped = figures.register_builtins()
    assert "curves.csv is missing" in skipped["llm_long"] and "llm_long" not in figures.REGISTRY
    shutil.copytree(base / "results", tmp_path / "res")
    monkeypatch.setitem(PRESETS, "smollm2-long", dataclasses.replace(CFG, results=str(tmp_path / "res")))
    built = figures.build(tmp_path / "fig", only=["llm_long"])
    assert [p.name for p in built["llm_long"]] == ["llm_long_starvation.png"]
    assert (tmp_path / "fig" / "llm_long_summary.md").exists()


def test_curve_config_checks():
    with pytest.raises(ValueError, match=r"curve_tokens == -1, must be an integer >= 0"):
        LLMStarvationConfig(curve_tokens=-1)
    with pytest.raises(ValueError, match=r"curve_all_seeds == \('aen',\): \['aen'\] unknown or not among curve_arms"):
        LLMStarvationConfig(curve_tokens=1_000_000, curve_arms=("topk",), curve_all_seeds=("aen",))
    with pytest.raises(ValueError, match=r"curve_seeds == \(1, 1\), must be distinct integers >= 0"):
        LLMStarvationConfig(curve_tokens=1_000_000, curve_seeds=(1, 1))
    with pytest.raises(ValueError, match=r"eval_steps holds \[0\], each must be an integer in \[1, steps=5\]"):
        from geomsae.train_stack import train_stack
        from geomsae.training.config import TrainConfig

        train_stack([{"arch": "topk", "d_sae": 8, "k": 2}], __import__("torch").randn(64, 4), TrainConfig(steps=5),
                    eval_steps=[0], on_eval=lambda *a: None)
    assert PRESETS["smollm2-long"].curve_steps * PRESETS["smollm2-long"].batch_size >= 10_000_000
    assert PRESETS["smollm2-long"].train_tokens >= 4_000_000 and PRESETS["smollm2-long"].d_sae == 4608


def test_cost_lines_say_when_a_stack_was_timed_over_fewer_steps_than_it_ran():
    from llm_eval.curve_report import _rate

    timing = {"harvest_train": {"tokens": 1000, "wall_s": 10.0, "tokens_per_s": 100.0},
              "long_training": {"a_s0": {"steps": 510, "train_s": 700.0, "sae_tokens_per_s": 8000.0},
                                "b_s0": {"steps": 2500, "train_s": 900.0, "sae_tokens_per_s": 11000.0}},
              "wall_s_total": 7200.0}
    text = "\n".join(_rate(timing, 2500))
    assert "3,010 stack steps in 0.44 h" in text and "a_s0 510 of 2,500 steps" in text and "b_s0 2" not in text
    assert "at least 2.00 h" in text
    timing["long_training"]["a_s0"]["steps"] = 2500
    text = "\n".join(_rate(timing, 2500))
    assert "fewer steps" not in text and "at least" not in text and "2.00 h" in text

"""llm_eval: the runner's tiny preset end to end on a tiny random GPT-NeoX model, and its resume."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.tiny_lm import save_tiny, write_text

from llm_eval import starvation  # noqa: E402
from llm_eval.config import PRESETS, LLMStarvationConfig  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("llm")
    model = save_tiny(base / "neox", "gpt_neox", trained=True)
    corpus = write_text(base / "text", copies=12)
    argv = ["--preset", "tiny", "--model", str(model), "--text", str(corpus), "--out", str(base / "out"),
            "--results", str(base / "results")]
    assert starvation.main(argv) == 0
    return base, argv


def test_tiny_preset_writes_results_summary_and_figures(tiny_run):
    base, _ = tiny_run
    res = base / "results"
    with open(res / "results.csv") as f:
        rows = list(csv.DictReader(f))
    cfg = PRESETS["tiny"]
    # topk: its k grid; relu_l1 and aen: sweep_points λ values each; both seeds
    assert len(rows) == len(cfg.seeds) * (len(cfg.topk_ks) + 2 * cfg.sweep_points)
    for r in rows:
        assert 0 <= float(r["dead_fraction"]) <= 1 and float(r["l0"]) > 0
        assert math.isfinite(float(r["ce_recovered_mean"])) and float(r["kl"]) >= 0
        assert float(r["ce_zero"]) == pytest.approx(float(rows[0]["ce_zero"]))  # one cached ablation
    topk = [r for r in rows if r["arm"] == "topk"]
    assert sorted({float(r["l0"]) for r in topk}) == pytest.approx([4.0, 8.0], abs=0.05)
    summary = (res / "summary.md").read_text()
    assert "## Verdicts" in summary and "**(a)**" in summary and "**(e)**" in summary
    assert "Against the paper's Pythia-70M figures" in summary
    with open(res / "verdicts.csv") as f:
        verdicts = list(csv.DictReader(f))
    assert {v["verdict"] for v in verdicts} <= {"holds", "does not hold", "within noise", "n/a"}
    assert {v["claim"] for v in verdicts} == {"a", "b", "c", "d"}  # no en arm in the tiny preset: no (e)
    for fig in ("llm_starvation_vs_l0.png", "llm_firing_hist.png"):
        assert (res / fig).stat().st_size > 5000
    cfg_json = json.loads((res / "config.json").read_text())
    assert cfg_json["preset"] == "tiny" and cfg_json["d_sae"] == 64
    timing = json.loads((res / "timing.json").read_text())
    assert timing["harvest_train"]["tokens"] == 4096 and timing["training"]["saes"] == len(rows)
    manifest = json.loads((base / "out" / "acts_eval" / "manifest.json").read_text())
    assert manifest["metadata"]["split"] == "heldout" and manifest["n_tokens"] == 512


def test_rerun_reuses_every_row(tiny_run, monkeypatch):
    base, argv = tiny_run
    before = (base / "results" / "results.csv").read_text()

    def no_training(*a, **k):
        raise AssertionError("a finished SAE was trained again")

    monkeypatch.setattr(starvation.Runner, "train_stack", no_training)
    assert starvation.main(argv) == 0
    assert (base / "results" / "results.csv").read_text() == before


def test_interrupted_run_resumes_without_recomputing(tiny_run, tmp_path, monkeypatch):
    """Drop the last rows (as if the run stopped there): a rerun trains exactly those again, the
    kept rows stay byte for byte, and the sweep plans as it did the first time."""
    base, argv = tiny_run
    full = (base / "results" / "results.csv").read_text().splitlines()
    res = tmp_path / "results"
    res.mkdir()
    keep = full[:-3]
    (res / "results.csv").write_text("\n".join(keep) + "\n")
    hist = (base / "results" / "firing_hist.csv").read_text().splitlines()
    (res / "firing_hist.csv").write_text("\n".join(hist[:-3]) + "\n")
    trained: list[tuple] = []
    real = starvation.Runner.train_stack

    def spy(self, stack, *a, **k):
        trained.extend(m.key for m in stack)
        return real(self, stack, *a, **k)

    monkeypatch.setattr(starvation.Runner, "train_stack", spy)
    argv2 = [a if a != str(base / "results") else str(res) for a in argv]
    argv2 = [a if a != str(base / "out") else str(tmp_path / "out") for a in argv2]
    import shutil

    shutil.copytree(base / "out" / "acts_train", tmp_path / "out" / "acts_train")
    shutil.copytree(base / "out" / "acts_eval", tmp_path / "out" / "acts_eval")
    assert starvation.main(argv2) == 0
    assert len(trained) == 3
    again = (res / "results.csv").read_text().splitlines()
    assert set(keep) <= set(again)  # the kept rows, byte for byte
    key = lambda line: line.split(",")[:5]
    assert sorted(map(key, again)) == sorted(map(key, full))


def test_report_only_and_config_checks(tiny_run):
    base, argv = tiny_run
    (base / "results" / "summary.md").unlink()
    assert starvation.main(argv + ["--report-only"]) == 0
    assert (base / "results" / "summary.md").exists()
    with pytest.raises(ValueError, match=r"arms == \('aen', 'nope'\): unknown \['nope'\]"):
        LLMStarvationConfig(arms=("aen", "nope"))
    with pytest.raises(ValueError, match=r"topk_ks == \(5000,\), each must be in \[1, d_sae=2304\]"):
        LLMStarvationConfig(topk_ks=(5000,))
    with pytest.raises(ValueError, match=r"autocast == 'fp16', must be 'none' or 'bfloat16'"):
        LLMStarvationConfig(autocast="fp16")
    for name in ("smollm2-cpu", "pythia70m", "llama8b"):  # the presets themselves are valid configs
        assert PRESETS[name].preset == name

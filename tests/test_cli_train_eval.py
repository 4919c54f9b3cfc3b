"""`geomsae train` then `geomsae eval` end to end, in-process, on a tiny .npy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geomsae.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    D = rng.standard_normal((16, 32))
    D /= np.linalg.norm(D, axis=0)
    Z = np.zeros((2048, 32))
    Z[np.repeat(np.arange(2048), 2), np.argsort(rng.random((2048, 32)), 1)[:, :2].ravel()] = rng.uniform(1, 3, 4096)
    np.save(d / "x.npy", (Z @ D.T).astype(np.float32))
    np.save(d / "D.npy", D)
    return d


def _train_args(files, out, *extra):
    return ["train", "--arch", "aen", "--data", str(files / "x.npy"), "--d-sae", "32", "--steps", "80",
            "--batch-size", "64", "--lr", "5e-3", "--seed", "0", "--out", str(out), "--lam1", "0.02",
            "--warmup-steps", "20", "--ramp-steps", "20", "--no-progress", "--checkpoint-every", "40", *extra]


def test_train_then_eval_json(files, tmp_path, capsys):
    assert main(_train_args(files, tmp_path / "run")) == 0
    assert "saved" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "cfg.json").read_text())
    assert saved["arch"] == "aen" and saved["cfg"]["lam1"] == 0.02 and saved["cfg"]["warmup_steps"] == 20
    assert saved["train"]["steps"] == 80 and saved["train"]["batch_size"] == 64
    assert main(["eval", str(tmp_path / "run"), "--data", str(files / "x.npy"), "--true-dict",
                 str(files / "D.npy"), "--n-tokens", "1000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for key in ("fvu", "l0", "dead_fraction", "dense_fraction", "l2_ratio", "rel_bias", "mmcs", "recovery_rate",
                "mmcs_1to1", "l0_raw", "dead_fraction_raw"):
        assert isinstance(res[key], float) and math.isfinite(res[key]), key
    assert res["n_tokens"] == 1000 and res["fvu"] < 0.6 and 0 < res["l0"] < 32 and 0 < res["mmcs"] <= 1
    assert main(["eval", str(tmp_path / "run"), "--data", str(files / "x.npy")]) == 0
    table = capsys.readouterr().out
    assert "fvu" in table and "dead_fraction" in table and "mmcs" not in table


def test_train_with_held_out_evaluation(files, tmp_path, capsys):
    assert main(_train_args(files, tmp_path / "run", "--steps", "30", "--eval-fraction", "0.25")) == 0
    assert "held-out evaluation (512 tokens)" in capsys.readouterr().out
    res = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert res["n_tokens"] == 512 and 0 < res["fvu"] < 1.5


def test_resume_and_refusals(files, tmp_path, capsys, monkeypatch):
    import geomsae.training.loop

    out = tmp_path / "run"
    assert main(_train_args(files, out, "--steps", "40")) == 0
    assert main(_train_args(files, out, "--steps", "40")) == 2
    assert "already holds a run" in capsys.readouterr().err
    updates = []  # a seeded restart from step 0 would end the same: count the optimizer steps run
    real = geomsae.training.loop.sae_update
    monkeypatch.setattr(geomsae.training.loop, "sae_update", lambda *a: (updates.append(1), real(*a)))
    assert main(_train_args(files, out, "--steps", "60", "--resume")) == 0
    assert len(updates) == 20
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    assert main(_train_args(files, tmp_path / "k", "--k", "4")) == 2
    assert "--k is not an option of arch 'aen'" in capsys.readouterr().err
    assert main(_train_args(files, tmp_path / "lr", "--lr", "-1")) == 2
    assert "lr == -1.0, must be a finite number > 0" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--data", str(files / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_the_documented_fields(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    for flag, doc in [("--lr-warmup-steps", "Steps of linear learning-rate warm-up"),
                      ("--checkpoint-every", "Steps between checkpoints"),
                      ("--input-norm", "'dataset': train on s·x"), ("--arch", "SAE architecture")]:
        assert flag in text and doc in text, flag
    # without --arch: one line per architecture naming its options
    assert "\n  en              --lam1 --lam2\n" in out
    assert "\n  topk            --k --auxk/--no-auxk " in out
    with pytest.raises(SystemExit):
        main(["train", "--arch", "aen", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "AENConfig: Options of --arch aen" in text
    assert "--lam1 float Adaptive l1 coefficient" in text and "--warmup-steps" in text and "(default: 0.005)" in text
    assert "--k " not in text and "--steps" in text
    with pytest.raises(SystemExit):
        main(["train", "--arch", "topk", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--k int Number of active latents" in text and "--tied-init, --no-tied-init" in text and "--lam1" not in text
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--true-dict" in capsys.readouterr().out


def test_every_command_line_prints_its_help(capsys):
    """--help of every dataclass-driven command renders (argparse %-formats help: a docstring with
    a bare '%' once crashed ``python -m llm_eval.starvation --help``); each geomsae command's
    options are checked in tests/test_cli_commands.py."""
    import figures.__main__
    import llm_eval.starvation
    import proofs_check.__main__
    import synthetic.__main__
    import synthetic.compare_arms
    import synthetic.starvation

    for name, entry in [("llm_eval.starvation", llm_eval.starvation.main),
                        ("synthetic.starvation", synthetic.starvation.main),
                        ("synthetic.compare_arms", synthetic.compare_arms.main),
                        ("synthetic", synthetic.__main__.main), ("proofs_check", proofs_check.__main__.main),
                        ("figures", figures.__main__.main)]:
        with pytest.raises(SystemExit) as e:
            entry(["--help"])
        assert e.value.code == 0, name
        assert "--" in capsys.readouterr().out, name
    for cmd in ["train", "eval", "compare", "harvest", "solve"]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0, cmd
    # a '%' in a field docstring: tests/test_cli_config.py::test_preset_defaults_and_extra_flags


def test_evaluate_returns_a_typed_result_and_its_legacy_dict(files):
    import dataclasses

    from geomsae.evaluate import DeadAtWindow, EvalResult, evaluate
    from geomsae.saes import make

    torch.manual_seed(0)
    sae = make("aen", 16, 32)
    X = np.load(files / "x.npy")
    res = evaluate(sae, X, true_dict=np.load(files / "D.npy"), windows=(100, 1000, 10**6), batch_size=300)
    assert isinstance(res, EvalResult) and res.n_tokens == 2048
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.fvu = 0.0
    assert res.dead_windows == (DeadAtWindow(100, res.dead_fraction_at(100)), DeadAtWindow(1000, res.dead_fraction_at(1000)))
    with pytest.raises(KeyError, match="window 1000000 was not evaluated"):
        res.dead_fraction_at(10**6)
    assert res.firing_frequencies.shape == (32,) and sum(res.firing_histogram.counts) == 32
    assert res.l0 == pytest.approx(float(res.firing_frequencies.sum()))
    d = res.to_dict()  # the dict evaluate() returned before, keys in the same order
    assert list(d) == ["n_tokens", "fvu", "explained_variance", "l0", "dead_fraction", "dead_fraction_at_100",
                       "dead_fraction_at_1000", "dense_fraction", "dense_fraction_001", "l2_ratio", "rel_bias",
                       "firing_frequencies", "firing_histogram", "l0_raw", "dead_fraction_raw", "rare_fraction_1e4",
                       "rare_fraction_1e5", "collapsed", "rms", "fire_rel", "mmcs", "recovery_rate", "mmcs_1to1",
                       "recovery_chance", "mmcs_1to1_chance"]
    assert d["firing_histogram"] == {"counts": res.firing_histogram.counts, "edges": res.firing_histogram.edges}
    assert d["mmcs_1to1"] == res.mmcs_1to1 and res["fvu"] == res.fvu  # legacy read-only access
    js = res.to_json()
    assert "firing_frequencies" not in js and js["firing_histogram"]["edges"][0] is None  # -inf -> null
    json.dumps(js, allow_nan=False)
    plain = evaluate(sae, X[:500])
    assert plain.mmcs is None and "mmcs" not in plain.to_dict() and plain.dead_windows == ()

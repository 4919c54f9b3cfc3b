"""Option spelling, defaults, --help and one-line errors of every geomsae command (simple_parsing)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geomsae.cli import build_parser, main
from geomsae.commands.train import arch_options, sae_spec
from geomsae.compare import CompareConfig
from geomsae.saes import ARCHS, config_class
from geomsae.training.config import TrainConfig

TRAIN = ["train", "--data", "x.npy", "--d-sae", "8"]


def parse(*argv):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("cmd", ["solve", "train", "eval", "compare", "harvest"])
def test_help_exits_zero(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert f"usage: geomsae {cmd}" in capsys.readouterr().out


def test_no_command_prints_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(c in out for c in ("solve", "train", "eval", "compare", "harvest"))


def test_train_options_and_defaults():
    args = parse(*TRAIN, "--arch", "aen")
    assert args.train == TrainConfig()
    assert args.sae.arch == arch_options("aen")()  # AENConfig's defaults
    assert sae_spec(args, 16) == {"arch": "aen", "d_in": 16, "d_sae": 8}
    args = parse(*TRAIN, "--arch", "topk", "--k", "4", "--no-auxk", "--k-aux", "none", "--lr-warmup-steps", "7",
                 "--data-seed", "3", "--betas", "0.8", "0.9", "--no-progress", "--out", "runs/t", "--resume")
    assert args.train == TrainConfig(lr_warmup_steps=7, data_seed=3, betas=(0.8, 0.9), progress=False, out="runs/t")
    assert args.resume and args.verify == "lazy"
    # only the architecture fields given are part of the spec (a resumed run must match those)
    assert sae_spec(args, 16) == {"arch": "topk", "d_in": 16, "d_sae": 8, "k": 4, "auxk": False, "k_aux": None}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_arch_options_mirror_the_config(arch):
    """The command-line view of each architecture: the config's fields (but d_in, d_sae,
    input_norm) with the same types, defaults and docstrings as help."""
    cls = config_class(arch)
    want = {f.name: f.default for f in dataclasses.fields(cls) if f.init and f.name not in ("d_in", "d_sae", "input_norm")}
    view = arch_options(arch)
    assert {f.name: f.default for f in dataclasses.fields(view)} == want
    assert all(f.metadata["help"] for f in dataclasses.fields(view))
    given = [f"--{n.replace('_', '-')}={v}" for n, v in want.items() if type(v) in (int, float)]
    spec = sae_spec(parse("train", "--data", "x.npy", "--d-sae", "64", "--arch", arch, *given), 16)
    assert len(spec) == 3 + len(given)
    assert cls(**{k: v for k, v in spec.items() if k != "arch"}) == cls(d_in=16, d_sae=64)  # as given: the defaults


@pytest.mark.parametrize("argv, message", [
    (["--arch", "aen", "--k", "4"], "geomsae train: error: --k is not an option of arch 'aen' (its options: --beta"),
    (["--arch", "aen", "--lr", "-1"], "geomsae train: error: lr == -1.0, must be a finite number > 0\n"),
    (["--arch", "aen", "--steps", "0"], "geomsae train: error: steps == 0, must be an integer >= 1\n"),
])
def test_train_errors_are_one_line(argv, message, capsys):
    assert main(TRAIN + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --arch"),
    (["--arch", "nope"], "invalid choice: 'nope'"),
    (["--arch", "aen", "--lr_warmup_steps", "3"], "unrecognized arguments: --lr_warmup_steps"),
    (["--arch", "aen", "--noprogress"], "unrecognized arguments: --noprogress"),
    (["--arch", "topk", "-k", "3"], "unrecognized arguments: -k"),
    (["--arch", "aen", "--keep", "3"], "unrecognized arguments: --keep"),  # no abbreviations
])
def test_train_refusals(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(TRAIN + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_solve_demo_flags_and_checks(capsys):
    assert main(["solve", "--demo", "--n", "12", "--m", "24", "--k", "2", "--n-samples", "8", "--no-adaptive",
                 "--rho", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "8 problems, n=12, m=24" in out and "adaptive" not in out
    assert parse("solve", "--demo").cfg.adaptive is True
    assert main(["solve", "--demo", "--rho", "1.5"]) == 2
    assert capsys.readouterr().err == "geomsae solve: error: rho == 1.5, must be in [0, 1)\n"
    assert main(["solve"]) == 2
    assert "needs --demo, or both --data X.npy and --dict D.npy" in capsys.readouterr().err


def test_compare_options_and_checks(tmp_path, capsys):
    args = parse("compare", "a", "b", "--data", "x.npy", "--n-tokens", "40", "--held-out", "1.0", "--out", "none")
    assert args.runs == ["a", "b"] and args.cfg == CompareConfig(n_tokens=40, held_out=1.0, out=None)
    assert main(["compare", "a", "--data", "x.npy", "--n-tokens", "0"]) == 2
    assert capsys.readouterr().err == "geomsae compare: error: n_tokens == 0, must be an integer >= 1\n"
    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    assert main(["compare", str(tmp_path / "missing"), "--data", str(tmp_path / "x.npy"), "--held-out", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_harvest_options_and_checks(capsys):
    args = parse("harvest", "--out", "acts", "--no-resume", "--no-drop-bos", "--tokens", "100", "--layer", "3")
    assert args.out == "acts" and args.resume is False
    assert args.cfg.drop_bos is False and args.cfg.tokens == 100 and args.cfg.layer == 3 and args.cfg.progress
    assert main(["harvest", "--out", "acts", "--layer", "-1"]) == 2
    assert capsys.readouterr().err == "geomsae harvest: error: layer == -1, must be an integer >= 0\n"


def test_eval_options():
    args = parse("eval", "runs/aen", "--data", "x.npy", "--windows", "10", "20", "--json")
    assert args.sae == "runs/aen" and args.windows == [10, 20] and args.json and args.batch_size == 4096

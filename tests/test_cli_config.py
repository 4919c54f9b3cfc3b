"""geomsae.config_cli.parse_config: dataclass fields as --kebab-case options through simple_parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from geomsae.config_cli import field_docs, parse_config


@dataclass
class Toy:
    """A toy config."""

    n_steps: int = 10
    """Steps to run, about 10 % of the budget."""
    k: int = 3
    """Active latents (a one-letter name)."""
    lr: float = 1e-3
    """Learning rate."""
    seeds: tuple[int, ...] = (0,)
    """Seeds."""
    mode: Literal["fast", "slow"] = "fast"
    """How."""
    out: str | None = None
    """Output folder; None: nowhere."""
    limit: int | None = 5
    """Upper limit; None: none."""
    progress: bool = True
    """Show progress."""

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps == {self.n_steps}, must be >= 1")


def test_spelling_defaults_and_types():
    cfg, ns = parse_config(Toy, [])
    assert cfg == Toy() and vars(ns) == {}
    cfg, _ = parse_config(Toy, ["--n-steps", "7", "--k", "4", "--seeds", "1", "2", "--mode", "slow", "--no-progress",
                                "--out", "runs/x", "--limit", "none", "--lr", "0.5"])
    assert cfg == Toy(n_steps=7, k=4, lr=0.5, seeds=(1, 2), mode="slow", out="runs/x", limit=None, progress=False)
    assert parse_config(Toy, ["--progress"], defaults=Toy(progress=False))[0].progress is True


@pytest.mark.parametrize("argv", [["--n_steps", "3"], ["-k", "3"], ["--mode", "medium"], ["--noprogress"]])
def test_other_spellings_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Toy, argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_preset_defaults_and_extra_flags(capsys):
    preset = Toy(n_steps=99, seeds=(5, 6), progress=False)
    cfg, ns = parse_config(Toy, ["--k", "8", "--report-only"], defaults=preset,
                           add_extra=lambda p: p.add_argument("--report-only", action="store_true"))
    assert cfg == Toy(n_steps=99, k=8, seeds=(5, 6), progress=False) and ns.report_only is True
    with pytest.raises(SystemExit) as e:
        parse_config(Toy, ["--help"], defaults=preset, prog="python -m toy", description="Toy runner.\n\n  indented")
    assert e.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert out.startswith("usage: python -m toy") and "\n  indented" in out  # the description kept as written
    assert "--n-steps" in text and "Steps to run, about 10 % of the budget. (default: 99)" in text
    assert "--progress, --no-progress" in text and "--k " in text


def test_failed_check_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(Toy, ["--n-steps", "0"], prog="toy")
    assert e.value.code == 2
    assert capsys.readouterr().err == "toy: error: n_steps == 0, must be >= 1\n"


def test_field_docs():
    docs = field_docs(Toy)
    assert list(docs) == ["n_steps", "k", "lr", "seeds", "mode", "out", "limit", "progress"]
    assert docs["n_steps"] == "Steps to run, about 10 % of the budget." and docs["out"] == "Output folder; None: nowhere."

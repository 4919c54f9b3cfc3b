"""The reproducibility check: verdict agreement between two runs, and the float-jitter perturbation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from geomsae.study.agreement import agree, kind, readings_differ
from synthetic import agreement as cli
from synthetic.cells import make_data
from synthetic.config import StarvationConfig


def row(claim="a", rho=0.0, target=4.0, other="topk", verdict="holds", effect=0.05, delta=0.01):
    return {"claim": claim, "metric": "dead_fraction", "rho": rho, "l0_target": target, "other": other,
            "verdict": verdict, "aen_advantage": effect, "min_effect": delta}


@pytest.mark.parametrize("a,b,expected", [
    ("holds", "holds", "same"), ("holds", "underpowered", "soft"), ("n/a", "equivalent", "soft"),
    ("holds", "equivalent", "decisive"), ("equivalent", "does not hold", "decisive"),
    ("holds", "does not hold", "opposite"), ("does not hold", "holds", "opposite")])
def test_kind_classes(a, b, expected):
    assert kind(a, b) == expected


def test_kind_rejects_unknown_label():
    with pytest.raises(ValueError, match="'maybe'"):
        kind("holds", "maybe")


def test_agree_counts_and_big_changes():
    a = [row(rho=0.0), row(rho=0.5, verdict="holds", effect=0.03), row(rho=0.9, verdict="equivalent", effect=0.001),
         row(other="relu_l1", verdict="holds", effect=0.02), row(other="en")]
    b = [row(rho=0.0), row(rho=0.5, verdict="underpowered", effect=0.02),
         row(rho=0.9, verdict="holds", effect=0.012), row(other="relu_l1", verdict="does not hold", effect=-0.02)]
    res = agree(a, b, ("rho",))
    assert res["counts"] == {"same": 1, "soft": 1, "decisive": 1, "opposite": 1}
    assert res["only_a"] == 1 and res["only_b"] == 0
    # big: both |effects| ≥ δ = 0.01 — the soft pair (0.03, 0.02) and the opposite pair; not the decisive one (0.001)
    big = {(p["rho"], p["other"], p["kind"]) for p in res["big_changes"]}
    assert big == {("0.5", "topk", "soft"), ("0.0", "relu_l1", "opposite")}


def test_agree_rejects_duplicates():
    with pytest.raises(ValueError, match="twice"):
        agree([row(), row()], [row()], ("rho",))


def test_readings_differ_only_where_tallies_move():
    a = [row(claim="a"), row(claim="b", verdict="equivalent")]
    b = [row(claim="a"), row(claim="b", verdict="underpowered")]
    moved = readings_differ(a, b)
    assert set(moved) == {"b"} and "equivalent 1" in moved["b"][0] and "underpowered 1" in moved["b"][1]


def _write(folder, rows):
    folder.mkdir()
    cols = ["claim", "metric", "rho", "l0_target", "other", "aen_advantage", "min_effect", "verdict"]
    with open(folder / "verdicts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_cli_report_and_errors(tmp_path, capsys):
    _write(tmp_path / "A", [row(), row(rho=0.9, verdict="holds")])
    _write(tmp_path / "B", [row(), row(rho=0.9, verdict="does not hold", effect=-0.05)])
    assert cli.main([str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "agree.md")]) == 0
    text = (tmp_path / "agree.md").read_text()
    assert "| opposite | 1 |" in text and "in both runs: **1**" in text
    assert cli.main([str(tmp_path / "A"), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_float_jitter_perturbs_training_data_only():
    base = make_data(8, 16, 2, 0.5, 64, 32, seed=3)
    same = make_data(8, 16, 2, 0.5, 64, 32, seed=3, float_jitter=0.0)
    jit = make_data(8, 16, 2, 0.5, 64, 32, seed=3, float_jitter=1e-6)
    assert np.array_equal(base.x_train.numpy(), same.x_train.numpy())
    assert np.array_equal(base.x_eval.numpy(), jit.x_eval.numpy()) and np.array_equal(base.D, jit.D)
    rel = (jit.x_train.double() - base.x_train.double()).abs() / base.x_train.double().abs().clamp_min(1e-30)
    assert not np.array_equal(base.x_train.numpy(), jit.x_train.numpy())
    # relative change ~ 1e-6·|N(0,1)|: below 1e-5 everywhere, about 0.8e-6 on average (float32 rounding adds < 1.2e-7)
    assert float(rel.max()) < 1e-5 and 0.4e-6 < float(rel.mean()) < 1.2e-6


@pytest.mark.parametrize("bad", [-1e-9, 2e-3, math.nan])
def test_float_jitter_range_checked(bad):
    with pytest.raises(ValueError, match="float_jitter"):
        StarvationConfig(float_jitter=bad)

"""geomsae.study.rounds and .stack: stacks of one architecture, rounds, resuming, a member equals its solo run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geomsae.study import Cell, Member, Run, StudySettings, sweep, train_round
from geomsae.study.evaluation import evaluation_row
from geomsae.study.rounds import plan
from geomsae.study.stack import stacks, train_and_evaluate, train_config, train_members
from geomsae.study.sweep import bracket, propose

S = StudySettings(arms=("relu_l1", "aen", "topk"), seeds=(0, 1), l0_targets=(4.0, 6.0), topk_ks=(2, 4, 8),
                  sweep_points=3, bracket_points=2, bracket_factor=4.0, lam_relu_l1=0.05, lam_aen=0.005)


def _fake_l0(m: Member) -> float:
    """A deterministic L0 curve: 0.2·λ^−1.5·(1 + seed/10), k itself for TopK."""
    if m.arm == "topk":
        return float(m.value)
    scale = {"relu_l1": 1.0, "relu_l1_resample": 1.0, "aen": 0.01}[m.arm]
    return 0.2 * scale * m.value ** -1.5 * (1 + m.seed / 10)


def _fake_round(log: list[list[Member]]):
    def train(members: list[Member]) -> list[Run]:
        log.append(list(members))
        return [Run(m, {"arm": m.arm, "seed": m.seed, "value": m.value, "l0": _fake_l0(m)}, [0]) for m in members]

    return train


CELLS = [Cell(a, (0.5,), s) for s in S.seeds for a in S.arms]


def test_stacks_group_by_architecture_and_split_evenly():
    ms = ([Member("topk", (r,), 0, k) for r in (0.0, 0.5) for k in (2, 4)]
          + [Member("topk_auxk", (0.0,), 0, 2)] + [Member("aen", (0.0,), s, 0.01) for s in range(5)])
    got = stacks(ms, 2)
    assert [len(s) for s in got] == [2, 2, 1, 2, 2, 1]  # topk-arch: 5 members -> 2+2+1; aen: 5 -> 2+2+1
    assert {m.arm for s in got[:3] for m in s} == {"topk", "topk_auxk"}  # arms sharing an architecture
    assert all({m.arm for m in s} == {"aen"} for s in got[3:])
    # within an architecture in (cell, seed, arm, value) order: the first stack is ρ = 0's
    assert [m.cell for m in got[0]] == [(0.0,), (0.0,)]
    assert sum(len(s) for s in stacks(ms, 64)) == len(ms) and len(stacks(ms, 64)) == 2
    with pytest.raises(ValueError, match=r"stack_size == 0, must be an integer >= 1"):
        stacks(ms, 0)


def test_train_round_runs_every_stack_in_order():
    seen = []
    ms = [Member("aen", (0.0,), s, 0.01) for s in range(3)] + [Member("topk", (0.0,), 0, 2)]
    runs = train_round(ms, lambda st: [Run(m, {"l0": 1.0}, []) for m in st], stack_size=2,
                       on_stack=lambda st, rs: seen.append(len(st)))
    assert seen == [2, 1, 1] and [r.member for r in runs] == [ms[0], ms[1], ms[2], ms[3]]


def test_sweep_rounds_hand_computed():
    log: list[list[Member]] = []
    runs = sweep(S, CELLS, _fake_round(log), log=lambda s: None)
    # round 1: the k grid (3 per topk cell) and the bracket (2 per penalty cell); round 2: one λ per cell
    assert [len(r) for r in log] == [2 * (3 + 2 + 2), 2 * 2]
    relu0 = sorted(m.value for m in log[0] if m.arm == "relu_l1" and m.seed == 0)
    assert relu0 == bracket(0.05, 2, 4.0) == [0.025, 0.1]
    # L0 at 0.025 = 0.2·0.025^−1.5 = 50.6 and at 0.1 = 6.32: both above 4 -> one step up from 0.1
    pts = [(v, _fake_l0(Member("relu_l1", (0.5,), 0, v))) for v in relu0]
    assert [m.value for m in log[1] if m.arm == "relu_l1" and m.seed == 0] == propose(pts, (4.0, 6.0), 1)
    assert len(runs) == 2 * (3 + 3 + 3)
    assert plan(S, "topk", {}, first=False) == []


def test_sweep_reuses_known_rows_and_plans_as_before():
    full_log: list[list[Member]] = []
    full = sweep(S, CELLS, _fake_round(full_log), log=lambda s: None)
    # interrupted: the last round-2 run is missing
    lost = full_log[1][-1]
    known = {r.member.key: (r.row, r.hist) for r in full if r.member != lost}
    log: list[list[Member]] = []
    again = sweep(S, CELLS, _fake_round(log), known=known, log=lambda s: None)
    assert log == [[lost]]  # only the missing SAE is trained
    assert sorted(r.member.key for r in again) == sorted(r.member.key for r in full)


def test_sweep_counts_unplanned_known_rows_against_the_budget():
    # an earlier run (another sweep rule) left 3 λ values for relu_l1 seed 0 and 1 for seed 1
    old = {("relu_l1", 0.5, 0, v): ({"l0": 5.0}, []) for v in (0.03, 0.06, 0.09)}
    old[("relu_l1", 0.5, 1, 0.07)] = ({"l0": 5.0}, [])
    log: list[list[Member]] = []
    sweep(dataclasses.replace(S, arms=("relu_l1",)), [Cell("relu_l1", (0.5,), s) for s in (0, 1)], _fake_round(log),
          known=old, log=lambda s: None)
    trained = [m for r in log for m in r]
    assert not [m for m in trained if m.seed == 0]  # full already: nothing new
    assert sorted(m.value for m in trained if m.seed == 1) == [0.025, 0.1]  # 1 known + 2 = sweep_points


# --------------------------------------------------------------------------- real training, tiny
def test_stack_member_equals_solo_run():
    from geomsae.train import train

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(64 * 20, 8, generator=g) for _ in range(3)]
    x_eval = torch.randn(256, 8, generator=g)
    s = dataclasses.replace(S, steps=20, batch_size=64, eval_windows=(128,), dead_window_tokens=640)
    tcfg = train_config(s, input_scale_tokens=640, log_every=20, checkpoint_every=0, progress=False)
    stack = [Member("aen", (0.0,), 0, 0.01), Member("aen", (0.5,), 1, 0.02), Member("aen", (0.9,), 2, 0.005)]
    runs = train_and_evaluate(stack, s, d_sae=16, train_source=xs, eval_source=[x_eval] * 3, tcfg=tcfg,
                              cell_keys=("rho",), extras=lambda m, res, row: {"steps": res.step})
    stacked, _ = train_members(stack, s, d_sae=16, source=xs, tcfg=tcfg)
    for i, (m, run) in enumerate(zip(stack, runs)):
        spec = {"arch": "aen", "d_sae": 16, "lam1": m.value, "lam2": s.lam2, "beta": s.adaptive_beta,
                "warmup_steps": int(s.adaptive_warmup_frac * s.steps), "ramp_steps": int(s.adaptive_ramp_frac * s.steps)}
        solo = train(spec, xs[i], dataclasses.replace(tcfg, seed=m.seed)).sae  # seed = init and data order
        torch.testing.assert_close(stacked[i].sae.W_dec, solo.W_dec, rtol=1e-4, atol=1e-5)
        want, hist = evaluation_row(solo.eval(), x_eval, windows=(128,))
        for k, v in want.items():
            assert run.row[k] == pytest.approx(v, rel=1e-3, abs=1e-3, nan_ok=True), k
        assert run.row["rho"] == m.cell[0] and run.row["seed"] == m.seed and run.row["value"] == m.value
        assert run.row["steps"] == 20 and run.row["train_time_s"] > 0 and sum(run.hist) == 16 == sum(hist)
        assert run.row["shrinkage"] == pytest.approx(abs(run.row["rel_bias"] - 1))
    with pytest.raises(ValueError, match=r"a stack holds one architecture, got \['aen', 'topk'\]"):
        train_members([stack[0], Member("topk", (0.0,), 0, 2)], s, d_sae=16, source=xs[:2], tcfg=tcfg)


def test_arm_steps_parse_and_checks():
    s = dataclasses.replace(S, steps=20, arm_steps=("aen=10", "topk=5"))
    assert (s.steps_for("aen"), s.steps_for("topk"), s.steps_for("relu_l1")) == (10, 5, 20)
    view = s.for_arm("aen")
    assert view.steps == 10 and view.arm_steps == () and view.steps_for("topk") == 10
    assert s.for_arm("relu_l1") is s
    for bad, msg in [(("aen",), r"'aen' must read 'arm=steps'"), (("aen=x",), r"must read 'arm=steps'"),
                     (("gated=5",), r"'gated' is not one of this run's arms"),
                     (("aen=21",), r"steps 21 must be in \[1, steps=20\]"), (("aen=0",), r"must be in \[1"),
                     (("aen=5", "aen=6"), r"names 'aen' twice")]:
        with pytest.raises(ValueError, match=msg):
            dataclasses.replace(S, steps=20, arm_steps=bad)


def test_stacks_split_one_architecture_by_training_length():
    ms = [Member("topk", (0.0,), 0, 2), Member("topk_auxk", (0.0,), 0, 2), Member("topk", (0.5,), 0, 4)]
    assert [len(s) for s in stacks(ms, 8)] == [3]
    got = stacks(ms, 8, steps_of={"topk": 10, "topk_auxk": 20}.get)
    assert [[m.arm for m in s] for s in got] == [["topk", "topk"], ["topk_auxk"]]


def test_an_arm_with_its_own_length_equals_its_solo_run_at_that_length():
    from geomsae.train import train

    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(64 * 20, 8, generator=g) for _ in range(2)]
    x_eval = torch.randn(256, 8, generator=g)
    s = dataclasses.replace(S, steps=20, arm_steps=("aen=8",), batch_size=64, eval_windows=(128,),
                            dead_window_tokens=640)
    own = s.for_arm("aen")
    tcfg = train_config(own, input_scale_tokens=640, log_every=8, checkpoint_every=0, progress=False)
    assert (tcfg.steps, tcfg.lr_warmup_steps) == (8, 1)
    stack = [Member("aen", (0.0,), 0, 0.01), Member("aen", (0.5,), 1, 0.02)]
    runs = train_and_evaluate(stack, s, d_sae=16, train_source=xs, eval_source=[x_eval] * 2, tcfg=tcfg,
                              cell_keys=("rho",), extras=lambda m, res, row: {"steps": res.step})
    for i, (m, run) in enumerate(zip(stack, runs)):
        spec = {"arch": "aen", "d_sae": 16, "lam1": m.value, "lam2": s.lam2, "beta": s.adaptive_beta,
                "warmup_steps": int(s.adaptive_warmup_frac * 8), "ramp_steps": int(s.adaptive_ramp_frac * 8)}
        solo = train(spec, xs[i], dataclasses.replace(tcfg, seed=m.seed)).sae
        want, _ = evaluation_row(solo.eval(), x_eval, windows=(128,))
        assert run.row["steps"] == 8
        assert run.row["fvu"] == pytest.approx(want["fvu"], rel=1e-3, abs=1e-4)
    long_cfg = train_config(s, input_scale_tokens=640, log_every=20, checkpoint_every=0, progress=False)
    with pytest.raises(ValueError, match=r"train for \[8\] steps \(settings.arm_steps\) but its TrainConfig for 20"):
        train_members(stack, s, d_sae=16, source=xs, tcfg=long_cfg)

"""The synthetic starvation runner: tiny end-to-end run, determinism, its claims, its CLI; and the
matched-L0 interpolation and verdict rule it reports with (geomsae.study)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from geomsae.study import matched, verdicts
from synthetic import budget, cells, report, resume, starvation
from synthetic.plots import FIGURES
from synthetic.starvation import PRESETS, StarvationConfig, parse_config


def _tiny(out: Path, **kw) -> StarvationConfig:
    return dataclasses.replace(PRESETS["tiny"], out=str(out), **kw)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[StarvationConfig, Path]:
    cfg = _tiny(tmp_path_factory.mktemp("starv") / "a")
    return cfg, starvation.run(cfg)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_everything(tiny_run):
    cfg, out = tiny_run
    for name in ["config.json", "results.csv", "matched.csv", "verdicts.csv", "summary.md", "firing_hist.csv",
                 "timing.json"] + [f for f, _ in FIGURES]:
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(dataclasses.asdict(cfg)))
    rows = _rows(out / "results.csv")
    assert list(rows[0]) == starvation.result_columns(cfg)
    # every (arm, rho, seed) cell is there, with 1..sweep_points runs
    cells = {(r["arm"], float(r["rho"]), int(r["seed"])) for r in rows}
    assert cells == {(a, r, s) for a in cfg.arms for r in cfg.rhos for s in cfg.seeds}
    for r in rows:
        for c in ["dead_fraction", "dead_at_256", "dense_fraction", "dense_fraction_001", "mmcs", "recovery_rate",
                  "mcc", "support_f1", "support_precision", "support_recall", "recovery_chance"]:
            assert 0.0 <= float(r[c]) <= 1.0 + 1e-12, (c, r[c])
        assert float(r["dead_at_256"]) >= float(r["dead_fraction"])  # fewer tokens, more latents unseen
        assert math.isfinite(float(r["fvu"])) and float(r["fvu"]) >= 0
        assert 0.0 <= float(r["l0"]) <= cfg.m
        assert float(r["train_time_s"]) > 0
        assert json.loads(r["hparams"])[r["param"]] == pytest.approx(float(r["value"]))
        assert float(r["shrinkage"]) == pytest.approx(abs(float(r["rel_bias"]) - 1), abs=1e-8)
    matched = _rows(out / "matched.csv")
    assert len(matched) == len(cfg.arms) * len(cfg.rhos) * len(cfg.l0_targets)
    for m in matched:
        if int(m["n_seeds"]) > 0:
            assert 0 <= float(m["dead_fraction_mean"]) <= 1
    verdicts = _rows(out / "verdicts.csv")
    assert {v["verdict"] for v in verdicts} <= {"holds", "does not hold", "within noise", "n/a"}
    text = (out / "summary.md").read_text()
    for claim in ("**(a)**", "**(b)**", "**(c)**", "**(d)**", "Verdict rule", "Matched-L0 table"):
        assert claim in text
    assert sum(p.stat().st_size > 1000 for p in (out / f for f, _ in FIGURES)) == len(FIGURES)


def _without(path: Path, drop: set[str]) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, c in enumerate(rows[0]) if c not in drop]
    return [[r[i] for i in keep] for r in rows]


def _close(a: list[list[str]], b: list[list[str]]) -> None:
    assert len(a) == len(b) and a[0] == b[0]
    for ra, rb in zip(a[1:], b[1:]):
        for c, x, y in zip(a[0], ra, rb):
            try:
                assert float(x) == pytest.approx(float(y), rel=1e-3, abs=1e-3, nan_ok=True), c
            except ValueError:
                assert x == y, c


def test_same_seed_same_csv(tiny_run, tmp_path):
    cfg, out = tiny_run
    # one cell alone (other stacks) gives the rows it has in the full run: each member equals its solo run
    # (to float tolerance: batched products may sum in another order)
    small = dataclasses.replace(cfg, arms=("aen",), rhos=(0.7,), out=str(tmp_path / "b"))
    out2 = starvation.run(small)
    want = [r for r in _without(out / "results.csv", set(cells.TIMING_COLUMNS))
            if r[0] in ("arm", "aen") and r[2] in ("rho", "0.7")]
    _close(_without(out2 / "results.csv", set(cells.TIMING_COLUMNS)), want)
    # and a full rerun is byte-identical except for train_time_s
    out3 = starvation.run(dataclasses.replace(cfg, out=str(tmp_path / "c")))
    assert _without(out3 / "results.csv", {"train_time_s"}) == _without(out / "results.csv", {"train_time_s"})
    assert (out3 / "matched.csv").read_bytes() == (out / "matched.csv").read_bytes()
    assert (out3 / "firing_hist.csv").read_bytes() == (out / "firing_hist.csv").read_bytes()


def test_tiny_run_is_stacked_in_rounds(tiny_run):
    cfg, out = tiny_run
    timing = json.loads((out / "timing.json").read_text())
    # round 1: 2 bracket λ x 2 ρ x 2 seeds per arm (8 each); round 2: one λ per cell (4 each)
    assert timing["runs"] == 24 and timing["stacks"] == 4 and timing["largest_stack"] == 8
    rows = _rows(out / "results.csv")
    for arm, start in (("relu_l1", cfg.lam_relu_l1), ("aen", cfg.lam_aen)):
        for rho in cfg.rhos:
            for seed in cfg.seeds:
                vals = sorted(float(r["value"]) for r in rows if r["arm"] == arm and float(r["rho"]) == rho
                              and int(r["seed"]) == seed)
                assert len(vals) == cfg.sweep_points and start / 2 in vals and start * 2 in vals


def test_interpolation_hand_computed():
    pts = [(1.0, 8.0, {"fvu": 0.1}), (2.0, 2.0, {"fvu": 0.5}), (4.0, 0.5, {"fvu": 0.9})]
    got = matched.interpolate_at(pts, 4.0, ["fvu"])
    # log 4 is halfway between log 8 and log 2 -> t = 1/2
    assert got["t"] == pytest.approx(0.5)
    assert got["fvu"] == pytest.approx(0.3)
    assert got["value"] == pytest.approx(math.sqrt(2.0))
    # target 1 lies in the second pair: t = log(1/2)/log(1/4) = 1/2
    assert matched.interpolate_at(pts, 1.0, ["fvu"])["fvu"] == pytest.approx(0.7)
    # endpoints are included; outside the swept range there is no value (no extrapolation)
    assert matched.interpolate_at(pts, 8.0, ["fvu"])["fvu"] == pytest.approx(0.1)
    assert matched.interpolate_at(pts, 10.0, ["fvu"]) is None
    assert matched.interpolate_at(pts, 0.1, ["fvu"]) is None
    # order of the input does not matter (sorted by knob)
    assert matched.interpolate_at(pts[::-1], 4.0, ["fvu"])["fvu"] == pytest.approx(0.3)
    # a non-hand-picked t: L0 from 10 to 1, target 5 -> t = log 2 / log 10
    t = math.log(2) / math.log(10)
    got = matched.interpolate_at([(1, 10.0, {"m": 1.0}), (3, 1.0, {"m": 0.0})], 5.0, ["m"])
    assert got["m"] == pytest.approx(1 - t)


def test_matched_table_mean_std():
    rows = []
    for seed, (f1, f2) in enumerate([(0.1, 0.5), (0.3, 0.7)]):
        rows += [dict(arm="x", rho=0.0, seed=seed, value=1.0, l0=8.0, fvu=f1),
                 dict(arm="x", rho=0.0, seed=seed, value=2.0, l0=2.0, fvu=f2)]
    (m,) = matched.matched_table(rows, [4.0], ["fvu"], cell_keys=("rho",))
    assert m["rho"] == 0.0
    assert m["n_seeds"] == 2
    assert m["fvu_mean"] == pytest.approx(0.4)  # seeds give 0.3 and 0.5
    assert m["fvu_std"] == pytest.approx(math.sqrt(0.02))


def test_claim_d_flips_direction():
    seeds = [dict(rho=0.5, l0_target=4.0, seed=sd, status="ok", arm=arm, dead_fraction=dead + 0.001 * sd,
                  recovery_rate=0.5 + 0.001 * sd, shrinkage=0.1, mcc=0.5, fvu=fvu + 0.001 * sd)
             for sd in range(3) for arm, dead, fvu in (("aen", 0.0, 0.31), ("en", 0.5, 0.30))]  # EN starves much more
    comps = verdicts.comparisons(seeds, report.CLAIMS, ("rho",))
    a = next(c for c in comps if c["claim"] == "a")
    d = next(c for c in comps if c["claim"] == "d" and c["metric"] == "dead_fraction")
    assert a["verdict"] == "holds" and d["verdict"] == "does not hold"
    # (e) non-inferiority: AEN's FVU 0.01 worse, inside the 0.02 margin -> holds; 0.05 worse -> does not hold
    e = next(c for c in comps if c["claim"] == "e")
    assert e["verdict"] == "holds" and abs(e["aen_advantage"] + 0.01) < 1e-9
    worse = [dict(r, fvu=r["fvu"] + 0.04) if r["arm"] == "aen" else r for r in seeds]
    e2 = next(c for c in verdicts.comparisons(worse, report.CLAIMS, ("rho",)) if c["claim"] == "e")
    assert e2["verdict"] == "does not hold"
    d_rec = next(c for c in comps if c["claim"] == "d" and c["metric"] == "recovery_rate")
    assert d_rec["outcome"] == "equivalent" and d_rec["verdict"] == "holds"  # EN recovers as many: (d) holds there


def test_config_cli_and_checks():
    cfg, _ = parse_config(["--preset", "tiny", "--seeds", "3", "4", "--lam-aen", "0.02", "--arms", "aen", "en"])
    assert cfg.preset == "tiny" and cfg.n == 16 and cfg.seeds == (3, 4) and cfg.lam_aen == 0.02
    assert cfg.arms == ("aen", "en")
    assert parse_config([])[0] == PRESETS["quick"]
    with pytest.raises(ValueError, match="unknown"):
        StarvationConfig(arms=("nope",))
    with pytest.raises(ValueError, match="rhos"):
        StarvationConfig(rhos=(1.0,))
    with pytest.raises(ValueError, match="eval_windows"):
        StarvationConfig(n_eval=100, eval_windows=(1000,))
    own, _ = parse_config(["--preset", "tiny", "--arm-steps", "aen=30", "relu_l1=20"])
    assert own.arm_steps == ("aen=30", "relu_l1=20") and own.steps_for("aen") == 30 and own.steps_for("x") == 60
    with pytest.raises(ValueError, match=r"steps 61 must be in \[1, steps=60\]"):
        dataclasses.replace(PRESETS["tiny"], arm_steps=("aen=61",))


def test_standard_preset_trains_each_arm_at_its_converged_length():
    std = PRESETS["standard"]
    lengths = {a: std.steps_for(a) for a in std.arms}
    assert lengths == {"relu_l1": 8000, "topk": 4000, "topk_tied": 4000, "topk_auxk": 4000, "jumprelu": 4000,
                       "en": 16000, "aen": 16000}
    # the length design's sizes, so figures/length.md's convergence applies to it as measured
    length = PRESETS["length"]
    assert (std.n, std.m, std.k, std.rhos, std.batch_size, std.lr) == (length.n, length.m, length.k, length.rhos,
                                                                       length.batch_size, length.lr)
    assert len(std.seeds) >= 5


def test_arms_with_their_own_lengths_run_end_to_end(tmp_path):
    cfg = _tiny(tmp_path / "own", arm_steps=("relu_l1=20",), rhos=(0.0,))
    out = starvation.run(cfg)
    rows = _rows(out / "results.csv")
    assert {r["arm"] for r in rows} == {"relu_l1", "aen"}
    text = (out / "summary.md").read_text()
    assert "steps per arm" in text and "relu_l1 20, aen 60" in text


def test_killed_run_resumes_from_its_finished_stacks(tiny_run, tmp_path, monkeypatch):
    cfg, out = tiny_run
    job, calls = cells.train_stack_job, []

    def dies_after_two(c, stack):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(len(stack))
        return job(c, stack)

    monkeypatch.setattr(starvation, "train_stack_job", dies_after_two)
    cfg2 = dataclasses.replace(cfg, out=str(tmp_path / "r"))
    with pytest.raises(KeyboardInterrupt):
        starvation.run(cfg2)
    done_before = len(_rows(tmp_path / "r" / "results.csv"))
    assert done_before == sum(calls) > 0  # both finished stacks are on disk, nothing else
    assert not list((tmp_path / "r").glob(".*.tmp"))
    counted = []
    monkeypatch.setattr(starvation, "train_stack_job", lambda c, stack: counted.append(len(stack)) or job(c, stack))
    starvation.run(cfg2)
    total = len(_rows(out / "results.csv"))
    assert sum(counted) == total - done_before  # only the missing SAEs were trained again
    assert _without(tmp_path / "r" / "results.csv", {"train_time_s"}) == _without(out / "results.csv", {"train_time_s"})
    assert (tmp_path / "r" / "matched.csv").read_bytes() == (out / "matched.csv").read_bytes()


def test_run_refuses_a_folder_of_another_config(tiny_run, tmp_path):
    cfg, out = tiny_run
    other = dataclasses.replace(cfg, out=str(out), steps=cfg.steps + 1)
    with pytest.raises(FileExistsError, match="another configuration"):
        starvation.run(other)
    assert json.loads((out / "config.json").read_text())["steps"] == cfg.steps  # untouched


def test_same_config_reads_missing_fields_as_their_defaults():
    cur = json.loads(json.dumps(dataclasses.asdict(PRESETS["standard"])))
    old = {k: v for k, v in cur.items() if k != "float_jitter"}  # a config.json written before the field existed
    assert resume.same_config(old, cur)
    assert not resume.same_config(old, {**cur, "float_jitter": 1e-6})
    assert not resume.same_config({**cur, "steps": 1}, cur)
    assert not resume.same_config({**cur, "retired_field": 1}, cur)
    # where it was written and how many processes trained it do not change the results
    assert resume.same_config({**cur, "out": "runs/elsewhere", "workers": 1}, cur)
    assert not resume.same_config({**cur, "arm_steps": ["topk=8000"]}, cur)


def test_float_jitter_in_chunks_equals_the_one_draw_reference(monkeypatch):
    import numpy as np
    import torch

    monkeypatch.setattr(cells, "_JITTER_ROWS", 7)  # several chunks, the last one short
    plain = cells.make_data(8, 16, 2, 0.5, 50, 20, 3)
    jit = cells.make_data(8, 16, 2, 0.5, 50, 20, 3, float_jitter=1e-3)
    eps = np.random.default_rng([3, 0x6A17]).standard_normal((50, 8))
    want = (plain.x_train.double() * torch.from_numpy(1.0 + 1e-3 * eps)).float()
    assert torch.equal(jit.x_train, want) and not torch.equal(jit.x_train, plain.x_train)
    assert torch.equal(jit.x_eval, plain.x_eval)  # the held-out data and the truth are untouched


def test_streamed_data_runs_end_to_end_on_the_held_out_truth(tmp_path):
    cfg = _tiny(tmp_path / "s", stream_chunk=500, rhos=(0.7,))
    data = cells.cell_data(cfg, 0.7, 0)
    assert data.x_train.n_tokens == cfg.steps * cfg.batch_size and data.x_train.nbytes < 1e6
    import numpy as np

    from synthetic.generators import spiked

    ref = spiked(n=cfg.n, m=cfg.m, k=cfg.k, rho=0.7, n_samples=cfg.n_eval, seed=0)  # held-out = its own draw
    assert np.array_equal(data.D, ref.dictionary) and np.array_equal(data.x_eval.numpy(), ref.activations)
    rows = _rows(starvation.run(cfg) / "results.csv")
    assert {r["arm"] for r in rows} == set(cfg.arms) and len(rows) >= 4
    # trained on the stream, the densest SAE of each arm reconstructs the held-out draw of the same model
    for arm in cfg.arms:
        assert min(float(r["fvu"]) for r in rows if r["arm"] == arm) < 0.3
    with pytest.raises(ValueError, match="float_jitter"):
        _tiny(tmp_path / "x", stream_chunk=500, float_jitter=1e-6)


def test_samples_drawn_on_the_device_train_as_well_and_differ_from_numpy(tmp_path):
    cfg = _tiny(tmp_path / "d", stream_chunk=500, rhos=(0.7,), arms=("aen",), stream_on_device=True)
    host = cells.cell_data(dataclasses.replace(cfg, stream_on_device=False), 0.7, 0)
    dev = cells.cell_data(cfg, 0.7, 0)
    assert dev.x_train.device == torch.device("cpu") and host.x_train.device is None
    assert torch.equal(dev.x_eval, host.x_eval)  # the same held-out draw and truth; other training numbers
    assert not torch.equal(dev.x_train.rows(0, 100), torch.from_numpy(host.x_train.rows(0, 100)))
    rows = _rows(starvation.run(cfg) / "results.csv")
    assert min(float(r["fvu"]) for r in rows) < 0.3
    cur = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert not resume.same_config({**cur, "stream_on_device": False}, cur)  # another design: no resume across
    with pytest.raises(ValueError, match="stream_on_device == True needs stream_chunk"):
        _tiny(tmp_path / "x", stream_on_device=True)


def test_checkpointed_stack_resumes_mid_training_to_the_same_results(tmp_path, monkeypatch):
    from geomsae import checkpoint as ckpt

    cfg = _tiny(tmp_path / "whole", rhos=(0.7,), seeds=(0,), checkpoint_every=20)
    stack = [cells.Member("aen", (0.7,), 0, 0.01), cells.Member("aen", (0.7,), 0, 0.03)]
    whole = cells.train_stack_job(cfg, stack)
    folders = cells.stack_folders(cfg, stack)
    assert all((f / "sae.safetensors").is_file() for f in folders)  # the final SAEs are kept

    cut = dataclasses.replace(cfg, out=str(tmp_path / "cut"))
    real, calls = ckpt.write_checkpoint, []

    def dies_after_step_20(path, step, *a, **kw):
        out = real(path, step, *a, **kw)
        calls.append(step)
        if calls.count(20) == len(stack):  # every member's step-20 checkpoint is on disk
            raise KeyboardInterrupt("killed")
        return out

    monkeypatch.setattr(ckpt, "write_checkpoint", dies_after_step_20)
    with pytest.raises(KeyboardInterrupt):
        cells.train_stack_job(cut, stack)
    later: list[int] = []
    monkeypatch.setattr(ckpt, "write_checkpoint", lambda path, step, *a, **kw: later.append(step) or real(path, step,
                                                                                                          *a, **kw))
    resumed = cells.train_stack_job(cut, stack)
    assert min(later) == 40  # it went on from step 20, not from the start
    for a, b in zip(whole, resumed):
        ra = {k: v for k, v in a.row.items() if k != "train_time_s"}
        rb = {k: v for k, v in b.row.items() if k != "train_time_s"}
        assert ra == rb and a.hist == b.hist
    other = cells.stack_folders(cfg, stack[:1])  # another stack: other folders
    assert other[0] != folders[0] and other[0].parent.parent == folders[0].parent.parent
    cur = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert resume.same_config({**cur, "checkpoint_every": 0}, cur)
    assert not resume.same_config({**cur, "stream_chunk": 500}, cur)


def test_a_design_whose_data_does_not_fit_is_refused_before_drawing(tmp_path):
    authors = PRESETS["authors"]
    in_memory = dataclasses.replace(authors, stream_chunk=0)
    # 50,000 × 256 + 65,536 rows × (16·256 + 12·16) bytes ≈ 51 GiB per worker: more than this machine has
    assert budget.data_peak_bytes(in_memory) == (50_000 * 256 + 65_536) * (16 * 256 + 12 * 16)
    with pytest.raises(MemoryError, match="--stream-chunk"):
        budget.check_memory(in_memory, available=24 * 2**30)
    budget.check_memory(authors, available=2**30)  # streamed: nothing to hold
    budget.check_memory(PRESETS["standard"], available=24 * 2**30)  # the committed design fits
    with pytest.raises(MemoryError, match="2 worker"):
        budget.check_memory(PRESETS["standard"], available=2**30)
    assert budget.available_memory() is None or budget.available_memory() > 0


def test_a_resumed_run_may_raise_sweep_points_and_keeps_its_finished_saes(tiny_run, tmp_path):
    import shutil

    cfg, out = tiny_run
    cur = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert resume.same_config(cur, {**cur, "sweep_points": cur["sweep_points"] + 2})
    assert not resume.same_config(cur, {**cur, "sweep_points": cur["sweep_points"] - 1})
    more = dataclasses.replace(cfg, out=str(tmp_path / "more"), sweep_points=cfg.sweep_points + 2)
    shutil.copytree(out, tmp_path / "more")
    before = {(r["arm"], r["rho"], r["seed"], r["value"]): r for r in _rows(out / "results.csv")}
    starvation.run(more)
    after = {(r["arm"], r["rho"], r["seed"], r["value"]): r for r in _rows(tmp_path / "more" / "results.csv")}
    assert set(before) < set(after)  # every finished SAE kept, and more λ tried
    assert all(after[k] == before[k] for k in before)  # kept as they were, not retrained
    from collections import Counter

    per_cell = Counter(k[:3] for k in after if k[0] != "topk")
    assert len(per_cell) == len(cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    assert max(per_cell.values()) <= more.sweep_points and max(per_cell.values()) > cfg.sweep_points


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_a_gpu_preset_is_refused_in_one_line_without_a_gpu(capsys):
    assert starvation.main(["--preset", "authors-gpu", "--estimate-only"]) == 2
    err = capsys.readouterr().err
    assert "device == 'cuda' but CUDA is not available" in err and "--device cpu" in err and "Traceback" not in err


def test_b_dec_init_reaches_the_trainer_and_changes_the_run(tmp_path):
    mean = _tiny(tmp_path / "m", rhos=(0.7,), seeds=(0,), arms=("topk",))
    zeros = dataclasses.replace(mean, b_dec_init="zeros", out=str(tmp_path / "z"))
    assert cells.synthetic_train_config(zeros).b_dec_init == "zeros"
    assert cells.synthetic_train_config(mean).b_dec_init == "mean"
    stack = [cells.Member("topk", (0.7,), 0, 2)]
    a, b = cells.train_stack_job(mean, stack)[0], cells.train_stack_job(zeros, stack)[0]
    assert a.row["fvu"] != b.row["fvu"]
    cur = json.loads(json.dumps(dataclasses.asdict(zeros)))
    old = {k: v for k, v in cur.items() if k != "b_dec_init"}  # a config written before the field: the mean
    assert not resume.same_config(old, cur) and resume.same_config(old, {**cur, "b_dec_init": "mean"})
    with pytest.raises(ValueError, match="b_dec_init == 'median', must be 'mean' or 'zeros'"):
        dataclasses.replace(mean, b_dec_init="median")


def test_the_gpu_preset_is_one_round_sized_to_eight_minutes():
    from geomsae.study.rounds import plan

    cfg = PRESETS["authors-gpu"]
    # every penalty cell's first round already holds all its sweep points: one round, no refinement
    assert cfg.bracket_points == cfg.sweep_points == 3 and cfg.topk_ks == (16,)
    assert len(plan(cfg, "aen", {}, True)) == 3 and plan(cfg, "aen", {1e-4: 20.0, 5e-4: 10.0, 2e-3: 1.0}, False) == []
    n_saes = len(cfg.rhos) * (4 * cfg.sweep_points + 1)
    assert n_saes == 65 and budget.planned_flops(cfg) == n_saes * 50_000 * 256 * 10 * 256 * 1024
    assert budget.planned_flops(cfg) / (0.4 * 790e12) <= 8 * 60  # at 40 % of an H200's bf16 peak
    assert cfg.stream_on_device and cfg.workers == len(cfg.arms)

"""geomsae.training.l0_control: the penalty coefficient held at a target L0 while training (issue 25 item 1)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geomsae.evaluate import evaluate
from geomsae.train import train
from geomsae.train_stack import train_stack
from geomsae.training import l0_control
from geomsae.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


@pytest.fixture(scope="module")
def spiked_data():
    from synthetic.generators import spiked

    d = spiked(n=32, m=128, k=4, rho=0.3, n_samples=100_000, seed=0)
    x = torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32))
    return x[:90_000], x[90_000:]


def _cfg(steps=4000, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=128, lr=3e-3, lr_warmup_steps=50, log_every=max(1, steps // 20), progress=False,
                input_scale_tokens=16_384, target_l0=8.0)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- the rule, by hand
def test_the_update_rule_by_hand_and_the_freeze_step_by_step():
    ctl = l0_control.L0Controller([4.0, None], [0.1, 0.2], steps=10, rate=0.5, beta=0.5, freeze=0.2)
    assert ctl.frozen_after == 8
    assert ctl.update(1, [8.0, 3.0]) is True
    assert ctl.emas[0] == 8.0 and ctl.lams[0] == pytest.approx(0.1 * (9 / 5) ** 0.5)  # first step: ema = L0
    assert ctl.lams[1] == 0.2 and math.isnan(ctl.emas[1])  # no target: untouched
    ctl.update(2, [0.0, 3.0])  # ema = 0.5·8 + 0.5·0 = 4 = target: λ1 stays
    assert ctl.emas[0] == 4.0 and ctl.lams[0] == pytest.approx(0.1 * (9 / 5) ** 0.5)
    lams = []
    for step in range(3, 11):
        ctl.update(step, [20.0, 3.0])
        lams.append(ctl.lams[0])
    assert all(b > a for a, b in zip(lams[:6], lams[1:6]))  # steps 3..8: L0 above target, λ1 grows
    assert lams[5] == lams[6] == lams[7]  # steps 9 and 10: frozen
    with pytest.raises(ValueError, match="L0 is nan at step 3"):
        l0_control.L0Controller([4.0], [0.1], 10, rate=0.5, beta=0.5, freeze=0.2).update(3, [math.nan])


def test_folded_batch_l0_is_the_folded_rule():
    from geomsae import metrics
    from geomsae.saes import make

    torch.manual_seed(0)
    sae = make("relu_l1", d_in=16, d_sae=32)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(1e-6, 2.0, 32))  # columns of very different norms
    x = torch.randn(64, 16)
    z = sae.encode(x).detach()
    want = metrics.l0(metrics.fires(z, sae.W_dec.norm(dim=0), metrics.rms_norm(x)))
    assert l0_control.folded_batch_l0(sae, x, z) == [pytest.approx(want, abs=1e-9)]
    assert want < metrics.l0(z)  # the tiny columns do not count


def test_refusals():
    with pytest.raises(ValueError, match="target_l0 does not apply to arch 'topk'"):
        train({"arch": "topk", "d_sae": 32, "k": 4}, torch.randn(512, 8), _cfg(steps=10, batch_size=64,
                                                                               input_scale_tokens=512))
    with pytest.raises(ValueError, match="after λ1 freezes at step 900"):
        train({"arch": "aen", "d_sae": 32}, torch.randn(512, 8), _cfg(steps=1000, batch_size=64, input_scale_tokens=512))
    with pytest.raises(ValueError, match=r"target_l0 == -1, must be None or a finite number > 0"):
        TrainConfig(target_l0=-1)
    with pytest.raises(ValueError, match="target_l0s has 1 entries, the stack has 2 members"):
        train_stack([{"arch": "en", "d_sae": 32}] * 2, torch.randn(512, 8), _cfg(steps=5, batch_size=64,
                                                                                  input_scale_tokens=512),
                    target_l0s=[4.0])


# --------------------------------------------------------------------------- reaching the target
@pytest.mark.parametrize("arch,field,lam", [("relu_l1", "lam", 0.005), ("en", "lam1", 0.004), ("aen", "lam1", 0.0008)])
def test_each_penalty_arch_reaches_the_target_from_ten_times_too_high_and_too_low(spiked_data, arch, field, lam):
    # two members of one stack, λ1 started 100× apart around the value that ends near L0 8
    xtr, xev = spiked_data
    extra = {"warmup_steps": 1000, "ramp_steps": 1000} if arch == "aen" else {}
    specs = [{"arch": arch, "d_sae": 128, field: lam * f, **extra} for f in (0.1, 10.0)]
    res = train_stack(specs, xtr, _cfg(), seeds=[0, 0])
    for r in res:
        l0 = evaluate(r.sae, xev).l0
        assert abs(l0 / 8.0 - 1) < 0.10, (arch, l0)
    final = [getattr(r.sae.cfg, field) for r in res]
    assert final[0] / final[1] < 2.0  # from 100× apart to within 2× of each other


def test_stacked_members_with_different_targets_each_reach_their_own(spiked_data):
    xtr, xev = spiked_data
    res = train_stack([{"arch": "relu_l1", "d_sae": 128, "lam": 0.03}] * 2, xtr, _cfg(target_l0=None),
                      seeds=[0, 1], target_l0s=[5.0, 12.0])
    l0s = [evaluate(r.sae, xev).l0 for r in res]
    assert abs(l0s[0] / 5.0 - 1) < 0.10 and abs(l0s[1] / 12.0 - 1) < 0.10, l0s
    assert res[0].metrics["l0_control_lam"] == res[0].sae.cfg.lam > res[1].sae.cfg.lam


# --------------------------------------------------------------------------- saved and resumed
def test_cfg_json_carries_the_final_lambda_and_metrics_the_trajectory(spiked_data, tmp_path):
    xtr, _ = spiked_data
    res = train({"arch": "en", "d_sae": 128, "lam1": 0.04}, xtr, _cfg(steps=400, out=str(tmp_path / "r")))
    doc = json.loads((tmp_path / "r" / "cfg.json").read_text())
    assert doc["cfg"]["lam1"] == res.sae.cfg.lam1 != 0.04
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lams = [r["l0_control_lam"] for r in recs]
    assert len(set(lams)) > 3 and lams[-1] == res.sae.cfg.lam1
    frozen = [r["l0_control_lam"] for r in recs if r["step"] > 360]  # the last tenth of 400 steps
    assert len(set(frozen)) == 1


def test_a_killed_and_resumed_run_with_the_controller_is_bit_exact(spiked_data, tmp_path):
    xtr, _ = spiked_data
    whole = train({"arch": "relu_l1", "d_sae": 128, "lam": 0.05}, xtr, _cfg(steps=300, out=str(tmp_path / "a"),
                                                                           checkpoint_every=100))

    class Kill(Exception):
        pass

    def stop(step, rec):
        if step == 170:
            raise Kill

    with pytest.raises(Kill):
        train({"arch": "relu_l1", "d_sae": 128, "lam": 0.05}, xtr, _cfg(steps=300, out=str(tmp_path / "b"),
                                                                        checkpoint_every=100), callback=stop)
    part = train({"arch": "relu_l1", "d_sae": 128, "lam": 0.05}, xtr,
                 _cfg(steps=300, out=str(tmp_path / "b"), checkpoint_every=100), resume=True)
    assert part.sae.cfg.lam == whole.sae.cfg.lam
    for k, v in whole.sae.state_dict().items():
        assert torch.equal(v, part.sae.state_dict()[k]), k
    # a resumed run may not change the target
    with pytest.raises(ValueError, match="target_l0 == 9.0, the checkpoint has 8.0"):
        train({"arch": "relu_l1", "d_sae": 128, "lam": 0.05}, xtr,
              _cfg(steps=400, out=str(tmp_path / "b"), target_l0=9.0), resume=True)


def test_a_resumed_stack_with_the_controller_is_bit_exact(spiked_data, tmp_path):
    xtr, _ = spiked_data
    specs = [{"arch": "aen", "d_sae": 128, "lam1": 1e-3, "warmup_steps": 50, "ramp_steps": 50}] * 3
    outs = [tmp_path / "w0", tmp_path / "w1", tmp_path / "w2"]
    targets = [6.0, 10.0, None]  # the third member keeps its λ1
    whole = train_stack(specs, xtr, _cfg(steps=240, checkpoint_every=80), seeds=[0, 1, 2], target_l0s=targets)
    assert whole[2].sae.cfg.lam1 == 1e-3 and "l0_control_lam" not in whole[2].metrics  # not moved, not logged
    assert whole[0].sae.cfg.lam1 != 1e-3 and "l0_control_lam" in whole[0].metrics

    class Kill(Exception):
        pass

    def stop(step, recs):
        if step == 130:
            raise Kill

    with pytest.raises(Kill):
        train_stack(specs, xtr, _cfg(steps=240, checkpoint_every=80), seeds=[0, 1, 2], target_l0s=targets,
                    outs=outs, callback=stop)
    part = train_stack(specs, xtr, _cfg(steps=240, checkpoint_every=80), seeds=[0, 1, 2], target_l0s=targets,
                       outs=outs, resume=True)
    for w, p in zip(whole, part):
        assert w.sae.cfg.lam1 == p.sae.cfg.lam1
        for k, v in w.sae.state_dict().items():
            assert torch.equal(v, p.sae.state_dict()[k]), k


def test_the_cli_takes_a_target_and_refuses_it_for_topk(spiked_data, tmp_path, capsys):
    from geomsae.cli import main

    xtr, _ = spiked_data
    np.save(tmp_path / "x.npy", xtr[:8192].numpy())
    args = ["train", "--data", str(tmp_path / "x.npy"), "--d-sae", "64", "--steps", "200", "--batch-size", "64",
            "--lr", "3e-3", "--no-progress", "--target-l0", "6"]
    assert main([*args, "--arch", "en", "--lam1", "0.05", "--out", str(tmp_path / "en")]) == 0
    doc = json.loads((tmp_path / "en" / "cfg.json").read_text())
    assert doc["cfg"]["lam1"] != 0.05 and doc["train"]["target_l0"] == 6.0
    capsys.readouterr()
    assert main([*args, "--arch", "topk", "--k", "4", "--out", str(tmp_path / "tk")]) == 2
    err = capsys.readouterr().err
    assert "target_l0 does not apply to arch 'topk'" in err and "Traceback" not in err

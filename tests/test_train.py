"""The trainer: learning on a planted toy, bit-exact resume, seeds, scale folding, failures."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import torch

import geomsae
from geomsae.checkpoint import latest_checkpoint, list_checkpoints, load_sae
from geomsae.evaluate import evaluate
from geomsae.saes import ARCHS, make
from geomsae.train import NonFiniteLossError, TrainConfig, lr_at, reset_moments, train

# Architecture settings for the planted toy (3 of 64 atoms active, d_in 32).
TOY = {
    "relu_l1": dict(lam=0.02),
    "topk": dict(k=3),
    "batchtopk": dict(k=3),
    "jumprelu": dict(lam=0.02, theta_init=0.1),
    "gated": dict(lam=0.02),
    "en": dict(lam1=0.02, lam2=1e-3),
    "adaptive_lasso": dict(lam1=0.02, warmup_steps=50, ramp_steps=50),
    "aen": dict(lam1=0.02, lam2=1e-3, warmup_steps=50, ramp_steps=50),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


def planted(n: int = 5120, d_in: int = 32, m: int = 64, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x = D_true z with k of m unit atoms active, magnitudes U[1, 3]; returns (X, D_true)."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((d_in, m))
    D /= np.linalg.norm(D, axis=0)
    Z = np.zeros((n, m))
    rows = np.repeat(np.arange(n), k)
    cols = np.argsort(rng.random((n, m)), axis=1)[:, :k].ravel()
    Z[rows, cols] = rng.uniform(1, 3, n * k)
    return (Z @ D.T).astype(np.float32), D


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray]:
    return planted()


def cfg(**kw) -> TrainConfig:
    base = dict(steps=300, batch_size=128, lr=5e-3, lr_warmup_steps=10, log_every=50, progress=False)
    return TrainConfig(**{**base, **kw})


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_architecture_learns_the_planted_toy(toy, arch):
    X, D = toy
    torch.manual_seed(0)
    untrained = evaluate(make(arch, 32, 64, **TOY[arch]), X[4096:]).fvu
    res = train({"arch": arch, "d_sae": 64, **TOY[arch]}, X[:4096], cfg())
    ev = evaluate(res.sae, X[4096:], batch_size=500, true_dict=D)  # held-out tokens
    assert ev.fvu < 0.5 and ev.fvu < 0.5 * untrained, (arch, ev.fvu, untrained)
    assert 0 < ev.l0 < 64 and 0 <= ev.mmcs <= 1
    assert res.step == 300 and res.tokens == 300 * 128
    assert res.metrics["step"] == 300 and math.isfinite(res.metrics["loss"])


def test_topk_recovers_most_planted_atoms(toy):
    X, D = toy
    res = train({"arch": "topk", "d_sae": 64, "k": 3}, X[:4096], cfg())
    ev = evaluate(res.sae, X[4096:], true_dict=D)
    assert ev.mmcs > 0.85 and ev.recovery_rate > 0.5


@pytest.mark.parametrize("arch,extra", [
    ("relu_l1", dict(lam=0.3, resample=True, resample_every=7, dead_window=128)),  # masks + RNG
    ("aen", dict(lam1=0.02, lam2=1e-3, warmup_steps=10, ramp_steps=20)),
])
def test_interrupted_and_resumed_equals_uninterrupted(toy, tmp_path, monkeypatch, arch, extra):
    X, _ = toy
    resampled = []

    def counting_reset(opt, sae, mask):
        resampled.append(int(mask.sum()))
        return reset_moments(opt, sae, mask)

    monkeypatch.setattr("geomsae.training.step.reset_moments", counting_reset)
    spec = {"arch": arch, "d_sae": 64, **extra}
    # b_dec at zero: the relu_l1 case needs latents to die (and be resampled) within 60 steps
    kw = dict(steps=60, checkpoint_every=20, log_every=5, lr_warmup_steps=10, lr_decay="cosine", decay_start=0.5,
              b_dec_init="zeros")
    whole = train(spec, X[:4096], cfg(out=str(tmp_path / "whole"), **kw))

    def stop_at_37(step, record):
        if step == 37:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, X[:4096], cfg(out=str(tmp_path / "cut"), **kw), callback=stop_at_37)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [20, 37]
    torch.manual_seed(12345)  # the global RNG must come from the checkpoint, not from here
    ran = []  # a seeded restart from step 0 would give the same weights: count the steps run
    resumed = train(spec, X[:4096], cfg(out=str(tmp_path / "cut"), **kw), resume=True,
                    callback=lambda step, rec: ran.append(step))
    assert ran == list(range(38, 61))
    assert resumed.step == 60 and resumed.tokens == whole.tokens
    assert state_equal(whole.sae, resumed.sae)
    assert state_equal(load_sae(tmp_path / "whole"), load_sae(tmp_path / "cut"))

    def log(path):
        recs = [json.loads(ln) for ln in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in recs]

    assert log(tmp_path / "whole") == log(tmp_path / "cut")  # no duplicated or lost records
    if arch == "relu_l1":  # resampling (torch.multinomial) happened on both sides of the cut
        assert sum(resampled) > 0 and len(resampled) >= 2


def test_resume_extends_a_finished_run(toy, tmp_path):
    X, _ = toy
    spec = {"arch": "aen", "d_sae": 64, "lam1": 0.02, "warmup_steps": 5, "ramp_steps": 5}
    kw = dict(lr_decay="none", checkpoint_every=0)
    whole = train(spec, X[:4096], cfg(steps=40, **kw))
    train(spec, X[:4096], cfg(steps=25, out=str(tmp_path), **kw))
    ran = []
    longer = train(spec, X[:4096], cfg(steps=40, out=str(tmp_path), **kw), resume=True,
                   callback=lambda step, rec: ran.append(step))
    assert ran == list(range(26, 41))  # only the 15 new steps ran
    assert state_equal(whole.sae, longer.sae)


def test_same_seed_same_weights_other_seed_other_weights(toy):
    X, _ = toy
    spec = {"arch": "relu_l1", "d_sae": 64}
    a = train(spec, X[:1024], cfg(steps=20, seed=3)).sae
    b = train(spec, X[:1024], cfg(steps=20, seed=3)).sae
    c = train(spec, X[:1024], cfg(steps=20, seed=4)).sae
    assert state_equal(a, b)
    assert not torch.equal(a.W_enc, c.W_enc) and not torch.equal(a.W_dec, c.W_dec)


def test_dataset_scale_is_folded_into_the_saved_weights(toy, tmp_path):
    X, _ = toy
    Xr = 7.0 * X[:4096] + 0.3  # raw activations far from norm sqrt(d_in)
    res = train({"arch": "aen", "d_sae": 64, "lam1": 0.02}, Xr,
                cfg(steps=50, input_norm="dataset", input_scale_tokens=4096, out=str(tmp_path)))
    s = math.sqrt(32 / np.mean(np.sum(Xr.astype(np.float64) ** 2, axis=1)))
    assert res.input_scale == pytest.approx(s, rel=1e-12)
    trained = load_sae(latest_checkpoint(tmp_path), fold=False)  # the SAE as trained, on s·x
    saved = geomsae.load(tmp_path)  # folded: takes raw x
    assert float(saved.input_scale) == pytest.approx(s, rel=1e-6)
    x = torch.from_numpy(Xr[:500])
    with torch.no_grad():
        out_n, out_raw = trained(x * s), saved(x)
    assert (out_n.codes > 0).sum() > 0
    torch.testing.assert_close(out_raw.codes, out_n.codes, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_raw.x_hat, out_n.x_hat / s, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.sae(x).x_hat, out_raw.x_hat)
    assert json.loads((tmp_path / "cfg.json").read_text())["input_scale"] == res.input_scale


def test_per_token_norm_lives_in_the_sae(toy):
    X, _ = toy
    res = train({"arch": "en", "d_sae": 64}, X[:1024], cfg(steps=20, input_norm="per_token"))
    assert res.sae.cfg.input_norm == "per_token" and res.input_scale == 1.0
    x = torch.from_numpy(X[:100])
    with torch.no_grad():
        a, b = res.sae(x), res.sae(5 * x)
    torch.testing.assert_close(b.codes, a.codes, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.x_hat, 5 * a.x_hat, rtol=1e-5, atol=1e-5)


def test_nonfinite_loss_stops_after_saving_the_last_good_state(toy, tmp_path):
    X, _ = toy
    torch.manual_seed(0)
    sae = make("relu_l1", 32, 64)
    orig, calls = sae.loss, [0]

    def poisoned(x, out):
        calls[0] += 1
        lo = orig(x, out)
        return lo._replace(loss=lo.loss * float("nan")) if calls[0] == 6 else lo

    sae.loss = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 6 .*saved in '.*step_00000005'"):
        train(sae, X[:1024], cfg(steps=20, out=str(tmp_path)))
    good = load_sae(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in good.state_dict().values() if v.is_floating_point())
    assert int(good.step) == 5


def test_ctrl_c_saves_a_checkpoint_between_steps(toy, tmp_path):
    X, _ = toy

    def press_ctrl_c(step, record):
        if step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    # a process started in the background (nohup, some CI runners) inherits SIGINT ignored: set the usual handler
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            train({"arch": "en", "d_sae": 64}, X[:1024], cfg(steps=50, out=str(tmp_path)), callback=press_ctrl_c)
        assert [s for s, _ in list_checkpoints(tmp_path)] == [7]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, before)


def test_bad_config_and_input_raise_naming_the_value(toy, tmp_path):
    X, _ = toy
    with pytest.raises(ValueError, match=r"lr == -0\.1, must be a finite number > 0"):
        TrainConfig(lr=-0.1)
    with pytest.raises(ValueError, match="steps == 0, must be an integer >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"betas == \(0\.9, 1\.5\)"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="lr_decay == 'exp'"):
        TrainConfig(lr_decay="exp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the SAE has d_in == 16 but the activations have d_in == 32"):
        train(make("en", 16, 8), X[:256], cfg(steps=2))
    bad = X[:256].copy()
    bad[100, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite activation \(nan\) in 'array' row 100"):
        train({"arch": "en", "d_sae": 8}, bad, cfg(steps=2, input_norm="none"))
    with pytest.raises(ValueError, match="arch == 'nope', must be one of"):
        train({"arch": "nope", "d_sae": 8}, X[:256], cfg(steps=2))
    train({"arch": "en", "d_sae": 8}, X[:256], cfg(steps=2, out=str(tmp_path)))
    with pytest.raises(ValueError, match="already holds a run: pass --resume"):
        train({"arch": "en", "d_sae": 8}, X[:256], cfg(steps=2, out=str(tmp_path)))
    with pytest.raises(ValueError, match="batch_size == 64, the checkpoint has 128"):
        train({"arch": "en", "d_sae": 8}, X[:256], cfg(steps=4, batch_size=64, out=str(tmp_path)), resume=True)
    with pytest.raises(ValueError, match="SAE d_sae == 16, the checkpoint has 8"):
        train({"arch": "en", "d_sae": 16}, X[:256], cfg(steps=4, out=str(tmp_path)), resume=True)


def test_lr_schedule():
    c = TrainConfig(steps=100, lr=1.0, lr_warmup_steps=10, lr_decay="linear", decay_start=0.5)
    assert [lr_at(t, c) for t in (0, 4, 9, 30, 50, 75, 99)] == pytest.approx([0.1, 0.5, 1, 1, 1, 0.5, 0.02])
    c = TrainConfig(steps=100, lr=2.0, lr_warmup_steps=0, lr_decay="cosine", decay_start=0.0)
    assert [lr_at(t, c) for t in (0, 50, 100)] == pytest.approx([2.0, 1.0, 0.0], abs=1e-12)
    c = TrainConfig(steps=100, lr=2.0, lr_warmup_steps=0, lr_decay="none")
    assert lr_at(99, c) == 2.0


def test_reset_moments_touches_only_the_masked_latents():
    torch.manual_seed(0)
    sae = make("gated", 8, 16)
    opt = torch.optim.Adam(sae.parameters())
    sae(torch.randn(32, 8)).x_hat.pow(2).sum().backward()
    opt.step()
    before = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in sae.named_parameters()}
    mask = torch.zeros(16, dtype=torch.bool)
    mask[[2, 11]] = True
    reset_moments(opt, sae, mask)
    for name, p in sae.named_parameters():
        for k in ("exp_avg", "exp_avg_sq"):
            v, old = opt.state[p][k], before[name][k]
            if name == "b_dec":
                assert torch.equal(v, old)
                continue
            dim = 1 if name == "W_dec" else 0
            sel = [slice(None)] * v.ndim
            sel[dim] = mask
            keep = list(sel)
            keep[dim] = ~mask
            assert (v[tuple(sel)] == 0).all(), name
            assert torch.equal(v[tuple(keep)], old[tuple(keep)]), name


@pytest.mark.parametrize("arch", ["aen", "topk"])
def test_bfloat16_autocast_trains_and_stays_close_to_float32(toy, arch):
    X, _ = toy
    ref = train({"arch": arch, "d_sae": 64, **TOY[arch]}, X[:4096], cfg(steps=150))
    bf = train({"arch": arch, "d_sae": 64, **TOY[arch]}, X[:4096], cfg(steps=150, autocast="bfloat16"))
    assert all(p.dtype == torch.float32 for p in bf.sae.parameters())
    f_ref = evaluate(ref.sae, X[4096:]).fvu
    f_bf = evaluate(bf.sae, X[4096:]).fvu
    assert f_bf < 0.5 and abs(f_bf - f_ref) < 0.1, (f_ref, f_bf)
    assert not state_equal(ref.sae, bf.sae)  # the option did change the arithmetic
    with pytest.raises(ValueError, match=r"autocast == 'fp8', must be 'none' or 'bfloat16'"):
        TrainConfig(autocast="fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize("input_norm", ["dataset", "none", "per_token"])
def test_b_dec_starts_at_the_mean_of_the_training_inputs(toy, input_norm):
    X, _ = toy
    X = X[:2048] + 3.0  # a large mean, as real activations have
    res = train({"arch": "en", "d_sae": 64}, X, cfg(steps=1, lr=1e-12, input_norm=input_norm, input_scale_tokens=2048,
                                                     batch_size=256))
    Xd = torch.as_tensor(X, dtype=torch.float64)
    if input_norm == "per_token":  # b_dec lives in the per-token-normalised space
        want = (Xd * math.sqrt(32) / Xd.norm(dim=1, keepdim=True)).mean(0)
    else:  # after folding the dataset scale, b_dec is in raw space again: the raw mean
        want = Xd.mean(0)
    torch.testing.assert_close(res.sae.b_dec.double(), want, rtol=1e-5, atol=1e-5)
    zero = train({"arch": "en", "d_sae": 64}, X, cfg(steps=1, lr=1e-12, b_dec_init="zeros", batch_size=256))
    assert float(zero.sae.b_dec.detach().abs().max()) < 1e-8
    with pytest.raises(ValueError, match=r"b_dec_init == 'median', must be 'mean' or 'zeros'"):
        TrainConfig(b_dec_init="median")  # type: ignore[arg-type]

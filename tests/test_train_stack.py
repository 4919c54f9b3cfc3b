"""Stacked training: each member equals its solo run, folders like a solo run's, resume, errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from geomsae.checkpoint import list_checkpoints, load_sae, read_cfg
from geomsae.saes import ARCHS, make
from geomsae.saes.stacking import StackedConfig, stack_saes, unstack_sae
from geomsae.train import TrainConfig, train
from geomsae.train_stack import clip_members_, train_stack

# Members differing only in the sparsity knob (what a λ sweep stacks).
KNOB = {
    "relu_l1": [dict(lam=0.3, resample=True, resample_every=7, dead_window=128), dict(lam=0.05, resample=True,
                                                                                       resample_every=7,
                                                                                       dead_window=128)],
    "topk": [dict(k=2, dead_window=256), dict(k=4, dead_window=256)],
    "batchtopk": [dict(k=2, dead_window=256), dict(k=3, dead_window=256)],
    "jumprelu": [dict(lam=0.01, theta_init=0.1), dict(lam=0.02, theta_init=0.1)],
    "gated": [dict(lam=0.01), dict(lam=0.03)],
    "en": [dict(lam1=0.01, lam2=1e-3), dict(lam1=0.02, lam2=1e-3)],
    "adaptive_lasso": [dict(lam1=0.01, warmup_steps=5, ramp_steps=10), dict(lam1=0.02, warmup_steps=5, ramp_steps=10)],
    "aen": [dict(lam1=0.01, warmup_steps=5, ramp_steps=10), dict(lam1=0.02, warmup_steps=5, ramp_steps=10)],
}
# Members differing in anything numeric or boolean (per-member tensors inside the stack).
MIXED = {
    "relu_l1": [dict(lam=0.3, resample=True, resample_every=7, dead_window=128), dict(lam=0.05)],
    "topk": [dict(k=2, auxk=False, tied_init=False), dict(k=4, auxk=True, dead_window=256)],
    "jumprelu": [dict(lam=0.01, theta_init=0.1), dict(lam=0.02, theta_init=0.2, bandwidth=0.1)],
    "aen": [dict(lam1=0.01, warmup_steps=5, ramp_steps=10),
            dict(lam1=0.02, gamma=0.5, q=5.0, warmup_steps=10, ramp_steps=5, beta=0.9)],
}
RTOL_KNOB = 1e-5   # measured here: bit-identical
RTOL_MIXED = 1e-3  # per-member tensors (pow with a tensor exponent, EMA with a tensor β) round differently


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return ((rng.standard_normal((2048, 32)) * 3 + 1).astype(np.float32),
            rng.standard_normal((2048, 32)).astype(np.float32))


def cfg(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=64, lr=5e-3, lr_warmup_steps=5, log_every=10, progress=False, checkpoint_every=0)
    return TrainConfig(**{**base, **kw})


def worst_rel(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) / (float(sb[k].double().abs().max()) + 1e-12)
               for k in sa)


@pytest.mark.parametrize("per_member", [False, True], ids=["shared-source", "source-per-member"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_member_equals_its_solo_run(data, arch, per_member):
    X, X2 = data
    specs = [{"arch": arch, "d_sae": 64, **f} for f in KNOB[arch]]
    source = [X, X2] if per_member else X
    got = train_stack(specs, source, cfg(), seeds=[3, 4])
    for i, spec in enumerate(specs):
        solo = train(spec, source[i] if per_member else X, cfg(seed=3 + i, data_seed=(3 + i) if per_member else 0))
        assert worst_rel(got[i].sae, solo.sae) <= RTOL_KNOB, (arch, i)
        assert got[i].step == solo.step and got[i].tokens == solo.tokens
        assert got[i].input_scale == pytest.approx(solo.input_scale, rel=1e-12)


@pytest.mark.parametrize("arch", sorted(MIXED))
def test_members_may_differ_in_any_number_or_flag(data, arch):
    X, _ = data
    specs = [{"arch": arch, "d_sae": 64, **f} for f in MIXED[arch]]
    got = train_stack(specs, X, cfg(), seeds=[3, 4])
    for i, spec in enumerate(specs):
        solo = train(spec, X, cfg(seed=3 + i, data_seed=0))
        assert worst_rel(got[i].sae, solo.sae) <= RTOL_MIXED, (arch, i)


def test_members_do_not_leak_into_each_other(data):
    """Changing member 1's λ must leave member 0 bit for bit as it was."""
    X, _ = data
    a = train_stack([{"arch": "aen", "d_sae": 64, "lam1": 0.01}, {"arch": "aen", "d_sae": 64, "lam1": 0.02}], X, cfg())
    b = train_stack([{"arch": "aen", "d_sae": 64, "lam1": 0.01}, {"arch": "aen", "d_sae": 64, "lam1": 0.5}], X, cfg())
    assert worst_rel(a[0].sae, b[0].sae) == 0.0 and worst_rel(a[1].sae, b[1].sae) > 1e-3


def test_run_folders_have_the_form_of_a_solo_run(data, tmp_path):
    X, _ = data
    specs = [{"arch": "topk", "d_sae": 64, "k": 2}, {"arch": "topk", "d_sae": 64, "k": 4}]
    train_stack(specs, X, cfg(checkpoint_every=20), seeds=[0, 1], outs=[tmp_path / "a", tmp_path / "b"])
    train(specs[1], X, cfg(checkpoint_every=20, seed=1, data_seed=0, out=str(tmp_path / "solo")))
    for name in ("b", "solo"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["cfg.json", "checkpoints", "metrics.jsonl",
                                                                      "sae.safetensors"]
    stacked, solo = read_cfg(tmp_path / "b"), read_cfg(tmp_path / "solo")
    assert stacked.keys() == solo.keys()
    assert {k: v for k, v in stacked["train"].items() if k != "out"} == {k: v for k, v in solo["train"].items()
                                                                         if k != "out"}
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [s for s, _ in list_checkpoints(tmp_path / "solo")]
    assert worst_rel(load_sae(tmp_path / "b"), load_sae(tmp_path / "solo")) <= RTOL_KNOB

    def log(p):
        return [{k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"}
                for ln in (p / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in log(tmp_path / "b")] == [r["step"] for r in log(tmp_path / "solo")]
    for r, s in zip(log(tmp_path / "b"), log(tmp_path / "solo")):
        assert r == pytest.approx(s, rel=1e-5, abs=1e-7)
    # a member folder resumes alone, as a solo run
    more = train(specs[1], X, cfg(checkpoint_every=20, seed=1, data_seed=0, steps=50, out=str(tmp_path / "b")),
                 resume=True)
    assert more.step == 50


@pytest.mark.parametrize("arch,fields", [
    ("relu_l1", dict(lam=0.3, resample=True, resample_every=7, dead_window=128)),  # masks + per-member RNG
    ("aen", dict(lam1=0.02, warmup_steps=10, ramp_steps=20)),
])
def test_interrupted_stack_resumes_to_the_uninterrupted_result(data, tmp_path, arch, fields, monkeypatch):
    X, X2 = data
    specs = [{"arch": arch, "d_sae": 64, **fields}, {"arch": arch, "d_sae": 64, **fields}]
    kw = dict(steps=60, checkpoint_every=20, log_every=5, lr_decay="cosine", decay_start=0.5, b_dec_init="zeros")
    whole = train_stack(specs, [X, X2], cfg(**kw), seeds=[0, 1], outs=[tmp_path / "w0", tmp_path / "w1"])

    def stop_at_37(step, records):
        if step == 37:
            raise KeyboardInterrupt

    outs = [tmp_path / "c0", tmp_path / "c1"]
    with pytest.raises(KeyboardInterrupt):
        train_stack(specs, [X, X2], cfg(**kw), seeds=[0, 1], outs=outs, callback=stop_at_37)
    assert [s for s, _ in list_checkpoints(outs[0])] == [20, 37]
    steps_run = []
    torch.manual_seed(12345)  # each member's RNG must come from its checkpoint
    resumed = train_stack(specs, [X, X2], cfg(**kw), seeds=[0, 1], outs=outs, resume=True,
                          callback=lambda step, rec: steps_run.append(step))
    assert steps_run == list(range(38, 61))  # it really resumed: 23 steps, not 60
    for w, r in zip(whole, resumed):
        sw, sr = w.sae.state_dict(), r.sae.state_dict()
        assert all(torch.equal(sw[k], sr[k]) for k in sw)
    for i in range(2):
        a = (tmp_path / f"w{i}" / "metrics.jsonl").read_text().splitlines()
        b = (outs[i] / "metrics.jsonl").read_text().splitlines()
        strip = [lambda ln: {k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"}][0]
        assert [strip(x) for x in a] == [strip(x) for x in b]


def test_a_stack_resumed_after_its_last_step_returns_its_last_records(data, tmp_path):
    """Killed between its final checkpoint and the caller's use of the results: resumed, it trains nothing and
    its results carry the last records of metrics.jsonl (dead_last_batch, the loss trend), as the first call's."""
    X, X2 = data
    specs = [{"arch": "relu_l1", "d_sae": 64, "lam": l} for l in (0.05, 0.2)]
    kw = dict(steps=40, checkpoint_every=20, log_every=5)
    outs = [tmp_path / "a", tmp_path / "b"]
    first = train_stack(specs, [X, X2], cfg(**kw), seeds=[0, 1], outs=outs)
    steps_run = []
    again = train_stack(specs, [X, X2], cfg(**kw), seeds=[0, 1], outs=outs, resume=True,
                        callback=lambda step, rec: steps_run.append(step))
    assert steps_run == []
    for f, a in zip(first, again):
        assert {"dead_last_batch", "loss_rel_change"} <= set(a.metrics)
        assert {k: v for k, v in a.metrics.items() if k != "tokens_per_s"} == \
               {k: v for k, v in f.metrics.items() if k != "tokens_per_s"}
        assert all(torch.equal(f.sae.state_dict()[k], v) for k, v in a.sae.state_dict().items())


def test_stacked_module_forward_loss_and_grads_match_the_members():
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    saes = []
    for i, f in enumerate([dict(k=2, auxk=False), dict(k=5, auxk=True, dead_window=1)]):
        torch.manual_seed(i)
        saes.append(make("topk", 16, 48, **f))
    for s in saes:
        s.tokens_since_fired.fill_(10)  # every latent dead: AuxK active
    st = stack_saes(saes)
    out, lo = st(x), None
    lo = st.loss(x, out)
    assert out.codes.shape == (2, 32, 48) and lo.loss.shape == (2,)
    assert ((out.codes > 0).sum(-1) <= torch.tensor([2, 5]).view(2, 1)).all()
    lo.loss.sum().backward()
    for i, s in enumerate(saes):
        o = s(x)
        li = s.loss(x, o)
        li.loss.backward()
        torch.testing.assert_close(out.x_hat[i], o.x_hat)
        torch.testing.assert_close(lo.loss[i], li.loss)
        for name, p in st.named_parameters():
            torch.testing.assert_close(p.grad[i], getattr(s, name).grad, rtol=1e-4, atol=1e-6)
    back = unstack_sae(st)
    assert all(torch.equal(b.W_enc, s.W_enc) for b, s in zip(back, saes))


def test_clip_members_clips_each_member_like_clip_grad_norm():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(3, 5, 4)), torch.nn.Parameter(torch.randn(3, 7))]
    for p, s in zip(ps, (1.0, 10.0)):
        p.grad = torch.randn_like(p) * s
    want = []
    for i in range(3):
        qs = [torch.nn.Parameter(p.detach()[i].clone()) for p in ps]
        for q, p in zip(qs, ps):
            q.grad = p.grad[i].clone()
        torch.nn.utils.clip_grad_norm_(qs, 1.0)
        want.append([q.grad for q in qs])
    clip_members_(ps, 1.0)
    for i in range(3):
        for j, p in enumerate(ps):
            torch.testing.assert_close(p.grad[i], want[i][j])


def test_stacked_config_reads_common_values_tensors_and_refuses_strings():
    cfgs = [make("aen", 8, 16, lam1=0.1, beta=0.9).cfg, make("aen", 8, 16, lam1=0.2, beta=0.9).cfg]
    sc = StackedConfig(cfgs)
    assert sc.beta == 0.9 and sc.d_sae == 16
    assert torch.equal(sc.lam1, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="differ in 'input_norm'"):
        StackedConfig([dataclasses.replace(cfgs[0], input_norm="per_token"), cfgs[1]]).input_norm


def test_bad_arguments_raise_naming_the_value(data, tmp_path):
    X, _ = data
    spec = {"arch": "en", "d_sae": 16}
    with pytest.raises(ValueError, match="specs is empty"):
        train_stack([], X, cfg())
    with pytest.raises(ValueError, match="cfg.out"):
        train_stack([spec], X, cfg(out=str(tmp_path)))
    with pytest.raises(ValueError, match="seeds"):
        train_stack([spec, spec], X, cfg(), seeds=[0])
    with pytest.raises(ValueError, match="one source per spec"):
        train_stack([spec, spec], [X], cfg())
    with pytest.raises(ValueError, match="names a folder twice"):
        train_stack([spec, spec], X, cfg(), outs=[tmp_path / "a", tmp_path / "a"])
    with pytest.raises(ValueError, match="d_sae"):
        stack_saes([make("en", 8, 16), make("en", 8, 32)])
    train_stack([spec], X, cfg(steps=2), outs=[tmp_path / "done"])
    with pytest.raises(ValueError, match="already holds a run"):
        train_stack([spec], X, cfg(steps=2), outs=[tmp_path / "done"])

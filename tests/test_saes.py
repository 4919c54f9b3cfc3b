"""Tests of the SAE zoo (geomsae.saes): training on a planted dictionary, algebraic
identities (forward = decode∘encode, latent permutation, input-scale folding, the
SAE-loss ↔ canonical-F units), state round trips, adaptive weights, AuxK and bad input."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import geomsae.saes as S
from geomsae.config_cli import field_docs
from geomsae.saes.adaptive import adaptive_weights, warmup_factor
from geomsae.saes.base import per_token_scale

torch.set_num_threads(1)
ARCHS = sorted(S.ARCHS)
HYP = settings(derandomize=True, max_examples=20, deadline=None)
EXACT = {"relu_l1", "en", "adaptive_lasso", "aen"}


# ---------------------------------------------------------------- helpers
def planted(n: int, seed: int, d_in: int = 32, m: int = 64, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """x = D_true z with 64 fixed random unit atoms, exactly k active, magnitudes U[1, 3]."""
    D = torch.randn(d_in, m, generator=torch.Generator().manual_seed(1234))
    D /= D.norm(dim=0)
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, m, generator=g).argsort(dim=1)[:, :k]
    z = torch.zeros(n, m).scatter(1, idx, 1 + 2 * torch.rand(n, k, generator=g))
    return z @ D.T, D


def reset_adam_(opt: torch.optim.Adam, sae: S.BaseSAE, mask: torch.Tensor) -> None:
    """What a trainer does with the mask returned by on_step_end: zero the latents' moments."""
    for p, dim in ((sae.W_enc, 0), (sae.b_enc, 0), (sae.W_dec, 1)):
        for v in opt.state.get(p, {}).values():
            if torch.is_tensor(v) and v.shape == p.shape:
                v.index_fill_(dim, mask.nonzero().flatten(), 0.0)


def train(sae: S.BaseSAE, X: torch.Tensor, steps: int, lr: float = 3e-3, B: int = 256) -> int:
    """A minimal trainer; returns how many latents on_step_end re-initialised."""
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    n_reset = 0
    sae.train()
    for _ in range(steps):
        x = X[torch.randint(0, X.shape[0], (B,), generator=g)]
        out = sae(x)
        loss = sae.loss(x, out).loss
        opt.zero_grad()
        loss.backward()
        sae.remove_parallel_grads_()
        opt.step()
        sae.normalize_decoder_()
        with torch.no_grad():
            mask = sae.on_step_end(x, out)
        if mask is not None:
            n_reset += int(mask.sum())
            reset_adam_(opt, sae, mask)
    sae.eval()
    return n_reset


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def small_kwargs(arch: str, d_sae: int, k: int) -> dict:
    kw: dict = {}
    if arch in ("topk", "batchtopk"):
        kw.update(k=k, dead_window=100)
    if arch == "relu_l1":
        kw.update(dead_window=100)
    return kw


@torch.no_grad()
def randomize_(sae: S.BaseSAE, seed: int) -> S.BaseSAE:
    """Move every parameter and state buffer away from its init (non-trivial biases,
    thresholds, EMA, counters) so that identities are tested in general position."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sae.named_parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=g))
    if hasattr(sae, "log_threshold"):
        sae.log_threshold.copy_(torch.empty(sae.cfg.d_sae).uniform_(-3, -0.5, generator=g))
    if hasattr(sae, "ema"):
        sae.ema.copy_(torch.rand(sae.cfg.d_sae, generator=g) ** 3)
    if hasattr(sae, "threshold") and isinstance(sae.threshold, torch.Tensor) and sae.threshold.ndim == 0:
        sae.threshold.fill_(0.3)
    sae.step.fill_(int(torch.randint(0, 2500, (1,), generator=g)))
    sae.tokens_since_fired.copy_(torch.randint(0, 200, (sae.cfg.d_sae,), generator=g))
    return sae


def build(arch: str, seed: int, d_in: int, d_sae: int, k: int, input_norm: str = "none") -> S.BaseSAE:
    torch.manual_seed(seed)
    return randomize_(S.make(arch, d_in, d_sae, input_norm=input_norm, **small_kwargs(arch, d_sae, k)), seed + 1)


def F_mean(sae: S.BaseSAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """mean over tokens of F(z; x) = ½‖x − b − Dz‖² + λ1′ Σ w|z| + (λ2′/2)‖z‖², D = W_dec, b = b_dec."""
    pen = sae.canonical_penalty()
    w = torch.ones(z.shape[-1]) if pen.weights is None else pen.weights
    r = x - sae.b_dec - z @ sae.W_dec.T
    F = 0.5 * r.pow(2).sum(-1) + pen.lam1 * (w * z.abs()).sum(-1) + 0.5 * pen.lam2 * z.pow(2).sum(-1)
    return F.mean()


dims = st.tuples(st.integers(2, 7), st.integers(1, 9)).map(lambda t: (t[0], t[0] + t[1]))  # d_in < d_sae


# ------------------------------------------------------ training on a toy
TOY = {
    # arch, kwargs, FVU bound, L0 bound (measured at 500 steps: FVU ≈ .08/.13/.20/.17/.07/.10/.09/.12/.12)
    "relu_l1": ({"lam": 0.01}, 0.2, 28),
    "topk": ({"k": 3, "dead_window": 2560}, 0.3, 3),
    "topk-auxk-untied": ({"k": 3, "auxk": False, "tied_init": False}, 0.35, 3),
    "batchtopk": ({"k": 3, "dead_window": 2560}, 0.3, 5),
    "jumprelu": ({"lam": 0.003, "bandwidth": 0.1, "theta_init": 0.3}, 0.2, 24),
    "gated": ({"lam": 0.03}, 0.2, 20),
    "en": ({"lam1": 0.01, "lam2": 0.001}, 0.2, 28),
    "adaptive_lasso": ({"lam1": 0.01, "warmup_steps": 150, "ramp_steps": 150, "beta": 0.99, "gamma": 0.5}, 0.25, 24),
    "aen": ({"lam1": 0.01, "lam2": 0.001, "warmup_steps": 150, "ramp_steps": 150, "beta": 0.99, "gamma": 0.5}, 0.25, 24),
}


@pytest.fixture(scope="module")
def toy() -> tuple[torch.Tensor, torch.Tensor]:
    return planted(16384, 0)[0], planted(4096, 1)[0]


@pytest.mark.parametrize("name", list(TOY))
def test_trains_on_planted_toy(name, toy):
    arch = name.split("+")[0].split("-")[0]
    kw, fvu_max, l0_max = TOY[name]
    Xtr, Xte = toy
    torch.manual_seed(0)
    sae = S.make(arch, 32, 64, **kw)
    with torch.no_grad():
        fvu0 = fvu(Xte, sae(Xte).x_hat)
    train(sae, Xtr, 500)
    with torch.no_grad():
        out = sae(Xte)
    l0 = float((out.codes > 0).sum(1).float().mean())
    assert fvu(Xte, out.x_hat) < min(fvu_max, 0.5 * fvu0), (fvu0, fvu(Xte, out.x_hat))
    assert 1 <= l0 <= l0_max
    if sae.unit_norm_decoder:
        torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.ones(64))


# ------------------------------------------------------------ identities
@pytest.mark.parametrize("arch", ARCHS)
@HYP
@given(dims=dims, seed=st.integers(0, 10_000), B=st.integers(1, 6), per_token=st.booleans(), training=st.booleans())
def test_forward_is_decode_encode(arch, dims, seed, B, per_token, training):
    d_in, d_sae = dims
    sae = build(arch, seed, d_in, d_sae, k=1 + seed % d_sae, input_norm="per_token" if per_token else "none")
    sae.train(training)
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(seed)) * 3
    with torch.no_grad():
        out = sae(x)
        x_hat = sae.decode(sae.encode(x))
        if per_token:
            x_hat = x_hat / per_token_scale(x)
            # per-token SAEs are invariant to the scale of each token
            torch.testing.assert_close(sae.encode(x * 7.5), out.codes)
        torch.testing.assert_close(out.x_hat, x_hat)
        torch.testing.assert_close(sae.encode(x), out.codes)
        # leading dims are kept
        out3 = sae(x.reshape(1, B, d_in))
        torch.testing.assert_close(out3.x_hat.reshape(B, d_in), out.x_hat)
    assert (out.codes >= 0).all()


def _permuted(sae: S.BaseSAE, perm: torch.Tensor) -> S.BaseSAE:
    """A copy of sae with every latent-indexed tensor (any axis of size d_sae) permuted."""
    d_sae = sae.cfg.d_sae
    sd = {}
    for key, t in sae.state_dict().items():
        for dim, size in enumerate(t.shape):
            if size == d_sae:
                t = t.index_select(dim, perm)
        sd[key] = t.clone()
    new = type(sae)(sae.cfg)
    new.load_state_dict(sd)
    return new.train(sae.training)


@pytest.mark.parametrize("arch", ARCHS)
@HYP
@given(dims=dims, seed=st.integers(0, 10_000), B=st.integers(1, 6), training=st.booleans())
def test_latent_permutation_commutes(arch, dims, seed, B, training):
    d_in, d_sae = dims
    sae = build(arch, seed, d_in, d_sae, k=1 + seed % d_sae).train(training)
    perm = torch.randperm(d_sae, generator=torch.Generator().manual_seed(seed))
    sp = _permuted(sae, perm)
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(seed + 1)) * 2
    out, outp = sae(x), sp(x)
    torch.testing.assert_close(outp.codes, out.codes[:, perm])
    torch.testing.assert_close(outp.pre_acts, out.pre_acts[:, perm])
    torch.testing.assert_close(outp.x_hat, out.x_hat)
    la, lb = sae.loss(x, out), sp.loss(x, outp)
    torch.testing.assert_close(lb.loss, la.loss)
    for key in la.parts:
        torch.testing.assert_close(lb.parts[key], la.parts[key])
    pa, pb = sae.canonical_penalty(), sp.canonical_penalty()
    assert (pa.lam1, pa.lam2, pa.exact) == (pb.lam1, pb.lam2, pb.exact)
    if pa.weights is not None:
        torch.testing.assert_close(pb.weights, pa.weights[perm])
    # state updates commute too
    with torch.no_grad():
        ma, mb = sae.on_step_end(x, out), sp.on_step_end(x, outp)
    torch.testing.assert_close(sp.tokens_since_fired, sae.tokens_since_fired[perm])
    if ma is not None:
        torch.testing.assert_close(mb, ma[perm])


@pytest.mark.parametrize("arch", ARCHS)
@HYP
@given(dims=dims, seed=st.integers(0, 10_000), B=st.integers(1, 6), log_s=st.floats(-2.5, 2.5))
def test_fold_input_scale(arch, dims, seed, B, log_s):
    d_in, d_sae = dims
    s = math.exp(log_s)
    sae = build(arch, seed, d_in, d_sae, k=1 + seed % d_sae).double()
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out_n = sae(s * x)  # the SAE was trained on s·x
    loss_n = sae.loss(s * x, out_n)
    F_n = F_mean(sae, s * x, out_n.codes)
    S.fold_input_scale(sae, s)
    out = sae(x)
    torch.testing.assert_close(out.codes, out_n.codes)
    torch.testing.assert_close(out.x_hat * s, out_n.x_hat)
    loss = sae.loss(x, out)
    torch.testing.assert_close(loss.loss, loss_n.loss)
    # the canonical penalty is that of the raw problem: F_raw = F_n / s² (same minimiser)
    torch.testing.assert_close(F_mean(sae, x, out.codes) * s**2, F_n)
    # normalize_decoder_ keeps training-space unit norm, i.e. raw norm 1/s
    sae.normalize_decoder_()
    if sae.unit_norm_decoder:
        torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.full((d_sae,), 1 / s, dtype=torch.float64))


@pytest.mark.parametrize("arch", sorted(EXACT))
@HYP
@given(dims=dims, seed=st.integers(0, 10_000), B=st.integers(1, 6))
def test_loss_is_canonical_F_in_sae_units(arch, dims, seed, B):
    """For the exact architectures, loss · d_in/2 == mean_tokens F(z; x) (docs/method.md §1 units)."""
    d_in, d_sae = dims
    sae = build(arch, seed, d_in, d_sae, k=1).double()
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = sae(x)
    assert sae.canonical_penalty().exact
    torch.testing.assert_close(sae.loss(x, out).loss * d_in / 2, F_mean(sae, x, out.codes))


@pytest.mark.parametrize("arch", ARCHS)
@HYP
@given(dims=dims, seed=st.integers(0, 10_000), B=st.integers(1, 6), per_token=st.booleans())
def test_state_dict_safetensors_round_trip(arch, dims, seed, B, per_token):
    d_in, d_sae = dims
    norm = "per_token" if per_token else "none"
    sae = build(arch, seed, d_in, d_sae, k=1 + seed % d_sae, input_norm=norm)
    if not per_token:
        S.fold_input_scale(sae, 1.7)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sae.safetensors")
        save_file(sae.state_dict(), path)
        torch.manual_seed(seed + 99)  # a different init, overwritten by the load
        fresh = S.make(arch, d_in, d_sae, **{k: v for k, v in sae.cfg.to_dict().items() if k not in ("d_in", "d_sae")})
        fresh.load_state_dict(load_file(path))
    x = torch.randn(B, d_in, generator=torch.Generator().manual_seed(seed))
    for training in (True, False):
        sae.train(training), fresh.train(training)
        a, b = sae(x), fresh(x)
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)
        assert torch.equal(sae.loss(x, a).loss, fresh.loss(x, b).loss)
    pa, pb = sae.canonical_penalty(), fresh.canonical_penalty()
    assert pa[:2] == pb[:2] and (pa.weights is None or torch.equal(pa.weights, pb.weights))
    with torch.no_grad():
        sae.on_step_end(x, a), fresh.on_step_end(x, b)
    for (ka, va), (kb, vb) in zip(sae.state_dict().items(), fresh.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


# ---------------------------------------------------------- decoder constraint
@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_constraint(arch):
    sae = build(arch, 0, 6, 10, k=2)
    x = torch.randn(8, 6)
    sae.loss(x, sae(x)).loss.backward()
    g0, W0 = sae.W_dec.grad.clone(), sae.W_dec.detach().clone()
    sae.remove_parallel_grads_()
    sae.normalize_decoder_()
    if sae.unit_norm_decoder:
        assert (sae.W_dec.grad * W0).sum(0).abs().max() < 1e-5  # orthogonal to each column
        torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.ones(10))
        torch.testing.assert_close(sae.W_dec / W0, (1 / W0.norm(dim=0)).expand(6, 10))  # direction kept
    else:  # relu_l1: norm-weighted penalty, no constraint
        assert torch.equal(sae.W_dec.grad, g0) and torch.equal(sae.W_dec, W0)


def test_init_unit_norm_tied_and_seeded():
    torch.manual_seed(3)
    a = S.make("aen", 8, 20)
    torch.manual_seed(3)
    b = S.make("aen", 8, 20)
    assert torch.equal(a.W_dec, b.W_dec)
    torch.testing.assert_close(a.W_dec.norm(dim=0), torch.ones(20))
    assert torch.equal(a.W_enc, a.W_dec.T) and not a.b_enc.any() and not a.b_dec.any()
    untied = S.make("topk", 8, 20, k=2, tied_init=False)
    assert not torch.allclose(untied.W_enc, untied.W_dec.T)


# ------------------------------------------------------- adaptive weights
def test_adaptive_weights_hand_computed_and_clamped():
    ema = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.0, 1e-4])
    # q = 34 % of 6 latents -> top ceil(2.04) = 3: ref = (4 + 2 + 1)/3
    w = adaptive_weights(ema, q=34.0, gamma=1.0, w_min=0.6, w_max=10.0, eps=1e-8)
    ref = 7.0 / 3
    want = torch.tensor([0.6, ref / 2, ref / 1, ref / 0.5, 10.0, 10.0])  # ref/4 = .58 and 0.0/1e-4 hit the clamps
    torch.testing.assert_close(w, want)
    w_half = adaptive_weights(ema, q=34.0, gamma=0.5, w_min=0.01, w_max=10.0, eps=1e-8)
    torch.testing.assert_close(w_half[:4], (ref / ema[:4]) ** 0.5)
    assert (w_half >= 0.01).all() and (w_half <= 10).all()


def test_warmup_and_linear_ramp():
    assert [warmup_factor(t, 10, 4) for t in (0, 5, 10, 11, 12, 13, 14, 100)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert warmup_factor(11, 10, 0) == 1.0
    sae = S.make("aen", 4, 6, warmup_steps=10, ramp_steps=4, q=50.0)
    with torch.no_grad():
        sae.ema.copy_(torch.tensor([1.0, 0.5, 0.25, 0.1, 0.01, 2.0]))
    full = adaptive_weights(sae.ema, 50.0, 1.0, 0.01, 10.0, 1e-8)
    for t, f in ((0, 0.0), (10, 0.0), (11, 0.25), (13, 0.75), (14, 1.0), (50, 1.0)):
        sae.step.fill_(t)
        w = sae.adaptive_weights()
        torch.testing.assert_close(w, 1 + (full - 1) * f)
        if f == 0.0:
            assert torch.equal(w, torch.ones(6))


@pytest.mark.parametrize("arch", ["aen", "adaptive_lasso"])
def test_rarely_firing_latents_get_larger_weights(arch):
    """Drive on_step_end with codes whose latent j fires with probability p_j (decreasing
    in j): after warm-up the weights increase with j, and the loss uses them."""
    d_sae, beta = 8, 0.9
    sae = S.make(arch, 4, d_sae, beta=beta, warmup_steps=5, ramp_steps=5, q=20.0)
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.9, 0.6, 0.4, 0.25, 0.15, 0.08, 0.04, 0.02])
    z0 = (torch.rand(64, d_sae, generator=g) < p).float() * 2.0
    x = torch.randn(64, 4, generator=g)
    with torch.no_grad():
        sae.on_step_end(x, S.SAEOutput(x, z0, z0))
    torch.testing.assert_close(sae.ema, (1 - beta) * z0.mean(0))  # one EMA step from 0
    assert torch.equal(sae.adaptive_weights(), torch.ones(d_sae))
    for _ in range(300):
        z = (torch.rand(256, d_sae, generator=g) < p).float() * 2.0
        with torch.no_grad():
            sae.on_step_end(x, S.SAEOutput(x, z, z))
    w = sae.adaptive_weights()
    assert int(sae.step) == 301
    assert (w[1:] >= w[:-1]).all() and w[-1] > 5 * w[0]
    assert w.min() >= 0.01 and w.max() <= 10
    # the loss uses exactly these (detached) weights
    out = sae(x)
    lam2 = getattr(sae.cfg, "lam2", 0.0)
    want = sae.mse(x, out) + sae.cfg.lam1 * (w * out.codes).sum(1).mean() + lam2 * out.codes.pow(2).sum(1).mean()
    torch.testing.assert_close(sae.loss(x, out).loss, want)


# ------------------------------------------------------------------ AuxK
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_gradient_only_on_dead_latents(arch):
    torch.manual_seed(0)
    sae = S.make(arch, 8, 24, k=2, dead_window=100, k_aux=8)
    x = torch.randn(32, 8)
    dead = torch.zeros(24, dtype=torch.bool)
    dead[[1, 5, 6, 11, 20]] = True
    with torch.no_grad():
        sae.tokens_since_fired[dead] = 100
        sae.tokens_since_fired[~dead] = 99
    out = sae(x)
    aux = sae.aux_loss(x, out)
    # hand computation: per token, the top min(k_aux, n_dead) = 5 ReLU'd pre-acts among the
    # dead reconstruct x − x̂, scaled by n_dead/k_aux = 5/8
    pre_dead = out.pre_acts.detach()[:, dead]
    vals, idx = pre_dead.topk(5, dim=1)
    z_aux = torch.zeros_like(pre_dead).scatter(1, idx, vals.relu())
    e = (x - out.x_hat).detach()
    want = (5 / 8) * (z_aux @ sae.W_dec.detach()[:, dead].T - e).pow(2).mean()
    torch.testing.assert_close(aux, want)
    aux.backward()
    rows = sae.W_enc.grad.abs().sum(1) > 0
    assert rows.any() and not (rows & ~dead).any()
    cols = sae.W_dec.grad.abs().sum(0) > 0
    assert cols.any() and not (cols & ~dead).any()
    # the total loss adds α·aux
    sae.zero_grad()
    lo = sae.loss(x, sae(x))
    torch.testing.assert_close(lo.loss, lo.parts["mse"] + sae.cfg.auxk_alpha * lo.parts["aux"])


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_auxk_zero_without_dead_latents(arch):
    torch.manual_seed(0)
    sae = S.make(arch, 8, 24, k=2, dead_window=100)
    x = torch.randn(32, 8)
    out = sae(x)
    lo = sae.loss(x, out)
    assert float(lo.parts["aux"]) == 0.0 and torch.equal(lo.loss, sae.mse(x, out))
    # trackers: 3 steps of 32 tokens; a latent that never fires reaches 96 < 100 (alive)
    with torch.no_grad():
        for _ in range(3):
            sae.on_step_end(x, out)
    fired = (out.codes > 0).any(0)
    assert torch.equal(sae.tokens_since_fired, torch.where(fired, 0, 96))
    assert not sae.dead_mask(100).any() and torch.equal(sae.dead_mask(96), ~fired)


def test_batchtopk_budget_and_threshold():
    torch.manual_seed(0)
    sae = S.make("batchtopk", 8, 24, k=3, threshold_momentum=0.5)
    x = torch.randn(16, 8)
    out = sae.train()(x)
    assert int((out.codes > 0).sum()) == 16 * 3 and (out.codes > 0).sum(1).max() > 0
    kept_min = out.codes[out.codes > 0].min()
    assert (out.pre_acts[out.codes == 0] <= kept_min).all()  # the N·k largest over the batch
    with torch.no_grad():
        sae.on_step_end(x, out)
        torch.testing.assert_close(sae.threshold, kept_min)  # step 0: set directly
        sae.on_step_end(x, S.SAEOutput(out.x_hat, out.codes * 2, out.pre_acts))
        torch.testing.assert_close(sae.threshold, 1.5 * kept_min)  # EMA with m = 0.5
    z = sae.eval().encode(x)
    pre = sae.pre_acts(x)
    torch.testing.assert_close(z, torch.where(pre > sae.threshold, pre, 0.0))


# -------------------------------------------------------- jumprelu / gated
def test_jumprelu_pseudo_derivatives():
    torch.manual_seed(0)
    eps, lam = 0.5, 0.1
    sae = S.make("jumprelu", 4, 6, lam=lam, bandwidth=eps, theta_init=0.3)
    x = torch.randn(50, 4)
    out = sae(x)
    pre, theta = out.pre_acts.detach(), sae.threshold.detach()
    torch.testing.assert_close(out.codes, pre * (pre > theta))
    K = ((pre - theta).abs() < eps / 2).float()
    # L0 term: ∂/∂θ = −(1/ε) Σ K, chained through θ = exp(log θ); no gradient to pre
    l0 = sae.loss(x, out).parts["l0"]
    torch.testing.assert_close(l0, (pre > theta).float().sum(1).mean())
    sae.zero_grad()
    lo = sae.loss(x, sae(x))
    lo.loss.backward()
    g_mse = torch.autograd.grad(sae.mse(x, sae(x)), sae.log_threshold)[0]
    want_l0 = lam * (-(1 / eps) * K.sum(0) / 50) * theta
    torch.testing.assert_close(sae.log_threshold.grad - g_mse, want_l0)
    # JumpReLU term: ∂z/∂θ = −(θ/ε) K, so ∂mse/∂θ = Σ (∂mse/∂z) · (−θ/ε) K
    z = out.codes.detach().requires_grad_(True)
    dz = torch.autograd.grad(((x - sae.decode(z)) ** 2).mean(), z)[0]
    torch.testing.assert_close(g_mse, (dz * (-(theta / eps)) * K).sum(0) * theta)


def test_gated_math():
    sae = build("gated", 0, 5, 9, k=1)
    x = torch.randn(12, 5)
    out = sae(x)
    pi_gate = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    W_mag = sae.r_mag.exp()[:, None] * sae.W_enc
    pi_mag = (x - sae.b_dec) @ W_mag.T + sae.b_mag
    torch.testing.assert_close(out.codes, (pi_gate > 0) * pi_mag.relu())
    gate = pi_gate.relu()
    aux = ((x - gate @ sae.W_dec.T - sae.b_dec) ** 2).mean()
    lo = sae.loss(x, out)
    torch.testing.assert_close(lo.loss, sae.mse(x, out) + sae.cfg.lam * gate.sum(1).mean() + aux)
    # the Heaviside gate passes no gradient: the MSE alone does not reach the gate's bias
    # through the gate (b_enc only enters π_mag via W_gate (x − b_dec) = π_gate − b_gate)
    g = torch.autograd.grad(sae.mse(x, sae(x)), sae.b_enc, allow_unused=True)[0]
    assert g is None or not g.any()
    # the aux term leaves the decoder frozen: W_dec's gradient comes from the MSE alone
    sae.zero_grad()
    sae.loss(x, sae(x)).loss.backward()
    torch.testing.assert_close(sae.W_dec.grad, torch.autograd.grad(sae.mse(x, sae(x)), sae.W_dec)[0])


# ---------------------------------------------------------- relu_l1 resampling
def test_relu_l1_resampling():
    torch.manual_seed(0)
    sae = S.make("relu_l1", 8, 16, resample=True, resample_every=2, dead_window=1000)
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[2, 7, 9]] = True
    x = torch.randn(64, 8)
    with torch.no_grad():
        sae.b_enc[dead] = -100.0  # never fire
        sae.tokens_since_fired[dead] = 5000
        out = sae(x)
        alive_norm = sae.W_enc[~dead].norm(dim=1).mean()
        assert sae.on_step_end(x, out) is None  # step 1: not due
        assert int(sae.step) == 1
        out = sae(x)
        resid = (x - out.x_hat) / (x - out.x_hat).norm(dim=1, keepdim=True)
        mask = sae.on_step_end(x, out)  # step 2: resample
    assert torch.equal(mask, dead)
    torch.testing.assert_close(sae.W_dec[:, dead].norm(dim=0), torch.ones(3))
    cos = resid @ sae.W_dec[:, dead]  # each new atom is the direction of a residual of the batch
    torch.testing.assert_close(cos.max(0).values, torch.ones(3))
    torch.testing.assert_close(sae.W_enc[dead].norm(dim=1), (0.2 * alive_norm).expand(3))
    assert not sae.b_enc[dead].any() and not sae.tokens_since_fired[dead].any()


@pytest.mark.parametrize("resample", [False, True])
def test_relu_l1_resampling_revives_killed_latents(resample, toy):
    """Kill 10 latents (b_enc = −10): without resampling they never recover (ReLU passes no
    gradient); with it they are re-initialised, their Adam moments reset, and they fire."""
    Xtr, Xte = toy
    torch.manual_seed(0)
    sae = S.make("relu_l1", 32, 64, lam=0.01, resample=resample, resample_every=100, dead_window=2560)
    with torch.no_grad():
        sae.b_enc[:10] = -10.0
    n_reset = train(sae, Xtr, 300)
    with torch.no_grad():
        fires = (sae(Xte).codes[:, :10] > 0).any(0)
    if resample:
        assert n_reset >= 10 and fires.all()
    else:
        assert n_reset == 0 and not fires.any()


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "arch, kw, match",
    [
        ("topk", {"k": 17}, r"k == 17, must be in \[1, d_sae=16\]"),
        ("batchtopk", {"k": 0}, r"k == 0, must be in \[1, d_sae=16\]"),
        ("topk", {"k": 2, "k_aux": 99}, r"k_aux == 99"),
        ("relu_l1", {"lam": -0.1}, r"lam == -0.1, must be a finite number >= 0"),
        ("jumprelu", {"lam": -1.0}, r"lam == -1.0"),
        ("jumprelu", {"bandwidth": 0.0}, r"bandwidth == 0.0"),
        ("gated", {"lam": float("nan")}, r"lam == nan"),
        ("en", {"lam2": -1e-3}, r"lam2 == -0.001"),
        ("adaptive_lasso", {"lam1": -1.0}, r"lam1 == -1.0"),
        ("aen", {"lam1": -1.0}, r"lam1 == -1.0"),
        ("aen", {"beta": 1.0}, r"beta == 1.0, must be in \[0, 1\)"),
        ("aen", {"q": 0.0}, r"q == 0.0"),
        ("aen", {"w_min": 2.0, "w_max": 1.0}, r"w_min == 2.0, w_max == 1.0"),
        ("aen", {"input_norm": "layer"}, r"input_norm == 'layer'"),
        ("aen", {"nonsense": 1}, r"unknown config key\(s\) \['nonsense'\]"),
        ("relu_l2", {}, r"arch == 'relu_l2', must be one of \['adaptive_lasso', 'aen'"),
    ],
)
def test_bad_config(arch, kw, match):
    with pytest.raises(ValueError, match=match):
        S.make(arch, 8, 16, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_bad_inputs(arch):
    sae = S.make(arch, 8, 16, **small_kwargs(arch, 16, 2))
    for bad in (float("nan"), float("inf")):
        x = torch.randn(4, 8)
        x[1, 3] = bad
        with pytest.raises(ValueError, match="contains NaN or Inf"):
            sae(x)
        with pytest.raises(ValueError, match="contains NaN or Inf"):
            sae.encode(x)
    with pytest.raises(ValueError, match=r"last dimension == \(7,\), must equal d_in=8"):
        sae(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"must equal d_sae=16"):
        sae.decode(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"s == 0, must be a finite number > 0"):
        S.fold_input_scale(sae, 0)
    pt = S.make(arch, 8, 16, input_norm="per_token", **small_kwargs(arch, 16, 2))
    with pytest.raises(ValueError, match="input_norm == 'per_token'"):
        S.fold_input_scale(pt, 2.0)


def test_registry_and_config_docs():
    assert set(ARCHS) == {"relu_l1", "topk", "batchtopk", "jumprelu", "gated", "en", "adaptive_lasso", "aen"}
    for arch, cls in S.ARCHS.items():
        assert cls.arch == arch and S.config_class(arch) is cls.config_class
        docs = field_docs(cls.config_class)
        missing = [f.name for f in dataclasses.fields(cls.config_class) if not docs.get(f.name)]
        assert not missing, (arch, missing)
        assert "Implements" in cls.__doc__
    with pytest.raises(ValueError, match="cfg is a ENConfig, must be a AENConfig"):
        S.AENSAE(S.ENConfig(d_in=4, d_sae=8))

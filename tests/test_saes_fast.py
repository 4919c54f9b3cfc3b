"""Fast paths of the SAE architectures against their plain reference formulas (float64):
forward, loss and every parameter gradient of a whole training forward agree."""

from __future__ import annotations

import pytest
import torch

import geomsae.saes as S
from geomsae.saes import batchtopk, jumprelu


def _forward_loss_grads(sae: S.BaseSAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    out = sae(x)
    lo = sae.loss(x, out)
    lo.loss.sum().backward()  # a stack has one loss per member
    got = {"x_hat": out.x_hat.detach(), "codes": out.codes.detach(), "loss": lo.loss.detach()}
    got.update({f"grad_{n}": p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None})
    return got


def _assert_same(fast: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], atol: float = 1e-12) -> None:
    assert fast.keys() == ref.keys()
    for k in fast:
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-12, atol=atol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("sample", [batchtopk.SAMPLE, 50])  # 50: the threshold is guessed from a strided sample
def test_batch_topk_threshold_path_equals_the_topk_reference(sample: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    sae = S.make("batchtopk", 16, 96, k=5).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
    x = torch.randn(40, 16, dtype=torch.float64)
    monkeypatch.setattr(batchtopk, "SAMPLE", sample)
    calls = []
    real = batchtopk.batch_threshold
    monkeypatch.setattr(batchtopk, "batch_threshold", lambda *a: calls.append(real(*a)) or calls[-1])
    fast = _forward_loss_grads(sae, x)
    assert calls and calls[0] is not None  # the fast path was taken
    assert int((fast["codes"] > 0).sum()) == 40 * 5
    monkeypatch.setattr(batchtopk, "batch_topk_relu", batchtopk.batch_topk_relu_reference)
    _assert_same(fast, _forward_loss_grads(sae, x))


def test_batch_threshold_declines_ties_and_nonpositive_thresholds() -> None:
    pre = torch.tensor([[3.0, 1.0, 2.0, 2.0], [0.5, -1.0, 2.0, 0.25]], dtype=torch.float64)
    assert batchtopk.batch_threshold(pre, 2) is None  # 2.0 appears three times: the 2nd largest ties
    assert batchtopk.batch_threshold(pre, 1) == 3.0
    assert batchtopk.batch_threshold(pre, 7) == 0.25
    assert batchtopk.batch_threshold(pre, 8) is None  # every entry: nothing to select
    neg = torch.tensor([[1.0, -1.0], [-2.0, 0.5]], dtype=torch.float64)
    assert batchtopk.batch_threshold(neg, 3) is None  # the 3rd largest is negative: ReLU zeros tie
    for k in (1, 2):  # whichever path is taken, the codes are the reference's where it is unique
        got = batchtopk.batch_topk_relu(pre, k)
        assert int((got > 0).sum()) >= 2 * k


def test_jumprelu_fast_autograd_functions_equal_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    sae = S.make("jumprelu", 16, 64, bandwidth=0.5, theta_init=0.2).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
    x = torch.randn(50, 16, dtype=torch.float64)
    fast = _forward_loss_grads(sae, x)
    assert fast["grad_log_threshold"].abs().sum() > 0  # the band holds pre-activations: θ gets a gradient
    monkeypatch.setattr(jumprelu, "_JumpReLU", jumprelu._JumpReLUReference)
    monkeypatch.setattr(jumprelu, "_step_l0", lambda pre, th, eps: jumprelu._StepReference.apply(pre, th, eps).sum(-1).mean(-1))
    _assert_same(fast, _forward_loss_grads(sae, x))


def test_jumprelu_fast_path_equals_the_reference_in_a_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    from geomsae.saes.stacking import stack_saes

    torch.manual_seed(0)
    members = [S.make("jumprelu", 8, 32, bandwidth=b, theta_init=0.2).double() for b in (0.3, 0.6)]
    sae = stack_saes(members)
    x = torch.randn(30, 8, dtype=torch.float64)
    fast = _forward_loss_grads(sae, x)
    monkeypatch.setattr(jumprelu, "_JumpReLU", jumprelu._JumpReLUReference)
    monkeypatch.setattr(jumprelu, "_step_l0", lambda pre, th, eps: jumprelu._StepReference.apply(pre, th, eps).sum(-1).mean(-1))
    # θ's gradient is a difference of two sums of O(1) terms (codes and L0): float64 rounding of
    # the summation order reaches ~3e-12 there
    _assert_same(fast, _forward_loss_grads(sae, x), atol=1e-10)


def _elastic_net_reference(z: torch.Tensor, w: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain formulas: mean over tokens of Σ_j w_j z_j and of Σ_j z_j² (z >= 0)."""
    wz = z if w is None else z * w.unsqueeze(-2)
    return wz.sum(-1).mean(-1), z.pow(2).sum(-1).mean(-1)


def test_elastic_net_terms_equal_the_plain_formulas() -> None:
    from geomsae.saes.terms import elastic_net_terms

    gen = torch.Generator().manual_seed(0)
    for lead in ((), (3,)):
        z0 = torch.rand(*lead, 7, 5, generator=gen, dtype=torch.float64) * (torch.rand(*lead, 7, 5, generator=gen) > 0.5)
        w0 = torch.rand(*lead, 5, generator=gen, dtype=torch.float64) + 0.5
        c = torch.rand(*lead, 2, generator=gen, dtype=torch.float64)  # weights the two terms differently
        for with_w in (True, False):
            got, want = [], []
            for f, out in ((elastic_net_terms, got), (_elastic_net_reference, want)):
                z, w = z0.clone().requires_grad_(), w0.clone().requires_grad_()
                l1, l2 = f(z, w if with_w else None)
                v = (c[..., 0] * l1 + c[..., 1] * l2).sum()
                grads = torch.autograd.grad(v, (z, w) if with_w else (z,))
                out.extend([l1, l2, *grads])
            for a, e in zip(got, want):
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["en", "aen", "adaptive_lasso"])
def test_elastic_net_architectures_equal_the_plain_penalty(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from geomsae.saes import aen, en

    torch.manual_seed(0)
    kw = {"warmup_steps": 0, "ramp_steps": 0} if arch != "en" else {}
    sae = S.make(arch, 16, 64, **kw).double()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        if arch != "en":
            sae.ema.uniform_(0.01, 1.0)
            sae.step.fill_(5)  # past warm-up: the adaptive weights are not all 1
    x = torch.randn(50, 16, dtype=torch.float64)
    fast = _forward_loss_grads(sae, x)
    monkeypatch.setattr(en, "elastic_net_terms", _elastic_net_reference)
    monkeypatch.setattr(aen, "elastic_net_terms", _elastic_net_reference)
    _assert_same(fast, _forward_loss_grads(sae, x))

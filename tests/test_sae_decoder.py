"""Sparse decoding inside the SAEs: each architecture's forward, loss and parameter gradients
through the sparse path against the dense path, the choice 'auto' makes, and training with
either decoder (the decoders themselves: tests/test_sparse_decode.py)."""

from __future__ import annotations

import pytest
import torch

from geomsae.saes import ARCHS, make
from geomsae.saes.sparse import decode_sparse, decode_topk, sparse_density_max
from geomsae.saes.stacking import stack_saes
from geomsae.train import TrainConfig, train

TOL = {"rtol": 1e-9, "atol": 1e-10}
F64 = torch.float64


# ------------------------------------------------------- inside the SAEs
SPARSE_ARCHS = [a for a in ARCHS if a != "jumprelu"]
KNOBS = {"relu_l1": {"lam": 1e-2}, "en": {"lam1": 1e-2, "lam2": 1e-3}, "aen": {"lam1": 1e-2},
         "adaptive_lasso": {"lam1": 1e-2}, "gated": {"lam": 1e-2}, "topk": {"k": 3},
         "batchtopk": {"k": 3}}


def _sae_pair(arch: str, S: int, d_in: int = 6, d_sae: int = 24):
    """Two float64 copies of one SAE (a stack of S when S > 0): 'dense' and 'sparse'."""
    def build():
        torch.manual_seed(3)
        members = [make(arch, d_in, d_sae, **KNOBS[arch]).double() for _ in range(max(S, 1))]
        for i, m in enumerate(members):
            with torch.no_grad():  # biases that make some codes zero and some not
                m.b_enc.copy_(torch.linspace(-1.0, 0.5, d_sae, dtype=F64) + 0.1 * i)
                m.b_dec.normal_()
            m.tokens_since_fired.fill_(10**9)  # every latent dead: AuxK active for TopK types
        return stack_saes(members) if S else members[0]
    return build().set_decoder_impl("dense"), build().set_decoder_impl("sparse")


@pytest.mark.parametrize("S", [0, 3])
@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sae_sparse_decoder_equals_dense_values_and_grads(arch: str, S: int) -> None:
    """forward, loss and every parameter gradient agree between the two decoder paths."""
    dense, sparse = _sae_pair(arch, S)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(10, 6, generator=gen, dtype=F64)
    res = []
    for sae in (dense, sparse):
        out = sae(x)
        loss = sae.loss(x, out).loss.sum()
        names, params = zip(*[(n, p) for n, p in sae.named_parameters()])
        res.append((out.x_hat, out.codes, loss, dict(zip(names, torch.autograd.grad(loss, params)))))
    (xd, zd, ld, gd), (xs, zs, ls, gs) = res
    assert 0 < int((zd != 0).sum()) < zd.numel()  # the codes are sparse, and not empty
    torch.testing.assert_close(xs, xd, **TOL)
    torch.testing.assert_close(zs, zd, **TOL)
    torch.testing.assert_close(ls, ld, **TOL)
    for name in gd:
        torch.testing.assert_close(gs[name], gd[name], **TOL, msg=lambda m, n=name: f"grad {n}: {m}")


def test_sae_sparse_path_is_really_taken(monkeypatch) -> None:
    """'sparse' calls the sparse decoders (TopK through decode_topk, ReLU types through
    decode_sparse); 'dense' calls neither; 'auto' follows the cost model (dense at these sizes)."""
    import geomsae.saes.base as base_mod
    import geomsae.saes.topk as topk_mod

    calls: list[str] = []
    monkeypatch.setattr(topk_mod, "decode_topk", lambda *a: calls.append("topk") or decode_topk(*a))
    monkeypatch.setattr(base_mod, "decode_sparse", lambda *a: calls.append("sparse") or decode_sparse(*a))
    x = torch.randn(5, 6, dtype=F64)
    for arch, want in (("topk", "topk"), ("relu_l1", "sparse"), ("batchtopk", "sparse")):
        dense, sparse = _sae_pair(arch, 0)
        calls.clear()
        sparse(x)
        assert calls == [want], (arch, calls)
        calls.clear()
        dense(x)
        dense.set_decoder_impl("auto")(x)
        assert calls == [], (arch, calls)


def test_auto_takes_the_sparse_path_where_it_wins(monkeypatch) -> None:
    """At d_in 512, d_sae 4096, batch 4096 'auto' decodes TopK k 32 sparsely and a ReLU code
    sparsely only below the crossover density."""
    import geomsae.saes.topk as topk_mod

    torch.manual_seed(0)
    sae = make("topk", 512, 4096, k=32)
    z = torch.zeros(4096, 4096)
    assert sae._sparse_path(z, topk=32) and not sae._sparse_path(z, topk=2048)
    relu = make("relu_l1", 512, 4096)
    p = sparse_density_max(512, 4096, 4096)
    z.view(-1)[:: int(1 / (0.5 * p))] = 1.0  # density p/2
    assert relu._sparse_path(z)
    z.view(-1)[:: int(1 / (2 * p))] = 1.0  # density > p
    assert not relu._sparse_path(z)
    assert not relu.set_decoder_impl("dense")._sparse_path(torch.zeros(4096, 4096))
    assert not make("jumprelu", 512, 4096)._sparse_path(torch.zeros(4096, 4096))
    called: list[int] = []
    monkeypatch.setattr(topk_mod, "decode_topk", lambda *a: called.append(1) or decode_topk(*a))
    with torch.no_grad():
        sae(torch.randn(4096, 512))
    assert called == [1]


def test_jumprelu_refuses_the_sparse_decoder() -> None:
    sae = make("jumprelu", 6, 24)
    with pytest.raises(ValueError, match=r"decoder impl 'sparse' is not exact for arch 'jumprelu'"):
        sae.set_decoder_impl("sparse")
    with pytest.raises(ValueError, match=r"decoder impl == 'csr', must be 'auto', 'dense' or 'sparse'"):
        sae.set_decoder_impl("csr")
    with pytest.raises(ValueError, match=r"decoder == 'csr', must be 'auto', 'dense' or 'sparse'"):
        TrainConfig(decoder="csr")


@pytest.mark.parametrize("arch, knob", [("topk", {"k": 4}), ("aen", {"lam1": 3e-3})])
def test_training_with_the_sparse_decoder_equals_dense(arch: str, knob: dict) -> None:
    """A short float32 training run gives the same weights with either decoder (the paths
    differ only in the order of float sums: agreement to 1e-4 after 30 steps)."""
    x = torch.randn(30 * 32, 8, generator=torch.Generator().manual_seed(5))
    runs = []
    for dec in ("dense", "sparse"):
        cfg = TrainConfig(steps=30, batch_size=32, lr=1e-2, progress=False, checkpoint_every=0,
                          input_scale_tokens=256, decoder=dec, log_every=30)
        runs.append(train({"arch": arch, "d_sae": 32, **knob}, x, cfg))
    a, b = (r.sae.state_dict() for r in runs)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.equal(a["W_dec"], make(arch, 8, 32, **knob).W_dec)  # it trained

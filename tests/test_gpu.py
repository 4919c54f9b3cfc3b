"""The GPU path agrees with the CPU path: training (float32, bf16 autocast with float32 master
weights, torch.compile), stacked training and the sparse decoder on CUDA against the same on
CPU. Tests marked ``gpu`` skip cleanly without CUDA; the compile plumbing also runs on CPU (with
the aot_eager backend), the autocast logic is checked on CPU in tests/test_train.py.
"""

import numpy as np
import pytest
import torch

from geomsae.saes.sparse import decode_dense, decode_sparse, decode_topk
from geomsae.train import TrainConfig, train
from geomsae.train_stack import train_stack

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
D_IN, D_SAE = 32, 128
SPEC = {"aen": {"arch": "aen", "d_sae": D_SAE, "warmup_steps": 5, "ramp_steps": 5},
        "topk": {"arch": "topk", "d_sae": D_SAE, "k": 8},
        "relu_l1": {"arch": "relu_l1", "d_sae": D_SAE}}


@pytest.fixture(scope="module")
def acts() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((4096, D_IN)).astype(np.float32)
    x[:, :3] *= 4.0
    return x


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=20, batch_size=256, lr=3e-3, lr_warmup_steps=2, log_every=10, checkpoint_every=0,
                progress=False, input_scale_tokens=1024, decoder="dense")
    return TrainConfig(**{**base, **kw})


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.double().cpu() - sb[k].double().cpu()).abs().max())
               for k, v in a.state_dict().items() if v.is_floating_point())


def test_compile_field_checked():
    with pytest.raises(ValueError, match=r"compile == 'yes', must be True or False"):
        TrainConfig(compile="yes")  # type: ignore[arg-type]


def test_compiled_forward_matches_eager_on_cpu(acts, monkeypatch):
    """The plumbing of ``compile=True`` (a compiled module sharing its parameters with the SAE),
    through dynamo's aot_eager backend: inductor's C++ compile takes minutes on 2 busy cores."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    ref = train(SPEC["topk"], acts, _cfg(steps=5)).sae
    got = train(SPEC["topk"], acts, _cfg(steps=5, compile=True)).sae
    assert _max_diff(ref, got) < 1e-4


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("arch", sorted(SPEC))
def test_cuda_training_matches_cpu(acts, arch):
    """float32 on CUDA (TF32 off) equals the CPU run to float round-off (20 Adam steps)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = train(SPEC[arch], acts, _cfg()).sae
    got = train(SPEC[arch], acts, _cfg(device="cuda")).sae
    assert _max_diff(ref, got) < 1e-3


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_bf16_autocast_keeps_fp32_master_weights_and_tracks_fp32(acts, compile_):
    ref = train(SPEC["aen"], acts, _cfg()).sae
    res = train(SPEC["aen"], acts, _cfg(device="cuda", autocast="bfloat16", compile=compile_))
    assert all(p.dtype == torch.float32 for p in res.sae.parameters())
    assert _max_diff(ref, res.sae) < 0.05  # bf16 has 8 mantissa bits: close, not equal


@pytest.mark.gpu
@needs_cuda
def test_cuda_stacked_sweep_matches_cpu(acts):
    specs = [{**SPEC["aen"], "lam1": lam} for lam in (1e-3, 3e-3, 1e-2)]
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = train_stack(specs, acts, _cfg())
    got = train_stack(specs, acts, _cfg(device="cuda"))
    for a, b in zip(ref, got):
        assert _max_diff(a.sae, b.sae) < 1e-3


@pytest.mark.gpu
@needs_cuda
def test_cuda_sparse_decoder_matches_dense_cpu():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(D_IN, D_SAE, generator=g), torch.randn(D_IN, generator=g)
    z = torch.randn(64, D_SAE, generator=g).relu() * (torch.rand(64, D_SAE, generator=g) < 0.05)
    want = decode_dense(z, W, b)
    got = decode_sparse(z.cuda(), W.cuda(), b.cuda()).cpu()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    vals, idx = z.topk(4, dim=-1)
    got = decode_topk(idx.cuda(), vals.cuda(), W.cuda(), b.cuda()).cpu()
    torch.testing.assert_close(got, decode_dense(torch.zeros_like(z).scatter(-1, idx, vals), W, b),
                               atol=1e-5, rtol=1e-5)

"""synthetic.stream: the spiked training samples made chunk by chunk (the authors' length does not fit in memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthetic.generators import spiked, spiked_dictionary, spiked_samples
from synthetic.stream import SpikedStream


def _stream(n_tokens: int = 50, chunk: int = 8, n: int = 12, m: int = 6, k: int = 2, seed: int = 4) -> SpikedStream:
    D = spiked_dictionary(np.random.default_rng(seed), n, m, 0.3, False)
    return SpikedStream(D, k, n_tokens, seed, chunk)


def test_spiked_is_its_dictionary_then_its_samples():
    d = spiked(n=16, m=32, k=3, rho=0.5, n_samples=5000, seed=9)
    rng = np.random.default_rng(9)
    D = spiked_dictionary(rng, 16, 32, 0.5, False)
    x, codes = spiked_samples(rng, D, 3, 5000)
    assert np.array_equal(D, d.dictionary) and np.array_equal(x, d.activations)
    assert (codes != d.codes).nnz == 0


def test_stream_rows_are_spiked_samples_on_its_dictionary():
    # n > m: D has full column rank, so each row's code is recovered exactly: k features, magnitudes in [1, 3]
    s = _stream(n_tokens=300, chunk=64, n=12, m=6, k=2)
    x = s.rows(0, 300).astype(np.float64)
    z = np.linalg.lstsq(s.D, x.T, rcond=None)[0].T
    assert np.abs(x - z @ s.D.T).max() < 1e-4
    active = np.abs(z) > 1e-3
    assert (active.sum(1) == 2).all()
    assert z[active].min() > 1 - 1e-4 and z[active].max() < 3 + 1e-4
    assert len({r.tobytes() for r in x}) == 300  # fresh draws, no chunk repeated


def test_batches_are_the_same_rows_whatever_the_batch_size_start_or_cache():
    s = _stream()
    ref = np.concatenate([_stream().chunk_rows(c) for c in range(7)])  # 6 chunks of 8 and one of 2
    assert ref.shape == (50, 12)
    got = torch.cat(list(s.batches(7))).numpy()
    assert np.array_equal(got, ref)
    assert [b.shape[0] for b in s.batches(7)] == [7] * 7 + [1]
    assert [b.shape[0] for b in s.batches(7, drop_last=True)] == [7] * 7
    resumed = torch.cat(list(s.batches(5, start_batch=3))).numpy()  # a resumed run: from row 15 on
    assert np.array_equal(resumed, ref[15:])
    two = torch.cat(list(s.batches(10, epochs=2))).numpy()
    assert np.array_equal(two, np.concatenate([ref, ref]))
    endless = s.batches(25, epochs=None)
    assert np.array_equal(torch.cat([next(endless) for _ in range(3)]).numpy(), np.concatenate([ref, ref[:25]]))
    assert s.nbytes <= s.D.nbytes + 2 * 8 * 12 * 4  # two chunks at most


def test_stream_checks_its_arguments():
    D = np.ones((4, 3))
    with pytest.raises(ValueError, match="k == 4"):
        SpikedStream(D, 4, 10, 0)
    with pytest.raises(ValueError, match="chunk == 0"):
        SpikedStream(D, 1, 10, 0, chunk=0)
    with pytest.raises(ValueError, match="finite"):
        SpikedStream(D * np.nan, 1, 10, 0)
    with pytest.raises(ValueError, match="rows 3..20"):
        SpikedStream(D, 1, 10, 0).rows(3, 20)


def _torch_stream(**kw) -> SpikedStream:
    s = _stream(**kw)
    return SpikedStream(s.D, s.k, s.n_tokens, s.seed, s.chunk, device="cpu")


def test_synthesize_agrees_with_the_numpy_decode_on_the_same_codes():
    # the fast path (torch gather-sum, in blocks) against the reference (CSR codes @ Dᵀ in float64)
    import scipy.sparse as sp

    from synthetic import stream
    from synthetic.data import decode

    rng = np.random.default_rng(3)
    D = spiked_dictionary(rng, 24, 40, 0.7, False)
    cols = np.sort(np.stack([rng.choice(40, 5, replace=False) for _ in range(300)]), axis=1)
    vals = rng.uniform(1, 3, (300, 5)).astype(np.float32)
    codes = sp.csr_array((vals.ravel(), cols.ravel(), np.arange(0, 301 * 5, 5)), shape=(300, 40))
    ref = decode(codes, D, 0.0, rng)
    old, stream.SYNTH_ROWS = stream.SYNTH_ROWS, 64  # several blocks, the last one short
    try:
        got = stream.synthesize(torch.from_numpy(cols), torch.from_numpy(vals), torch.tensor(D.T, dtype=torch.float32))
    finally:
        stream.SYNTH_ROWS = old
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_torch_stream_is_the_spiked_model_and_deterministic():
    s = _torch_stream(n_tokens=3000, chunk=512, n=12, m=6, k=2)
    x = s.rows(0, 3000)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3000, 12)
    z = np.linalg.lstsq(s.D, x.double().numpy().T, rcond=None)[0].T
    assert np.abs(x.double().numpy() - z @ s.D.T).max() < 1e-4
    active = np.abs(z) > 1e-3
    assert (active.sum(1) == 2).all()  # exactly k distinct features per sample
    assert z[active].min() > 1 - 1e-4 and z[active].max() < 3 + 1e-4
    # uniform supports: each of the 6 features active in 2/6 of the samples (3000 samples: ± 5 sd ≈ ± 0.043)
    assert np.abs(active.mean(0) - 2 / 6).max() < 0.045
    # the same seed gives the same rows, whatever the order the chunks are drawn in; another seed others
    t = _torch_stream(n_tokens=3000, chunk=512, n=12, m=6, k=2)
    assert torch.equal(t.rows(2000, 3000), x[2000:]) and torch.equal(t.rows(0, 700), x[:700])
    other = SpikedStream(s.D, 2, 3000, s.seed + 1, 512, device="cpu")
    assert not torch.equal(other.rows(0, 512), x[:512])
    assert torch.equal(torch.cat(list(s.batches(256, start_batch=3))), x[768:])
    assert "device=cpu" in repr(s) and s.nbytes <= s.D.nbytes + 2 * 512 * 12 * 4

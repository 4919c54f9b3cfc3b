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

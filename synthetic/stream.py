"""Training samples of the spiked model generated chunk by chunk while a run reads them.

    src = SpikedStream(D, k=16, n_tokens=12_800_000, seed=0)     # 13 GB as one array; ~70 MB per chunk here
    train(spec, src, TrainConfig(steps=50_000, batch_size=256))

At the authors' length (50,000 steps × 256 tokens, n 256) one cell's training data is 13 GB of float32,
and the spiked generator's float64 product twice that: more than this machine holds. A
:class:`SpikedStream` holds the dictionary only; chunk c (rows c·chunk .. (c+1)·chunk) is drawn by
:func:`synthetic.generators.spiked_samples` from its own generator ``default_rng([seed, STREAM_TAG, c])``,
so any chunk can be made alone: reading from ``start_batch`` (a resumed run) costs one chunk, not
the rows before it, and the rows are the same whatever the batch size or the start. It is a
:class:`geomsae.data.ActivationSource` (the trainer takes it as it takes an array); the samples are
i.i.d., so the order is the draw order (``shuffle`` and ``seed`` of :meth:`~SpikedStream.batches`
are ignored). The two newest chunks are kept, so the members of a stack that share a cell read
each chunk once between them.

With ``device`` (``"cpu"``, ``"cuda"``, …) the chunks are drawn by torch on that device instead
(:func:`torch_chunk`: the same model, other numbers, since torch's generators are not numpy's), so a GPU
run does not wait on the host: numpy draws one cell's 12.8 M samples in ≈ 76 s on this machine's CPU,
longer than a GPU trains a stack on them. numpy stays the reference: :func:`synthesize` (the torch
product) agrees with :func:`synthetic.data.decode` on the same codes (``tests/test_stream.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch

from geomsae.data import ActivationSource, check_batch_args
from synthetic.generators import spiked_samples

STREAM_TAG = 0x57E4
"""Second word of every chunk's generator seed (keeps the chunks apart from ``default_rng(seed)``)."""
SYNTH_ROWS = 8192
"""Rows per gather in :func:`synthesize` (bounds its temporary (rows, k, n) array)."""


def chunk_seed(seed: int, c: int) -> int:
    """The 64-bit torch seed of chunk ``c`` of stream ``seed`` (from numpy's SeedSequence of the same words)."""
    return int(np.random.SeedSequence([seed, STREAM_TAG, c]).generate_state(1, np.uint64)[0])


def synthesize(cols: torch.Tensor, vals: torch.Tensor, Dt: torch.Tensor) -> torch.Tensor:
    """(rows, n) samples x_r = Σ_i vals[r, i] · D[:, cols[r, i]] from (rows, k) supports and magnitudes and
    Dt = Dᵀ (m, n), summed in float32 in blocks of :data:`SYNTH_ROWS` rows (k gathered atoms each, not a
    dense (rows, m) code matrix)."""
    out = torch.empty(cols.shape[0], Dt.shape[1], dtype=torch.float32, device=Dt.device)
    for i in range(0, cols.shape[0], SYNTH_ROWS):
        c, v = cols[i:i + SYNTH_ROWS], vals[i:i + SYNTH_ROWS]
        out[i:i + SYNTH_ROWS] = torch.einsum("rk,rkn->rn", v, Dt[c])
    return out


def torch_chunk(Dt: torch.Tensor, k: int, rows: int, seed: int, mag_low: float = 1.0, mag_high: float = 3.0,
                noise: float = 0.0) -> torch.Tensor:
    """(rows, n) float32 samples of the spiked model on Dt = Dᵀ (m, n), drawn by torch
    on Dt's device from ``seed``: each support the k smallest of m i.i.d. uniform keys (a uniformly random
    k-subset), magnitudes U[mag_low, mag_high), x = :func:`synthesize` (+ noise·N(0, I))."""
    gen = torch.Generator(device=Dt.device).manual_seed(seed)
    keys = torch.rand(rows, Dt.shape[0], generator=gen, device=Dt.device)
    cols = keys.topk(k, dim=1, largest=False).indices
    del keys
    vals = mag_low + (mag_high - mag_low) * torch.rand(rows, k, generator=gen, device=Dt.device)
    x = synthesize(cols, vals, Dt)
    if noise > 0:
        x += noise * torch.randn(x.shape, generator=gen, device=Dt.device)
    return x


class SpikedStream(ActivationSource):
    """``n_tokens`` i.i.d. spiked-model samples on the dictionary ``D`` (n, m), made ``chunk`` rows at a time."""

    def __init__(self, D: np.ndarray, k: int, n_tokens: int, seed: int, chunk: int = 65_536,
                 mag_low: float = 1.0, mag_high: float = 3.0, noise: float = 0.0, device: str | None = None) -> None:
        D = np.asarray(D)
        if D.ndim != 2 or not np.isfinite(D).all():
            raise ValueError(f"D has shape {D.shape}, must be a finite (n, m) array")
        for name, v in (("k", k), ("n_tokens", n_tokens), ("chunk", chunk)):
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        if k > D.shape[1]:
            raise ValueError(f"k == {k}, must be in [1, m={D.shape[1]}]")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed == {seed!r}, must be an integer >= 0")
        self.D, self.k, self.n_tokens, self.seed, self.chunk = D, int(k), int(n_tokens), int(seed), int(chunk)
        self.mag_low, self.mag_high, self.noise = mag_low, mag_high, noise
        self.d_in = D.shape[0]
        self.device = None if device is None else torch.device(device)
        """None: numpy on the host (the reference); else torch draws the chunks on this device (:func:`torch_chunk`)."""
        self._Dt = None if device is None else torch.as_tensor(D.T, dtype=torch.float32, device=self.device).contiguous()
        self._cache: OrderedDict[int, np.ndarray | torch.Tensor] = OrderedDict()

    def __repr__(self) -> str:
        return (f"SpikedStream(n={self.d_in}, m={self.D.shape[1]}, k={self.k}, n_tokens={self.n_tokens}, "
                f"seed={self.seed}, chunk={self.chunk}{'' if self.device is None else f', device={self.device}'})")

    @property
    def nbytes(self) -> int:
        """Bytes held: the dictionary and the cached chunks (not the stream)."""
        return int(self.D.nbytes + sum(c.numel() * c.element_size() if isinstance(c, torch.Tensor) else c.nbytes
                                       for c in self._cache.values()))

    def chunk_rows(self, c: int) -> np.ndarray | torch.Tensor:
        """(rows, n) float32 samples of chunk ``c`` (the last chunk may be shorter): a numpy array, or a tensor on
        ``device``."""
        n_chunks = -(-self.n_tokens // self.chunk)
        if not 0 <= c < n_chunks:
            raise IndexError(f"chunk {c} out of range [0, {n_chunks})")
        if c not in self._cache:
            rows = min(self.chunk, self.n_tokens - c * self.chunk)
            if self._Dt is not None:
                x = torch_chunk(self._Dt, self.k, rows, chunk_seed(self.seed, c), self.mag_low, self.mag_high,
                                self.noise)
            else:
                rng = np.random.default_rng([self.seed, STREAM_TAG, c])
                x, _ = spiked_samples(rng, self.D, self.k, rows, self.mag_low, self.mag_high, self.noise)
            self._cache[c] = x
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return self._cache[c]

    def rows(self, start: int, stop: int) -> np.ndarray | torch.Tensor:
        """Samples start..stop of one epoch (0 <= start <= stop <= n_tokens), as a new array (a tensor on ``device``
        when drawn by torch)."""
        if not 0 <= start <= stop <= self.n_tokens:
            raise ValueError(f"rows {start}..{stop}, must satisfy 0 <= start <= stop <= {self.n_tokens}")
        parts, i = [], start
        while i < stop:
            c = i // self.chunk
            lo = i - c * self.chunk
            hi = min(stop, (c + 1) * self.chunk) - c * self.chunk
            parts.append(self.chunk_rows(c)[lo:hi])
            i += hi - lo
        if self.device is not None:
            return torch.cat(parts) if parts else torch.empty((0, self.d_in), device=self.device)
        return np.concatenate(parts) if parts else np.empty((0, self.d_in), np.float32)

    def batches(self, batch_size: int, *, seed: int = 0, shuffle: bool = True, epochs: int | None = 1,
                start_batch: int = 0, drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Consecutive (batch_size, n) batches from row ``start_batch · batch_size`` on; an epoch repeats the
        same samples, and a batch never spans two epochs (the last one of an epoch may be shorter)."""
        check_batch_args(batch_size, epochs, start_batch)
        per_epoch = -(-self.n_tokens // batch_size) if not drop_last else self.n_tokens // batch_size
        if per_epoch == 0:
            return
        b = start_batch
        while epochs is None or b < epochs * per_epoch:
            start = (b % per_epoch) * batch_size
            x = self.rows(start, min(start + batch_size, self.n_tokens))
            yield x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
            b += 1

"""Activation sources: one interface over arrays, files, shard folders and iterators.

Every source yields float32 CPU tensors of shape (B, d_in) from
``batches(batch_size, *, seed, shuffle, epochs, start_batch)``:

- an in-memory array or tensor (:class:`ChunkedSource` over one in-memory shard);
- a ``.npy`` file (read through ``np.load(mmap_mode="r")``, never loaded whole);
- a ``.safetensors`` file holding one 2-D tensor (or name it with ``key``);
- a folder of shards with a ``manifest.json`` (``.npy`` or ``.safetensors`` shards in
  float16 / bfloat16 / float32; :mod:`geomsae.shards` writes them);
- any python iterable of (n, d_in) arrays (:class:`IteratorSource`; streamed in order).

Shuffling of finite sources uses bounded memory: the tokens are cut into pieces of at most
``chunk_tokens`` rows; each epoch the pieces are permuted, consecutive pieces are loaded
together into a buffer of at most ``shuffle_buffer`` rows, and the rows of the buffer are
permuted. The token stream is the concatenation of the epochs and batches are consecutive
slices of it, so every token appears exactly once per epoch. Every permutation comes from a
``torch.Generator`` seeded from (seed, epoch, buffer index), so the stream is a pure function
of the seed and ``start_batch`` can skip to any batch without reading what it skips.
Non-finite values are caught when a buffer is loaded, naming the shard and the row.
"""

from __future__ import annotations

import functools
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geomsae.shards import (  # noqa: F401 (MANIFEST, sha256_file: re-exported)
    DTYPES,
    MANIFEST,
    ArrayShard,
    FileShard,
    Shard,
    check_2d,
    first_nonfinite,
    sha256_file,
)


def check_batch_args(batch_size: int, epochs: int | None, start_batch: int) -> None:
    """Raise ValueError unless the arguments of :meth:`ActivationSource.batches` are in range (for every source)."""
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size == {batch_size!r}, must be an integer >= 1")
    if epochs is not None and not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs == {epochs!r}, must be an integer >= 1 or None (endless)")
    if not (isinstance(start_batch, int) and start_batch >= 0):
        raise ValueError(f"start_batch == {start_batch!r}, must be an integer >= 0")


def _take(buf: np.ndarray, order: np.ndarray | None, p: int, q: int) -> np.ndarray:
    """Rows p:q of the buffer in the epoch's order, as a new array."""
    return buf[order[p:q]] if order is not None else buf[p:q].copy()


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _perm(n: int, *seed_parts: int) -> Tensor:
    g = torch.Generator().manual_seed(_derive_seed(*seed_parts))
    return torch.randperm(n, generator=g)


# --------------------------------------------------------------------------- sources
class ActivationSource(ABC):
    """What the trainer and the evaluator read: float32 (B, d_in) batches."""

    d_in: int
    """Activation width."""
    n_tokens: int | None
    """Number of tokens in one epoch, or None when unknown (iterators)."""

    @abstractmethod
    def batches(self, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                epochs: int | None = 1, start_batch: int = 0,
                drop_last: bool = False) -> Iterator[Tensor]:
        """Yield (batch_size, d_in) float32 CPU tensors (the last one may be shorter).

        ``epochs=None`` streams without end; ``start_batch`` skips that many batches of the
        same stream (for resuming); ``drop_last`` drops a final short batch."""


class ChunkedSource(ActivationSource):
    """A finite source made of row ranges of shards, shuffled with a bounded buffer."""

    def __init__(self, shards: list[Shard], *, shuffle_buffer: int | None = None,
                 chunk_tokens: int | None = None, name: str = "source",
                 segments: list[tuple[int, int, int]] | None = None) -> None:
        if not shards:
            raise ValueError(f"{name} holds no shards")
        d_ins = {s.d_in for s in shards}
        if len(d_ins) != 1:
            raise ValueError(f"{name}: shards disagree on d_in ({sorted(d_ins)})")
        self.shards, self.name, self.d_in = shards, name, d_ins.pop()
        # segments: (shard index, start row, stop row), in token order
        self.segments = segments if segments is not None else [(i, 0, s.n_rows) for i, s in enumerate(shards)]
        self.n_tokens = sum(b - a for _, a, b in self.segments)
        if self.n_tokens == 0:
            raise ValueError(f"{name} holds 0 tokens")
        if shuffle_buffer is None:  # about 1 GiB of float32
            shuffle_buffer = max(1, min(self.n_tokens, 2**18, 2**28 // self.d_in))
        if not (isinstance(shuffle_buffer, int) and shuffle_buffer >= 1):
            raise ValueError(f"shuffle_buffer == {shuffle_buffer!r}, must be an integer >= 1")
        if chunk_tokens is None:
            chunk_tokens = max(1, shuffle_buffer // 16) if shuffle_buffer < self.n_tokens else shuffle_buffer
        if not (isinstance(chunk_tokens, int) and 1 <= chunk_tokens <= shuffle_buffer):
            raise ValueError(f"chunk_tokens == {chunk_tokens!r}, must be in [1, shuffle_buffer={shuffle_buffer}]")
        self.shuffle_buffer, self.chunk_tokens = shuffle_buffer, chunk_tokens
        self.peak_buffer_rows = 0
        """Largest number of rows held at once by the last ``batches`` iteration."""
        self.pieces: list[tuple[int, int, int]] = []
        for i, a, b in self.segments:
            n_pieces = math.ceil((b - a) / chunk_tokens)
            edges = np.linspace(a, b, n_pieces + 1).round().astype(int)
            self.pieces += [(i, int(p), int(q)) for p, q in zip(edges[:-1], edges[1:]) if q > p]

    def __repr__(self) -> str:
        return f"ChunkedSource({self.name!r}, n_tokens={self.n_tokens}, d_in={self.d_in}, shards={len(self.shards)})"

    def subset(self, start: int, stop: int) -> ChunkedSource:
        """The tokens [start, stop) of this source (in file order) as a new source."""
        if not 0 <= start < stop <= self.n_tokens:
            raise ValueError(f"token range [{start}, {stop}) is not inside [0, {self.n_tokens})")
        segs, pos = [], 0
        for i, a, b in self.segments:
            lo, hi = max(a, a + start - pos), min(b, a + stop - pos)
            if hi > lo:
                segs.append((i, lo, hi))
            pos += b - a
        buf = min(self.shuffle_buffer, stop - start)
        return ChunkedSource(self.shards, shuffle_buffer=buf, chunk_tokens=min(self.chunk_tokens, buf),
                             name=f"{self.name}[{start}:{stop}]", segments=segs)

    def _groups(self, seed: int, epoch: int, shuffle: bool) -> list[list[tuple[int, int, int]]]:
        order = _perm(len(self.pieces), seed, epoch, 0).tolist() if shuffle else range(len(self.pieces))
        groups: list[list[tuple[int, int, int]]] = []
        size = self.shuffle_buffer + 1
        for j in order:
            piece = self.pieces[j]
            n = piece[2] - piece[1]
            if size + n > self.shuffle_buffer:
                groups.append([])
                size = 0
            groups[-1].append(piece)
            size += n
        return groups

    def _load(self, group: list[tuple[int, int, int]]) -> np.ndarray:
        parts = [self.shards[i].read(a, b) for i, a, b in group]
        buf = parts[0] if len(parts) == 1 else np.concatenate(parts)
        bad = first_nonfinite(buf)
        if bad is not None:
            row, value = bad
            for i, a, b in group:
                if row < b - a:
                    raise ValueError(f"non-finite activation ({value}) in {self.shards[i].name!r} "
                                     f"row {a + row} (d_in={self.d_in})")
                row -= b - a
        return buf

    def batches(self, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                epochs: int | None = 1, start_batch: int = 0,
                drop_last: bool = False) -> Iterator[Tensor]:
        check_batch_args(batch_size, epochs, start_batch)
        if not (isinstance(seed, int) and seed >= 0):
            raise ValueError(f"seed == {seed!r}, must be an integer >= 0")
        return self._stream(batch_size, seed, shuffle, epochs, start_batch, drop_last)

    def _stream(self, batch_size: int, seed: int, shuffle: bool, epochs: int | None,
                start_batch: int, drop_last: bool) -> Iterator[Tensor]:
        self.peak_buffer_rows = 0
        epoch, offset = divmod(start_batch * batch_size, self.n_tokens)
        carry: np.ndarray | None = None
        while epochs is None or epoch < epochs:
            for gi, group in enumerate(self._groups(seed, epoch, shuffle)):
                size = sum(b - a for _, a, b in group)
                if offset >= size:  # skipped without reading
                    offset -= size
                    continue
                buf = take = None  # drop the previous buffer before loading the next one
                buf = self._load(group)
                order = _perm(size, seed, epoch, gi + 1).numpy() if shuffle else None
                held = size + (0 if carry is None else len(carry))
                self.peak_buffer_rows = max(self.peak_buffer_rows, held)
                take = functools.partial(_take, buf, order)
                pos, offset = offset, 0
                if carry is not None:
                    need = batch_size - len(carry)
                    got = take(pos, min(size, pos + need))
                    pos += len(got)
                    carry = np.concatenate([carry, got])
                    if len(carry) < batch_size:
                        continue
                    yield torch.from_numpy(carry)
                    carry = None
                while size - pos >= batch_size:
                    yield torch.from_numpy(take(pos, pos + batch_size))
                    pos += batch_size
                carry = take(pos, size) if pos < size else None
            epoch += 1
        if carry is not None and not drop_last:
            yield torch.from_numpy(carry)


class IteratorSource(ActivationSource):
    """Batches re-cut from an iterable of (n, d_in) arrays, in the order they come.

    A list, or a callable returning a fresh iterator, allows several epochs and several
    calls of :meth:`batches`; a plain iterator or generator can be read once. ``shuffle`` and ``seed`` are
    ignored (the stream's order is the iterator's)."""

    def __init__(self, items: Iterable[Any] | Callable[[], Iterable[Any]], d_in: int | None = None) -> None:
        if isinstance(items, (list, tuple)):  # re-iterable as it is
            seq = items
            items = lambda: iter(seq)  # noqa: E731
        self._factory = items if callable(items) and not isinstance(items, Iterable) else None
        self._plain: Iterator[Any] | None = None if self._factory is not None else iter(items)  # type: ignore[arg-type]
        self._head: tuple[np.ndarray, Iterator[Any]] | None = None  # a peeked item and its iterator
        self.n_tokens = None
        if d_in is None:
            it = self._fresh()
            try:
                first = self._check(next(it), 0, None)
            except StopIteration:
                raise ValueError("the activation iterator is empty") from None
            self._head = (first, it)
            d_in = first.shape[1]
        if not (isinstance(d_in, int) and d_in >= 1):
            raise ValueError(f"d_in == {d_in!r}, must be an integer >= 1")
        self.d_in = d_in

    def _fresh(self) -> Iterator[Any]:
        if self._factory is not None:
            return iter(self._factory())
        if self._plain is None:
            raise ValueError("this activation iterator was already read; pass a callable "
                             "returning a fresh iterator to read it again")
        it, self._plain = self._plain, None
        return it

    def _check(self, item: Any, index: int, d_in: int | None) -> np.ndarray:
        if isinstance(item, Tensor):
            item = item.detach().cpu().float().numpy()
        a = np.asarray(item, dtype=np.float32)
        check_2d(a.shape, f"iterator item {index}", d_in)
        bad = first_nonfinite(a)
        if bad is not None:
            raise ValueError(f"non-finite activation ({bad[1]}) in iterator item {index} row {bad[0]}")
        return a

    def _arrays(self) -> Iterator[np.ndarray]:
        if self._head is not None:
            (first, it), self._head = self._head, None
            yield first
            start = 1
        else:
            it, start = self._fresh(), 0
        for i, item in enumerate(it, start):
            yield self._check(item, i, self.d_in)

    def batches(self, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                epochs: int | None = 1, start_batch: int = 0,
                drop_last: bool = False) -> Iterator[Tensor]:
        check_batch_args(batch_size, epochs, start_batch)
        if epochs != 1 and self._factory is None:
            raise ValueError(f"epochs == {epochs!r} needs a callable returning a fresh iterator")
        return self._stream(batch_size, epochs, start_batch, drop_last)

    def _stream(self, batch_size: int, epochs: int | None, start_batch: int, drop_last: bool) -> Iterator[Tensor]:
        pending: list[np.ndarray] = []
        n_pending, skip, epoch = 0, start_batch * batch_size, 0
        while epochs is None or epoch < epochs:
            for a in self._arrays():
                if skip:
                    cut = min(skip, len(a))
                    a, skip = a[cut:], skip - cut
                pending.append(a)
                n_pending += len(a)
                while n_pending >= batch_size:
                    cat = np.concatenate(pending)
                    yield torch.from_numpy(np.ascontiguousarray(cat[:batch_size]))
                    pending, n_pending = [cat[batch_size:]], n_pending - batch_size
            epoch += 1
        if n_pending and not drop_last:
            yield torch.from_numpy(np.ascontiguousarray(np.concatenate(pending)))


# --------------------------------------------------------------------------- opening
def _open_folder(folder: Path, verify: str, **kw: Any) -> ChunkedSource:
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"activation folder {str(folder)!r} has no {MANIFEST}")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(mpath)!r} is not valid JSON: {exc}") from exc
    for key in ("d_in", "dtype", "shards"):
        if key not in m:
            raise ValueError(f"{str(mpath)!r} lacks the key {key!r}")
    if m["dtype"] not in DTYPES:
        raise ValueError(f"{str(mpath)!r}: dtype == {m['dtype']!r}, must be one of {sorted(DTYPES)}")
    if not isinstance(m["shards"], list) or not m["shards"]:
        raise ValueError(f"{str(mpath)!r} lists no shards ('shards' must be a non-empty list)")
    if isinstance(m["d_in"], bool) or not isinstance(m["d_in"], int) or m["d_in"] < 1:
        raise ValueError(f"{str(mpath)!r}: d_in == {m['d_in']!r}, must be an integer >= 1")
    shards: list[Shard] = [
        FileShard(_shard_path(folder, s, i, mpath), key=s.get("key"), sha256=s.get("sha256"), verify=verify,
                  n_rows=s.get("n_tokens"), d_in=m["d_in"], dtype=m["dtype"])
        for i, s in enumerate(m["shards"])
    ]
    total = sum(s.n_rows for s in shards)
    if "n_tokens" in m and (isinstance(m["n_tokens"], bool) or not isinstance(m["n_tokens"], int)):
        raise ValueError(f"{str(mpath)!r}: n_tokens == {m['n_tokens']!r} ({type(m['n_tokens']).__name__}), must be an "
                         f"integer (the shards hold {total})")
    if "n_tokens" in m and m["n_tokens"] != total:
        raise ValueError(f"{str(mpath)!r}: n_tokens == {m['n_tokens']}, but the shards hold {total}")
    src = ChunkedSource(shards, name=str(folder), **kw)
    src.manifest = m  # type: ignore[attr-defined]
    return src


def _shard_path(folder: Path, entry: Any, i: int, mpath: Path) -> Path:
    """The file of manifest shard entry ``i``, checked: a relative path inside ``folder``, and
    the entry's optional fields of the right types."""
    where = f"{str(mpath)!r} shard {i}"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
        raise ValueError(f"{where}: each shard entry must be an object with a 'file' name, got {entry!r}")
    for key, types in (("n_tokens", int), ("sha256", str), ("key", str)):
        v = entry.get(key)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            raise ValueError(f"{where}: {key} == {v!r}, must be a {types.__name__}")
    rel = Path(entry["file"])
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{where}: file == {entry['file']!r} must be a path inside the folder "
                         "(no absolute path, no '..')")
    return folder / rel


def open_source(data: Any, *, key: str | None = None, verify: str = "lazy",
                shuffle_buffer: int | None = None, chunk_tokens: int | None = None,
                d_in: int | None = None) -> ActivationSource:
    """Open activations: a path (.npy, .safetensors, shard folder), an array, or an iterable.

    ``key`` names the tensor of a .safetensors file holding several; ``verify`` is when to
    check shard sha256 sums: "open" (all now), "lazy" (each at its first read) or "none";
    ``shuffle_buffer`` bounds the rows held in memory while shuffling (default: about
    1 GiB of float32, or the whole array when it is already in memory); ``d_in`` is
    checked against the data when given.
    """
    if verify not in ("open", "lazy", "none"):
        raise ValueError(f"verify == {verify!r}, must be 'open', 'lazy' or 'none'")
    kw = dict(shuffle_buffer=shuffle_buffer, chunk_tokens=chunk_tokens)
    if isinstance(data, ActivationSource):
        src = data
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            if path.is_symlink():
                raise FileNotFoundError(f"activation path {str(path)!r} is a symlink to nothing (a dangling link or a "
                                        "loop)")
            raise FileNotFoundError(f"activation path {str(path)!r} does not exist")
        if key is not None and (path.is_dir() or path.suffix != ".safetensors"):
            raise ValueError(f"key == {key!r} (--data-key) names a tensor of a .safetensors file; "
                             f"{str(path)!r} is not one")
        if path.is_dir():
            src = _open_folder(path, verify, **kw)
        elif path.suffix in (".npy", ".safetensors"):
            src = ChunkedSource([FileShard(path, key=key)], name=str(path), **kw)
        else:
            raise ValueError(f"activation file {str(path)!r}: unknown suffix {path.suffix!r} "
                             "(expected .npy, .safetensors or a shard folder)")
    elif isinstance(data, (np.ndarray, Tensor)):
        shard = ArrayShard(data)
        if shard.n_rows == 0:
            raise ValueError(f"the activation array has shape {tuple(shard.array.shape)}: 0 tokens")
        if kw["shuffle_buffer"] is None:
            kw["shuffle_buffer"] = shard.n_rows  # already in memory: shuffle globally
        src = ChunkedSource([shard], name="array", **kw)
    elif isinstance(data, Iterable) or callable(data):
        src = IteratorSource(data, d_in=d_in)
    else:
        raise ValueError(f"cannot read activations from a {type(data).__name__}")
    if d_in is not None and src.d_in != d_in:
        raise ValueError(f"the activations have d_in == {src.d_in}, expected d_in == {d_in}")
    return src


def train_eval_split(source: Any, eval_fraction: float = 0.1) -> tuple[ChunkedSource, ChunkedSource]:
    """Split a finite source into (train, eval): eval is the last ``eval_fraction`` of tokens."""
    src = source if isinstance(source, ActivationSource) else open_source(source)
    if not isinstance(src, ChunkedSource):
        raise ValueError("train_eval_split needs a finite source (array, file or shard folder)")
    if not (isinstance(eval_fraction, (int, float)) and 0 < eval_fraction < 1):
        raise ValueError(f"eval_fraction == {eval_fraction!r}, must be in (0, 1)")
    n_eval = round(src.n_tokens * eval_fraction)
    if not 0 < n_eval < src.n_tokens:
        raise ValueError(f"eval_fraction == {eval_fraction} of {src.n_tokens} tokens leaves "
                         f"{n_eval} evaluation tokens; need at least 1 on each side")
    cut = src.n_tokens - n_eval
    return src.subset(0, cut), src.subset(cut, src.n_tokens)

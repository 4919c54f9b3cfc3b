"""The on-disk activation format: shard files read by row ranges, and shard folders written
as ``shard_00000.npy`` ... plus, written last, ``manifest.json``.

Manifest: ``{"format": "geomsae-activations", "version": 1, "d_in", "dtype", "n_tokens",
"shards": [{"file", "n_tokens", "sha256"}], "metadata": {...}}``. Every file is written
under a temporary name and moved into place, so a shard that exists is complete and a
folder with a manifest is complete. :func:`geomsae.data.open_source` reads these folders.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geomsae import durable

MANIFEST = "manifest.json"
DTYPES = {"float16", "bfloat16", "float32"}
"""Dtypes a shard folder may store (its manifest's ``dtype``)."""
READABLE_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                   "uint16", "uint32"}
"""Dtypes an activation file may hold (complex and bool are refused: they are no activations)."""


def check_2d(shape: tuple[int, ...], what: str, d_in: int | None = None) -> None:
    """Raise ValueError naming ``what`` unless ``shape`` is (n_tokens, d_in >= 1), d_in as given."""
    if len(shape) != 2:
        raise ValueError(f"{what} has shape {tuple(shape)}, must be 2-D (n_tokens, d_in)")
    if shape[1] < 1:
        raise ValueError(f"{what} has shape {tuple(shape)}: d_in must be >= 1")
    if d_in is not None and shape[1] != d_in:
        raise ValueError(f"{what} has d_in == {shape[1]}, expected d_in == {d_in}")


def first_nonfinite(a: np.ndarray, block: int = 1 << 14) -> tuple[int, float] | None:
    """(row, value) of the first non-finite entry of a 2-D array, or None (checked in row blocks)."""
    for start in range(0, len(a), block):
        part = a[start:start + block]
        if np.isfinite(part).all():
            continue
        bad = ~np.isfinite(part)
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        return start + row, float(part[row][bad[row]][0])
    return None


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- reading
class Shard:
    """A 2-D array, in memory or on disk, read by row ranges as float32 numpy."""

    name: str
    n_rows: int
    d_in: int

    def read(self, start: int, stop: int) -> np.ndarray:  # (stop - start, d_in) float32
        raise NotImplementedError


class ArrayShard(Shard):
    """An in-memory (n, d_in) float array or tensor."""

    def __init__(self, array: Any, name: str = "array") -> None:
        if isinstance(array, Tensor):
            array = array.detach().cpu()
            array = array.float().numpy() if array.dtype != torch.float32 else array.numpy()
        a = np.asarray(array)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{name} has dtype {a.dtype}, must be a float array")
        check_2d(a.shape, name)
        self.array, self.name, self.n_rows, self.d_in = a, name, a.shape[0], a.shape[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop], dtype=np.float32)


class FileShard(Shard):
    """A .npy or .safetensors file; checks shape, dtype, size and (optionally) sha256."""

    def __init__(self, path: Path, *, key: str | None = None, sha256: str | None = None,
                 verify: str = "lazy", n_rows: int | None = None, d_in: int | None = None,
                 dtype: str | None = None) -> None:
        self.path, self.name, self.key, self.sha256 = path, path.name, key, sha256
        self.verified = sha256 is None or verify == "none"
        if not path.is_file():
            raise FileNotFoundError(f"activation file {str(path)!r} does not exist")
        if path.stat().st_size == 0:
            raise ValueError(f"activation file {str(path)!r} is empty (0 bytes)")
        if verify == "open":
            self.verify()
        try:
            shape, found_dtype = self._header()
        except KeyError as exc:
            raise ValueError(f"activation file {str(path)!r} {exc.args[0]}") from exc
        except Exception as exc:  # numpy and safetensors raise various types on bad files
            raise ValueError(f"activation file {str(path)!r} is corrupted or truncated: {exc}") from exc
        if found_dtype not in READABLE_DTYPES:
            raise ValueError(f"activation file {str(path)!r} has dtype {found_dtype}, must be a real float or "
                             f"integer type ({', '.join(sorted(READABLE_DTYPES))})")
        check_2d(shape, f"activation file {str(path)!r}", d_in)
        if shape[0] == 0:
            raise ValueError(f"activation file {str(path)!r} holds 0 tokens")
        if n_rows is not None and shape[0] != n_rows:
            raise ValueError(f"shard {str(path)!r} holds {shape[0]} tokens, the manifest says {n_rows}")
        if dtype is not None and found_dtype != dtype:
            raise ValueError(f"shard {str(path)!r} has dtype {found_dtype}, the manifest says {dtype}")
        self.n_rows, self.d_in, self.dtype = shape[0], shape[1], found_dtype

    def _header(self) -> tuple[tuple[int, ...], str]:
        if self.path.suffix == ".npy":
            a = np.load(self.path, mmap_mode="r")
            if a.dtype.byteorder == ">":
                raise KeyError(f"holds big-endian {a.dtype.name} ({a.dtype.str}): save it in the native byte order, "
                               "e.g. np.save(path, a.astype(a.dtype.newbyteorder('=')))")
            return a.shape, str(a.dtype)
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            keys = list(f.keys())
            if self.key is None:
                if len(keys) != 1:
                    raise KeyError(f"holds tensors {keys}; name the one to use with key=")
                self.key = keys[0]
            elif self.key not in keys:
                raise KeyError(f"has no tensor {self.key!r} (it holds {keys})")
            sl = f.get_slice(self.key)
            dt = str(sl.get_dtype()).lower()
            dt = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64", "i8": "int8",
                  "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8", "u16": "uint16",
                  "u32": "uint32"}.get(dt, dt)
            return tuple(sl.get_shape()), dt

    def verify(self) -> None:
        """Compare the file's sha256 with the manifest's (a no-op without one)."""
        if self.sha256 is None:
            return
        got = sha256_file(self.path)
        if got != self.sha256:
            raise ValueError(f"shard {str(self.path)!r} is corrupted: sha256 {got[:16]}... "
                             f"!= manifest {self.sha256[:16]}...")
        self.verified = True

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self.verified:
            self.verify()
        try:
            if self.path.suffix == ".npy":
                part = np.load(self.path, mmap_mode="r")[start:stop]
                return np.asarray(part, dtype=np.float32)
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                return f.get_slice(self.key)[start:stop].float().numpy()
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot read rows {start}:{stop} of {str(self.path)!r}: {exc}") from exc



# --------------------------------------------------------------------------- writing

def write_shard_file(folder: str | os.PathLike, index: int, x: np.ndarray, *, dtype: str = "float16",
                     fmt: str = "npy") -> dict[str, Any]:
    """Write ``x`` (n, d_in) as shard number ``index`` of ``folder``; return its manifest entry.

    The file is written under a temporary name and moved into place, so a shard file that
    exists is complete. Values that overflow ``dtype`` (float16: |x| > 65504) raise.
    """
    out = np.ascontiguousarray(np.asarray(x).astype(dtype))
    if out.size and not np.isfinite(out).all():
        big = float(np.abs(np.asarray(x, dtype=np.float64)).max())
        raise ValueError(f"activations overflow {dtype} (largest |value| {big:.4g}); store float32 "
                         "or drop outlier tokens")
    name = f"shard_{index:05d}.{fmt}"
    path = Path(folder) / name
    tmp = path.with_name(f".tmp-{name}")
    if fmt == "npy":
        with open(tmp, "wb") as f:
            np.save(f, out)
    else:
        from safetensors.numpy import save_file

        save_file({"activations": out}, str(tmp))
    durable.replace(tmp, path)  # flushed to disk before the rename
    return {"file": name, "n_tokens": int(out.shape[0]), "sha256": sha256_file(path)}


def write_manifest(folder: str | os.PathLike, d_in: int, dtype: str, shards: list[dict[str, Any]],
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` (atomically) for the shards listed; a folder with one is complete."""
    manifest = {"format": "geomsae-activations", "version": 1, "d_in": int(d_in), "dtype": dtype,
                "n_tokens": sum(s["n_tokens"] for s in shards), "shards": shards, "metadata": metadata or {}}
    path = Path(folder) / MANIFEST
    durable.write_json(path, manifest, indent=1)
    return path


class ShardWriter:
    """Write activations into a shard folder with a ``manifest.json``.

    Manifest: ``{"format": "geomsae-activations", "version": 1, "d_in", "dtype",
    "n_tokens", "shards": [{"file", "n_tokens", "sha256"}], "metadata": {...}}``.
    The manifest is written last (atomically), so a folder with a manifest is complete.
    """

    def __init__(self, folder: str | os.PathLike, d_in: int, *, shard_tokens: int = 2**16,
                 dtype: str = "float16", fmt: str = "npy", metadata: dict[str, Any] | None = None) -> None:
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype == {dtype!r}, must be 'float16' or 'float32'")
        if fmt not in ("npy", "safetensors"):
            raise ValueError(f"fmt == {fmt!r}, must be 'npy' or 'safetensors'")
        if not (isinstance(shard_tokens, int) and shard_tokens >= 1):
            raise ValueError(f"shard_tokens == {shard_tokens!r}, must be an integer >= 1")
        self.folder = Path(folder)
        if (self.folder / MANIFEST).exists():
            raise ValueError(f"{str(self.folder)!r} already holds a {MANIFEST}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.d_in, self.shard_tokens, self.dtype, self.fmt = d_in, shard_tokens, dtype, fmt
        self.metadata = metadata or {}
        self.shards: list[dict[str, Any]] = []
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    def add(self, x: Any) -> None:
        """Append a (n, d_in) batch of activations."""
        if isinstance(x, Tensor):
            x = x.detach().cpu().float().numpy()
        a = np.asarray(x, dtype=np.float32)
        check_2d(a.shape, "the activation batch", self.d_in)
        bad = first_nonfinite(a)
        if bad is not None:
            raise ValueError(f"non-finite activation ({bad[1]}) in the batch row {bad[0]}")
        self._pending.append(a)
        self._n_pending += len(a)
        while self._n_pending >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        cat = np.concatenate(self._pending)
        out, rest = cat[:n], cat[n:]
        self._pending, self._n_pending = [rest], len(rest)
        self.shards.append(write_shard_file(self.folder, len(self.shards), out, dtype=self.dtype, fmt=self.fmt))

    def close(self) -> Path:
        """Write the last shard and the manifest; return the folder."""
        if self._n_pending:
            self._flush(self._n_pending)
        if not self.shards:
            raise ValueError("no activations were added")
        write_manifest(self.folder, self.d_in, self.dtype, self.shards, self.metadata)
        return self.folder

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()


def write_shards(folder: str | os.PathLike, x: Any, **kw: Any) -> Path:
    """Write one (n, d_in) array as a shard folder (see :class:`ShardWriter` for options)."""
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    check_2d(a.shape, "the activation array")
    with ShardWriter(folder, a.shape[1], **kw) as w:
        w.add(a)
    return Path(folder)

"""Activation sources: every format, deterministic shuffling, resuming, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geomsae.data import ChunkedSource, IteratorSource, open_source, train_eval_split
from geomsae.shards import ShardWriter, write_shards


def _ids(n: int = 1000, d_in: int = 8) -> np.ndarray:
    """Row i is (i, i + 0.5, ...): the token id is column 0 (exact in float16 up to 2048)."""
    return (np.arange(n)[:, None] + np.arange(d_in)[None, :] * 0.5).astype(np.float32)


def _col0(batches) -> np.ndarray:
    return np.concatenate([b[:, 0].numpy() for b in batches]).astype(np.int64)


@pytest.fixture()
def x() -> np.ndarray:
    return _ids()


def _all_formats(tmp_path, x):
    np.save(tmp_path / "a.npy", x)
    from safetensors.numpy import save_file

    save_file({"acts": x}, str(tmp_path / "a.safetensors"))
    write_shards(tmp_path / "npy_shards", x, shard_tokens=300, dtype="float16")
    write_shards(tmp_path / "st_shards", x, shard_tokens=256, dtype="float32", fmt="safetensors")
    return {
        "array": x,
        "tensor": torch.from_numpy(x),
        "npy": tmp_path / "a.npy",
        "safetensors": tmp_path / "a.safetensors",
        "npy_shards": tmp_path / "npy_shards",
        "st_shards": tmp_path / "st_shards",
    }


def test_every_format_covers_every_token_once_per_epoch(tmp_path, x):
    for name, data in _all_formats(tmp_path, x).items():
        src = open_source(data, shuffle_buffer=200)
        assert (src.d_in, src.n_tokens) == (8, 1000), name
        batches = list(src.batches(64, seed=3, epochs=2))
        assert all(b.dtype == torch.float32 and b.shape[1] == 8 for b in batches)
        assert [len(b) for b in batches] == [64] * 31 + [16], name
        ids = _col0(batches)
        assert sorted(ids[:1000]) == list(range(1000)), name  # epoch 1: each token once
        assert sorted(ids[1000:]) == list(range(1000)), name  # epoch 2 too
        assert not np.array_equal(ids[:1000], np.arange(1000)), f"{name} was not shuffled"
        assert not np.array_equal(ids[:1000], ids[1000:]), f"{name}: epochs share one order"
        # the rows arrive intact (float16 shards hold these values exactly)
        full = torch.cat(batches)[:1000]
        np.testing.assert_array_equal(full.numpy(), x[ids[:1000]])


def test_shuffle_is_deterministic_by_seed_and_off_when_asked(x):
    src = open_source(x, shuffle_buffer=128)
    a = _col0(src.batches(50, seed=7))
    b = _col0(src.batches(50, seed=7))
    c = _col0(src.batches(50, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(_col0(src.batches(50, shuffle=False)), np.arange(1000))


@pytest.mark.parametrize("buffer", [None, 100, 333])
def test_start_batch_resumes_the_same_stream(x, buffer):
    src = open_source(x, shuffle_buffer=buffer)
    full = list(src.batches(48, seed=1, epochs=3))
    for start in (0, 1, 20, 21, 40, 62):
        tail = list(src.batches(48, seed=1, epochs=3, start_batch=start))
        assert len(tail) == len(full) - start
        for u, v in zip(tail, full[start:]):
            assert torch.equal(u, v)


def test_shuffle_buffer_bounds_memory(tmp_path, x):
    src = open_source(write_shards(tmp_path / "s", x, shard_tokens=100), shuffle_buffer=150)
    assert isinstance(src, ChunkedSource)
    reads = []
    for shard in src.shards:
        orig = shard.read

        def spy(a, b, orig=orig):
            reads.append(b - a)
            return orig(a, b)

        shard.read = spy  # type: ignore[method-assign]
    ids = _col0(src.batches(32, seed=0))
    assert sorted(ids) == list(range(1000))
    assert 0 < src.peak_buffer_rows <= 150 + 32
    assert max(reads) <= 150 and sum(reads) == 1000  # each token read once per epoch


def test_endless_stream_and_drop_last(x):
    src = open_source(x)
    it = src.batches(300, seed=0, epochs=None)
    ids = _col0([next(it) for _ in range(10)])  # 3000 tokens = 3 epochs
    assert all(sorted(ids[i * 1000:(i + 1) * 1000]) == list(range(1000)) for i in range(3))
    assert [len(b) for b in src.batches(300, drop_last=True)] == [300] * 3


def test_iterator_source_rebatches_and_checks(x):
    src = open_source(iter([x[:70], x[70:75], x[75:]]))
    assert isinstance(src, IteratorSource) and src.n_tokens is None and src.d_in == 8
    np.testing.assert_array_equal(_col0(src.batches(64)), np.arange(1000))
    with pytest.raises(ValueError, match="already read"):
        list(src.batches(64))
    factory = open_source(lambda: (x[i:i + 100] for i in range(0, 1000, 100)))
    np.testing.assert_array_equal(_col0(factory.batches(64, epochs=2)), np.tile(np.arange(1000), 2))
    np.testing.assert_array_equal(_col0(factory.batches(64, start_batch=3)), np.arange(192, 1000))
    listed = open_source([x[:500], x[500:]])  # a list can be read again
    assert _col0(listed.batches(300, epochs=2)).tolist() == list(range(1000)) * 2
    bad = x.copy()
    bad[130, 2] = np.inf
    with pytest.raises(ValueError, match=r"non-finite activation \(inf\) in iterator item 1 row 30"):
        list(open_source(iter([bad[:100], bad[100:]])).batches(64))
    with pytest.raises(ValueError, match="iterator item 1 has d_in == 4, expected d_in == 8"):
        list(open_source(iter([x[:10], x[:10, :4]])).batches(4))


def test_train_eval_split_holds_out_the_last_tokens(tmp_path, x):
    for data in (x, write_shards(tmp_path / "s", x, shard_tokens=300)):
        train, ev = train_eval_split(data, 0.25)
        assert (train.n_tokens, ev.n_tokens) == (750, 250)
        assert sorted(_col0(train.batches(64, seed=2))) == list(range(750))
        np.testing.assert_array_equal(_col0(ev.batches(64, shuffle=False)), np.arange(750, 1000))
    with pytest.raises(ValueError, match=r"eval_fraction == 1\.5, must be in \(0, 1\)"):
        train_eval_split(x, 1.5)
    with pytest.raises(ValueError, match="leaves 0 evaluation tokens"):
        train_eval_split(x, 1e-4)


def test_shard_folder_manifest_and_sha256(tmp_path, x):
    folder = write_shards(tmp_path / "s", x, shard_tokens=400, metadata={"model": "toy"})
    m = json.loads((folder / "manifest.json").read_text())
    assert m["d_in"] == 8 and m["dtype"] == "float16" and m["n_tokens"] == 1000
    assert [s["n_tokens"] for s in m["shards"]] == [400, 400, 200]
    assert all(len(s["sha256"]) == 64 for s in m["shards"]) and m["metadata"] == {"model": "toy"}
    # corrupt one byte inside the data of the second shard (same size, valid header)
    path = folder / m["shards"][1]["file"]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"shard_00001\.npy' is corrupted: sha256"):
        open_source(folder, verify="open")
    src = open_source(folder, verify="lazy", shuffle_buffer=1000)  # opens; fails at first read
    with pytest.raises(ValueError, match=r"shard_00001\.npy' is corrupted"):
        list(src.batches(100))
    list(open_source(folder, verify="none").batches(100))  # the caller opted out


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_truncated_shard_is_detected(tmp_path, x, fmt):
    folder = write_shards(tmp_path / "s", x, shard_tokens=500, fmt=fmt, dtype="float32")
    path = folder / f"shard_00001.{fmt}"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"shard_00001\.{fmt}' is corrupted or truncated"):
        open_source(folder, verify="none")
    with pytest.raises(FileNotFoundError, match="shard_00001"):
        path.unlink()
        open_source(folder)


def test_manifest_mismatches(tmp_path, x):
    folder = write_shards(tmp_path / "s", x, shard_tokens=500)
    mpath = folder / "manifest.json"
    m = json.loads(mpath.read_text())
    m["shards"][0]["n_tokens"] = 499
    mpath.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="holds 500 tokens, the manifest says 499"):
        open_source(folder)
    m["shards"][0]["n_tokens"] = 500
    total = m["n_tokens"]
    m["n_tokens"] = str(total)  # a string that prints like the right number: named as a string
    mpath.write_text(json.dumps(m))
    with pytest.raises(ValueError, match=rf"n_tokens == '{total}' \(str\), must be an integer"):
        open_source(folder)
    m["n_tokens"] = total
    m["d_in"] = 16
    mpath.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="has d_in == 8, expected d_in == 16"):
        open_source(folder)
    mpath.unlink()
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        open_source(folder)


def test_nan_and_inf_name_the_shard_and_row(tmp_path, x):
    bad = x.copy()
    bad[321, 5] = np.nan
    with pytest.raises(ValueError, match=r"non-finite activation \(nan\) in 'array' row 321"):
        list(open_source(bad).batches(100))
    folder = write_shards(tmp_path / "s", x, shard_tokens=300, dtype="float32")
    shard = x[600:900].copy()
    shard[177, 0] = -np.inf  # token 777; rewritten in place (sha256 no longer checked)
    np.save(folder / "shard_00002.npy", shard)
    with pytest.raises(ValueError, match=r"non-finite activation \(-inf\) in 'shard_00002\.npy' row 177"):
        list(open_source(folder, verify="none").batches(100, seed=4))
    with pytest.raises(ValueError, match=r"non-finite activation \(nan\) in the batch row 3"):
        ShardWriter(tmp_path / "w", 8).add(bad[318:330])


def test_bad_inputs_raise_naming_the_value(tmp_path, x):
    with pytest.raises(FileNotFoundError, match="nope.npy' does not exist"):
        open_source(tmp_path / "nope.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy' is empty \(0 bytes\)"):
        open_source(tmp_path / "empty.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="zero.npy' holds 0 tokens"):
        open_source(tmp_path / "zero.npy")
    np.save(tmp_path / "one.npy", np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"has shape \(8,\), must be 2-D"):
        open_source(tmp_path / "one.npy")
    with pytest.raises(ValueError, match=r"has shape \(2, 3, 4\), must be 2-D"):
        open_source(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="have d_in == 8, expected d_in == 16"):
        open_source(x, d_in=16)
    (tmp_path / "a.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unknown suffix '.txt'"):
        open_source(tmp_path / "a.txt")
    from safetensors.numpy import save_file

    save_file({"a": x, "b": x}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match=r"holds tensors \['a', 'b'\]; name the one"):
        open_source(tmp_path / "two.safetensors")
    assert open_source(tmp_path / "two.safetensors", key="b").n_tokens == 1000
    src = open_source(x)
    with pytest.raises(ValueError, match="batch_size == 0, must be an integer >= 1"):
        src.batches(0)
    with pytest.raises(ValueError, match="start_batch == -1"):
        src.batches(4, start_batch=-1)
    with pytest.raises(ValueError, match="verify == 'always'"):
        open_source(x, verify="always")


def test_shard_writer_streams_batches(tmp_path, x):
    with ShardWriter(tmp_path / "w", 8, shard_tokens=256, fmt="safetensors", dtype="float32") as w:
        for i in range(0, 1000, 90):
            w.add(torch.from_numpy(x[i:i + 90]))
    src = open_source(tmp_path / "w")
    assert [s.n_rows for s in src.shards] == [256, 256, 256, 232]
    np.testing.assert_array_equal(torch.cat(list(src.batches(1000, shuffle=False))).numpy(), x)
    with pytest.raises(ValueError, match="already holds a manifest.json"):
        ShardWriter(tmp_path / "w", 8)

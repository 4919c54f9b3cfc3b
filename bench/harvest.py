"""Harvest throughput against a plain transformers forward, side by side in one process.

    python bench/harvest.py                       # SmolLM2-135M (the packaged GGUF), layer 15, 8,192 tokens
    python bench/harvest.py --tokens 32768 --layer 15 --batch-contexts 16 --ctx-len 128

Prints tokens/s of ``geomsae.activations.harvest`` (tokenising, the forward cut after the hooked
block, outlier and BOS handling, float16 shards with sha256 on disk) and of the plain way to get
the same activations: ``model(ids, output_hidden_states=True).hidden_states[layer + 1]`` over
the same contexts (every block and the logits run; nothing written), and their ratio.
The model is loaded once (``geomsae.lm.load_model``, offline) and shared by both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch


@dataclasses.dataclass
class Config:
    model: str = "smollm2-135m"
    layer: int = 15
    tokens: int = 8192
    ctx_len: int = 128
    batch_contexts: int = 16
    text: str = "python-doc"
    device: str = "cpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    cfg = Config(**vars(p.parse_args()))
    from geomsae import lm
    from geomsae.activations import HarvestConfig, harvest, token_contexts
    from geomsae.commands.common import tune_malloc

    if cfg.device == "cpu":
        tune_malloc()
    t = time.perf_counter()
    loaded = lm.load_model(cfg.model, device=cfg.device)
    print(f"model {cfg.model!r} loaded in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {cfg.device}")
    hc = HarvestConfig(model=cfg.model, layer=cfg.layer, text=cfg.text, tokens=cfg.tokens, ctx_len=cfg.ctx_len,
                       batch_contexts=cfg.batch_contexts, shard_tokens=cfg.tokens, progress=False,
                       device=cfg.device)
    # warm-up: one batch through each path
    n_ctx = -(-cfg.tokens // (cfg.ctx_len - 1))  # contexts the harvest reads (BOS dropped)
    ids = token_contexts(hc, loaded.tokenizer, n_ctx)
    with torch.inference_mode():
        loaded.model(ids[: cfg.batch_contexts].to(cfg.device), output_hidden_states=True)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        harvest(hc, tmp, model=loaded.model, tokenizer=loaded.tokenizer, resume=False)
        t_harvest = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), cfg.batch_contexts):
            out = loaded.model(ids[i:i + cfg.batch_contexts].to(cfg.device), output_hidden_states=True)
            h = out.hidden_states[cfg.layer + 1][:, 1:].float().cpu()  # the same rows, BOS dropped
            del out, h
    t_plain = time.perf_counter() - t
    n_plain = len(ids) * (cfg.ctx_len - 1)
    r_h, r_p = cfg.tokens / t_harvest, n_plain / t_plain
    print(f"{'path':<44} {'tokens':>8} {'s':>7} {'tokens/s':>9}")
    print(f"{'geomsae harvest (layer ' + str(cfg.layer) + ', float16 shards)':<44} {cfg.tokens:>8} {t_harvest:>7.1f} {r_h:>9.0f}")
    print(f"{'transformers forward, output_hidden_states':<44} {n_plain:>8} {t_plain:>7.1f} {r_p:>9.0f}")
    print(f"ratio harvest / plain forward: {r_h / r_p:.2f}x")


if __name__ == "__main__":
    main()

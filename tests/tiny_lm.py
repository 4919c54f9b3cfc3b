"""Tiny randomly initialised causal LMs (GPT-NeoX as Pythia, Llama) with a character tokenizer.

They are saved as ordinary Hugging Face folders (config.json, model.safetensors, tokenizer
files), so the tests go through the same loading code as user-supplied Pythia or Llama weights.
"""

from __future__ import annotations

import string
from pathlib import Path


# transformers is a test dependency (pyproject [test]): a broken install must fail the tests, not skip them
import transformers  # noqa: E402,F401

ARCHS = ("gpt_neox", "llama")
TEXT = [
    "The residual stream carries every feature the model has computed so far.\n",
    "Sparse autoencoders write each activation as a sparse sum of dictionary atoms.\n",
    "An elastic-net penalty makes the coding map Lipschitz; the lasso's is not.\n",
    "Dead latents never fire on held-out data, however long one waits.\n",
    "Adaptive weights penalise rarely firing latents more, frequent ones less.\n",
]


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<|endoftext|>", "<unk>"] + sorted(set(string.printable)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>")


def tiny_model(arch: str, vocab_size: int, seed: int = 0, layers: int = 3):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=256)
        model = GPTNeoXForCausalLM(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(arch)
    return model.eval()


def save_tiny(folder: Path, arch: str, seed: int = 0, trained: bool = False) -> Path:
    """Write a tiny model (random, or fitted to TEXT with ``trained``) + tokenizer folder; returns it."""
    tok = char_tokenizer()
    model = trained_tiny_model(arch, seed=seed) if trained else tiny_model(arch, len(tok), seed)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def write_text(folder: Path, copies: int = 6) -> Path:
    """A folder of small text files (one document each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        for j, line in enumerate(TEXT):
            (folder / f"doc_{i:02d}_{j}.txt").write_text(line * (2 + (i + j) % 3))
    return folder


def text_ids(n: int = 6, t: int = 24, offset: int = 0):
    """(n, t) token ids: consecutive windows of the TEXT lines, BOS first."""
    import torch

    tok = char_tokenizer()
    stream = tok("".join(TEXT) * 4, add_special_tokens=False)["input_ids"]
    rows = [[tok.bos_token_id, *stream[offset + i * (t - 1): offset + (i + 1) * (t - 1)]] for i in range(n)]
    return torch.tensor(rows)


def trained_tiny_model(arch: str, steps: int = 80, seed: int = 0):
    """A tiny model fitted for a few Adam steps on TEXT, so that ablating a layer hurts its loss."""
    import torch

    model = tiny_model(arch, len(char_tokenizer()), seed).train()
    ids = text_ids(16, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)

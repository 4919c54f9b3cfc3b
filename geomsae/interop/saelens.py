"""SAELens (v6) folders: ``cfg.json`` + ``sae_weights.safetensors``, as ``SAE.load_from_disk`` reads them.

Layout (SAELens multiplies on the right: ``pre = (x − b_dec) @ W_enc + b_enc``,
``x̂ = z @ W_dec + b_dec``)::

    W_enc (d_in, d_sae)   W_dec (d_sae, d_in)   b_dec (d_in,)
    standard, topk: b_enc (d_sae,)   jumprelu: b_enc, threshold (d_sae,)
    gated: b_gate, b_mag, r_mag (d_sae,)   (no b_enc)

cfg.json: ``architecture`` ('standard', 'topk', 'jumprelu', 'gated'), ``d_in``, ``d_sae``,
``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
``reshape_activations``, ``metadata`` (holding ``sae_lens_version`` ≥ 6, else SAELens reads
the file as a pre-6 config) and for topk ``k`` and ``rescale_acts_by_decoder_norm``.
SAELens's 'constant_norm_rescale' (each token to norm √d_in, undone on the output) is
geomsae's input_norm='per_token'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geomsae.interop.folders import (
    expect_tensors,
    positive_int,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from geomsae.interop.raw import RawSAE

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
ARCHITECTURE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
"""Inference kind → SAELens architecture."""
FORMAT_VERSION = "6.0.0"
"""Written as metadata.sae_lens_version: the SAELens config format these folders follow."""
_NORM = {False: "none", True: "constant_norm_rescale"}


def is_saelens_folder(path: Path) -> bool:
    return (path / CFG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def write(raw: RawSAE, out: Path, metadata: dict[str, Any]) -> None:
    """Write ``raw`` as a SAELens folder into ``out`` (an existing empty folder)."""
    t = raw.tensors
    d_sae, d_in = t["W_enc"].shape
    arch = ARCHITECTURE[raw.kind]
    w = {"W_enc": t["W_enc"].t(), "W_dec": t["W_dec"].t(), "b_dec": t["b_dec"]}
    if raw.kind == "gated":
        w.update(b_gate=t["b_enc"], b_mag=t["b_mag"], r_mag=t["r_mag"])
    else:
        w["b_enc"] = t["b_enc"]
    if raw.kind == "jumprelu":
        w["threshold"] = t["threshold"]
    write_tensors(out / WEIGHTS_FILE, w)
    cfg: dict[str, Any] = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": True, "normalize_activations": _NORM[raw.per_token],
                           "reshape_activations": "none",
                           "metadata": {"sae_lens_version": FORMAT_VERSION, "sae_lens_training_version": None,
                                        **metadata}}
    if raw.kind == "topk":
        cfg.update(k=raw.k, rescale_acts_by_decoder_norm=False)
    write_json(out / CFG_FILE, cfg)


def _shapes(arch: str, d_in: int, d_sae: int) -> dict[str, tuple[int, ...]]:
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "gated":
        return {**shapes, "b_gate": (d_sae,), "b_mag": (d_sae,), "r_mag": (d_sae,)}
    shapes["b_enc"] = (d_sae,)
    if arch == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def read(path: Path) -> tuple[RawSAE, dict[str, Any]]:
    """(raw form, cfg.json) of the SAELens folder ``path``: any of its settings geomsae cannot
    represent raises ValueError naming it; the rest is folded into the raw weights."""
    cfg = read_json(path / CFG_FILE)
    where = str(path / CFG_FILE)
    arch = cfg.get("architecture", "standard")
    kinds = {v: k for k, v in ARCHITECTURE.items()}
    if arch not in kinds:
        raise ValueError(f"{where}: architecture == {arch!r}; geomsae imports {sorted(kinds)}")
    version = str((cfg.get("metadata") or {}).get("sae_lens_version") or cfg.get("sae_lens_version") or "")
    if not version[:1].isdigit() or int(version.split(".")[0]) < 6:
        raise ValueError(f"{where}: sae_lens_version == {version or None!r}; geomsae reads the SAELens 6 format "
                         "(load it with SAELens and save_model it again to convert)")
    d_in, d_sae = positive_int(cfg, "d_in", where), positive_int(cfg, "d_sae", where)
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "constant_norm_rescale"):
        raise ValueError(f"{where}: normalize_activations == {norm!r}; geomsae imports 'none' and "
                         "'constant_norm_rescale' (fold a dataset scaling factor into the weights first)")
    if cfg.get("reshape_activations", "none") != "none":
        raise ValueError(f"{where}: reshape_activations == {cfg['reshape_activations']!r}; geomsae imports 'none'")
    st = read_tensors(path / WEIGHTS_FILE)
    t = expect_tensors(st, _shapes(arch, d_in, d_sae), str(path / WEIGHTS_FILE))
    W_enc, W_dec, b_dec = t["W_enc"], t["W_dec"], t["b_dec"]
    b_enc = t["b_gate" if arch == "gated" else "b_enc"]
    if not cfg.get("apply_b_dec_to_input", True):  # pre = x W + b = (x − b_dec) W + (b + b_dec W)
        b_enc = b_enc + b_dec @ W_enc
        if arch == "gated":
            t["b_mag"] = t["b_mag"] + t["r_mag"].exp() * (b_dec @ W_enc)
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        # SAELens: z = TopK(pre ⊙ n), x̂ = (z / n) W_dec with n the decoder row norms: the same map with
        # n folded into the encoder and unit-norm decoder rows
        n = W_dec.norm(dim=1)
        if not bool((n > 0).all()):
            raise ValueError(f"{where}: rescale_acts_by_decoder_norm with an all-zero decoder row")
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    raw_t = {"W_enc": W_enc.t().contiguous(), "b_enc": b_enc, "W_dec": W_dec.t().contiguous(), "b_dec": b_dec}
    if arch == "jumprelu":
        raw_t["threshold"] = t["threshold"]
    if arch == "gated":
        raw_t.update(r_mag=t["r_mag"], b_mag=t["b_mag"])
    k = None
    if arch == "topk":
        k = positive_int(cfg, "k", where)
        if k > d_sae:
            raise ValueError(f"{where}: k == {k}, must be in [1, d_sae={d_sae}]")
    return RawSAE(kinds[arch], raw_t, k, norm == "constant_norm_rescale"), cfg


def metadata_block(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The geomsae block an export wrote into cfg.json's metadata, or None."""
    return (cfg.get("metadata") or {}).get("geomsae")

"""EleutherAI sparsify folders: ``cfg.json`` + ``sae.safetensors``, as ``SparseCoder.load_from_disk`` reads them.

Layout (an ``nn.Linear`` encoder; decoder rows are the atoms)::

    encoder.weight (d_sae, d_in)   encoder.bias (d_sae,)   W_dec (d_sae, d_in)   b_dec (d_in,)

    pre = encoder(x − b_dec);  z = TopK_k(ReLU(pre));  x̂ = z W_dec + b_dec

cfg.json: the SparseCoderConfig fields ``activation`` ('topk'), ``expansion_factor``,
``normalize_decoder``, ``num_latents`` (d_sae; 0 means d_in·expansion_factor), ``k``,
``multi_topk``, ``skip_connection``, ``transcode``, plus ``d_in``. sparsify drops keys it
does not know, so the geomsae block rides along in the same file. Only TopK SAEs fit;
a skip connection (``W_skip``), a transcoder or the 'groupmax' activation are refused on import.
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
WEIGHTS_FILE = "sae.safetensors"


def is_sparsify_folder(path: Path) -> bool:
    """A cfg.json + sae.safetensors folder whose cfg.json is not geomsae's own."""
    if not ((path / CFG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()):
        return False
    try:
        return read_json(path / CFG_FILE).get("format") != "geomsae-sae"
    except ValueError:
        return True  # let read() name the problem


def check_exportable(arch: str, raw: RawSAE) -> None:
    if raw.kind != "topk":
        raise ValueError(f"arch {arch!r} cannot be exported to sparsify, which holds TopK SAEs only (arch 'topk'); "
                         "--format saelens takes every architecture")
    if raw.per_token:
        raise ValueError("input_norm == 'per_token' cannot be exported to sparsify, which has no input "
                         "normalisation; use --format saelens (its 'constant_norm_rescale')")


def write(raw: RawSAE, out: Path, geomsae_block: dict[str, Any]) -> None:
    """Write the TopK SAE ``raw`` as a sparsify folder into ``out`` (an existing empty folder)."""
    t = raw.tensors
    d_sae, d_in = t["W_enc"].shape
    write_tensors(out / WEIGHTS_FILE, {"encoder.weight": t["W_enc"], "encoder.bias": t["b_enc"],
                                       "W_dec": t["W_dec"].t(), "b_dec": t["b_dec"]})
    cfg = {"activation": "topk", "expansion_factor": max(1, d_sae // d_in), "normalize_decoder": True,
           "num_latents": d_sae, "k": raw.k, "multi_topk": False, "skip_connection": False, "transcode": False,
           "d_in": d_in, "geomsae": geomsae_block}
    write_json(out / CFG_FILE, cfg)


def read(path: Path) -> tuple[RawSAE, dict[str, Any]]:
    """(raw form, cfg.json) of the sparsify folder ``path``."""
    cfg = read_json(path / CFG_FILE)
    where = str(path / CFG_FILE)
    for key, want in (("activation", "topk"), ("transcode", False), ("skip_connection", False)):
        if cfg.get(key, want) != want:
            raise ValueError(f"{where}: {key} == {cfg[key]!r}; geomsae imports sparsify SAEs with {key} == {want!r}")
    if cfg.get("signed", False):
        raise ValueError(f"{where}: signed == True; geomsae imports non-negative (ReLU) TopK codes only")
    d_in = positive_int(cfg, "d_in", where)
    d_sae = cfg.get("num_latents") or d_in * positive_int(cfg, "expansion_factor", where)
    if isinstance(d_sae, bool) or not isinstance(d_sae, int) or d_sae < 1:
        raise ValueError(f"{where}: num_latents == {d_sae!r}, must be an integer >= 1 (or 0 with expansion_factor)")
    k = positive_int(cfg, "k", where)
    if k > d_sae:
        raise ValueError(f"{where}: k == {k}, must be in [1, d_sae={d_sae}]")
    shapes = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    t = expect_tensors(read_tensors(path / WEIGHTS_FILE), shapes, str(path / WEIGHTS_FILE))
    raw = {"W_enc": t["encoder.weight"], "b_enc": t["encoder.bias"], "W_dec": t["W_dec"].t().contiguous(),
           "b_dec": t["b_dec"]}
    return RawSAE("topk", raw, k, False), cfg

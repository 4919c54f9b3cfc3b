"""Export a geomsae SAE to a SAELens or sparsify folder, and import theirs (the package docstring, geomsae.interop)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geomsae.checkpoint import load_sae, save_sae
from geomsae.interop import saelens, sparsify
from geomsae.interop.folders import (
    EXPORT_FORMAT,
    GEOMSAE_KEY,
    STATE_FILE,
    check_out_folder,
    read_tensors,
    staged_folder,
    write_tensors,
)
from geomsae.interop.raw import INFERENCE, RawSAE, from_raw, to_raw
from geomsae.version import __version__

FOREIGN_ARCH = {"relu": "relu_l1", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
"""Inference kind of a folder written elsewhere → the geomsae architecture it imports as."""
_COMMON = ("d_in", "d_sae", "input_norm")


@dataclass
class ExportConfig:
    """Options of ``geomsae export``."""

    format: Literal["saelens", "sparsify"] = "saelens"
    """Target: 'saelens' (SAELens v6 SAE.load_from_disk; every architecture) or 'sparsify'
    (EleutherAI sparsify SparseCoder.load_from_disk; topk only)."""

    def __post_init__(self) -> None:
        if self.format not in ("saelens", "sparsify"):
            raise ValueError(f"format == {self.format!r}, must be 'saelens' or 'sparsify'")


@dataclass
class ImportConfig:
    """Options of ``geomsae import``."""

    format: Literal["auto", "saelens", "sparsify"] = "auto"
    """Folder format: 'saelens' (cfg.json + sae_weights.safetensors), 'sparsify' (cfg.json +
    sae.safetensors) or 'auto' (told apart by the weights file's name)."""
    l1_coefficient: float | None = None
    """SAELens 'standard' SAEs trained elsewhere only: the l1_coefficient of their training loss
    Σ_d (x − x̂)² + c·Σ_j ‖W_dec,j‖ z_j (it is not saved in cfg.json); becomes relu_l1's
    lam = c/d_in. None: unknown, and geomsae compare calibrates λ1 to the encoder's L0."""

    def __post_init__(self) -> None:
        if self.format not in ("auto", "saelens", "sparsify"):
            raise ValueError(f"format == {self.format!r}, must be 'auto', 'saelens' or 'sparsify'")
        c = self.l1_coefficient
        if c is not None and not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ValueError(f"l1_coefficient == {c!r}, must be None or a finite number >= 0")


def _geomsae_block(sae: Any, s: float, rest: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in dataclasses.asdict(sae.cfg).items() if k not in _COMMON}
    return {"format": EXPORT_FORMAT, "arch": sae.arch, "cfg": fields, "input_scale": s,
            "geomsae_version": __version__, "state_file": STATE_FILE if rest else None}


def export_sae(sae: Any, out: str | os.PathLike, cfg: ExportConfig | None = None) -> Path:
    """Write ``sae`` (a geomsae SAE folder or a loaded single SAE) into the new folder ``out``
    in ``cfg.format``; returns ``out``. ``out`` must not exist or be empty."""
    cfg = cfg or ExportConfig()
    out = check_out_folder(out)
    if isinstance(sae, (str, os.PathLike)):
        sae = load_sae(sae)  # a training checkpoint's pending scale is folded here
    raw, s, rest = to_raw(sae)
    if cfg.format == "sparsify":
        sparsify.check_exportable(sae.arch, raw)
    block = _geomsae_block(sae, s, rest)
    with staged_folder(out) as tmp:
        if rest:
            write_tensors(tmp / STATE_FILE, rest)
        if cfg.format == "saelens":
            saelens.write(raw, tmp, {GEOMSAE_KEY: block})
        else:
            sparsify.write(raw, tmp, block)
    return out


def _detect(path: Path, fmt: str) -> str:
    if not path.is_dir():
        raise FileNotFoundError(f"folder {str(path)!r} does not exist")
    if fmt == "auto":
        if saelens.is_saelens_folder(path):
            return "saelens"
        if sparsify.is_sparsify_folder(path):
            return "sparsify"
        raise ValueError(f"{str(path)!r} is neither a SAELens folder (cfg.json + {saelens.WEIGHTS_FILE}) nor a "
                         f"sparsify folder (cfg.json + {sparsify.WEIGHTS_FILE}); a geomsae SAE folder needs no import")
    return fmt


def read_foreign(path: str | os.PathLike, cfg: ImportConfig | None = None) -> tuple[Any, dict[str, Any]]:
    """(geomsae SAE, provenance dict) of a SAELens or sparsify folder, without writing anything."""
    cfg = cfg or ImportConfig()
    path = Path(path)
    fmt = _detect(path, cfg.format)
    raw, doc = (saelens.read if fmt == "saelens" else sparsify.read)(path)
    block = saelens.metadata_block(doc) if fmt == "saelens" else doc.get(GEOMSAE_KEY)
    info: dict[str, Any] = {"format": fmt, "path": str(path.resolve()), "kind": raw.kind}
    if isinstance(block, dict) and block.get("format") == EXPORT_FORMAT:
        if cfg.l1_coefficient is not None:
            raise ValueError(f"{str(path)!r} was exported by geomsae and records its own penalty: drop --l1-coefficient")
        sae, restored = _from_block(path, raw, block)
        # without the sidecar (e.g. the folder re-saved by SAELens) the adaptive weights' EMA is lost
        known = restored or sae.arch not in ("aen", "adaptive_lasso")
        return sae, {**info, "exported_by_geomsae": True, "state_restored": restored, "penalty_known": known}
    arch = FOREIGN_ARCH[raw.kind]
    if cfg.l1_coefficient is not None and arch != "relu_l1":
        raise ValueError(f"l1_coefficient is for SAELens 'standard' (ReLU) SAEs; {str(path)!r} holds a {raw.kind} SAE")
    fields: dict[str, Any] = {}
    if arch in ("relu_l1", "jumprelu", "gated"):  # the penalty weight is not in the folder
        fields["lam"] = 0.0 if cfg.l1_coefficient is None else cfg.l1_coefficient / raw.tensors["W_enc"].shape[1]
    known = arch == "topk" or cfg.l1_coefficient is not None
    return from_raw(raw, arch, fields), {**info, "exported_by_geomsae": False, "penalty_known": known}


def _from_block(path: Path, raw: RawSAE, block: dict[str, Any]) -> tuple[Any, bool]:
    """(the SAE a geomsae export describes, whether its sidecar state was there to restore)."""
    arch, fields, s = block.get("arch"), block.get("cfg"), block.get("input_scale")
    if INFERENCE.get(arch) != raw.kind or not isinstance(fields, dict):
        raise ValueError(f"{str(path)!r}: its geomsae block names arch {arch!r}, which does not compute "
                         f"the folder's {raw.kind!r} inference")
    if block.get("state_file") not in (None, STATE_FILE):  # never a path outside the folder
        raise ValueError(f"{str(path)!r}: state_file == {block['state_file']!r}, must be {STATE_FILE!r} or null")
    has_state = bool(block.get("state_file")) and (path / STATE_FILE).is_file()
    state = read_tensors(path / STATE_FILE) if has_state else None
    fields = {k: v for k, v in fields.items() if k not in _COMMON}
    return from_raw(raw, arch, fields, s=s, state=state), has_state or not block.get("state_file")


def import_sae(path: str | os.PathLike, out: str | os.PathLike, cfg: ImportConfig | None = None) -> Path:
    """Write the SAELens or sparsify folder ``path`` as a geomsae SAE folder ``out`` (new or empty),
    for ``geomsae eval`` and ``geomsae compare``; cfg.json key ``imported_from`` records its
    provenance and whether its penalty is known. Returns ``out``."""
    out = check_out_folder(out)
    sae, info = read_foreign(path, cfg)
    with staged_folder(out) as tmp:
        save_sae(sae, tmp, extra={"imported_from": info})
    return out

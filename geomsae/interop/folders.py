"""What the exporters and importers share: the raw-space rescaling, the output folder and
safetensors I/O.

Raw space. A geomsae SAE trained on s·x stores, after :func:`geomsae.saes.fold_input_scale`,
W_enc·s, b_dec/s and W_dec/s: it takes raw x, but its decoder atoms have norm 1/s and its
codes z are in training units. Exported files carry the same function in the convention other
tools assume (unit-norm atoms for unit-norm architectures, codes in raw units)::

    z′ = z/s,   W_enc′ = W_enc/s,   b_enc′ = b_enc/s,   W_dec′ = s·W_dec,   b_dec′ = b_dec,
    (thresholds θ′ = θ/s, gated b_mag′ = b_mag/s)

which gives the same x̂ for every x: each activation used here is positively homogeneous
(ReLU, TopK, JumpReLU with θ scaled alike, the gate's sign), so act(pre/s) = act(pre)/s.
Importing a folder exported by geomsae multiplies back by the s it recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from geomsae import durable

GEOMSAE_KEY = "geomsae"
"""Key of the geomsae block in an exported cfg.json (SAELens: under "metadata")."""
STATE_FILE = "geomsae_state.safetensors"
"""Sidecar of an export: the geomsae tensors the target format has no place for (e.g. the
adaptive weights' EMA, step counters), so an import restores the same SAE."""
EXPORT_FORMAT = "geomsae-export-1"


def check_out_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path; ValueError when it exists and is not an empty folder (never overwrite)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        kind = "a folder that is not empty" if out.is_dir() else "a file"
        raise ValueError(f"--out {str(out)!r} is {kind}; give a new folder (nothing is overwritten)")
    return out


@contextlib.contextmanager
def staged_folder(out: Path):
    """Yield a temporary sibling of ``out`` to write into; move it to ``out`` on success, so
    a folder at ``out`` is always complete (removed on failure)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (checked by check_out_folder)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """A safetensors file of contiguous CPU tensors, keys in sorted order, no metadata (so the same tensors give the
    same bytes), written as every project file is (:func:`geomsae.durable.write_bytes`: atomic, the ordinary file
    mode, an OSError naming the path on a full disk). Non-finite values are refused: no tool could load them."""
    from safetensors.torch import save

    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise ValueError(f"the SAE's {', '.join(bad)} hold NaN or Inf: it cannot be exported (retrain it, or resume "
                         "from a checkpoint before the loss diverged)")
    durable.write_bytes(path, save({k: tensors[k].detach().cpu().contiguous() for k in sorted(tensors)}))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file (never unpickles); clear errors when missing or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    except Exception as exc:  # safetensors raises its own error type on a bad header
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        # bad file content: a ValueError, which the command line ends with exit 2 like every input error
        raise ValueError(f"{str(path)!r} holds a JSON {type(doc).__name__}, must be an object")  # noqa: TRY004
    return doc


def expect_tensors(tensors: dict[str, Tensor], shapes: dict[str, tuple[int, ...]], where: str,
                   optional: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Check that ``tensors`` has exactly the keys of ``shapes`` (plus any of ``optional``) with
    those shapes and finite floating values; return them as float32."""
    missing = sorted(set(shapes) - set(tensors))
    unexpected = sorted(set(tensors) - set(shapes) - set(optional))
    if missing or unexpected:
        raise ValueError(f"{where}: missing tensors {missing}, unexpected {unexpected}; expected {sorted(shapes)}")
    out = {}
    for k, shape in shapes.items():
        t = tensors[k]
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: tensor {k!r} has shape {tuple(t.shape)}, must be {shape}")
        if not t.is_floating_point():
            raise ValueError(f"{where}: tensor {k!r} has dtype {t.dtype}, must be a floating-point type")
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: tensor {k!r} contains NaN or Inf")
        out[k] = t
    return out


def positive_int(doc: dict[str, Any], key: str, where: str) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{where}: {key!r} == {v!r}, must be an integer >= 1")
    return v

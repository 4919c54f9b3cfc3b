"""What several commands share: the CPU allocator setting, reading array files, the printed evaluation table."""

from __future__ import annotations

import ctypes
import os
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from geomsae.evaluate import EvalResult


def tune_malloc() -> bool:
    """Let glibc keep freed memory for reuse instead of unmapping it (this process only).

    glibc serves every block over 32 MiB, e.g. each (4096, 4096) float32 activation of a
    training step, with a fresh mmap and unmaps it when freed, so the next step page-faults
    and zero-fills it again; with mmap off and a high trim threshold the heap keeps the
    blocks. Measured here: 25-35 % faster CPU steps at d_in 512, d_sae 4096, batch 4096.
    Off with GEOMSAE_MALLOC_TUNING=0; a no-op (False) outside glibc.
    """
    if os.environ.get("GEOMSAE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"
SPARSE_KEYS = {"data", "indices", "indptr", "shape", "format"}
"""The arrays scipy.sparse.save_npz writes (CSR / CSC); the project's generators write codes.npz so."""


def read_array(path: str | os.PathLike, what: str) -> np.ndarray:
    """A finite numeric array from ``path``, as the project's own files are written: ``.npy``, an ``.npz`` holding
    one array, or a scipy-sparse ``.npz`` (``synthetic`` writes codes.npz so; densified). Never unpickles.
    Raises ValueError naming the file, the option ``what`` and what was found instead."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist or is not a file")
    with open(p, "rb") as f:
        head = f.read(6)
    if not head:
        raise ValueError(f"{what} {str(path)!r} is empty (0 bytes): give a .npy or .npz array file")
    try:
        if head.startswith(ZIP_MAGIC):
            with np.load(p, allow_pickle=False) as z:
                keys = set(z.files)
                if SPARSE_KEYS <= keys:
                    import scipy.sparse

                    arr = scipy.sparse.load_npz(p).toarray()
                elif len(keys) == 1:
                    arr = z[next(iter(keys))]
                else:
                    raise ValueError(f"{what} {str(path)!r} is an .npz holding {sorted(keys)}: give a .npy, an .npz "
                                     "holding one array, or a scipy-sparse .npz")
        elif head == NPY_MAGIC:
            arr = np.load(p, allow_pickle=False)
        else:
            raise ValueError(f"{what} {str(path)!r} is not a .npy or .npz array file (it starts with {head!r})")
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{what} {str(path)!r} holds Python objects (pickled data), which are never loaded: give "
                             "a numeric array") from None
        raise
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read as an array file ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{what} {str(path)!r} has dtype {arr.dtype}, must be numeric (float or integer)")
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # big-endian files as native numbers
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} {str(path)!r} contains NaN or Inf")
    return arr


def format_table(res: EvalResult, title: str = "evaluation") -> str:
    """``res`` as a two-column text table under ``title`` (the firing histogram on one line)."""
    rows: list[tuple[str, object]] = [("n_tokens", res.n_tokens), ("fvu", res.fvu),
                                      ("explained_variance", res.explained_variance), ("l0", res.l0),
                                      ("l0_raw", res.l0_raw), ("dead_fraction", res.dead_fraction),
                                      ("dead_fraction_raw", res.dead_fraction_raw),
                                      ("rare_fraction_1e4", res.rare_fraction_1e4),
                                      ("rare_fraction_1e5", res.rare_fraction_1e5), ("collapsed", str(res.collapsed)),
                                      ("dense_fraction", res.dense_fraction),
                                      ("dense_fraction_001", res.dense_fraction_001), ("l2_ratio", res.l2_ratio),
                                      ("rel_bias", res.rel_bias), ("mmcs", res.mmcs),
                                      ("recovery_rate", res.recovery_rate), ("recovery_chance", res.recovery_chance),
                                      ("mmcs_1to1", res.mmcs_1to1), ("mmcs_1to1_chance", res.mmcs_1to1_chance),
                                      ("mcc", res.mcc), ("mcc_chance", res.mcc_chance)]
    rows = [(k, v) for k, v in rows if v is not None]
    rows += [(f"dead_fraction_at_{w.window}", w.dead_fraction) for w in res.dead_windows]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in rows]
    counts, edges = res.firing_histogram
    lines.append(f"{'firing histogram':<{width}}  dead {counts[0]}, log10(freq) bins of "
                 f"{edges[2] - edges[1]:.2f} from {edges[1]:.0f}: {counts[1:]}")
    return "\n".join(lines)

"""The results tables of a study on disk: CSV cells, the column lists, results.csv and firing_hist.csv.

``results.csv`` has one row per trained SAE: the key columns (:data:`KEY_COLUMNS`, with the
study's cell keys such as ``rho`` after ``arch``), the metrics every study has
(:data:`CORE_METRICS`, then ``dead_at_{N}`` per evaluation window), then the study's own
columns. ``firing_hist.csv`` has the log10 firing-frequency histogram of each row. Floats are
written with 10 significant digits (:func:`fmt`), so a table read back plans and reports
exactly as the one in memory (:func:`as_written`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

KEY_COLUMNS = ["arm", "arch", "seed", "param", "value", "hparams"]
"""Identify a run: arm, architecture, (cell keys,) seed, the knob's name and value, every SAE field as JSON."""
CORE_METRICS = ["l0", "fvu", "dead_fraction"]
"""Held-out L0, FVU and dead fraction; the dead_at_{N} columns follow."""
EVAL_METRICS = ["collapsed", "l0_raw", "dead_fraction_raw", "rare_fraction_1e4", "rare_fraction_1e5",
                "dense_fraction", "dense_fraction_001", "l2_ratio", "rel_bias", "shrinkage"]
"""The other columns of :func:`geomsae.study.evaluation.evaluation_row` (docs/method.md §3): collapsed (1/0),
the raw z > 0 counts beside the folded ones, near-starvation, density, shrinkage = |rel_bias − 1|."""
TRUE_DICT_METRICS = ["mmcs", "recovery_rate", "recovery_chance", "recovery_cc", "mmcs_1to1", "mmcs_1to1_chance",
                     "mmcs_1to1_cc"]
"""Columns against a ground-truth dictionary (synthetic data only); *_chance: the spike-only dictionary's
score, *_cc: (score − chance)/(1 − chance)."""
TRUE_CODE_METRICS = ["mcc", "mcc_chance", "mcc_cc"]
"""Columns against ground-truth codes of the held-out tokens (synthetic data only)."""
TRAIN_METRICS = ["loss_slope", "loss_rel_change", "dead_last_batch"]
"""From the training run's last record: its convergence (docs/method.md §7.5), the least-squares slope of the
training loss over the last 10 % of the steps (per step, training units) and that slope × window / mean loss;
and the share of latents with z_j = 0 on every token of the last training batch (the authors' dead count,
read on ``batch_size`` training tokens; ours, ``dead_fraction``, on the held-out tokens)."""


def fmt(v: Any) -> str:
    """CSV cell: floats with 10 significant digits, everything else as str."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, ".10g")
    return str(v)


def as_written(v: float) -> float:
    """``v`` as it reads back from a CSV cell (10 significant digits)."""
    return float(fmt(float(v)))


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[dict[str, Any]], *,
              fill_missing: bool = False) -> Path:
    """Write ``rows`` (dicts holding at least ``columns``) with a header line; returns the path.

    ``fill_missing``: a column a row lacks is written as nan (rows read back from a results.csv
    that predates the column) instead of raising KeyError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:  # written whole, then renamed: a kill never leaves a torn table
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([fmt(r.get(c, math.nan) if fill_missing else r[c]) for c in columns])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV with numeric cells converted to float (seed to int)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in r.items():
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            if "seed" in out:
                out["seed"] = int(out["seed"])
            rows.append(out)
    return rows


def dead_columns(windows: Iterable[int]) -> list[str]:
    """``dead_at_{N}`` for each window, smallest first."""
    return [f"dead_at_{w}" for w in sorted(windows)]


def result_columns(cell_keys: Sequence[str], windows: Iterable[int], extra: Sequence[str]) -> list[str]:
    """Columns of results.csv: keys (cell keys after ``arch``), core metrics, dead_at_N, ``extra``."""
    return KEY_COLUMNS[:2] + list(cell_keys) + KEY_COLUMNS[2:] + CORE_METRICS + dead_columns(windows) + list(extra)


def hist_columns(cell_keys: Sequence[str], n_bins: int) -> list[str]:
    """Columns of firing_hist.csv: arm, cell keys, seed, value, bin_0 … (bin_0 counts the dead latents)."""
    return ["arm", *cell_keys, "seed", "value"] + [f"bin_{i}" for i in range(n_bins)]


def run_key(row: dict[str, Any], cell_keys: Sequence[str]) -> tuple:
    """(arm, *cell values, seed, value): what identifies a row of results.csv or firing_hist.csv."""
    return (row["arm"], *(float(row[k]) for k in cell_keys), int(row["seed"]), float(row["value"]))


def write_runs(folder: str | Path, runs: dict[tuple, tuple[dict[str, Any], list[int]]], columns: Sequence[str],
               cell_keys: Sequence[str], arms: Sequence[str]) -> list[tuple]:
    """Write results.csv and firing_hist.csv from {run_key: (row, histogram)}, sorted by
    (position of the arm in ``arms``, cell values, seed, value); returns the keys in that order."""
    folder = Path(folder)
    keys = sorted(runs, key=lambda k: (arms.index(k[0]) if k[0] in arms else len(arms), *k[1:]))
    write_csv(folder / "results.csv", columns, [runs[k][0] for k in keys], fill_missing=True)
    n_bins = len(runs[keys[0]][1]) if keys else 0
    hist_cols = hist_columns(cell_keys, n_bins)
    write_csv(folder / "firing_hist.csv", hist_cols,
              [{**{c: runs[k][0][c] for c in hist_cols[: len(cell_keys) + 3]},
                **{f"bin_{i}": h for i, h in enumerate(runs[k][1])}} for k in keys])
    return keys


def load_runs(folder: str | Path, cell_keys: Sequence[str]) -> dict[tuple, tuple[dict[str, Any], list[int]]]:
    """{run_key: (row, histogram)} from a folder's results.csv and firing_hist.csv ({} if absent)."""
    folder = Path(folder)
    if not (folder / "results.csv").exists():
        return {}
    hists = {}
    if (folder / "firing_hist.csv").exists():
        for h in read_csv(folder / "firing_hist.csv"):
            hists[run_key(h, cell_keys)] = [int(h[c]) for c in h if c.startswith("bin_")]
    out = {}
    for r in read_csv(folder / "results.csv"):
        key = run_key(r, cell_keys)
        out[key] = (r, hists.get(key, []))
    return out

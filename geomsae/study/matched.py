"""Matched sparsity (docs/method.md §7.3): each metric at a target L0, per seed, then over seeds.

:func:`interpolate_at`: a cell's runs in order of the knob (λ, or k), collapsed runs left out
(:func:`geomsae.metrics.is_collapsed`); the first adjacent pair whose held-out L0 values bracket
the target (inclusive) is used, and each metric is interpolated linearly in log L0 between the
two — unless the dead fraction jumps by more than ``CLIFF_JUMP`` between them: then the seed's
value is a *cliff*, reported with both ends and never interpolated. A target no pair brackets
gives no value for that seed (no extrapolation). :func:`matched_seeds`: every (arm, cell,
target, seed); :func:`matched_table`: mean and sample std over the seeds with a value, the
cliffs beside them.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from geomsae.metrics import is_collapsed
from geomsae.study.sweep import L0_FLOOR

CLIFF_JUMP = 0.10
"""A bracketing pair whose dead fractions differ by more than this (10 points) is a cliff."""
CLIFF_METRIC = "dead_fraction"
"""The metric whose jump marks a cliff."""
AT_TARGET = 0.01
"""A run whose L0 is within 1 % of the target is the value at the target, used as it is (no interpolation,
so no cliff): e.g. TopK at k = target, whose folded L0 is a hair below k."""


def interpolate_at(points: Sequence[tuple[float, float, dict[str, float]]], target: float,
                   metrics: Sequence[str], *, cliff_jump: float = CLIFF_JUMP) -> dict[str, float] | None:
    """Metrics at L0 = ``target`` from one cell's sweep points, or None if not bracketed.

    :param points: (knob value, L0, {metric: value}) per run of the cell (collapsed runs
        already left out by the caller).
    :param cliff_jump: a pair whose ``dead_fraction`` values differ by more than this is a cliff
        (only checked when the points carry ``dead_fraction``).
    :returns: {metric: interpolated value, ..., 'value': knob interpolated in log, 't': weight,
        'cliff': 0.0} or, at a cliff, {'cliff': 1.0, 'l0_dense', 'dead_dense', 'l0_sparse',
        'dead_sparse'} (the two ends, denser = higher L0) and no metric values.

    A run with |L0/target − 1| ≤ :data:`AT_TARGET` is used as it is (the closest such run; the
    first in knob order on a tie). Otherwise the first pair of points adjacent in knob order with
    min(L0) ≤ target ≤ max(L0) is used: t = (log target − log L0_a)/(log L0_b − log L0_a) (t = 1/2
    when L0_a = L0_b), each metric (1 − t)·M_a + t·M_b. L0 is floored at 1e-3 before the logs.
    """
    pts = sorted(points, key=lambda p: p[0])
    near = [p for p in pts if abs(p[1] / target - 1.0) <= AT_TARGET]
    if near:
        v, _, m = min(near, key=lambda p: abs(p[1] / target - 1.0))
        return {**{k: m.get(k, math.nan) for k in metrics}, "value": v, "t": 0.0, "cliff": 0.0}
    for (va, la, ma), (vb, lb, mb) in zip(pts, pts[1:]):
        if min(la, lb) <= target <= max(la, lb):
            if CLIFF_METRIC in ma and CLIFF_METRIC in mb and abs(ma[CLIFF_METRIC] - mb[CLIFF_METRIC]) > cliff_jump:
                (ld, md), (ls, ms) = sorted([(la, ma), (lb, mb)], key=lambda p: -p[0])
                return {"cliff": 1.0, "l0_dense": ld, "dead_dense": md[CLIFF_METRIC], "l0_sparse": ls,
                        "dead_sparse": ms[CLIFF_METRIC]}
            a, b = math.log(max(la, L0_FLOOR)), math.log(max(lb, L0_FLOOR))
            t_ = math.log(max(target, L0_FLOOR))
            t = 0.5 if a == b else (t_ - a) / (b - a)
            res = {m: (1 - t) * ma.get(m, math.nan) + t * mb.get(m, math.nan) for m in metrics}
            res["value"] = math.exp((1 - t) * math.log(va) + t * math.log(vb))
            res["t"] = t
            res["cliff"] = 0.0
            return res
    return None


def run_collapsed(row: dict[str, Any]) -> bool:
    """Whether a results row is a collapsed run (from its fvu and l0, docs/method.md §3)."""
    return is_collapsed(float(row["fvu"]), float(row["l0"]))


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1); std is nan for fewer than 2 values, both for none."""
    if not len(xs):
        return math.nan, math.nan
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def cell_values(rows: Sequence[dict[str, Any]], cell_keys: Sequence[str]) -> list[tuple]:
    """Every combination of the cell keys' values in ``rows`` (sorted per key; [()] for no keys)."""
    return list(itertools.product(*[sorted({r[k] for r in rows}) for k in cell_keys]))


def matched_seeds(rows: Sequence[dict[str, Any]], targets: Sequence[float], metrics: Sequence[str],
                  arms: Sequence[str] | None = None, cell_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (arm, cell, target, seed) with a results row: the cell keys, l0_target, seed,
    status ('ok', 'cliff' or 'unbracketed'), n_collapsed (runs of that seed's sweep left out) and
    the :func:`interpolate_at` values (nan where not 'ok'). Paired verdicts read these."""
    cells: dict[tuple, list] = defaultdict(list)
    collapsed: dict[tuple, int] = defaultdict(int)
    for r in rows:
        key = (r["arm"], *(r[k] for k in cell_keys), r["seed"])
        if run_collapsed(r):
            collapsed[key] += 1
            cells.setdefault(key, [])
        else:
            cells[key].append((r["value"], r["l0"], r))
    arms = list(arms) if arms else list(dict.fromkeys(r["arm"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for arm in arms:
        for cv in cell_values(rows, cell_keys):
            for tgt in targets:
                for s in seeds:
                    key = (arm, *cv, s)
                    if key not in cells:
                        continue
                    got = interpolate_at(cells[key], tgt, metrics)
                    status = "unbracketed" if got is None else ("cliff" if got["cliff"] else "ok")
                    row: dict[str, Any] = {"arm": arm, **dict(zip(cell_keys, cv)), "l0_target": float(tgt), "seed": s,
                                           "status": status, "n_collapsed": collapsed[key]}
                    for m in (*metrics, "value", "l0_dense", "dead_dense", "l0_sparse", "dead_sparse"):
                        row[m] = got.get(m, math.nan) if got is not None else math.nan
                    out.append(row)
    return out


CLIFF_COLUMNS = ["n_cliff", "cliff_l0_dense", "cliff_dead_dense", "cliff_l0_sparse", "cliff_dead_sparse"]
"""matched.csv's cliff columns: seeds whose bracketing pair is a cliff and its two ends (means over those seeds)."""


def matched_table(rows: Sequence[dict[str, Any]], targets: Sequence[float], metrics: Sequence[str],
                  arms: Sequence[str] | None = None, cell_keys: Sequence[str] = (),
                  seeds_table: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (arm, cell, target): the cell keys, l0_target, n_seeds (seeds with an
    interpolated value), value_mean, {metric}_mean / {metric}_std over those seeds, n_collapsed
    (collapsed runs of the cell, left out) and the cliff columns (:data:`CLIFF_COLUMNS`)."""
    per = seeds_table if seeds_table is not None else matched_seeds(rows, targets, metrics, arms, cell_keys)
    groups: dict[tuple, list] = defaultdict(list)
    for r in per:
        groups[(r["arm"], *(r[k] for k in cell_keys), r["l0_target"])].append(r)
    arms = list(arms) if arms else list(dict.fromkeys(r["arm"] for r in rows))
    out = []
    for arm in arms:
        for cv in cell_values(rows, cell_keys):
            for tgt in targets:
                grp = groups.get((arm, *cv, float(tgt)), [])
                ok = [g for g in grp if g["status"] == "ok"]
                cl = [g for g in grp if g["status"] == "cliff"]
                row: dict[str, Any] = {"arm": arm, **dict(zip(cell_keys, cv)), "l0_target": float(tgt),
                                       "n_seeds": len(ok), "value_mean": mean_std([g["value"] for g in ok])[0]}
                for m in metrics:
                    row[f"{m}_mean"], row[f"{m}_std"] = mean_std([g[m] for g in ok])
                row["n_collapsed"] = sum(g["n_collapsed"] for g in grp)
                row["n_cliff"] = len(cl)
                for end in ("l0_dense", "dead_dense", "l0_sparse", "dead_sparse"):
                    row[f"cliff_{end}"] = mean_std([g[end] for g in cl])[0]
                out.append(row)
    return out


def seeds_columns(metrics: Sequence[str], cell_keys: Sequence[str] = ()) -> list[str]:
    """Columns of matched_seeds.csv."""
    return (["arm", *cell_keys, "l0_target", "seed", "status", "n_collapsed", *metrics, "value", "l0_dense",
             "dead_dense", "l0_sparse", "dead_sparse"])


def matched_columns(metrics: Sequence[str], cell_keys: Sequence[str] = ()) -> list[str]:
    """Columns of matched.csv."""
    return (["arm", *cell_keys, "l0_target", "n_seeds", "value_mean"]
            + [f"{m}_{s}" for m in metrics for s in ("mean", "std")] + ["n_collapsed", *CLIFF_COLUMNS])

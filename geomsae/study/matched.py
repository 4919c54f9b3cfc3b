"""Matched sparsity (docs/method.md §7.3): each metric at a target L0, per seed, then over seeds.

:func:`interpolate_at`: a cell's runs in order of the knob (λ, or k); the first adjacent
pair whose held-out L0 values bracket the target (inclusive) is used, and each metric is
interpolated linearly in log L0 between the two. A target no pair brackets gives no value
for that seed (no extrapolation). :func:`matched_table`: mean and sample std over the seeds
that bracket it, for every arm × cell × target.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from geomsae.study.sweep import L0_FLOOR


def interpolate_at(points: Sequence[tuple[float, float, dict[str, float]]], target: float,
                   metrics: Sequence[str]) -> dict[str, float] | None:
    """Metrics at L0 = ``target`` from one cell's sweep points, or None if not bracketed.

    :param points: (knob value, L0, {metric: value}) per run of the cell.
    :returns: {metric: interpolated value, ..., 'value': knob interpolated in log, 't': weight}.

    The first pair of points adjacent in knob order with min(L0) ≤ target ≤ max(L0) is used:
    t = (log target − log L0_a)/(log L0_b − log L0_a) (t = 1/2 when L0_a = L0_b), each metric
    (1 − t)·M_a + t·M_b. L0 is floored at 1e-3 before the logs. A single point exactly at the
    target is used as it is.
    """
    pts = sorted(points, key=lambda p: p[0])
    for (va, la, ma), (vb, lb, mb) in zip(pts, pts[1:]):
        if min(la, lb) <= target <= max(la, lb):
            a, b = math.log(max(la, L0_FLOOR)), math.log(max(lb, L0_FLOOR))
            t_ = math.log(max(target, L0_FLOOR))
            t = 0.5 if a == b else (t_ - a) / (b - a)
            res = {m: (1 - t) * ma[m] + t * mb[m] for m in metrics}
            res["value"] = math.exp((1 - t) * math.log(va) + t * math.log(vb))
            res["t"] = t
            return res
    if len(pts) == 1 and pts[0][1] == target:
        return {**{m: pts[0][2][m] for m in metrics}, "value": pts[0][0], "t": 0.0}
    return None


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1); std is nan for fewer than 2 values, both for none."""
    if not len(xs):
        return math.nan, math.nan
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def cell_values(rows: Sequence[dict[str, Any]], cell_keys: Sequence[str]) -> list[tuple]:
    """Every combination of the cell keys' values in ``rows`` (sorted per key; [()] for no keys)."""
    return list(itertools.product(*[sorted({r[k] for r in rows}) for k in cell_keys]))


def matched_table(rows: Sequence[dict[str, Any]], targets: Sequence[float], metrics: Sequence[str],
                  arms: Sequence[str] | None = None, cell_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (arm, cell, target): the cell keys, l0_target, n_seeds, value_mean and
    {metric}_mean / {metric}_std over the seeds whose sweep brackets the target."""
    cells: dict[tuple, list] = defaultdict(list)
    for r in rows:
        cells[(r["arm"], *(r[k] for k in cell_keys), r["seed"])].append((r["value"], r["l0"], r))
    arms = list(arms) if arms else list(dict.fromkeys(r["arm"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for arm in arms:
        for cv in cell_values(rows, cell_keys):
            for tgt in targets:
                got = [interpolate_at(cells[(arm, *cv, s)], tgt, metrics) for s in seeds if (arm, *cv, s) in cells]
                got = [g for g in got if g is not None]
                row: dict[str, Any] = {"arm": arm, **dict(zip(cell_keys, cv)), "l0_target": float(tgt),
                                       "n_seeds": len(got), "value_mean": mean_std([g["value"] for g in got])[0]}
                for m in metrics:
                    row[f"{m}_mean"], row[f"{m}_std"] = mean_std([g[m] for g in got])
                out.append(row)
    return out


def matched_columns(metrics: Sequence[str], cell_keys: Sequence[str] = ()) -> list[str]:
    """Columns of matched.csv."""
    return (["arm", *cell_keys, "l0_target", "n_seeds", "value_mean"]
            + [f"{m}_{s}" for m in metrics for s in ("mean", "std")])

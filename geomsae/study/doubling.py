"""Is an arm converged? Its matched-L0 metrics when training doubles (docs/method.md §7.5).

The per-run ``loss_rel_change`` cannot tell under-training from the learning-rate decay: the lr
decays linearly over the last 20 % of the steps, and the loss falls while it anneals, however long
the run (TopK at the length preset: −7 % to −10 % over the last tenth at 2,000, 4,000 and 8,000
steps while its matched FVU moved 0.005 from 4,000 to 8,000). So the certificate is the one a
reviewer asks for: train the same design at length L and at ≥ 2L, and compare each arm's
matched-L0 metrics on the (ρ, target) cells both lengths define.

An arm is *stable* from L to L′ when every metric's mean change over the common cells is smaller
than the verdict rules' minimum effect (``geomsae.study.verdicts.MIN_EFFECT``: 0.01 FVU, 1 point of
dead fraction): doubling the training would not move it by a difference the verdicts count. It is
*converged at* the shortest length from which every later pair is stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geomsae.study.verdicts import MIN_EFFECT

METRICS = ("fvu", "dead_fraction")
"""Matched-L0 metrics checked by default (each needs a ``MIN_EFFECT`` entry or an explicit tolerance)."""


def _cells(matched: Sequence[dict[str, Any]], arm: str, metric: str) -> dict[tuple[str, str], float]:
    """{(rho, l0_target): value} of ``arm``'s defined matched-L0 means of ``metric`` (cliffs excluded: NaN)."""
    out = {}
    for r in matched:
        if r["arm"] != arm:
            continue
        v = float(r[f"{metric}_mean"])
        if not math.isnan(v):
            out[(str(r["rho"]), str(r["l0_target"]))] = v
    return out


def doubling_pairs(runs: Sequence[tuple[int, Sequence[dict[str, Any]]]], metrics: Sequence[str] = METRICS,
                   tol: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per arm and pair of consecutive lengths (each ≥ 2× the previous) at which the arm ran.

    :param runs: (steps, matched rows) per length, the rows of matched.csv
        (:func:`geomsae.study.matched.matched_table`): ``arm``, ``rho``, ``l0_target``, ``<metric>_mean``.
    :param metrics: metrics to compare; :param tol: per-metric tolerance (default ``MIN_EFFECT``).
    :returns: rows {arm, steps_from, steps_to, cells, <metric>_from, <metric>_to, <metric>_change,
        stable}: means over the cells both lengths define; ``stable`` is None when no cell is common.
    :raises ValueError: two runs of one length, a pair less than 2× apart, or a metric without tolerance.
    """
    tol = {m: (tol or {}).get(m, MIN_EFFECT.get(m, math.nan)) for m in metrics}
    bad = [m for m, t in tol.items() if not (t > 0)]
    if bad:
        raise ValueError(f"no tolerance for metric(s) {bad}: give tol={{name: value > 0}}")
    runs = sorted(runs, key=lambda r: r[0])
    steps = [s for s, _ in runs]
    if len(set(steps)) != len(steps):
        raise ValueError(f"two runs share a length: steps {steps}")
    arms = list(dict.fromkeys(r["arm"] for _, rows in runs for r in rows))
    out = []
    for arm in arms:
        have = [(s, rows) for s, rows in runs if any(r["arm"] == arm for r in rows)]
        for (s0, a), (s1, b) in zip(have, have[1:]):
            if s1 < 2 * s0:
                raise ValueError(f"lengths {s0} and {s1} are less than 2× apart: a doubling check needs L' ≥ 2L")
            row: dict[str, Any] = {"arm": arm, "steps_from": s0, "steps_to": s1}
            per = {m: (_cells(a, arm, m), _cells(b, arm, m)) for m in metrics}
            common = set.intersection(*(set(x) & set(y) for x, y in per.values())) if per else set()
            row["cells"] = len(common)
            stable: bool | None = True if common else None
            for m, (x, y) in per.items():
                if not common:
                    row[f"{m}_from"] = row[f"{m}_to"] = row[f"{m}_change"] = math.nan
                    continue
                f = sum(x[c] for c in common) / len(common)
                t = sum(y[c] for c in common) / len(common)
                row[f"{m}_from"], row[f"{m}_to"], row[f"{m}_change"] = f, t, t - f
                stable = stable and abs(t - f) < tol[m]
            row["stable"] = stable
            out.append(row)
    return out


def converged_at(pairs: Sequence[dict[str, Any]]) -> dict[str, int | None]:
    """Per arm, the shortest length from which every later doubling pair is stable (None: not yet,
    or not measurable because a pair had no common cell)."""
    out: dict[str, int | None] = {}
    for arm in dict.fromkeys(p["arm"] for p in pairs):
        mine = [p for p in pairs if p["arm"] == arm]
        at = None
        for p in reversed(mine):
            if p["stable"] is not True:
                break
            at = p["steps_from"]
        out[arm] = at
    return out

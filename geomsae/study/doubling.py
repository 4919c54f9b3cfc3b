"""Is an arm converged? Its matched-L0 metrics when training doubles (docs/method.md §7.5).

The per-run ``loss_rel_change`` cannot tell under-training from the learning-rate decay: the lr
decays linearly over the last 20 % of the steps, and the loss falls while it anneals, however long
the run (TopK at the length preset: −7 % to −10 % over the last tenth at 2,000, 4,000 and 8,000
steps while its matched FVU moved 0.005 from 4,000 to 8,000). So the certificate is the one a
reviewer asks for: train the same design at length L and at ≥ 2L, and compare each arm's
matched-L0 metrics on the (ρ, target) cells both lengths define.

An arm is *stable* from L to L′ when **every** (ρ, target) cell both lengths define passes, for every
metric, one of two tests, and the table says which:

- ``min_effect``: the cell's change |Δ| = |mean_L′ − mean_L| is smaller than the verdict rules' minimum
  effect (``geomsae.study.verdicts.MIN_EFFECT``: 0.01 FVU, 1 point of dead fraction);
- ``seed_ci``: with per-seed values (matched_seeds.csv) for ≥ 2 seeds present at both lengths, the
  two-sided 95 % t interval of the paired per-seed changes contains 0: the change is within the
  seed-to-seed spread of that cell's change.

A cell that passes neither has *moved*. Signed changes are never averaged over cells before the test
(an earlier rule did, and +0.023 in one cell cancelled −0.025 in another). The arm is *converged at* the
shortest length from which every later pair is stable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geomsae.study.verdicts import MIN_EFFECT, interval

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


def _seed_values(seeds: Sequence[dict[str, Any]], arm: str, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(rho, l0_target): {seed: value}} of ``arm``'s interpolated per-seed values (status 'ok', finite)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in seeds:
        if r["arm"] != arm or r.get("status", "ok") != "ok":
            continue
        v = float(r[metric])
        if not math.isnan(v):
            out.setdefault((str(r["rho"]), str(r["l0_target"])), {})[str(r["seed"])] = v
    return out


def cell_test(change: float, before: Sequence[float], after: Sequence[float], tol: float,
              level: float = 0.95) -> str:
    """'min_effect', 'seed_ci' or 'moved' for one cell's change (module docstring).

    :param change: mean at L′ minus mean at L; :param before, after: the cell's per-seed values at L and
        L′, paired by seed (may be empty); the interval is the verdicts' paired t interval.
    """
    if abs(change) < tol:
        return "min_effect"
    if len(before) >= 2:
        _, lo, hi, _ = interval(after, before, True, paired=True, level=level)
        if lo <= 0.0 <= hi:
            return "seed_ci"
    return "moved"


RULES = ("min_effect", "seed_ci", "moved")
"""The outcomes of :func:`cell_test`, in the order the rows count them (``cells_<rule>``)."""


def doubling_pairs(runs: Sequence[tuple], metrics: Sequence[str] = METRICS,
                   tol: dict[str, float] | None = None, level: float = 0.95) -> list[dict[str, Any]]:
    """One row per arm and pair of consecutive lengths (each ≥ 2× the previous) at which the arm ran.

    :param runs: (steps, matched rows) or (steps, matched rows, per-seed rows) per length: the rows of
        matched.csv (``arm``, ``rho``, ``l0_target``, ``<metric>_mean``) and of matched_seeds.csv (``seed``,
        ``status``, ``<metric>``; without them only the ``min_effect`` test applies).
    :param metrics: metrics to compare; :param tol: per-metric tolerance (default ``MIN_EFFECT``).
    :returns: rows {arm, steps_from, steps_to, cells, seeds (fewest paired seeds in a common cell; 0 without
        per-seed rows), <metric>_from / _to (means over the common cells, for reading), <metric>_change (their
        difference), <metric>_max_change (the cell change of largest size, signed), cells_min_effect,
        cells_seed_ci, cells_moved (per cell, its worst test over the metrics), moved ('ρ/target' of the moved
        cells), stable (no cell moved; None when no cell is common)}.
    :raises ValueError: two runs of one length, a pair less than 2× apart, or a metric without tolerance.
    """
    tol = {m: (tol or {}).get(m, MIN_EFFECT.get(m, math.nan)) for m in metrics}
    bad = [m for m, t in tol.items() if not (t > 0)]
    if bad:
        raise ValueError(f"no tolerance for metric(s) {bad}: give tol={{name: value > 0}}")
    runs = sorted(((r[0], r[1], r[2] if len(r) > 2 else None) for r in runs), key=lambda r: r[0])
    steps = [s for s, _, _ in runs]
    if len(set(steps)) != len(steps):
        raise ValueError(f"two runs share a length: steps {steps}")
    arms = list(dict.fromkeys(r["arm"] for _, rows, _ in runs for r in rows))
    out = []
    for arm in arms:
        have = [run for run in runs if any(r["arm"] == arm for r in run[1])]
        for (s0, a, sa), (s1, b, sb) in zip(have, have[1:]):
            if s1 < 2 * s0:
                raise ValueError(f"lengths {s0} and {s1} are less than 2× apart: a doubling check needs L' ≥ 2L")
            row: dict[str, Any] = {"arm": arm, "steps_from": s0, "steps_to": s1}
            per = {m: (_cells(a, arm, m), _cells(b, arm, m)) for m in metrics}
            common = sorted(set.intersection(*(set(x) & set(y) for x, y in per.values()))) if per else []
            row["cells"] = len(common)
            worst = {c: 0 for c in common}  # index into RULES
            n_seeds: list[int] = []
            for m, (x, y) in per.items():
                if not common:
                    row[f"{m}_from"] = row[f"{m}_to"] = row[f"{m}_change"] = row[f"{m}_max_change"] = math.nan
                    continue
                xs = _seed_values(sa, arm, m) if sa is not None and sb is not None else {}
                ys = _seed_values(sb, arm, m) if sa is not None and sb is not None else {}
                changes = {c: y[c] - x[c] for c in common}
                for c in common:
                    paired = sorted(set(xs.get(c, {})) & set(ys.get(c, {})))
                    n_seeds.append(len(paired))
                    test = cell_test(changes[c], [xs[c][s] for s in paired], [ys[c][s] for s in paired], tol[m],
                                     level)
                    worst[c] = max(worst[c], RULES.index(test))
                f = sum(x[c] for c in common) / len(common)
                t = sum(y[c] for c in common) / len(common)
                row[f"{m}_from"], row[f"{m}_to"], row[f"{m}_change"] = f, t, t - f
                row[f"{m}_max_change"] = max(changes.values(), key=abs)
            row["seeds"] = min(n_seeds) if n_seeds else 0
            for i, rule in enumerate(RULES):
                row[f"cells_{rule}"] = sum(1 for w in worst.values() if w == i)
            row["moved"] = " ".join(f"{c[0]}/{c[1]}" for c, w in worst.items() if w == 2)
            row["stable"] = (row["cells_moved"] == 0) if common else None
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

"""Choosing an arm's settings within a grid on a validation run (docs/method.md §7.1, the AEN grid).

The validation run is a study of the grid arms (e.g. ``aen_g{γ}_q{q}_l2x{f}``) on data drawn by
its own seeds; :func:`select` reads its matched.csv rows and returns the grid point with the best
mean metric at one cell and target. The chosen arm is then reported from a *different* run whose
seeds draw fresh data (the held-out draw), so the choice is never scored on the data it was
chosen on. Pure: no training here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple


class Choice(NamedTuple):
    """The grid point chosen on the validation run."""

    arm: str
    """The chosen arm's name."""
    score: float
    """Its mean matched metric on the validation run."""
    ranking: tuple[tuple[str, float], ...]
    """Every candidate with a value, best first."""


def select(matched: Sequence[dict[str, Any]], candidates: Sequence[str], *, l0_target: float, metric: str,
           higher_is_better: bool, cell: dict[str, float] | None = None, min_seeds: int = 2) -> Choice:
    """The candidate arm with the best ``{metric}_mean`` at ``l0_target`` (and ``cell``, e.g. {'rho': 0.9}).

    :param matched: rows of the validation run's matched.csv.
    :param min_seeds: candidates with fewer seeds at the target are skipped (a cliff or collapse there).
    Ties go to the candidate listed first. Raises ValueError when no candidate qualifies.
    """
    if not candidates:
        raise ValueError("candidates is empty")
    cell = cell or {}
    scores = []
    for arm in candidates:
        rows = [r for r in matched if r["arm"] == arm and float(r["l0_target"]) == float(l0_target)
                and all(float(r[k]) == float(v) for k, v in cell.items())]
        if len(rows) != 1 or int(rows[0]["n_seeds"]) < min_seeds:
            continue
        v = float(rows[0][f"{metric}_mean"])
        if not math.isnan(v):
            scores.append((arm, v))
    if not scores:
        raise ValueError(f"no candidate of {list(candidates)} has {metric} at L0 {l0_target:g} {cell} "
                         f"with >= {min_seeds} seeds")
    ranked = sorted(scores, key=lambda av: (-av[1] if higher_is_better else av[1], candidates.index(av[0])))
    return Choice(ranked[0][0], ranked[0][1], tuple(ranked))

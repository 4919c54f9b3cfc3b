"""Where to put the λ values of a penalty arm's sweep, round by round (pure functions).

A cell (one arm, one data setting, one seed) is swept in rounds, so that a whole round of
every cell trains at once (:func:`geomsae.study.rounds.sweep`):

1. :func:`bracket`: the first round, ``bracket_points`` λ spaced geometrically around the
   arm's start value (the largest ``bracket_factor`` times the smallest);
2. :func:`propose`: every later round, from the (λ, held-out L0) points measured so far —
   step beyond the densest point if no point reaches the highest target, beyond the
   sparsest if none reaches the lowest, and bisect (geometric mean) the bracketing pair of
   each target whose L0 values are more than ``l0_ratio`` (1.25) apart, unless its λ values
   are already within ``min_ratio`` (then the pair is a cliff or a plateau and bisection
   stops) — at most ``budget`` values.

L0 falls as λ grows. Every λ is rounded to 3 significant digits; L0 is floored at 1e-3
before logs. Nothing here is random: the same points give the same proposals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

L0_FLOOR = 1e-3


def round_lambda(v: float) -> float:
    """λ rounded to 3 significant digits (the values a sweep tries and results.csv records)."""
    return float(f"{v:.3g}")


def bracket(start: float, n: int, factor: float) -> list[float]:
    """The first round: ``n`` λ values spaced geometrically around ``start``, increasing.

    λ_j = start · factor^(j/(n−1) − 1/2) for j = 0 … n−1 (the largest is ``factor`` times the
    smallest, the geometric mean is ``start``); ``[start]`` when n = 1. Rounded, duplicates dropped.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n == {n!r}, must be an integer >= 1")
    if not (start > 0 and factor > 1):
        raise ValueError(f"start == {start!r} and factor == {factor!r}: need start > 0 and factor > 1")
    if n == 1:
        return [round_lambda(start)]
    return list(dict.fromkeys(round_lambda(start * factor ** (j / (n - 1) - 0.5)) for j in range(n)))


def extend(points: Sequence[tuple[float, float]], goal: float, down: bool, *, slope0: float = -1.5) -> float:
    """One step beyond the measured range, aiming at L0 = ``goal``.

    ``down`` (more latents wanted): from the densest point; else from the sparsest. The step
    uses the log-log slope to the neighbour in λ order (clamped to [−4, −0.5]; ``slope0``
    with one point, or when the two share λ or L0), and a factor in [1.25, 30] either way.
    """
    pts = sorted(points)
    lams = [p[0] for p in pts]
    l0s = [max(p[1], L0_FLOOR) for p in pts]
    i = l0s.index(max(l0s)) if down else len(l0s) - 1 - l0s[::-1].index(min(l0s))
    slope = slope0
    j = i - 1 if i > 0 else i + 1
    if 0 <= j < len(pts) and lams[j] != lams[i] and l0s[j] != l0s[i]:
        slope = (math.log(l0s[j]) - math.log(l0s[i])) / (math.log(lams[j]) - math.log(lams[i]))
        slope = min(-0.5, max(-4.0, slope))
    ratio = math.exp((math.log(max(goal, L0_FLOOR)) - math.log(l0s[i])) / slope)
    ratio = min(1 / 1.25, max(1 / 30, ratio)) if down else min(30.0, max(1.25, ratio))
    return round_lambda(lams[i] * ratio)


def bracketing_pair(points: Sequence[tuple[float, float]], target: float) -> tuple[int, int] | None:
    """Indices (in λ order) of the first adjacent pair whose L0 values bracket ``target`` (inclusive).

    The same pair :func:`geomsae.study.matched.interpolate_at` interpolates between.
    """
    pts = sorted(points)
    for i in range(len(pts) - 1):
        a, b = pts[i][1], pts[i + 1][1]
        if min(a, b) <= target <= max(a, b):
            return i, i + 1
    return None


def l0_gap(a: float, b: float) -> float:
    """max(L0)/min(L0) of a pair (L0 floored at 1e-3): how far apart in L0 two sweep points are."""
    a, b = max(a, L0_FLOOR), max(b, L0_FLOOR)
    return max(a, b) / min(a, b)


def propose(points: Iterable[tuple[float, float]], targets: Sequence[float], budget: int, *,
            margin: float = 1.3, min_ratio: float = 1.05, l0_ratio: float = 1.25,
            slope0: float = -1.5) -> list[float]:
    """The λ values of the next round for one cell, from its (λ, L0) points; at most ``budget``.

    In this order of priority:

    1. no point has L0 ≥ max(targets): :func:`extend` down, aiming at L0 = margin·max(targets);
    2. no point has L0 ≤ min(targets): :func:`extend` up, aiming at L0 = min(targets)/margin;
    3. for each target that :func:`bracketing_pair` finds, the geometric mean of that pair's λ
       values, if their L0 values are more than ``l0_ratio`` apart (:func:`l0_gap`) and their λ
       values more than ``min_ratio``; widest log-L0 gap first (ties: smaller λ).

    Values already measured and repeats are dropped; an empty list means nothing is left to
    refine (or no budget).
    """
    pts = sorted(points)
    if budget <= 0 or not pts:
        return []
    lo, hi = min(targets), max(targets)
    l0s = [p[1] for p in pts]
    out: list[float] = []
    if max(l0s) < hi:
        out.append(extend(pts, hi * margin, True, slope0=slope0))
    if min(l0s) > lo:
        out.append(extend(pts, lo / margin, False, slope0=slope0))
    bisect: list[tuple[float, float]] = []
    for t in sorted(targets):
        pair = bracketing_pair(pts, t)
        if pair is None:
            continue
        (la, a), (lb, b) = pts[pair[0]], pts[pair[1]]
        if lb > min_ratio * la and l0_gap(a, b) > l0_ratio:
            bisect.append((-math.log(l0_gap(a, b)), round_lambda(math.sqrt(la * lb))))
    out += [v for _, v in sorted(bisect)]
    seen = {p[0] for p in pts}
    fresh = [v for v in dict.fromkeys(out) if v not in seen]
    return fresh[:budget]

"""Metrics over training: when to evaluate, and whether a curve is still rising at its end.

:func:`eval_steps`: the steps at which a run of ``steps`` optimizer steps is evaluated, given as
fractions of its length (log-spaced, e.g. 0.01, 0.03, 0.1, 0.3, 1 — the 0.1, 0.3, 1, 3, 10 M
tokens of a 10 M-token run, docs/method.md §7.7). Point j fires after step
``ceil(fractions[j] · steps)``, the first step at which at least that share of the tokens has
been seen. :func:`still_growing`: the rule the summaries state — a curve is still growing when
its last two points rise by more than ``tol`` (absolute; a fraction of d_sae for the starvation
curves).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

GROWTH_TOL = 0.002
"""Default ``tol`` of :func:`still_growing`: 0.2 % of the latents between the last two points."""


def eval_steps(steps: int, fractions: Sequence[float]) -> list[int]:
    """The steps after which each fraction of a ``steps``-step run is evaluated (one per fraction).

    :raises ValueError: ``steps`` < 1, or fractions not strictly increasing in (0, 1].
    """
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"steps == {steps!r}, must be an integer >= 1")
    fr = list(fractions)
    if not fr or not all(0 < f <= 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise ValueError(f"fractions == {tuple(fr)!r}, must be strictly increasing values in (0, 1]")
    out = [max(1, math.ceil(f * steps - 1e-9)) for f in fr]
    if len(set(out)) != len(out):
        raise ValueError(f"fractions == {tuple(fr)!r} give the same step twice in a run of {steps} steps "
                         f"({out}); use more steps or fewer points")
    return out


def still_growing(tokens: Sequence[float], values: Sequence[float], tol: float = GROWTH_TOL) -> tuple[bool, float]:
    """(growing, slope per decade of tokens) of a curve from its last two points.

    Growing when ``values[-1] − values[-2] > tol``; the slope is that rise over log10 of the
    token ratio. (False, nan) with fewer than two points.
    """
    if len(tokens) != len(values):
        raise ValueError(f"tokens has {len(tokens)} points and values {len(values)}: they must match")
    if len(values) < 2:
        return False, math.nan
    rise = float(values[-1]) - float(values[-2])
    slope = rise / math.log10(float(tokens[-1]) / float(tokens[-2]))
    return rise > tol, slope

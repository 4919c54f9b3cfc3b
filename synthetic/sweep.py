"""The adaptive λ sweep: which λ to try next so that held-out L0 brackets the targets."""

from __future__ import annotations

import math


def next_lambda(points: list[tuple[float, float]], lo: float, hi: float, *, margin: float = 1.3,
                slope0: float = -1.5) -> float | None:
    """The next λ to try, given (λ, L0) pairs measured so far (L0 falls as λ grows).

    1. No point has L0 >= ``hi``: step down from the densest point to aim at L0 = margin·hi.
    2. No point has L0 <= ``lo``: step up from the sparsest point to aim at L0 = lo/margin.
       The step uses the log-log slope of the two points nearest in λ (clamped to
       [−4, −0.5]; ``slope0`` with one point), and a factor in [1.25, 30] either way.
    3. Both brackets exist: the geometric mean of the adjacent pair (in λ order) whose L0
       interval meets [lo, hi] with the widest log-L0 gap; None when every such pair is
       closer than a factor 1.1 in λ (nothing left to refine).
    The result is rounded to 3 significant digits. L0 is floored at 1e-3 before logs.
    """
    pts = sorted(points)
    lams = [p[0] for p in pts]
    l0s = [max(p[1], 1e-3) for p in pts]
    if max(l0s) < hi or min(l0s) > lo:
        down = max(l0s) < hi
        i = l0s.index(max(l0s)) if down else len(l0s) - 1 - l0s[::-1].index(min(l0s))
        goal = hi * margin if down else lo / margin
        slope = slope0
        j = i - 1 if i > 0 else i + 1
        if 0 <= j < len(pts) and lams[j] != lams[i] and l0s[j] != l0s[i]:
            slope = (math.log(l0s[j]) - math.log(l0s[i])) / (math.log(lams[j]) - math.log(lams[i]))
            slope = min(-0.5, max(-4.0, slope))
        ratio = math.exp((math.log(goal) - math.log(l0s[i])) / slope)
        ratio = min(1 / 1.25, max(1 / 30, ratio)) if down else min(30.0, max(1.25, ratio))
        return float(f"{lams[i] * ratio:.3g}")
    best, gap = None, 0.0
    for (la, a), (lb, b) in zip(zip(lams, l0s), zip(lams[1:], l0s[1:])):
        if min(a, b) <= hi and max(a, b) >= lo and lb > 1.1 * la:
            g = abs(math.log(a) - math.log(b))
            if g > gap:
                best, gap = math.sqrt(la * lb), g
    return None if best is None else float(f"{best:.3g}")

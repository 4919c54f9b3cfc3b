"""The verdict rule (docs/method.md §7.4): is AEN better than another arm at matched L0, by more than matters?

For a claim "AEN is better than arm B on metric M" at one (cell, target), AEN's advantage per
seed is d_s = M_B − M_AEN (lower is better) or M_AEN − M_B (higher is better). Where the design
pairs the arms by seed (the same data and init seed), the comparison is paired: the mean d̄ of
the seeds where both arms have a value, with a two-sided t confidence interval
d̄ ± t_{n−1}·s_d/√n; otherwise Welch's unpaired interval. With the claim's minimum effect δ
(:data:`MIN_EFFECT`), the *outcome* of the comparison is

- 'better'       if the CI lies above 0 and d̄ ≥ δ;
- 'worse'        if the CI lies below 0 and d̄ ≤ −δ;
- 'equivalent'   if the CI lies inside (−δ, δ);
- 'underpowered' otherwise (the CI straddles 0 or ±δ: it is wider than the effect it must resolve);
- 'n/a'          with fewer than 2 seeds on a side (or 2 pairs), or a NaN.

A claim's *verdict* per comparison reads the outcome: a superiority claim holds where AEN is
'better', does not hold where 'worse' ('equivalent' and 'underpowered' stay as they are); an
ablation claim ("plain EN does as well as AEN", ``flip``) holds where the outcome is
'equivalent' or 'worse' and does not hold where 'better'; a non-inferiority claim ("at least as
good", ``margin`` M) holds where the CI's lower end is above −M, does not hold where its upper
end is below −M, else is 'underpowered'. A claim is reported as the table of its comparisons
and a one-line reading (:func:`reading`), never as a majority vote alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

FOCUS = "aen"
"""The arm every claim is about (the verdicts.csv columns say ``aen_*``)."""
LABELS = ("holds", "does not hold", "equivalent", "underpowered", "n/a")
"""Verdict labels, in the order the readings list them."""
SYMBOL = {"holds": "✓", "does not hold": "✗", "equivalent": "=", "underpowered": "?", "n/a": "–"}
"""Symbol of each label in the summary tables."""
MIN_EFFECT: dict[str, float] = {
    "dead_fraction": 0.01, "fvu": 0.01, "mcc": 0.02, "mcc_cc": 0.02, "mmcs_1to1": 0.02, "mmcs_1to1_cc": 0.02,
    "recovery_rate": 0.02, "recovery_cc": 0.02, "support_f1": 0.02, "shrinkage": 0.01, "ce_recovered_mean": 0.01,
    "ce_recovered_zero": 0.01, "rare_fraction_1e4": 0.01, "rare_fraction_1e5": 0.01,
}
"""Smallest difference that matters, per metric (1 point of dead fraction, 0.01 FVU, 0.02 MCC, ...):
below it two arms are 'equivalent'. A metric not listed must give its Claim a ``min_effect``."""
NONINFERIORITY_FVU = 0.02
"""Margin of the 'competitive reconstruction' claims: AEN's FVU may exceed the other's by at most 0.02."""


class Claim(NamedTuple):
    """One claim of a study, tested at every cell × target."""

    id: str
    """Short label, e.g. 'a'; several Claims may share one (an ablation over several metrics)."""
    text: str
    """The statement, as the summary prints it."""
    metric: str
    """Matched-L0 metric compared (a column of matched.csv without _mean/_std)."""
    higher_is_better: bool
    """Direction of the metric."""
    other: str | None = None
    """None: AEN against every other arm; an arm name: against that arm only (an ablation)."""
    flip: bool = False
    """The claim is that ``other`` does as well as AEN: 'equivalent' or AEN 'worse' holds it, AEN 'better' does not."""
    margin: float | None = None
    """A non-inferiority claim ("AEN at least as good"): AEN may be worse by at most this margin."""
    min_effect: float | None = None
    """δ of this claim; None: :data:`MIN_EFFECT` of the metric."""

    def delta(self) -> float:
        """The minimum effect size δ of the claim."""
        if self.min_effect is not None:
            return self.min_effect
        if self.metric not in MIN_EFFECT:
            raise ValueError(f"metric {self.metric!r} has no minimum effect: add it to MIN_EFFECT or give min_effect")
        return MIN_EFFECT[self.metric]


class Comparison(NamedTuple):
    """AEN's advantage over another arm on one metric at one (cell, target)."""

    diff: float
    """Mean advantage d̄ (positive: AEN better)."""
    lo: float
    """Lower end of the confidence interval of the advantage."""
    hi: float
    """Upper end."""
    n: int
    """Pairs (paired) or the smaller of the two seed counts (unpaired)."""
    paired: bool
    """Whether the interval is paired by seed."""
    outcome: str
    """'better', 'worse', 'equivalent', 'underpowered' or 'n/a' (module docstring)."""


def _finite(xs: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in xs)


def interval(a: Sequence[float], b: Sequence[float], higher_is_better: bool, *, paired: bool,
             level: float = 0.95) -> tuple[float, float, float, int]:
    """(d̄, lo, hi, n): AEN's mean advantage and its two-sided ``level`` t interval.

    :param a: AEN's values per seed; :param b: the other arm's (paired: same length and seed order).
    Paired: d_s = ±(a_s − b_s), d̄ ± t_{n−1, (1+level)/2}·s_d/√n. Unpaired (Welch):
    d̄ = ±(mean a − mean b), se = √(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite degrees of freedom.
    A zero spread gives a zero-width interval. Raises ValueError on fewer than 2 values or NaN.
    """
    if not 0 < level < 1:
        raise ValueError(f"level == {level!r}, must be in (0, 1)")
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (_finite(xa) and _finite(xb)):
        raise ValueError("values contain NaN or Inf")
    sign = 1.0 if higher_is_better else -1.0
    q = (1 + level) / 2
    if paired:
        if xa.shape != xb.shape:
            raise ValueError(f"paired values need equal lengths, got {xa.size} and {xb.size}")
        n = xa.size
        if n < 2:
            raise ValueError(f"a paired interval needs at least 2 pairs, got {n}")
        d = sign * (xa - xb)
        half = float(stats.t.ppf(q, n - 1) * d.std(ddof=1) / math.sqrt(n))
        return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, n
    na, nb = xa.size, xb.size
    if min(na, nb) < 2:
        raise ValueError(f"an unpaired interval needs at least 2 values a side, got {na} and {nb}")
    va, vb = xa.var(ddof=1) / na, xb.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1)) if se > 0 else na + nb - 2
    diff = sign * float(xa.mean() - xb.mean())
    half = float(stats.t.ppf(q, df) * se)
    return diff, diff - half, diff + half, min(na, nb)


def outcome(diff: float, lo: float, hi: float, min_effect: float) -> str:
    """'better' / 'worse' / 'equivalent' / 'underpowered' from an interval and δ (module docstring)."""
    if not min_effect > 0:
        raise ValueError(f"min_effect == {min_effect!r}, must be > 0")
    if lo > 0 and diff >= min_effect:
        return "better"
    if hi < 0 and diff <= -min_effect:
        return "worse"
    if -min_effect < lo and hi < min_effect:
        return "equivalent"
    return "underpowered"


def compare(a: Sequence[float], b: Sequence[float], higher_is_better: bool, min_effect: float, *, paired: bool,
            level: float = 0.95) -> Comparison:
    """The :class:`Comparison` of AEN (``a``) with another arm (``b``); 'n/a' when undefined."""
    a, b = list(a), list(b)
    n_needed = 2
    if (paired and len(a) < n_needed) or (not paired and min(len(a), len(b)) < n_needed) \
            or not (_finite(a) and _finite(b)):
        return Comparison(math.nan, math.nan, math.nan, min(len(a), len(b)), paired, "n/a")
    diff, lo, hi, n = interval(a, b, higher_is_better, paired=paired, level=level)
    return Comparison(diff, lo, hi, n, paired, outcome(diff, lo, hi, min_effect))


def claim_label(claim: Claim, c: Comparison) -> str:
    """The verdict of ``claim`` in one comparison (module docstring)."""
    if c.outcome == "n/a":
        return "n/a"
    if claim.margin is not None:
        if c.lo > -claim.margin:
            return "holds"
        if c.hi < -claim.margin:
            return "does not hold"
        return "underpowered"
    if claim.flip:
        return {"better": "does not hold", "worse": "holds", "equivalent": "holds"}.get(c.outcome, c.outcome)
    return {"better": "holds", "worse": "does not hold"}.get(c.outcome, c.outcome)


def tally(labels: Sequence[str]) -> str:
    """'holds h, does not hold d, equivalent e, underpowered u of n defined comparisons (m n/a: …)'."""
    defined = [lab for lab in labels if lab != "n/a"]
    na = len(labels) - len(defined)
    return (", ".join(f"{lab} {defined.count(lab)}" for lab in LABELS[:-1]) + f" of {len(defined)} defined comparisons"
            + (f" ({na} n/a: target not bracketed, a cliff, or < 2 seeds)" if na else ""))


def reading(comps: Sequence[dict[str, Any]], by: str = "other") -> str:
    """One line from a claim's comparisons: per label, how many and against which arms (or metrics).

    E.g. 'holds in 12/30 (relu_l1 5, en 4, gated 3); does not hold in 3/30 (topk_auxk 3); equivalent in
    5/30 (...); underpowered in 10/30 (...)'; labels with no comparison are left out.
    """
    defined = [c for c in comps if c["verdict"] != "n/a"]
    if not defined:
        return f"no defined comparison ({len(comps)} n/a)"
    parts = []
    for lab in LABELS[:-1]:
        sub = [c for c in defined if c["verdict"] == lab]
        if not sub:
            continue
        counts: dict[str, int] = defaultdict(int)
        for c in sub:
            counts[str(c[by])] += 1
        parts.append(f"{lab} in {len(sub)}/{len(defined)} ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) + ")")
    na = len(comps) - len(defined)
    return "; ".join(parts) + (f"; {na} n/a" if na else "")


def verdict_columns(cell_keys: Sequence[str] = ()) -> list[str]:
    """Columns of verdicts.csv."""
    return (["claim", "metric", *cell_keys, "l0_target", "other", "paired", "n", "aen_mean", "other_mean",
             "aen_advantage", "ci_lo", "ci_hi", "min_effect", "margin", "outcome", "verdict", "aen_cliffs",
             "other_cliffs"])


def comparisons(seeds_table: Sequence[dict[str, Any]], claims: Sequence[Claim], cell_keys: Sequence[str] = (), *,
                paired: bool = True, level: float = 0.95) -> list[dict[str, Any]]:
    """Every comparison behind ``claims`` from the per-seed matched values (matched_seeds.csv).

    Per claim, per other arm (in order of first appearance), per (cell, target) in sorted
    order; one row of :func:`verdict_columns` each. Paired: the seeds where both arms have an
    interpolated value ('ok'); unpaired: each arm's own such seeds. Empty without AEN.
    """
    vals: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    cliffs: dict[tuple, int] = defaultdict(int)
    for r in seeds_table:
        key = (r["arm"], *(r[k] for k in cell_keys), r["l0_target"])
        if r["status"] == "ok":
            vals[key][int(r["seed"])] = r
        elif r["status"] == "cliff":
            cliffs[key] += 1
    arms = list(dict.fromkeys(r["arm"] for r in seeds_table))
    if FOCUS not in arms:
        return []
    keys = sorted({(*(r[k] for k in cell_keys), r["l0_target"]) for r in seeds_table})
    out = []
    for claim in claims:
        others = [a for a in arms if a != FOCUS] if claim.other is None else [claim.other]
        for other in (o for o in others if o in arms):
            for key in keys:
                va, vb, m = vals.get((FOCUS, *key), {}), vals.get((other, *key), {}), claim.metric
                if paired:
                    common = sorted(set(va) & set(vb))
                    a, b = [va[s][m] for s in common], [vb[s][m] for s in common]
                else:
                    a, b = [r[m] for r in va.values()], [r[m] for r in vb.values()]
                c = compare(a, b, claim.higher_is_better, claim.delta(), paired=paired, level=level)
                out.append({"claim": claim.id, "metric": m, **dict(zip(cell_keys, key[:-1])), "l0_target": key[-1],
                            "other": other, "paired": int(paired), "n": c.n,
                            "aen_mean": float(np.mean(a)) if a else math.nan,
                            "other_mean": float(np.mean(b)) if b else math.nan,
                            "aen_advantage": c.diff, "ci_lo": c.lo, "ci_hi": c.hi, "min_effect": claim.delta(),
                            "margin": math.nan if claim.margin is None else claim.margin, "outcome": c.outcome,
                            "verdict": claim_label(claim, c), "aen_cliffs": cliffs[(FOCUS, *key)],
                            "other_cliffs": cliffs[(other, *key)]})
    return out

"""The verdict rule (docs/method.md §7.4): is AEN better than another arm at matched L0, beyond noise?

For a claim "AEN is better than arm B on metric M" at one (cell, target), the advantage
Δ = mean_B − mean_AEN (lower is better) or mean_AEN − mean_B (higher is better) over seeds,
with standard error SE = √(s_AEN²/n_AEN + s_B²/n_B) (sample std, unpaired); 'holds' if
Δ > c·SE, 'does not hold' if Δ < −c·SE, else 'within noise' (c = se_factor; a |Δ| below 1e-12
is 'within noise'); 'n/a' when either side has < 2 seeds or a NaN. A claim's overall verdict
(:func:`overall`) is the label of more than half of its defined comparisons, else 'mixed'.
An ablation claim ("plain EN does as well as AEN") flips the labels: AEN better beyond noise
counts against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

FOCUS = "aen"
"""The arm every claim is about (the verdicts.csv columns say ``aen_*``)."""
SYMBOL = {"holds": "✓", "does not hold": "✗", "within noise": "~", "n/a": "–"}
"""Symbol of each label in the summary tables."""


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
    """The claim is that ``other`` does as well as AEN: 'holds' and 'does not hold' swap."""


def verdict(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int, higher_is_better: bool,
            se_factor: float = 2.0) -> tuple[float, float, str]:
    """(Δ, SE, label) for the claim "a is better than b" (see the module docstring)."""
    if n_a < 2 or n_b < 2 or any(math.isnan(v) for v in (mean_a, std_a, mean_b, std_b)):
        return math.nan, math.nan, "n/a"
    diff = mean_a - mean_b if higher_is_better else mean_b - mean_a
    se = math.sqrt(std_a**2 / n_a + std_b**2 / n_b)
    if diff > se_factor * se and diff > 1e-12:
        return diff, se, "holds"
    if diff < -se_factor * se and diff < -1e-12:
        return diff, se, "does not hold"
    return diff, se, "within noise"


def overall(labels: Sequence[str]) -> str:
    """The label of more than half of the defined (not 'n/a') comparisons, else 'mixed'."""
    defined = [lab for lab in labels if lab != "n/a"]
    if not defined:
        return "n/a"
    for lab in ("holds", "does not hold", "within noise"):
        if defined.count(lab) * 2 > len(defined):
            return lab
    return "mixed"


def tally(labels: Sequence[str]) -> str:
    """'holds h, does not hold d, within noise w of n defined comparisons (m n/a: …)'."""
    defined = [lab for lab in labels if lab != "n/a"]
    na = len(labels) - len(defined)
    return (f"holds {defined.count('holds')}, does not hold {defined.count('does not hold')}, within noise "
            f"{defined.count('within noise')} of {len(defined)} defined comparisons"
            + (f" ({na} n/a: target not bracketed or < 2 seeds)" if na else ""))


def verdict_columns(cell_keys: Sequence[str] = ()) -> list[str]:
    """Columns of verdicts.csv."""
    return (["claim", "metric", *cell_keys, "l0_target", "other", "aen_mean", "aen_std", "aen_n", "other_mean",
             "other_std", "other_n", "aen_advantage", "se", "verdict"])


def comparisons(matched: Sequence[dict[str, Any]], claims: Sequence[Claim], se_factor: float,
                cell_keys: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every comparison behind ``claims``: per claim, per other arm (in matched order), per
    (cell, target) in sorted order; one row of :func:`verdict_columns` each. Empty without AEN."""
    idx = {(r["arm"], *(r[k] for k in cell_keys), r["l0_target"]): r for r in matched}
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    if FOCUS not in arms:
        return []
    keys = sorted({(*(r[k] for k in cell_keys), r["l0_target"]) for r in matched})
    out = []
    for claim in claims:
        others = [a for a in arms if a != FOCUS] if claim.other is None else [claim.other]
        for other in (o for o in others if o in arms):
            for key in keys:
                a, b, m = idx[(FOCUS, *key)], idx[(other, *key)], claim.metric
                na, nb = int(a["n_seeds"]), int(b["n_seeds"])
                diff, se, lab = verdict(a[f"{m}_mean"], a[f"{m}_std"], na, b[f"{m}_mean"], b[f"{m}_std"], nb,
                                        claim.higher_is_better, se_factor)
                if claim.flip:
                    lab = {"holds": "does not hold", "does not hold": "holds"}.get(lab, lab)
                out.append({"claim": claim.id, "metric": m, **dict(zip(cell_keys, key[:-1])), "l0_target": key[-1],
                            "other": other, "aen_mean": a[f"{m}_mean"], "aen_std": a[f"{m}_std"], "aen_n": na,
                            "other_mean": b[f"{m}_mean"], "other_std": b[f"{m}_std"], "other_n": nb,
                            "aen_advantage": diff, "se": se, "verdict": lab})
    return out

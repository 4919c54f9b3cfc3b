"""Do two runs of one study reach the same verdicts? (docs/method.md §7.4, the reproducibility check)

Two runs of the same design (another machine, another thread count, or data perturbed by float
rounding: ``--float-jitter``) give two verdicts.csv tables. :func:`agree` pairs their rows by
comparison (claim, metric, cell keys, target, other arm) and classes every pair:

- 'same'      — the same label;
- 'soft'      — one side is 'underpowered' or 'n/a' (a comparison on its confidence threshold: the
  other side's label was not resolved with room to spare);
- 'decisive'  — two different resolved labels ('holds' / 'does not hold' / 'equivalent'), i.e. a
  reading that another machine would report differently with confidence on both sides;
- 'opposite'  — 'holds' against 'does not hold'.

A comparison *whose effect exceeds the minimum size* is one where both runs' |AEN advantage| is at
least the claim's minimum effect δ; the check requires that none of those changes label, and
that each claim's one-line reading (:func:`geomsae.study.verdicts.reading`) is unchanged apart
from comparisons classed 'soft'.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from geomsae.study.verdicts import LABELS

RESOLVED = ("holds", "does not hold", "equivalent")
"""Labels that a confidence interval resolved; 'underpowered' and 'n/a' did not."""
KINDS = ("same", "soft", "decisive", "opposite")
"""Classes of a pair of labels, from harmless to worst."""
BASE_KEYS = ("claim", "metric", "l0_target", "other")
"""Columns of verdicts.csv that name a comparison besides the study's cell keys."""


def kind(a: str, b: str) -> str:
    """Class of two verdict labels (module docstring); raises on a label not in LABELS."""
    for lab in (a, b):
        if lab not in LABELS:
            raise ValueError(f"verdict label {lab!r} is not one of {LABELS}")
    if a == b:
        return "same"
    if a not in RESOLVED or b not in RESOLVED:
        return "soft"
    if {a, b} == {"holds", "does not hold"}:
        return "opposite"
    return "decisive"


def _key(row: dict[str, Any], cell_keys: Sequence[str]) -> tuple:
    return tuple(str(row[k]) for k in (*BASE_KEYS[:2], *cell_keys, *BASE_KEYS[2:]))


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def agree(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]],
          cell_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Pair two verdicts.csv tables row by row and class each pair.

    Returns ``{"pairs": [...], "counts": {kind: n}, "only_a": n, "only_b": n, "big_changes": [...]}``:
    each pair holds the comparison's key columns, ``verdict_a``, ``verdict_b``, ``effect_a``,
    ``effect_b``, ``min_effect`` and ``kind``; ``big_changes`` are the changed pairs whose
    |effect| ≥ min_effect in both runs. Raises ValueError when a table repeats a comparison.
    """
    def index(rows: Sequence[dict[str, Any]], name: str) -> dict[tuple, dict[str, Any]]:
        out: dict[tuple, dict[str, Any]] = {}
        for r in rows:
            k = _key(r, cell_keys)
            if k in out:
                raise ValueError(f"run {name} has comparison {k} twice: not a verdicts.csv of one study")
            out[k] = r
        return out

    a, b = index(rows_a, "A"), index(rows_b, "B")
    names = (*BASE_KEYS[:2], *cell_keys, *BASE_KEYS[2:])
    pairs = []
    for k in (k for k in a if k in b):
        ra, rb = a[k], b[k]
        delta = _num(ra.get("min_effect"))
        pairs.append({**dict(zip(names, k)), "verdict_a": ra["verdict"], "verdict_b": rb["verdict"],
                      "effect_a": _num(ra.get("aen_advantage")), "effect_b": _num(rb.get("aen_advantage")),
                      "min_effect": delta, "kind": kind(ra["verdict"], rb["verdict"])})
    counts = Counter(p["kind"] for p in pairs)
    big = [p for p in pairs if p["kind"] != "same" and not math.isnan(p["min_effect"])
           and abs(p["effect_a"]) >= p["min_effect"] and abs(p["effect_b"]) >= p["min_effect"]]
    return {"pairs": pairs, "counts": {kd: counts.get(kd, 0) for kd in KINDS},
            "only_a": sum(k not in b for k in a), "only_b": sum(k not in a for k in b), "big_changes": big}


def readings_differ(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """{claim: (tally in A, tally in B)} for the claims whose label counts differ between the runs."""
    out = {}
    for cid in dict.fromkeys([r["claim"] for r in rows_a] + [r["claim"] for r in rows_b]):
        ta = Counter(r["verdict"] for r in rows_a if r["claim"] == cid)
        tb = Counter(r["verdict"] for r in rows_b if r["claim"] == cid)
        if ta != tb:
            fmt = lambda t: ", ".join(f"{lab} {t.get(lab, 0)}" for lab in LABELS)
            out[cid] = (fmt(ta), fmt(tb))
    return out

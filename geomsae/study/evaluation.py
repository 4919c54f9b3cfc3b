"""Held-out evaluation of one trained SAE as the metric columns of a results row.

The only place in :mod:`geomsae.study` that calls :func:`geomsae.evaluate.evaluate`, so a
change of what it returns is an edit of :func:`evaluation_row` alone.
"""

from __future__ import annotations

import math
from typing import Any

from geomsae.evaluate import evaluate
from geomsae.metrics import chance_corrected
from geomsae.study.tables import (
    CORE_METRICS,
    EVAL_METRICS,
    TRAIN_METRICS,
    TRUE_CODE_METRICS,
    TRUE_DICT_METRICS,
)


def _cc(score: float | None, chance: float | None) -> float:
    return math.nan if score is None or chance is None else chance_corrected(score, chance)


def evaluation_row(sae: Any, source: Any, *, windows: tuple[int, ...], true_dict: Any = None, true_codes: Any = None,
                   device: Any = None) -> tuple[dict[str, float], list[int]]:
    """Evaluate ``sae`` on the held-out ``source``; (metric columns, firing histogram).

    :param windows: token counts N of the ``dead_at_{N}`` columns (each at most the tokens read).
    :param true_dict: (d_in, n_true) ground-truth atoms as columns: adds the TRUE_DICT_METRICS columns.
    :param true_codes: (N, n_true) ground-truth codes of the held-out tokens: adds mcc, mcc_chance, mcc_cc.
    :returns: {l0, fvu, dead_fraction, dead_at_{N}…, then EVAL_METRICS (collapsed as 1/0, shrinkage =
        |rel_bias − 1|), and the ground-truth metrics with their chance levels and chance-corrected
        scores}, and the log10 firing-frequency histogram counts (dead latents in bin 0). Firing is the
        folded rule of docs/method.md §3.
    """
    ev = evaluate(sae, source, true_dict=true_dict, true_codes=true_codes, windows=tuple(sorted(windows)),
                  device=device)
    row: dict[str, float] = {m: getattr(ev, m) for m in CORE_METRICS}
    for w in sorted(windows):
        row[f"dead_at_{w}"] = ev.dead_fraction_at(w)
    row.update({m: getattr(ev, m) for m in EVAL_METRICS if m not in ("shrinkage", "collapsed")})
    row["collapsed"] = int(ev.collapsed)
    row["shrinkage"] = abs(ev.rel_bias - 1.0)
    if true_dict is not None:
        row.update(mmcs=ev.mmcs, recovery_rate=ev.recovery_rate, mmcs_1to1=ev.mmcs_1to1,
                   recovery_chance=math.nan if ev.recovery_chance is None else ev.recovery_chance,
                   mmcs_1to1_chance=math.nan if ev.mmcs_1to1_chance is None else ev.mmcs_1to1_chance,
                   recovery_cc=_cc(ev.recovery_rate, ev.recovery_chance),
                   mmcs_1to1_cc=_cc(ev.mmcs_1to1, ev.mmcs_1to1_chance))
        assert set(TRUE_DICT_METRICS) <= set(row)
    if true_codes is not None:
        row.update(mcc=ev.mcc, mcc_chance=math.nan if ev.mcc_chance is None else ev.mcc_chance,
                   mcc_cc=_cc(ev.mcc, ev.mcc_chance))
        assert set(TRUE_CODE_METRICS) <= set(row)
    return row, list(ev.firing_histogram.counts)


def training_row(train_metrics: dict[str, Any]) -> dict[str, float]:
    """The TRAIN_METRICS columns from a TrainResult's last metrics record (nan where absent)."""
    return {m: float(train_metrics.get(m, math.nan)) for m in TRAIN_METRICS}

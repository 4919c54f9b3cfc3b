"""Held-out evaluation of one trained SAE as the metric columns of a results row.

The only place in :mod:`geomsae.study` that calls :func:`geomsae.evaluate.evaluate`, so a
change of what it returns is an edit of :func:`evaluation_row` alone.
"""

from __future__ import annotations

from typing import Any

from geomsae.study.tables import CORE_METRICS, EVAL_METRICS, TRUE_DICT_METRICS


def evaluation_row(sae: Any, source: Any, *, windows: tuple[int, ...], true_dict: Any = None,
                   device: Any = None) -> tuple[dict[str, float], list[int]]:
    """Evaluate ``sae`` on the held-out ``source``; (metric columns, firing histogram).

    :param windows: token counts N of the ``dead_at_{N}`` columns (each at most the tokens read).
    :param true_dict: (d_in, n_true) ground-truth atoms as columns: adds mmcs, recovery_rate, mcc.
    :returns: {l0, fvu, dead_fraction, dead_at_{N}…, dense_fraction, dense_fraction_001, l2_ratio,
        rel_bias, shrinkage = |rel_bias − 1| (and the true-dictionary metrics)}, and the
        log10 firing-frequency histogram counts (dead latents in bin 0).
    """
    from geomsae.evaluate import evaluate

    ev = evaluate(sae, source, true_dict=true_dict, windows=tuple(sorted(windows)), device=device)
    row = {m: getattr(ev, m) for m in CORE_METRICS}
    for w in sorted(windows):
        row[f"dead_at_{w}"] = ev.dead_fraction_at(w)
    row.update({m: getattr(ev, m) for m in EVAL_METRICS if m != "shrinkage"})
    row["shrinkage"] = abs(ev.rel_bias - 1.0)
    if true_dict is not None:
        row.update({m: getattr(ev, m) for m in TRUE_DICT_METRICS})
    return row, list(ev.firing_histogram.counts)

"""geomsae.study.doubling: an arm's matched-L0 metrics when training doubles, on crafted tables."""

from __future__ import annotations

import math

import pytest

from geomsae.study.doubling import converged_at, doubling_pairs


def _row(arm, rho, target, fvu, dead):
    return {"arm": arm, "rho": str(rho), "l0_target": str(target), "fvu_mean": str(fvu), "dead_fraction_mean": str(dead)}


def test_changes_below_the_minimum_effect_are_stable_and_above_are_not():
    runs = [
        (1000, [_row("a", 0, 4, 0.50, 0.10), _row("a", 0.9, 4, 0.30, 0.20), _row("b", 0, 4, 0.2, 0.0)]),
        (2000, [_row("a", 0, 4, 0.40, 0.10), _row("a", 0.9, 4, 0.20, 0.20), _row("b", 0, 4, 0.195, 0.005)]),
        (4000, [_row("a", 0, 4, 0.395, 0.11), _row("a", 0.9, 4, 0.195, 0.2), _row("b", 0, 4, 0.19, 0.0)]),
    ]
    pairs = doubling_pairs(runs)
    a = [p for p in pairs if p["arm"] == "a"]
    assert [(p["steps_from"], p["steps_to"], p["cells"]) for p in a] == [(1000, 2000, 2), (2000, 4000, 2)]
    assert a[0]["fvu_change"] == pytest.approx(-0.10) and a[0]["stable"] is False
    # FVU moved 0.005 and the dead fraction +1 point in one cell, 0 in the other (+0.5 point on average): stable
    assert a[1]["fvu_change"] == pytest.approx(-0.005) and a[1]["dead_fraction_change"] == pytest.approx(0.005)
    assert a[1]["stable"] is True
    assert converged_at(pairs) == {"a": 2000, "b": 1000}


def test_a_dead_fraction_drift_of_one_point_is_not_stable():
    runs = [(1000, [_row("a", 0, 4, 0.2, 0.02)]), (2000, [_row("a", 0, 4, 0.2, 0.031)])]
    (p,) = doubling_pairs(runs)
    assert p["stable"] is False and p["dead_fraction_change"] == pytest.approx(0.011)
    assert converged_at([p]) == {"a": None}


def test_only_cells_both_lengths_define_are_compared_and_none_is_not_measurable():
    runs = [(1000, [_row("a", 0, 4, 0.9, 0.0), _row("a", 0.5, 4, "nan", "nan")]),
            (2000, [_row("a", 0, 4, "nan", "nan"), _row("a", 0.5, 4, 0.1, 0.0)])]
    (p,) = doubling_pairs(runs)
    assert p["cells"] == 0 and p["stable"] is None and math.isnan(p["fvu_change"])
    assert converged_at([p]) == {"a": None}


def test_an_unstable_later_pair_resets_the_converged_length():
    runs = [(s, [_row("a", 0, 4, f, 0.0)]) for s, f in [(1000, 0.5), (2000, 0.5), (4000, 0.3), (8000, 0.3)]]
    assert converged_at(doubling_pairs(runs)) == {"a": 4000}


def test_arms_missing_from_a_length_pair_with_the_next_length_they_ran_at():
    runs = [(1000, [_row("a", 0, 4, 0.5, 0.0), _row("b", 0, 4, 0.5, 0.0)]),
            (2000, [_row("a", 0, 4, 0.45, 0.0), _row("b", 0, 4, 0.5, 0.0)]),
            (8000, [_row("a", 0, 4, 0.448, 0.0)])]  # a longer run of the slow arm only
    pairs = doubling_pairs(runs)
    assert [(p["arm"], p["steps_from"], p["steps_to"]) for p in pairs] == [("a", 1000, 2000), ("a", 2000, 8000),
                                                                            ("b", 1000, 2000)]
    assert converged_at(pairs) == {"a": 2000, "b": 1000}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="less than 2"):
        doubling_pairs([(1000, [_row("a", 0, 4, 0.5, 0)]), (1500, [_row("a", 0, 4, 0.5, 0)])])
    with pytest.raises(ValueError, match="share a length"):
        doubling_pairs([(1000, []), (1000, [])])
    with pytest.raises(ValueError, match="no tolerance"):
        doubling_pairs([(1000, [])], metrics=("l0",))

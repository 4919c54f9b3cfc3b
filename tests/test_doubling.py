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
        (4000, [_row("a", 0, 4, 0.395, 0.115), _row("a", 0.9, 4, 0.195, 0.2), _row("b", 0, 4, 0.19, 0.0)]),
    ]
    pairs = doubling_pairs(runs)
    a = [p for p in pairs if p["arm"] == "a"]
    assert [(p["steps_from"], p["steps_to"], p["cells"]) for p in a] == [(1000, 2000, 2), (2000, 4000, 2)]
    assert a[0]["fvu_change"] == pytest.approx(-0.10) and a[0]["stable"] is False
    # FVU moved 0.005 in both cells, the dead fraction +1.5 points in one cell and 0 in the other: the mean change
    # (+0.75 point) is below the minimum effect, but one cell moved by 1.5 points, so the pair is not stable
    assert a[1]["fvu_change"] == pytest.approx(-0.005) and a[1]["dead_fraction_change"] == pytest.approx(0.0075)
    assert a[1]["dead_fraction_max_change"] == pytest.approx(0.015)
    assert a[1]["stable"] is False and a[1]["cells_moved"] == 1 and a[1]["moved"] == "0/4"
    assert converged_at(pairs) == {"a": None, "b": 1000}


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


def _seed(arm, rho, target, seed, fvu, dead, status="ok"):
    return {"arm": arm, "rho": str(rho), "l0_target": str(target), "seed": str(seed), "status": status,
            "fvu": str(fvu), "dead_fraction": str(dead)}


def _length(cells_seeds):
    """(matched rows, per-seed rows) from {(rho, target): [(fvu, dead) per seed]}."""
    seeds = [_seed("a", rho, t, s, f, d) for (rho, t), vals in cells_seeds.items() for s, (f, d) in enumerate(vals)]
    matched = [_row("a", rho, t, sum(v[0] for v in vals) / len(vals), sum(v[1] for v in vals) / len(vals))
               for (rho, t), vals in cells_seeds.items()]
    return matched, seeds


def test_signed_changes_that_cancel_over_cells_are_not_stable():
    # the standard preset's AEN 16k -> 32k: per-cell FVU changes +0.023 and -0.025 (mean -0.001), every seed agreeing
    before = {(0, 4): [(0.40, 0.0)] * 3, (0.9, 4): [(0.50, 0.0)] * 3}
    after = {(0, 4): [(0.423 + e, 0.0) for e in (0, 0.001, -0.001)],
             (0.9, 4): [(0.475 + e, 0.0) for e in (0, 0.001, -0.001)]}
    (p,) = doubling_pairs([(16000, *_length(before)), (32000, *_length(after))])
    assert abs(p["fvu_change"]) < 0.01  # what signed averaging would have called stable
    assert p["stable"] is False and p["cells_moved"] == 2 and p["seeds"] == 3
    assert p["fvu_max_change"] == pytest.approx(-0.025)


def test_a_large_mean_change_within_the_seed_spread_is_stable_by_the_seed_interval():
    # one cell's mean moves 0.02 (more than the minimum effect), but its seeds move +0.10, -0.04, 0.00
    before = {(0, 4): [(0.40, 0.0)] * 3, (0.9, 4): [(0.30, 0.0)] * 3}
    after = {(0, 4): [(0.50, 0.0), (0.36, 0.0), (0.40, 0.0)], (0.9, 4): [(0.302, 0.0)] * 3}
    (p,) = doubling_pairs([(1000, *_length(before)), (2000, *_length(after))])
    assert p["fvu_max_change"] == pytest.approx(0.02)
    assert p["fvu_change"] == pytest.approx(0.011)  # what signed averaging would have called not stable
    assert p["stable"] is True and p["cells_seed_ci"] == 1 and p["cells_min_effect"] == 1 and p["cells_moved"] == 0
    # without the per-seed rows only the minimum-effect test applies: the same change has moved
    (q,) = doubling_pairs([(1000, _length(before)[0]), (2000, _length(after)[0])])
    assert q["stable"] is False and q["seeds"] == 0 and q["cells_moved"] == 1


def test_cell_test_by_hand():
    from geomsae.study.doubling import cell_test

    assert cell_test(0.009, [], [], 0.01) == "min_effect"
    assert cell_test(0.02, [0.0, 0.0], [0.02, 0.02], 0.01) == "moved"  # zero spread: the interval is a point
    # changes 0.1, -0.06: mean 0.02, sd 0.113, t(0.975, 1) = 12.71 -> ±1.02: contains 0
    assert cell_test(0.02, [0.0, 0.0], [0.1, -0.06], 0.01) == "seed_ci"
    assert cell_test(0.02, [0.0], [0.02], 0.01) == "moved"  # one seed: no interval

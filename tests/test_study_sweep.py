"""geomsae.study.sweep: where the λ values of a round go (hand-computed expectations)."""

from __future__ import annotations

import math

import pytest

from geomsae.study.sweep import bracket, bracketing_pair, extend, propose, round_lambda

TARGETS = (4.0, 6.0)  # lo = 4, hi = 6: extensions aim at 6·1.3 = 7.8 (down) and 4/1.3 ≈ 3.077 (up)


def test_bracket_is_geometric_around_the_start():
    # n = 2, factor 4: start/2 and 2·start (ratio 4, geometric mean start)
    assert bracket(0.05, 2, 4.0) == [0.025, 0.1]
    # n = 3: start/2, start, 2·start; n = 1: the start alone
    assert bracket(0.01, 3, 4.0) == [0.005, 0.01, 0.02]
    assert bracket(0.01, 1, 4.0) == [0.01]
    # rounded to 3 significant digits: 0.0123/2 = 0.00615, 0.0123·2 = 0.0246; factor 9 -> /3, ·3
    assert bracket(0.0123, 2, 4.0) == [0.00615, 0.0246]
    assert bracket(0.03, 2, 9.0) == [0.01, 0.09]
    with pytest.raises(ValueError, match=r"n == 0, must be an integer >= 1"):
        bracket(0.01, 0, 4.0)
    with pytest.raises(ValueError, match=r"need start > 0 and factor > 1"):
        bracket(0.01, 2, 1.0)


def test_extend_one_point_uses_slope0():
    # too dense (L0 20 > 4): up by (20 / (4/1.3))^(1/1.5) = 6.5^(2/3) = 3.4830 -> 0.0348
    assert extend([(0.01, 20.0)], 4 / 1.3, down=False) == 0.0348
    # too sparse (L0 1 < 6): down by 7.8^(-2/3) = 0.25426 -> 0.00254
    assert extend([(0.01, 1.0)], 7.8, down=True) == 0.00254
    # the factor is clamped to [1.25, 30]: (1000/3.077)^(2/3) = 47 -> 30; (3.3/3.077)^(2/3) = 1.05 -> 1.25
    assert extend([(0.01, 1000.0)], 4 / 1.3, down=False) == 0.3
    assert extend([(0.01, 3.3)], 4 / 1.3, down=False) == 0.0125


def test_extend_uses_the_neighbours_slope_clamped():
    # from the sparsest (0.02, 8), neighbour (0.01, 10): slope ln(10/8)/ln(1/2) = −0.32 -> clamped to −0.5;
    # factor (8 / 3.0769)^2 = 6.76 -> 0.02·6.76 = 0.1352 -> 0.135
    assert extend([(0.01, 10.0), (0.02, 8.0)], 4 / 1.3, down=False) == 0.135
    # slope ln(1.25/5)/ln 2 = −2: down from (0.01, 5) to 7.8 by 1.56^(−1/2) = 0.8006, clamped to 0.8 -> 0.008
    assert extend([(0.01, 5.0), (0.02, 1.25)], 7.8, down=True) == 0.008


def test_bracketing_pair_is_the_first_in_lambda_order():
    pts = [(0.04, 2.0), (0.01, 10.0), (0.02, 5.0)]  # any order in
    assert bracketing_pair(pts, 6.0) == (0, 1)  # (0.01, 10) – (0.02, 5)
    assert bracketing_pair(pts, 4.0) == (1, 2)  # (0.02, 5) – (0.04, 2)
    assert bracketing_pair(pts, 5.0) == (0, 1)  # inclusive, the first pair wins
    assert bracketing_pair(pts, 11.0) is None


def test_propose_brackets_then_bisects():
    # one pair brackets both targets: one bisection, the geometric mean √(0.01·0.04) = 0.02
    assert propose([(0.01, 10.0), (0.04, 2.0)], TARGETS, 3) == [0.02]
    # two pairs: target 4 in (5, 2) (log gap ln 2.5), target 6 in (10, 5) (ln 2): widest first
    pts = [(0.01, 10.0), (0.02, 5.0), (0.04, 2.0)]
    assert propose(pts, TARGETS, 2) == [0.0283, 0.0141]  # √0.0008 = 0.028284, √0.0002 = 0.014142
    assert propose(pts, TARGETS, 1) == [0.0283]
    assert propose(pts, TARGETS, 0) == []
    # adjacent λ closer than a factor 1.1: nothing left to refine
    assert propose([(0.0100, 10.0), (0.0105, 2.0)], TARGETS, 3) == []
    assert propose([], TARGETS, 3) == []


def test_propose_extends_first():
    # L0 5 lies between the targets: both extensions. Down: (7.8/5)^(−2/3) = 0.7434 -> 0.00743;
    # up: (5/3.0769)^(2/3) = 1.3822 -> 0.0138
    assert propose([(0.01, 5.0)], TARGETS, 2) == [0.00743, 0.0138]
    assert propose([(0.01, 5.0)], TARGETS, 1) == [0.00743]
    # too sparse but target 4 bracketed: the extension down first, then the bisection √(0.01·0.02)
    got = propose([(0.01, 5.0), (0.02, 3.0)], TARGETS, 2)
    slope = math.log(3 / 5) / math.log(2)  # −0.737
    assert got == [round_lambda(0.01 * math.exp(math.log(7.8 / 5) / slope)), 0.0141] == [0.00547, 0.0141]
    # too dense everywhere: one step up (the old next_lambda case), none down
    assert propose([(0.01, 20.0)], TARGETS, 3) == [0.0348]


def test_propose_drops_values_already_measured():
    # non-monotone L0 (noise): from the sparsest (0.1, 4.64), neighbour (0.025, 26.8): slope −1.265,
    # factor (4.64/3.077)^(1/1.265) = 1.384 -> 0.138, which is measured already: dropped; what is left
    # is the bisection of target 6's pair (26.8, 4.64): √(0.025·0.1) = 0.05
    pts = [(0.025, 26.8), (0.1, 4.64), (0.138, 6.38)]
    assert extend(pts, 4 / 1.3, down=False) == 0.138
    assert propose(pts, TARGETS, 3) == [0.05]
    # a fourth point (0.05, 9): the step up now uses slope ln(9/4.64)/ln(1/2) = −0.956, factor 1.537 -> 0.154;
    # target 6 lies in (0.05, 9)–(0.1, 4.64): √0.005 = 0.0707
    assert propose(pts + [(0.05, 9.0)], TARGETS, 3) == [0.154, 0.0707]



def test_propose_is_deterministic_and_order_free():
    pts = [(0.04, 2.0), (0.01, 10.0), (0.02, 5.0)]
    assert propose(pts, TARGETS, 2) == propose(sorted(pts), TARGETS, 2) == propose(pts[::-1], TARGETS[::-1], 2)

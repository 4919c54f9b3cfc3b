"""geomsae.study: results-table I/O, matched L0 without cell keys, the verdicts of claims, one report for every study."""

from __future__ import annotations

import math

import pytest

from geomsae.study import Claim, Study, StudySettings, tables, write_report
from geomsae.study.matched import cell_values, matched_columns, matched_seeds, matched_table
from geomsae.study.report import matched_metrics, md_table, pm, rules
from geomsae.study.verdicts import comparisons, tally, verdict_columns


def test_columns_and_csv_round_trip(tmp_path):
    assert tables.result_columns(("rho",), (4096, 1024), ["x"]) == [
        "arm", "arch", "rho", "seed", "param", "value", "hparams", "l0", "fvu", "dead_fraction", "dead_at_1024",
        "dead_at_4096", "x"]
    assert tables.result_columns((), (), [])[:5] == ["arm", "arch", "seed", "param", "value"]
    assert tables.fmt(1 / 3) == "0.3333333333" and tables.fmt(math.nan) == "nan" and tables.fmt(7) == "7"
    assert tables.as_written(1 / 3) == 0.3333333333
    cols = tables.result_columns(("rho",), (), [])
    row = lambda arm, seed, v, l0: {"arm": arm, "arch": arm, "rho": 0.5, "seed": seed, "param": "k", "value": v,
                                    "hparams": "{}", "l0": l0, "fvu": 0.1, "dead_fraction": 0.0}
    runs = {("topk", 0.5, 1, 2.0): (row("topk", 1, 2, 2.0), [3, 1]), ("aen", 0.5, 0, 0.01): (row("aen", 0, 0.01, 1 / 3), [4, 0]),
            ("topk", 0.5, 0, 4.0): (row("topk", 0, 4, 4.0), [2, 2])}
    keys = tables.write_runs(tmp_path, runs, cols, ("rho",), ["topk", "aen"])
    assert keys == [("topk", 0.5, 0, 4.0), ("topk", 0.5, 1, 2.0), ("aen", 0.5, 0, 0.01)]  # arm order, then cell, seed, value
    assert (tmp_path / "firing_hist.csv").read_text().splitlines() == [
        "arm,rho,seed,value,bin_0,bin_1", "topk,0.5,0,4,2,2", "topk,0.5,1,2,3,1", "aen,0.5,0,0.01,4,0"]
    back = tables.load_runs(tmp_path, ("rho",))
    assert set(back) == set(runs) and back[("aen", 0.5, 0, 0.01)][1] == [4, 0]
    assert back[("aen", 0.5, 0, 0.01)][0]["l0"] == tables.as_written(1 / 3)
    tables.write_runs(tmp_path, back, cols, ("rho",), ["topk", "aen"])  # rewriting what was read changes nothing
    assert tables.load_runs(tmp_path, ("rho",)) == back
    assert tables.load_runs(tmp_path / "none", ()) == {}


def _rows(arm: str, dead: tuple[float, float]) -> list[dict]:
    """Two seeds, each a pair of runs (L0 8 and 2); dead fraction at L0 4 is the mean of the pair."""
    return [dict(arm=arm, seed=s, value=v, l0=l0, dead_fraction=d, fvu=0.1)
            for s, d0 in enumerate(dead) for v, l0, d in ((1.0, 8.0, d0 - 0.01), (2.0, 2.0, d0 + 0.01))]


def test_matched_table_without_cell_keys():
    rows = _rows("aen", (0.1, 0.2)) + _rows("en", (0.5, 0.6))
    m = matched_table(rows, [4.0, 16.0], ["dead_fraction"], ["aen", "en"])
    assert [(r["arm"], r["l0_target"], r["n_seeds"]) for r in m] == [("aen", 4.0, 2), ("aen", 16.0, 0),
                                                                     ("en", 4.0, 2), ("en", 16.0, 0)]
    assert m[0]["dead_fraction_mean"] == pytest.approx(0.15) and m[0]["value_mean"] == pytest.approx(math.sqrt(2))
    assert math.isnan(m[1]["dead_fraction_mean"])
    assert matched_columns(["x"]) == ["arm", "l0_target", "n_seeds", "value_mean", "x_mean", "x_std", "n_collapsed",
                                      "n_cliff", "cliff_l0_dense", "cliff_dead_dense", "cliff_l0_sparse",
                                      "cliff_dead_sparse"]
    assert cell_values(rows, ()) == [()] and cell_values([{"rho": 0.5}, {"rho": 0.1}], ("rho",)) == [(0.1,), (0.5,)]


CLAIMS = (Claim("a", "AEN starves less", "dead_fraction", False),
          Claim("z", "EN does as well (the ablation)", "dead_fraction", False, other="en", flip=True))


def test_comparisons_claims_and_ablation():
    rows = _rows("aen", (0.1, 0.12)) + _rows("en", (0.5, 0.52)) + _rows("topk", (0.1, 0.12))
    per = matched_seeds(rows, [4.0], ["dead_fraction"], ["aen", "en", "topk"])
    comps = comparisons(per, CLAIMS)
    assert [(c["claim"], c["other"]) for c in comps] == [("a", "en"), ("a", "topk"), ("z", "en")]
    a_en, a_topk, z = comps
    # paired by seed: AEN (0.1, 0.12) vs EN (0.5, 0.52): advantage 0.4 on both seeds, a zero-width interval
    assert a_en["aen_advantage"] == pytest.approx(0.4) and a_en["ci_lo"] == pytest.approx(0.4)
    assert a_en["paired"] == 1 and a_en["n"] == 2
    assert a_en["verdict"] == "holds" and a_topk["outcome"] == "equivalent" and a_topk["verdict"] == "equivalent"
    assert z["verdict"] == "does not hold"  # the same comparison, flipped: EN starves more
    assert list(a_en) == verdict_columns()
    assert verdict_columns(("rho",))[:4] == ["claim", "metric", "rho", "l0_target"]
    assert comparisons([r for r in per if r["arm"] != "aen"], CLAIMS) == []
    assert tally(["holds", "n/a"]) == ("holds 1, does not hold 0, equivalent 0, underpowered 0 of 1 defined "
                                       "comparisons (1 n/a: target not bracketed, a cliff, or < 2 seeds)")


def _study(cell_keys: tuple[str, ...] = ()) -> Study:
    return Study(cell_keys=cell_keys, key_labels={"rho": "ρ"}, claims=CLAIMS, matched_metrics=("fvu", "dead_fraction"),
                 matched_caption="dead %", matched_cell=lambda r: pm(r["dead_fraction_mean"], r["dead_fraction_std"], 100, 1),
                 figures=("f.png",), describe=lambda cfg, rows: ["# A study", "", f"{len(rows)} SAEs."],
                 appendix=lambda cfg, rows, matched, comps, timing: ["## More", "", f"timing {timing}", ""])


def test_report_of_a_study(tmp_path):
    cfg = StudySettings(arms=("aen", "en"), l0_targets=(4.0,), eval_windows=(128,))
    rows = [dict(r, arch=r["arm"], param="lam", hparams="{}", dead_at_128=0.0) for r in _rows("aen", (0.1, 0.12))
            + _rows("en", (0.5, 0.52))]
    tables.write_csv(tmp_path / "results.csv", list(rows[0]), rows)
    paths = write_report(tmp_path, cfg, _study())
    assert tables.read_csv(paths["matched"])[0]["dead_at_128_mean"] == 0.0  # dead_at_N added after dead_fraction
    text = paths["summary"].read_text()
    for part in ("# A study", "8 SAEs.", "**Matched L0.**", "**Verdict rule.**", "For (z) the comparison is AEN vs EN "
                 "on dead fraction", "- **(a)** AEN starves less: holds in 1/1 (en 1).", "- **(z)** EN does as well "
                 "(the ablation): does not hold in 1/1 (dead_fraction 1).", "## Matched-L0 table", "| arm | L0 = 4 |",
                 "| aen | 11.0 ± 1.4 |", "## (a) AEN starves less", "Reading: holds in 1/1 (en 1).", "| other | L0 = 4 |",
                 "| en | ✓ +0.400 [+0.400, +0.400] |", "| metric | L0 = 4 |", "95 % t confidence interval",
                 "## More", "timing {}", "## Files", "`matched.csv`: arm × target", "- Figures: `f.png`."):
        assert part in text, part
    assert text.index("## Verdicts") < text.index("## Matched-L0") < text.index("## (a)") < text.index("## More")
    assert matched_metrics(_study(), (8, 2)) == ["fvu", "dead_fraction", "dead_at_2", "dead_at_8"]


def test_report_with_cell_keys_has_a_table_per_target(tmp_path):
    cfg = StudySettings(arms=("aen", "en"), l0_targets=(4.0, 6.0), eval_windows=(128,), ci_level=0.9)
    rows = [dict(r, arch=r["arm"], param="lam", hparams="{}", dead_at_128=0.0, rho=rho)
            for rho in (0.0, 0.5) for r in _rows("aen", (0.1, 0.12)) + _rows("en", (0.5, 0.52))]
    tables.write_csv(tmp_path / "results.csv", list(rows[0]), rows)
    text = write_report(tmp_path, cfg, _study(("rho",)))["summary"].read_text()
    for part in ("90 % t confidence interval", "L0 ∈ {4, 6}", "  - by ρ (✓ holds / ✗ does not hold / = equivalent / "
                 "? underpowered): ρ=0: 2✓/0✗/0=/0?; ρ=0.5: 2✓/0✗/0=/0?", "## Matched-L0 table (L0 = 4)",
                 "| arm | ρ = 0 | ρ = 0.5 |",
                 "L0 = 4:\n\n| other | ρ = 0 | ρ = 0.5 |", "L0 = 6:\n\n| other |", "`matched.csv`: arm × ρ × target"):
        assert part in text, part
    assert "\n".join(rules(_study(("rho",)), cfg, [4.0])).count("**") == 4
    assert md_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert pm(math.nan, 0.1) == "n/a" and pm(0.5, math.nan) == "0.50" and pm(0.5, 0.1, 100, 0) == "50 ± 10"

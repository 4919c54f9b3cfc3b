"""The authors' spiked table beside ours: picking the run closest to L0 16, and the cell arithmetic."""

from __future__ import annotations

import csv

import pytest

from synthetic import authors


def run(arm, rho, l0, dead, fvu, seed=0, collapsed=0, rel=-0.001, value=0.01):
    return {"arm": arm, "rho": rho, "seed": seed, "l0": l0, "dead_fraction": dead, "fvu": fvu, "collapsed": collapsed,
            "loss_rel_change": rel, "value": value}


ROWS = [run("aen", 0.9, 12.0, 0.10, 0.40), run("aen", 0.9, 17.0, 0.20, 0.30, rel=-0.05, value=0.003),
        run("aen", 0.9, 30.0, 0.0, 0.1),
        run("aen", 0.9, 16.0, 0.99, 0.99, seed=1),  # another seed: never picked
        run("topk", 0.9, 16.0, 0.975, 0.55), run("topk", 0.3, 16.0, 0.5, 0.5)]


def test_closest_picks_l0_nearest_16_of_seed_0():
    assert authors.closest(ROWS, "aen", 0.9)["l0"] == 17.0
    assert authors.closest(ROWS, "en", 0.9) is None


def test_cells_ours_and_theirs():
    cs = {(c["rho"], c["arm"]): c for c in authors.cells(ROWS)}
    assert set(cs) == {(0.9, "aen"), (0.9, "topk"), (0.3, "topk")}
    c = cs[(0.9, "aen")]
    assert c["ours"] == (20.0, 0.7, 17.0) and c["theirs"] == (44.9, .67, 18.3)
    assert abs(c["dead_diff"] - (20.0 - 44.9)) < 1e-9
    assert abs(cs[(0.9, "topk")]["dead_diff"]) < 1e-9


def test_table_flags_far_cells(tmp_path):
    text = "\n".join(authors.table(ROWS))
    assert "20.0 / 0.70 / 17.0 † ‖ 44.9 / 0.67 / 18.3" in text
    # aen at 0.9 (−24.9) and topk at 0.3 (50 − 96.4 = −46.4) differ by > 10 points; topk at 0.9 does not
    assert "more than 10 points: 2 of 3" in text and "topk at ρ 0.3 (-46.4)" in text
    # the picked aen run still lost 5 % over its last tenth: flagged in its cell and listed with its λ
    assert "| 0.9 | aen | 0.003 | 17.00 | -5.00 % |" in text
    assert "0.0 / 0.97 / 16.0 ‖" not in text and "97.5 / 0.45 / 16.0 ‖" in text  # topk at 0.9: converged, no †


def test_variants_add_rows_under_each_rho_and_only_where_they_have_cells(tmp_path):
    probe = [run("topk", 0.9, 16.0, 0.985, 0.54), run("topk", 0.3, 16.0, 0.953, 0.84)]
    text = "\n".join(authors.table(ROWS, [("b_dec 0", probe), ("empty", [run("gated", 0.9, 16.0, 0.1, 0.1)])]))
    lines = text.splitlines()
    i, j = lines.index(next(l for l in lines if l.startswith("| 0.3 |"))), lines.index("| 0.3 (b_dec 0) | – | – | – | – "
                                                                                         "| 95.3 / 0.16 / 16.0 ‖ 96.4 / 0.16 / 16.0 |")
    assert j == i + 1 and "(empty)" not in text
    assert "main run whose dead fraction differs from theirs by more than 10 points: 2 of 3" in text  # probes not counted
    with pytest.raises(ValueError, match="LABEL=FOLDER"):
        authors.parse_variant(f"b_dec 0={tmp_path}")  # no results.csv there
    (tmp_path / "results.csv").write_text("arm\n")
    assert authors.parse_variant(f"b_dec 0={tmp_path}") == ("b_dec 0", tmp_path)
    with pytest.raises(ValueError, match="LABEL=FOLDER"):
        authors.parse_variant("no-equals-sign")


def test_plot_and_write(tmp_path):
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)
    (tmp_path / "out").mkdir()
    paths = authors.write(tmp_path, tmp_path / "out")
    assert [p.name for p in paths] == [authors.TABLE, authors.FIGURE[0]]
    assert paths[1].stat().st_size > 10_000  # a drawn PNG, not an empty canvas
    with pytest.raises(ValueError, match="nothing to plot"):
        authors.plot([run("gated", 0.9, 16.0, 0.1, 0.1)], tmp_path / "x.png")


def test_cli(tmp_path, capsys):
    assert authors.main([str(tmp_path)]) == 2 and "results.csv" in capsys.readouterr().err
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)
    assert authors.main([str(tmp_path)]) == 0
    assert "ours beside theirs" in (tmp_path / "authors_table.md").read_text()
    assert (tmp_path / "authors_dead.png").exists()


def test_figures_redraws_from_committed_rows_or_skips(tmp_path, monkeypatch):
    import figures

    monkeypatch.setattr(figures.sources, "AUTHORS_DIR", tmp_path / "none")
    skipped = figures.register_builtins()
    assert "results.csv is missing" in skipped["authors"] and "authors" not in figures.REGISTRY
    data = tmp_path / "authors"
    data.mkdir()
    with open(data / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)
    monkeypatch.setattr(figures.sources, "AUTHORS_DIR", data)
    monkeypatch.setattr(figures.sources, "DATA_DIR", tmp_path)
    probe = tmp_path / figures.AUTHORS_VARIANTS[0][1]
    probe.mkdir()
    (probe / "results.csv").write_text((data / "results.csv").read_text().replace("0.975,0.55", "0.5,0.2"))
    built = figures.build(tmp_path / "fig", only=["authors"])
    assert sorted(p.name for p in built["authors"]) == sorted([authors.TABLE, authors.FIGURE[0]])
    text = (tmp_path / "fig" / authors.TABLE).read_text()
    assert "topk at ρ 0.3 (-46.4)" in text
    assert f"| 0.9 ({figures.AUTHORS_VARIANTS[0][0]}) |" in text and "50.0 / 0.80 / 16.0 ‖ 97.5" in text

"""python -m figures: the registry, the index it writes, and the compare_arms source at tiny sizes."""

from __future__ import annotations

import json

import pytest

import figures
from synthetic import compare_arms


def _fake(name: str, fail: bool = False) -> figures.Source:
    def make(out, quick):
        if fail:
            raise RuntimeError("boom")
        path = out / f"{name}.png"
        path.write_bytes(b"\x89PNG fake")
        return [path]

    return figures.Source(name, make, f"{name} figures", f"python -m {name}", f"runs/{name}", {f"{name}.png": "a plot"})


def test_build_writes_the_index_and_keeps_going_past_a_failure(tmp_path):
    reg = {"good": _fake("good"), "bad": _fake("bad", fail=True), "late": _fake("late")}
    with pytest.raises(RuntimeError, match=r"figure source\(s\) failed: \{'bad': 'RuntimeError: boom'\}"):
        figures.build(tmp_path, quick=True, registry=reg)
    assert (tmp_path / "good.png").exists() and (tmp_path / "late.png").exists()  # the others still ran
    index = (tmp_path / "README.md").read_text()
    assert "`python -m figures --quick`" in index and "[good.png](good.png)" in index
    assert "Not regenerated: RuntimeError: boom" in index and "- command: `python -m late`" in index
    built = figures.build(tmp_path, quick=False, only=["late"], registry=reg)
    assert list(built) == ["late"]
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['nope'\]"):
        figures.build(tmp_path, only=["nope"], registry=reg)


def test_builtin_sources_are_registered():
    figures.register_builtins()
    assert {"starvation", "compare_arms", "llm_eval", "proofs_check"} <= set(figures.REGISTRY)


def test_compare_arms_tiny(tmp_path, monkeypatch):
    import dataclasses

    from synthetic import starvation

    # with per-arm lengths (the standard preset's), each arm trains for its own
    monkeypatch.setitem(starvation.PRESETS, "tiny", dataclasses.replace(starvation.PRESETS["tiny"],
                                                                       arms=("relu_l1", "aen", "en", "topk"),
                                                                       arm_steps=("relu_l1=30", "topk=20")))
    cfg = compare_arms.CompareArmsConfig(starvation_preset="tiny", l0_target=2.0, n_tokens=256, out=str(tmp_path))
    out, reps = compare_arms.run(cfg)
    assert [r.name for r in reps] == ["aen", "en", "relu_l1", "topk"]
    doc = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in doc["runs"]] == ["aen", "en", "relu_l1", "topk"]
    for r in doc["runs"]:
        s = r["summary"]
        assert s["min_objective_gap_minus_certificate"] >= -1e-9  # F(z_enc) >= F(z*) up to the certificate
        assert s["exact_converged_fraction"] == 1.0
    assert doc["runs"][3]["penalty"]["calibrated"] and not doc["runs"][0]["penalty"]["calibrated"]
    assert (out / compare_arms.FIGURE[0]).stat().st_size > 10_000
    table = (out / compare_arms.TABLE).read_text()
    assert "| support Jaccard, mean |" in table and "k = the L0 target" in table


def test_quick_goes_to_its_own_folder_and_skips_the_length_ablation():
    assert figures.default_out(True) == figures.FIGURES_DIR / "quick"
    assert figures.default_out(False) == figures.FIGURES_DIR
    assert figures.starvation_preset(True) == "quick" and figures.starvation_preset(False) == "standard"
    skipped = figures.register_builtins(quick=True)
    assert "length" in skipped and "length" not in figures.REGISTRY
    figures.register_builtins(quick=False)
    assert "length" in figures.REGISTRY


def test_length_source_needs_two_committed_lengths(tmp_path, monkeypatch):
    monkeypatch.setattr(figures.sources, "DATA_DIR", tmp_path)
    (tmp_path / "length_400").mkdir()
    (tmp_path / "length_400" / "verdicts.csv").write_text("claim,verdict\n")
    (tmp_path / "length_x").mkdir()  # not a length folder
    assert figures.length_folders() == [tmp_path / "length_400"]
    with pytest.raises(FileNotFoundError, match="fewer than 2 length runs"):
        figures.sources._length(tmp_path, quick=False)


def test_set_aside_never_overwrites(tmp_path):
    run = tmp_path / "starvation_quick"
    for i in range(2):
        run.mkdir()
        (run / "results.csv").write_text(f"run {i}\n")
        assert figures.sources._set_aside(run) == tmp_path / f"starvation_quick.replaced-{i + 1}"
    assert (tmp_path / "starvation_quick.replaced-1" / "results.csv").read_text() == "run 0\n"
    assert not run.exists()


def test_compare_arms_knob_falls_back_to_the_run_nearest_the_target(tmp_path, monkeypatch):
    import dataclasses

    from synthetic import starvation

    monkeypatch.setitem(starvation.PRESETS, "tiny", dataclasses.replace(starvation.PRESETS["tiny"], out=str(tmp_path)))
    (tmp_path / "matched.csv").write_text("arm,rho,l0_target,n_seeds,value_mean\n"
                                          "relu_l1,0.9,4.0,3,0.0123\naen,0.9,4.0,0,nan\n")
    (tmp_path / "results.csv").write_text("arm,rho,seed,value,l0,collapsed\n"
                                          "aen,0.9,0,0.001,5.5,0\naen,0.9,0,0.002,3.5,0\n"  # |log| 0.318 vs 0.134
                                          "aen,0.9,0,0.003,4.0,1\naen,0.9,1,0.004,4.0,0\n")  # collapsed; other seed
    got = compare_arms.knob_values(compare_arms.CompareArmsConfig(starvation_preset="tiny", arms=("aen", "relu_l1",
                                                                                                  "en", "topk")))
    assert got["aen"][0] == 0.002 and "(L0 3.50)" in got["aen"][1]
    assert got["relu_l1"][0] == 0.0123 and got["topk"][0] == 4.0
    assert got["en"][0] == starvation.PRESETS["tiny"].lam_en  # no run of its own: the starting λ

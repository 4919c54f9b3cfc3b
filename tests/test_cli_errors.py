"""Inputs that used to end in a traceback or in a silently wrong result, one by one (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geomsae.checkpoint import save_sae
from geomsae.cli import main
from geomsae.data import open_source
from geomsae.saes import make


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("err")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    x[5] = 0  # one all-zero token
    np.save(d / "x.npy", x)
    np.save(d / "D.npy", rng.standard_normal((8, 16)))
    (d / "file").write_text("not a folder")
    (d / "dir.npy").mkdir()
    torch.manual_seed(0)
    save_sae(make("en", 8, 16), d / "sae")
    return d


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("argv", [
    ["train", "--arch", "en", "--data", "{d}/x.npy", "--d-sae", "8", "--steps", "2", "--out", "{d}/file"],
    ["compare", "{d}/sae", "--data", "{d}/x.npy", "--out", "{d}/file"],
    ["harvest", "--model", "{d}", "--out", "{d}/file"],
    ["solve", "--data", "{d}/x.npy", "--dict", "{d}/D.npy", "--out", "{d}/dir.npy"],
])
def test_an_existing_file_or_folder_as_out_is_one_error_before_any_work(d, capsys, argv):
    assert main([a.format(d=d) for a in argv]) == 2
    assert "is an existing" in _err(capsys)


def test_unknown_and_missing_devices(d, capsys):
    assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--device", "tpu9"]) == 2
    assert "is not a torch device" in _err(capsys)
    if not torch.cuda.is_available():
        assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--device", "cuda"]) == 2
        assert "CUDA is not available" in _err(capsys)


def test_eval_keeps_a_dataset_with_one_all_zero_token(d, capsys):
    assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_tokens"] == 256 and np.isfinite(res["l2_ratio"])


def test_solve_writes_the_codes_of_the_problem_it_names(d, tmp_path, capsys):
    from geomsae.solvers import solve

    assert main(["solve", "--data", str(d / "x.npy"), "--dict", str(d / "D.npy"), "--lam1", "0.1", "--lam2", "0.05",
                 "--no-progress", "--out", str(tmp_path / "codes")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'codes.npy'} (elastic net)" in out and "codes.adaptive.npy" in out
    en = solve(np.load(d / "x.npy"), np.load(d / "D.npy"), lam1=0.1, lam2=0.05, tol=1e-8).codes
    np.testing.assert_allclose(np.load(tmp_path / "codes.npy"), en, atol=1e-6)
    assert json.loads((tmp_path / "codes.json").read_text())["method"] == "elastic net"


def test_options_that_used_to_be_ignored_are_refused(d, capsys):
    assert main(["solve", "--demo", "--data", str(d / "x.npy")]) == 2
    assert "leave out --data and --dict" in _err(capsys)
    assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--data-key", "acts"]) == 2
    assert "names a tensor of a .safetensors file" in _err(capsys)


@pytest.mark.parametrize("arr,match", [(np.ones((8, 4), np.complex64), "dtype complex64"),
                                       (np.ones((8, 4), bool), "dtype bool")])
def test_complex_and_bool_activation_files_are_refused(tmp_path, arr, match):
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(ValueError, match=match):
        open_source(tmp_path / "a.npy")


@pytest.mark.parametrize("entry,match", [
    ({"n_tokens": 3}, "must be an object with a 'file' name"),
    ({"file": 5}, "must be an object with a 'file' name"),
    ({"file": "../x.npy"}, "must be a path inside the folder"),
    ({"file": "/etc/passwd"}, "must be a path inside the folder"),
    ({"file": "x.npy", "n_tokens": "3"}, "n_tokens == '3', must be a int"),
])
def test_bad_manifest_entries_are_named(d, tmp_path, entry, match):
    (tmp_path / "manifest.json").write_text(json.dumps({"d_in": 8, "dtype": "float32", "shards": [entry]}))
    with pytest.raises(ValueError, match=match):
        open_source(tmp_path)


def test_python_m_geomsae_is_the_geomsae_command():
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-m", "geomsae", "solve", "--demo", "--n-samples", "4", "--no-adaptive"],
                       capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert p.returncode == 0 and "geomsae solve: 4 problems" in p.stdout, p.stderr


@pytest.mark.parametrize("cmd", ["train", "solve", "eval", "compare", "harvest"])
def test_help_names_no_internals(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for internal in ("resume=True", "issue ", ":func:", ":mod:", "docs/method.md", "geomsae.saes."):
        assert internal not in text, (cmd, internal)


@pytest.mark.parametrize("argv", [
    ["bogus"], ["eval"], ["eval", "x", "--data", "y", "--n-tokens", "abc"], ["train"], ["train", "--arch", "foo"],
    ["train", "--arch"], ["train", "--arch", "--out", "x"], ["train", "--arch", "topk", "--k", "x"],
    ["solve", "--lam1", "abc"], ["compare"], ["harvest", "--tokens", "x"], ["export"], ["import"],
])
def test_usage_errors_are_one_line_without_the_usage_text(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    line = _err(capsys)
    assert line.startswith("geomsae") and "error:" in line and "--help" in line, line


def _experiment_entry_points():
    import figures.__main__ as figures_main
    import llm_eval.starvation as llm_starvation
    import proofs_check.__main__ as proofs_main
    import synthetic.__main__ as synthetic_main
    import synthetic.agreement as agreement
    import synthetic.authors as authors
    import synthetic.length as length
    import synthetic.starvation as starvation
    import synthetic.tune as tune
    return [(starvation.parse_config, ["--preset", "nope"]), (starvation.parse_config, ["--steps", "x"]),
            (llm_starvation.parse_config, ["--preset", "nope"]), (llm_starvation.parse_config, ["--d-sae", "x"]),
            (agreement.main, []), (tune.main, ["--bogus"]), (length.main, ["--bogus"]), (authors.main, ["--bogus"]),
            (synthetic_main.main, ["--bogus"]), (proofs_main.main, ["--bogus"]), (figures_main.main, ["--bogus"])]


def test_experiment_usage_errors_are_one_line_too(capsys):
    for fn, argv in _experiment_entry_points():
        with pytest.raises(SystemExit) as exc:
            fn(argv)
        assert exc.value.code == 2, (fn, argv)
        line = _err(capsys)
        assert line.startswith("python -m ") and "error:" in line, line


def test_eval_shows_progress_on_stderr_unless_told_not_to(d, capsys):
    assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--json"]) == 0
    cap = capsys.readouterr()
    assert "eval" in cap.err and "256/256" in cap.err, cap.err
    with_bar = json.loads(cap.out)
    assert main(["eval", str(d / "sae"), "--data", str(d / "x.npy"), "--json", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and json.loads(cap.out) == with_bar

"""What a careless user cannot lose (issue 28): one writer per run folder (a second train / train_stack on a
folder in use is refused with the holder's pid, the lock dies with its holder, a finished run leaves no lock file);
outputs never replace an existing file; a resume cannot shorten a run; Ctrl-C is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from geomsae import durable
from geomsae.cli import main
from geomsae.train import TrainConfig, train
from geomsae.train_stack import train_stack

X = np.random.default_rng(0).normal(size=(512, 8)).astype(np.float32)
SPEC = {"arch": "relu_l1", "d_sae": 16, "lam": 0.01}


def cfg(out=None, **kw):
    return TrainConfig(steps=10, batch_size=32, progress=False, out=None if out is None else str(out), **kw)


def test_a_folder_in_use_is_refused_and_free_again_after(tmp_path):
    out = tmp_path / "run"
    with durable.folder_lock(out):
        with pytest.raises(ValueError, match=r"in use by another writer \(pid \d+"):
            train(SPEC, X, cfg(out))
        with pytest.raises(ValueError, match="in use by another writer"):
            train_stack([SPEC, SPEC], X, cfg(), seeds=[0, 1], outs=[tmp_path / "other", out])
        assert not (out / "metrics.jsonl").exists() and not (tmp_path / "other").exists()
    res = train(SPEC, X, cfg(out))
    assert res.step == 10 and not (out / durable.LOCK_FILE).exists()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="d_in"):
        train({**SPEC, "d_in": 5}, X, cfg(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from geomsae import durable\n"
                               f"with durable.folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        np.save(tmp_path / "x.npy", X)
        args = ["train", "--arch", "relu_l1", "--data", str(tmp_path / "x.npy"), "--d-sae", "16", "--steps", "10",
                "--batch-size", "32", "--no-progress", "--out", str(out)]
        assert main(args) == 2  # a second writer, refused with a one-line error
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(args) == 0  # the kernel dropped the dead holder's lock
    assert (out / "cfg.json").exists() and not (out / durable.LOCK_FILE).exists()


def test_resume_refuses_a_total_length_below_the_run_step(tmp_path):
    out = tmp_path / "run"
    train(SPEC, X, cfg(out, checkpoint_every=5))
    with pytest.raises(ValueError, match=r"already at step 10.*steps >= 10"):
        train(SPEC, X, TrainConfig(steps=6, batch_size=32, progress=False, out=str(out), checkpoint_every=5),
              resume=True)
    outs = [tmp_path / "s0", tmp_path / "s1"]
    train_stack([SPEC, SPEC], X, cfg(checkpoint_every=5), seeds=[0, 1], outs=outs)
    with pytest.raises(ValueError, match=r"already at step 10"):
        train_stack([SPEC, SPEC], X, TrainConfig(steps=6, batch_size=32, progress=False, checkpoint_every=5),
                    seeds=[0, 1], outs=outs, resume=True)


def test_outputs_never_replace_an_existing_file(tmp_path, capsys):
    data = tmp_path / "acts.npy"
    np.save(data, X)
    before = data.read_bytes()
    assert main(["solve", "--demo", "--out", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err and data.read_bytes() == before
    run = tmp_path / "run"
    train(SPEC, X, cfg(run))
    assert main(["eval", str(run), "--data", str(data), "--no-progress", "--save-freqs", str(data)]) == 2
    assert "is the file this command reads" in capsys.readouterr().err and data.read_bytes() == before
    assert main(["eval", str(run), "--data", str(data), "--no-progress", "--save-freqs", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (16,)
    # --overwrite replaces an earlier output, never the input the command reads
    assert main(["eval", str(run), "--data", str(data), "--no-progress", "--save-freqs", str(tmp_path / "f.npy")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["eval", str(run), "--data", str(data), "--no-progress", "--overwrite",
                 "--save-freqs", str(tmp_path / "f.npy")]) == 0
    assert main(["eval", str(run), "--data", str(data), "--no-progress", "--overwrite", "--save-freqs", str(data)]) == 2
    assert "is the file this command reads" in capsys.readouterr().err and data.read_bytes() == before
    np.save(tmp_path / "D.npy", np.random.default_rng(1).normal(size=(8, 12)))
    solve_args = ["solve", "--data", str(data), "--dict", str(tmp_path / "D.npy"), "--no-adaptive"]
    assert main([*solve_args, "--out", str(tmp_path / "codes")]) == 0
    assert main([*solve_args, "--out", str(tmp_path / "codes")]) == 2
    assert main([*solve_args, "--out", str(tmp_path / "codes"), "--overwrite"]) == 0
    assert main([*solve_args, "--out", str(data), "--overwrite"]) == 2
    assert "is the file this command reads" in capsys.readouterr().err and data.read_bytes() == before


def test_ctrl_c_in_any_command_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import geomsae.commands.solve as solve_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(solve_cmd, "run", interrupted)
    assert main(["solve", "--demo"]) == 130
    assert capsys.readouterr().err.strip() == "geomsae solve: interrupted"


def test_a_resume_that_changes_the_config_records_it(tmp_path):
    import json

    out = tmp_path / "run"
    train(SPEC, X, cfg(out, checkpoint_every=5))
    train(SPEC, X, TrainConfig(steps=20, batch_size=32, progress=False, out=str(out), lr=1e-2), resume=True)
    doc = json.loads((out / "cfg.json").read_text())
    assert doc["train"]["lr"] == 1e-2 and doc["train"]["steps"] == 20
    (entry,) = doc["train_history"]
    assert entry["at_step"] == 10 and entry["changed"]["lr"] == [TrainConfig().lr, 1e-2]
    assert entry["changed"]["steps"] == [10, 20] and "out" not in entry["changed"]
    outs = [tmp_path / "s0", tmp_path / "s1"]
    train_stack([SPEC, SPEC], X, cfg(checkpoint_every=5), seeds=[0, 1], outs=outs)
    train_stack([SPEC, SPEC], X, TrainConfig(steps=15, batch_size=32, progress=False), seeds=[0, 1], outs=outs,
                resume=True)
    for o in outs:
        (entry,) = json.loads((o / "cfg.json").read_text())["train_history"]
        assert entry == {"at_step": 10, "changed": {"steps": [10, 15],
                                                    "checkpoint_every": [5, TrainConfig().checkpoint_every]}}


def test_an_sae_too_large_for_memory_is_refused_before_allocation(tmp_path):
    from geomsae.training.runtime import check_fits, training_bytes

    assert training_bytes(8, 16, 32) == 4 * (4 * 2 * 8 * 16 + 4 * 32 * 16)
    check_fits(8, 16, 32, "cpu", available=training_bytes(8, 16, 32))  # exactly enough: accepted
    with pytest.raises(ValueError, match=r"needs at least .* GB, and .* GB are free on cpu"):
        check_fits(8, 16, 32, "cpu", available=training_bytes(8, 16, 32) - 1)
    with pytest.raises(ValueError, match="lower d_sae or batch_size"):
        train({**SPEC, "d_sae": 10**12}, X, cfg(tmp_path / "huge"))
    assert not (tmp_path / "huge").exists()


def test_export_refuses_nan_weights_and_writes_ordinary_file_modes(tmp_path):
    import os
    import stat

    import torch

    from geomsae.interop import ExportConfig, export_sae

    run = tmp_path / "run"
    res = train(SPEC, X, cfg(run))
    export_sae(res.sae, tmp_path / "ok", ExportConfig(format="saelens"))
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "ok").iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes
    with torch.no_grad():
        res.sae.W_dec[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        export_sae(res.sae, tmp_path / "bad", ExportConfig(format="saelens"))
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_a_full_disk_leaves_no_partial_file_and_names_the_path(tmp_path, monkeypatch, capsys):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "codes.npy"
    with pytest.raises(OSError) as e:
        durable.save_npy(target, np.ones(3))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary
    assert main(["solve", "--demo", "--out", str(target)]) == 2
    assert f"No space left on device: {str(target)!r}" in capsys.readouterr().err
    assert not any(p.name.startswith(durable.TMP_PREFIX) for p in tmp_path.iterdir())


def test_data_errors_say_what_is_wrong(tmp_path):
    from geomsae.data import open_source

    loop = tmp_path / "loop.npy"
    loop.symlink_to(loop)
    with pytest.raises(FileNotFoundError, match="symlink to nothing"):
        open_source(str(loop))
    np.save(tmp_path / "be.npy", X.astype(">f4"))
    with pytest.raises(ValueError, match="big-endian float32"):
        open_source(str(tmp_path / "be.npy"))


def test_a_stale_lock_file_is_taken_over_and_said_so(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / durable.LOCK_FILE).write_text("999999\n")  # left by a writer that was killed
    assert train(SPEC, X, cfg(out)).step == 10
    assert "locked by pid 999999, no longer running: taking it over" in capsys.readouterr().err
    assert not (out / durable.LOCK_FILE).exists()


def test_the_experiment_runner_and_harvest_take_the_lock_too(tmp_path):
    import dataclasses

    from geomsae.activations import HarvestConfig, harvest
    from synthetic import starvation
    from synthetic.config import PRESETS

    small = dataclasses.replace(PRESETS["tiny"], out=str(tmp_path / "study"))
    with durable.folder_lock(tmp_path / "study"), pytest.raises(ValueError, match="in use by another writer"):
        starvation.run(small)
    with durable.folder_lock(tmp_path / "acts"), pytest.raises(ValueError, match="in use by another writer"):
        harvest(HarvestConfig(), tmp_path / "acts")

"""Nothing lost, nothing half-written read as complete: checkpoint durability, resume fallbacks,
SIGTERM, torn logs, refusals to overwrite, and files that are the same for the same run."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from geomsae import checkpoint as ckpt
from geomsae import durable
from geomsae.saes import make
from geomsae.train import TrainConfig, train
from geomsae.training.signals import TrainingStopped

SPEC = {"arch": "en", "d_sae": 16, "lam1": 0.02, "lam2": 1e-3}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: one thread (conftest)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1024, 8)).astype(np.float32)


def cfg(**kw) -> TrainConfig:
    base = dict(steps=20, batch_size=32, lr=5e-3, lr_warmup_steps=2, log_every=2, progress=False, checkpoint_every=5)
    return TrainConfig(**{**base, **kw})


def state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigterm_is_handled_like_ctrl_c(X, tmp_path):
    def term_at_7(step, rec):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped) as info:
        train(SPEC, X, cfg(out=str(tmp_path)), callback=term_at_7)
    assert info.value.signum == signal.SIGTERM
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 7]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is taken down again


def test_the_cli_restores_the_sigterm_handler(tmp_path):
    from geomsae.training.signals import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(X, tmp_path):
    whole = train(SPEC, X, cfg(out=str(tmp_path / "whole")))

    def stop_at_12(step, rec):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SPEC, X, cfg(out=str(tmp_path / "cut"), keep_checkpoints=3), callback=stop_at_12)
    newest = ckpt.latest_checkpoint(tmp_path / "cut")
    assert newest.name == "step_00000012"
    trainer = newest / ckpt.TRAINER_FILE
    trainer.write_bytes(trainer.read_bytes()[:100])  # torn by a power cut
    ran = []
    with pytest.warns(UserWarning, match="step_00000012.*unreadable.*trying the one before"):
        res = train(SPEC, X, cfg(out=str(tmp_path / "cut")), resume=True, callback=lambda s, r: ran.append(s))
    assert ran == list(range(11, 21))  # resumed from step 10
    assert state_equal(whole.sae, res.sae)
    assert (tmp_path / "cut" / "checkpoints" / ".corrupt-step_00000012").is_dir()


def test_partial_checkpoint_folders_are_removed(X, tmp_path):
    junk = tmp_path / "checkpoints" / ".tmp-step_00000005-99999"
    junk.mkdir(parents=True)
    (junk / ckpt.CFG_FILE).write_text("{")
    train(SPEC, X, cfg(out=str(tmp_path), steps=6))
    assert not junk.exists()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_checkpoint_files_and_folders_are_flushed_to_disk(X, tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    sae = make("en", 8, 16)
    path = ckpt.write_checkpoint(tmp_path, 3, sae, torch.optim.Adam(sae.parameters()), {"step": 3, "tokens": 9,
                                 "input_scale": 1.0}, {})
    for f in (ckpt.CFG_FILE, ckpt.WEIGHTS_FILE, ckpt.TRAINER_FILE):
        assert str(path / f) in synced or any(s.endswith(f) for s in synced), f
    tmp_dir = next(i for i, s in enumerate(synced) if os.path.basename(s).startswith(".tmp-step_00000003"))
    assert str(path.parent) in synced[tmp_dir + 1:]  # the folder before its rename, its parent after


def test_torn_last_line_of_the_log_is_dropped_with_a_warning(X, tmp_path):
    def stop_at_9(step, rec):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SPEC, X, cfg(out=str(tmp_path)), callback=stop_at_9)
    log = tmp_path / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 10, "tok')  # killed while writing the record
    with pytest.warns(UserWarning, match="metrics.jsonl.*torn last line"):
        train(SPEC, X, cfg(out=str(tmp_path)), resume=True)
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines()]
    assert steps == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]


def test_a_bad_line_inside_the_log_names_the_file_and_the_fix(X, tmp_path):
    def stop_at_9(step, rec):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(SPEC, X, cfg(out=str(tmp_path)), callback=stop_at_9)
    log = tmp_path / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl' line 2 is not a JSON record.*delete that line"):
        train(SPEC, X, cfg(out=str(tmp_path)), resume=True)


def test_an_empty_log_left_by_an_early_kill_does_not_block_a_fresh_start(X, tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    res = train(SPEC, X, cfg(out=str(tmp_path), steps=4))
    assert res.step == 4


def test_an_existing_sae_folder_is_never_overwritten(X, tmp_path):
    ckpt.save_sae(make("en", 8, 16), tmp_path)
    before = (tmp_path / ckpt.WEIGHTS_FILE).read_bytes()
    with pytest.raises(ValueError, match=r"already holds an SAE \(cfg.json, sae.safetensors\)"):
        train(SPEC, X, cfg(out=str(tmp_path), steps=4))
    with pytest.raises(ValueError, match="holds an SAE but no checkpoint to continue"):
        train(SPEC, X, cfg(out=str(tmp_path), steps=4), resume=True)
    assert (tmp_path / ckpt.WEIGHTS_FILE).read_bytes() == before
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        train(SPEC, X, cfg(out=str(f), steps=4))


@pytest.mark.timeout(30)
def test_batch_larger_than_the_data_is_refused_instead_of_hanging(X):
    with pytest.raises(ValueError, match=r"batch_size == 2048, must be <= the 1024 tokens"):
        train(SPEC, X, cfg(batch_size=2048, steps=2))


def test_resume_on_other_activations_says_so(X, tmp_path):
    train(SPEC, X, cfg(out=str(tmp_path), steps=4))
    with pytest.warns(UserWarning, match="resuming .* on other activations.*input scale"):
        train(SPEC, X[::-1].copy() * 3, cfg(out=str(tmp_path), steps=6), resume=True)


def test_same_tensors_give_the_same_bytes_and_sha256(tmp_path):
    torch.manual_seed(0)
    sae = make("aen", 8, 16)
    shas = set()
    for i in range(8):  # safetensors alone writes its metadata in a random order
        ckpt.save_sae(sae, tmp_path / str(i))
        shas.add(json.loads((tmp_path / str(i) / ckpt.CFG_FILE).read_text())["sae_sha256"])
    assert len(shas) == 1
    assert ckpt.load_sae(tmp_path / "0").state_dict().keys() == sae.state_dict().keys()


def test_a_huge_d_sae_in_cfg_json_fails_on_the_shapes_without_allocating(tmp_path):
    ckpt.save_sae(make("en", 8, 16), tmp_path)
    doc = json.loads((tmp_path / ckpt.CFG_FILE).read_text())
    doc["cfg"]["d_sae"] = 10**12  # 32 TB of float32 were it allocated
    (tmp_path / ckpt.CFG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"tensor 'W_dec' has shape \(8, 16\).*expects \(8, 1000000000000\)"):
        ckpt.load_sae(tmp_path)


def test_loading_without_a_recorded_sha256_warns(tmp_path):
    ckpt.save_sae(make("en", 8, 16), tmp_path)
    doc = json.loads((tmp_path / ckpt.CFG_FILE).read_text())
    del doc["sae_sha256"]
    (tmp_path / ckpt.CFG_FILE).write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="records no sae_sha256"):
        ckpt.load_sae(tmp_path)


def test_a_trainer_state_without_its_counters_is_refused(tmp_path):
    sae = make("en", 8, 16)
    ckpt.save_trainer_state(tmp_path / "t.safetensors", sae, torch.optim.Adam(sae.parameters()), {"step": 1}, {})
    with pytest.raises(ValueError, match=r"lacks \['counter/tokens', 'counter/input_scale'\]"):
        ckpt.read_trainer_state(tmp_path / "t.safetensors")


def test_durable_writes_leave_no_temporary_file_and_use_the_ordinary_mode(tmp_path):
    durable.write_json(tmp_path / "a.json", {"x": 1})
    np.save(tmp_path / "ref.npy", np.zeros(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "ref.npy"]
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "ref.npy").stat().st_mode & 0o777

"""Fault injection with real processes: `python -m geomsae train` and `harvest` killed with
SIGKILL or stopped with SIGTERM at seeded random moments (checkpoints every step, so many kills
land inside a checkpoint write), then resumed until done; the result must be the bytes of an
uninterrupted run, and a folder is never read as complete before it is."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GEOMSAE_MALLOC_TUNING": "0"}
FAULTS: list[str] = []  # what was injected, printed at the end of each test (the counts for the report)


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geomsae", "train", "--arch", "relu_l1", "--data", str(data), "--d-sae", "32",
            "--steps", "60", "--batch-size", "64", "--lr", "5e-3", "--seed", "0", "--out", str(out),
            "--lam", "0.05", "--no-progress", "--log-every", "5", "--checkpoint-every", "1", "--keep-checkpoints", "2", *extra]


def _stamp(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Wait until ``path`` is created or rewritten (the process has begun its work)."""
    t0, before = time.monotonic(), _stamp(path)
    while _stamp(path) == before:
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.02)
    return True


def _interrupt(cmd: list[str], watch: Path, sig: int, delay: float) -> int:
    """Start ``cmd``, wait until ``watch`` exists (work has begun), sleep ``delay``, send ``sig``;
    returns the exit status (the process may have finished first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    if _wait_for(watch, proc):
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
            FAULTS.append(f"{signal.Signals(sig).name} after {delay:.2f} s")
    err = proc.communicate(timeout=300)[1].decode()
    assert "Traceback" not in err or sig == signal.SIGKILL, err
    return proc.returncode


def _resume_and_check(data: Path, out: Path, ref: Path, resume: bool = True) -> None:
    """Resume the interrupted training run ``out`` (unless ``resume`` is False) and check it ends as the
    uninterrupted run ``ref``: the same SAE bytes, every step logged once up to 60, no partial checkpoint."""
    if resume:
        done = subprocess.run(_train_cmd(data, out, "--resume"), env=ENV, capture_output=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr.decode()
    assert (out / "sae.safetensors").read_bytes() == (ref / "sae.safetensors").read_bytes()
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60
    assert not list((out / "checkpoints").glob(".tmp-*"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    np.save(d / "x.npy", rng.standard_normal((4096, 16)).astype(np.float32))
    return d / "x.npy"


@pytest.mark.timeout(900)
def test_killed_and_terminated_training_resumes_to_the_same_bytes(data, tmp_path):
    FAULTS.clear()
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(data, ref), env=ENV, check=True, capture_output=True, cwd=ROOT)
    rng = random.Random(0)
    for run, sigs in enumerate([(signal.SIGKILL, signal.SIGTERM)]):
        out = tmp_path / f"cut{run}"
        first = True
        for sig in sigs:
            if (out / "sae.safetensors").exists():
                break  # the last kill came after the final SAE was written: the run is complete
            rc = _interrupt(_train_cmd(data, out, *([] if first else ["--resume"])), out / "metrics.jsonl", sig,
                            rng.uniform(0.0, 1.0))
            first = False
            assert rc in (0, -signal.SIGKILL, 128 + signal.SIGTERM), rc
            # a final SAE only once every step ran (a kill may still land after it was written, before the exit)
            if (out / "sae.safetensors").exists():
                steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
                assert steps[-1] == 60
        _resume_and_check(data, out, ref, resume=not (out / "sae.safetensors").exists())
    print(f"\ntraining faults injected and resumed: {len(FAULTS)} ({'; '.join(FAULTS)})")
    assert len(FAULTS) >= 1


@pytest.mark.timeout(900)
def test_killed_harvest_resumes_to_the_same_cache(tmp_path):
    from tests.tiny_lm import save_tiny, write_text

    FAULTS.clear()
    model = save_tiny(tmp_path / "model", "llama")
    corpus = write_text(tmp_path / "text", copies=12)

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "geomsae", "harvest", "--model", str(model), "--layer", "1", "--text",
                str(corpus), "--tokens", "20000", "--ctx-len", "32", "--batch-contexts", "2", "--shard-tokens", "200",
                "--dtype", "float32", "--outlier-factor", "1.3", "--no-progress", "--out", str(out)]

    ref = tmp_path / "ref"
    subprocess.run(cmd(ref), env=ENV, check=True, capture_output=True, cwd=ROOT)
    rng = random.Random(1)
    out = tmp_path / "cut"
    for sig in (signal.SIGKILL,):
        _interrupt(cmd(out), out / "progress.json", sig, rng.uniform(0.0, 0.2))
        assert not (out / "manifest.json").exists() or not (out / "progress.json").exists()
    done = subprocess.run(cmd(out), env=ENV, capture_output=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    for f in sorted(p.name for p in ref.iterdir() if p.name != "timing.json"):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    print(f"\nharvest faults injected and resumed: {len(FAULTS)} ({'; '.join(FAULTS)})")
    assert FAULTS


def _rows_without_time(path: Path) -> list[list[str]]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    drop = {rows[0].index(c) for c in ("train_time_s", "train_tokens_per_s") if c in rows[0]}
    return [[v for i, v in enumerate(r) if i not in drop] for r in rows]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_experiment_runner_killed_after_a_stack_resumes_to_the_same_results(tmp_path, sig):
    """`python -m synthetic.starvation --preset tiny` (one worker) killed once its first stack is on disk,
    then rerun: it trains only what is missing and ends with the uninterrupted run's results."""
    base = [sys.executable, "-m", "synthetic.starvation", "--preset", "tiny", "--workers", "1"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert subprocess.run([*base, "--out", str(full)], env=ENV, cwd=ROOT, capture_output=True).returncode == 0
    code = _interrupt([*base, "--out", str(cut)], cut / "results.csv", sig, delay=random.Random(int(sig)).uniform(0, 0.05))
    killed_mid_run = code != 0 and not (cut / "summary.md").exists()  # summary.md is written last, when all is done
    if killed_mid_run:
        partial = _rows_without_time(cut / "results.csv")
        assert 1 < len(partial) < len(_rows_without_time(full / "results.csv"))  # finished stacks only
    done = subprocess.run([*base, "--out", str(cut)], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if killed_mid_run:
        assert "resuming" in done.stderr
    assert _rows_without_time(cut / "results.csv") == _rows_without_time(full / "results.csv")
    assert (cut / "matched.csv").read_bytes() == (full / "matched.csv").read_bytes()


# Runs `geomsae train` with one step of the checkpoint writer wrapped so that the process
# SIGKILLs itself at a chosen point of the n-th checkpoint write: a deterministic kill inside
# the write, at the moments a random signal is least likely to hit.
_KILL_INSIDE_WRITE = r'''
import os, signal, sys
import geomsae.checkpoint as ck
import geomsae.durable as du
point, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = [0]

def nth_call():
    calls[0] += 1
    return calls[0] == nth

def hit():
    if nth_call():
        os.kill(os.getpid(), signal.SIGKILL)

if point == "torn_weights":  # half of the checkpoint's sae.safetensors on disk, then the kill
    write_bytes = du.write_bytes
    def torn(path, data):
        mine = os.path.basename(os.path.dirname(path)).startswith(".tmp-step_") and str(path).endswith("/sae.safetensors")
        if mine and nth_call():
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return write_bytes(path, data)
    du.write_bytes = torn
elif point == "before_trainer_state":  # the SAE files of the checkpoint written, its trainer state not
    save_trainer_state = ck.save_trainer_state
    def before(*a, **k):
        hit()
        return save_trainer_state(*a, **k)
    ck.save_trainer_state = before
else:  # before_rename / after_rename: the folder complete and flushed, around its os.replace
    replace = os.replace
    def around(src, dst, *a, **k):
        step_dir = os.path.basename(os.fspath(src)).startswith(".tmp-step_")
        if step_dir and point == "before_rename":
            hit()
        replace(src, dst, *a, **k)
        if step_dir and point == "after_rename":
            hit()
    os.replace = around
from geomsae.cli import main
sys.exit(main(argv))
'''


@pytest.mark.timeout(600)
@pytest.mark.parametrize("point", ["torn_weights", "before_trainer_state", "before_rename", "after_rename"])
def test_a_kill_inside_a_checkpoint_write_resumes_to_the_same_bytes(data, tmp_path, point):
    """A SIGKILL at each stage of the 7th checkpoint write (torn weights file, no trainer state yet,
    complete but not renamed, renamed but the folder not flushed): the partial checkpoint is
    never read as complete, and the resumed run ends with the uninterrupted run's bytes."""
    from geomsae.checkpoint import list_checkpoints, load_sae, read_trainer_state

    ref, out = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_train_cmd(data, ref), env=ENV, check=True, capture_output=True, cwd=ROOT)
    killed = subprocess.run([sys.executable, "-c", _KILL_INSIDE_WRITE, point, "7", *_train_cmd(data, out)[3:]],
                            env=ENV, capture_output=True, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert not (out / "sae.safetensors").exists()
    steps = [s for s, _ in list_checkpoints(out)]
    assert steps and steps[-1] == (7 if point == "after_rename" else 6), steps  # the partial step 7 is not listed
    partial = list((out / "checkpoints").glob(".tmp-*"))
    assert bool(partial) == (point != "after_rename"), partial
    for _, ckpt in list_checkpoints(out):
        load_sae(ckpt)  # every listed checkpoint reads back whole (load_sae checks the weights' sha256)
        read_trainer_state(ckpt / "trainer_state.safetensors")
    _resume_and_check(data, out, ref)

"""Data-parallel training (geomsae.training.distributed): torchrun with 2 gloo ranks equals one process
fed the same global batches, for relu_l1, topk and aen; an interrupted and resumed 2-rank run
equals an uninterrupted one; a 2-rank checkpoint resumes in one process.

The slow reference is :func:`geomsae.train.train` in one process on an iterator of the global
batches concat(rank 0's batch t, rank 1's batch t). Tolerance: the ranks' gradients are summed by
the all-reduce in another order than one process sums the tokens, so weights agree to float32
round-off amplified by a few Adam steps: atol 1e-6 on weights of O(0.1–1) (measured: at most
2.4e-7, on W_dec of aen).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geomsae.checkpoint import load_sae
from geomsae.data import open_source
from geomsae.train import TrainConfig, train
from geomsae.training import distributed

WORLD, B, STEPS, D_IN, D_SAE = 2, 64, 6, 16, 48
ATOL = 1e-6
SPECS = {
    "relu_l1": {"arch": "relu_l1", "d_sae": D_SAE},
    "topk": {"arch": "topk", "d_sae": D_SAE, "k": 4},
    "aen": {"arch": "aen", "d_sae": D_SAE, "warmup_steps": 1, "ramp_steps": 2},
}
TRAIN = dict(steps=STEPS, batch_size=B, lr=3e-3, lr_warmup_steps=2, input_scale_tokens=2 * B,
             log_every=2, checkpoint_every=0, progress=False, seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batches(data: Path, cfg: TrainConfig, world: int) -> list[np.ndarray]:
    """The global batches of a ``world``-rank run: concat over ranks of each rank's batch t."""
    src = open_source(str(data))
    streams = []
    for r in range(world):
        ctx = distributed.Context(r, world)
        part = distributed.shard_source(src, ctx)
        streams.append(part.batches(ctx.local_batch(cfg.batch_size), seed=cfg.stream_seed, epochs=None,
                                    drop_last=True))
    return [np.concatenate([next(s).numpy() for s in streams]) for _ in range(cfg.steps)]


@pytest.fixture(scope="module")
def dist_runs(tmp_path_factory):
    """One torchrun launch (2 ranks, gloo) training every run of the module."""
    tmp = tmp_path_factory.mktemp("dist")
    x = np.random.default_rng(0).standard_normal((1000, D_IN)).astype(np.float32)
    x[:, :4] *= 3.0
    data = tmp / "acts.npy"
    np.save(data, x)
    runs = [{"name": a, "spec": s, "train": {**TRAIN, "out": str(tmp / a)}} for a, s in SPECS.items()]
    runs.append({"name": "aen_resumed", "spec": SPECS["aen"], "stop_at": 3,
                 "train": {**TRAIN, "out": str(tmp / "aen_resumed")}})
    job = tmp / "job.json"
    job.write_text(json.dumps({"data": str(data), "runs": runs}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
           f"--master_port={_free_port()}", str(Path(__file__).with_name("distributed_worker.py")), str(job)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tmp, data


def _weights(sae) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in sae.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(SPECS))
def test_two_ranks_equal_one_process(dist_runs, arch):
    tmp, data = dist_runs
    cfg = TrainConfig(**TRAIN)
    ref = train(SPECS[arch], global_batches(data, cfg, WORLD), cfg).sae
    got = load_sae(tmp / arch)
    want = _weights(ref)
    for k, v in _weights(got).items():
        if v.is_floating_point():
            torch.testing.assert_close(v, want[k], atol=ATOL, rtol=0, msg=lambda m: f"{arch} {k}: {m}")
        else:
            assert torch.equal(v, want[k]), f"{arch} {k}"
    # the metrics log of rank 0 holds the global batch's numbers: one record per logged step
    steps = [json.loads(ln)["step"] for ln in (tmp / arch / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 4, 6]
    assert json.loads((tmp / arch / "metrics.jsonl").read_text().splitlines()[-1])["tokens"] == STEPS * B


def test_resumed_two_rank_run_equals_uninterrupted(dist_runs):
    tmp, _ = dist_runs
    a, b = _weights(load_sae(tmp / "aen")), _weights(load_sae(tmp / "aen_resumed"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_rank_checkpoint_resumes_in_one_process(dist_runs, tmp_path):
    """Across world sizes: the 2-rank run's final checkpoint continues in one process."""
    tmp, data = dist_runs
    import shutil

    shutil.copytree(tmp / "aen", tmp_path / "run")
    cfg = TrainConfig(**{**TRAIN, "steps": STEPS + 2, "out": str(tmp_path / "run")})
    res = train(SPECS["aen"], str(data), cfg, resume=True)
    assert res.step == STEPS + 2 and res.tokens == (STEPS + 2) * B


def test_batch_must_split_over_ranks():
    with pytest.raises(ValueError, match="batch_size == 65, must be a multiple of the world size 2"):
        distributed.Context(0, 2).local_batch(65)


def test_one_shot_stream_refused():
    src = open_source(iter([np.zeros((4, 3), np.float32)]))
    with pytest.raises(ValueError, match="needs a finite source"):
        distributed.shard_source(src, distributed.Context(0, 2))

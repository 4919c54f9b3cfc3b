"""Worker of tests/test_distributed.py, run under ``torchrun --nproc_per_node=2`` (gloo).

    python -m torch.distributed.run --nproc_per_node=2 tests/distributed_worker.py JOB.json

JOB.json: {"data": path.npy, "runs": [{"name", "spec", "train", "stop_at"?}, ...]}. Each run
trains ``spec`` with TrainConfig(**train) into train["out"]; with ``stop_at`` the run is
interrupted after that step (as Ctrl-C would: rank 0 saves a checkpoint) and resumed.
"""

import json
import sys

import torch.distributed as dist

from geomsae.train import TrainConfig, train


def stopper(at):
    def callback(step, rec):
        if step == at:
            raise KeyboardInterrupt
    return callback


def main() -> None:
    job = json.loads(open(sys.argv[1]).read())
    dist.init_process_group("gloo")
    for run in job["runs"]:
        cfg = TrainConfig(**run["train"])
        if run.get("stop_at"):
            try:
                train(run["spec"], job["data"], cfg, callback=stopper(run["stop_at"]))
            except KeyboardInterrupt:
                pass
            dist.barrier()  # rank 0's checkpoint is on disk before any rank looks for it
            train(run["spec"], job["data"], cfg, resume=True)
        else:
            train(run["spec"], job["data"], cfg)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""The training layer behind :func:`geomsae.train.train` and :func:`geomsae.train_stack.train_stack`.

- :mod:`~geomsae.training.config` — :class:`TrainConfig`, the fields of a run (Python API and CLI);
- :mod:`~geomsae.training.loop` — :class:`Trainer`, the one training loop (batch → step → log →
  checkpoint or evaluate → progress) both entry points hand their run to;
- :mod:`~geomsae.training.step` — one optimizer step and what it is built from (the SAE, Adam);
- :mod:`~geomsae.training.stream` — the batch stream at a step, input statistics, b_dec's start;
- :mod:`~geomsae.training.log` — metrics.jsonl records and the loss trend of a run's last tenth;
- :mod:`~geomsae.training.resume` — what a resumed run may change, checked against its checkpoint;
- :mod:`~geomsae.training.signals` — Ctrl-C and SIGTERM: finish the step, checkpoint, stop;
- :mod:`~geomsae.training.runtime` — device, autocast, deterministic algorithms (evaluation uses them too);
- :mod:`~geomsae.training.l0_control` — holding a penalty SAE at a target L0 (docs/method.md §7.8);
- :mod:`~geomsae.training.distributed` — data-parallel training of one SAE under torchrun.
"""

__all__ = ["config", "distributed", "l0_control", "log", "loop", "resume", "runtime", "signals", "step", "stream"]

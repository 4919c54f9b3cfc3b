"""What a resumed run may change and what it may not (:data:`RESUME_FIXED`), checked against its checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geomsae.saes import BaseSAE
from geomsae.training.config import TrainConfig

RESUME_FIXED = ("batch_size", "seed", "data_seed", "input_norm", "input_scale_tokens", "betas", "adam_eps", "dtype",
                "target_l0", "l0_control_rate", "l0_control_beta", "l0_control_freeze")


_FIXED_SINCE = {"target_l0", "l0_control_rate", "l0_control_beta", "l0_control_freeze"}
"""Fields newer than some checkpoints: one a checkpoint lacks reads as its default (what that run used)."""


def check_resume(saved: dict[str, Any], cfg: TrainConfig, spec: Any, doc: dict[str, Any], where: Path,
                 controlled: str | None = None) -> None:
    """Raise ValueError where resuming the checkpoint at ``where`` (its cfg.json ``doc``, its training config
    ``saved``) with ``cfg`` and the SAE ``spec`` would change the run; ``controlled``: the SAE field the L0
    controller moves (geomsae/training/l0_control.py), which may differ from the spec's."""
    defaults = TrainConfig()
    for name in RESUME_FIXED:
        want = getattr(cfg, name)
        got = saved.get(name, getattr(defaults, name) if name in _FIXED_SINCE else None)
        if isinstance(want, tuple):
            got = tuple(got) if got is not None else got
        if got != want:
            raise ValueError(f"cannot resume from {str(where)!r}: {name} == {want!r}, the checkpoint has {got!r}")

    if isinstance(spec, BaseSAE):
        arch, fields = spec.arch, dataclasses.asdict(spec.cfg)
    elif isinstance(spec, Mapping):
        arch, fields = spec.get("arch"), {k: v for k, v in spec.items() if k != "arch"}
    else:
        arch, fields = None, dataclasses.asdict(spec)
    if arch is not None and arch != doc["arch"]:
        raise ValueError(f"cannot resume from {str(where)!r}: arch == {arch!r}, the checkpoint has {doc['arch']!r}")
    for k, v in fields.items():
        if k in doc["cfg"] and k not in ("input_norm", controlled) \
                and doc["cfg"][k] != (list(v) if isinstance(v, tuple) else v):
            raise ValueError(f"cannot resume from {str(where)!r}: SAE {k} == {v!r}, "
                             f"the checkpoint has {doc['cfg'][k]!r}")


NOT_HISTORY = ("out", "progress", "device")
"""Training fields whose change on resume is not part of a run's history (where it is written, the bar, the device)."""


def train_history(doc: dict[str, Any], cfg: TrainConfig, at: int) -> list[dict[str, Any]]:
    """The run's ``train_history`` (cfg.json) after resuming the checkpoint ``doc`` at step ``at`` with ``cfg``: the
    earlier entries, plus one ``{"at_step", "changed": {field: [before, after]}}`` when a field changed (lr, steps,
    the schedule ...), so the saved config never hides what the run was trained with before."""
    history = list(doc.get("train_history", []))
    before = doc.get("train", {})
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    changed = {k: [before.get(k), v] for k, v in now.items() if k in before and before[k] != v and k not in NOT_HISTORY}
    if changed:
        history.append({"at_step": int(at), "changed": changed})
    return history

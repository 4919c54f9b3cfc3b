"""Stacked training: N SAEs of one architecture and shape trained at once, in one process.

    results = train_stack([{"arch": "aen", "d_sae": 256, "lam1": l} for l in (1e-3, 3e-3, 1e-2)],
                          x, TrainConfig(steps=4000, batch_size=128), seeds=[0, 1, 2],
                          outs=["runs/a", "runs/b", "runs/c"])

The members are built exactly as :func:`geomsae.train.train` builds one SAE (under
``torch.manual_seed(seeds[i])``), then stacked (:func:`geomsae.saes.stacking.stack_saes`):
every encoder and decoder product of a step is one batched matrix product over the members,
and Adam updates the stacked tensors, which for an element-wise optimizer is each member's own
update. The step is that of :mod:`geomsae.train`, applied per member where it is not
element-wise: the loss is one per member (their sum is backpropagated, and no parameter is
shared), the gradient norm is clipped per member, the dead-latent and adaptive-weight state
is per member, and resampling draws from each member's own RNG state.

Data: ``source`` is one source read once per step and shared by every member (then the data
order is seeded by ``cfg.data_seed``, or ``cfg.seed`` when that is None), or a list with one
source per member (member i's order seeded by ``cfg.data_seed`` or ``seeds[i]``). Member i then
equals a solo ``train(specs[i], source_i, cfg_i)`` with ``cfg_i = replace(cfg, seed=seeds[i],
data_seed=<its data seed>, out=outs[i])`` up to float rounding (the batched products may sum
in another order: ~1e-6 relative per step; ``tests/test_train_stack.py`` states the tolerance).

Each member gets its own run folder, identical in form to a solo run's (cfg.json +
sae.safetensors with the dataset scale folded in, metrics.jsonl, checkpoints/ holding its
own Adam moments and RNG state), so a member can be resumed, evaluated or compared alone. A
stacked run resumes from the newest step at which every member has a checkpoint.

Evaluation during training (``eval_steps``, ``on_eval``): after each step listed, every member is
checkpointed (so a run stopped during the evaluation restarts at that step) and ``on_eval(step,
tokens, saes)`` gets copies of the members with the dataset scale folded in (taking raw
activations, like the saved SAEs), in eval mode, under a forked RNG (evaluating draws nothing
from training's RNG). A run resumed at a listed step calls ``on_eval`` there again: the caller
skips what it has already recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from geomsae import checkpoint as ckpt
from geomsae import durable
from geomsae.data import open_source
from geomsae.saes.stacking import stack_saes
from geomsae.training import l0_control
from geomsae.training.config import TrainConfig
from geomsae.training.log import METRICS_FILE
from geomsae.training.loop import Hooks, Run, Trainer, TrainResult, clip_members_  # noqa: F401 (clip_members_: this module's API)
from geomsae.training.resume import check_resume, train_history
from geomsae.training.runtime import deterministic, resolve_device
from geomsae.training.step import build_sae, make_adam
from geomsae.training.stream import open_stream, source_fingerprint


def _check_args(specs: Sequence[Any], source: Any, cfg: TrainConfig, seeds: Sequence[int] | None,
                outs: Sequence[Any] | None) -> tuple[list[int], list[Path | None], bool]:
    n = len(specs)
    if n == 0:
        raise ValueError("specs is empty: train_stack needs at least one SAE spec")
    if cfg.out is not None:
        raise ValueError(f"cfg.out == {cfg.out!r}: a stack writes one folder per member; pass outs=[...]")
    seeds = [cfg.seed] * n if seeds is None else list(seeds)
    if len(seeds) != n or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds == {seeds!r}, must be {n} integers >= 0 (one per spec)")
    paths = [None] * n if outs is None else [None if o is None else Path(o) for o in outs]
    if len(paths) != n:
        raise ValueError(f"outs has {len(paths)} entries, must have {n} (one per spec)")
    named = [p for p in paths if p is not None]
    if len(set(named)) != len(named):
        raise ValueError(f"outs == {[str(p) for p in named]!r} names a folder twice")
    per_member = isinstance(source, (list, tuple))
    if per_member and len(source) != n:
        raise ValueError(f"source is a list of {len(source)}, must hold one source per spec ({n})")
    return seeds, paths, per_member


def _resume_step(paths: list[Path | None]) -> int | None:
    """The newest step at which every member folder has a checkpoint; None when none has one."""
    found = [{s for s, _ in ckpt.list_checkpoints(p)} if p is not None else set() for p in paths]
    if not any(found):
        return None
    common = set.intersection(*found)
    if not common:
        raise ValueError("cannot resume the stack: its members have no checkpoint step in common "
                         f"({[sorted(f) for f in found]}); remove the folders or resume the members alone")
    return max(common)


def train_stack(specs: Sequence[Any], source: Any, cfg: TrainConfig, *, seeds: Sequence[int] | None = None,
                outs: Sequence[str | os.PathLike | None] | None = None, resume: bool = False,
                callback: Callable[[int, list[dict[str, Any]] | None], None] | None = None,
                eval_steps: Sequence[int] = (),
                on_eval: Callable[[int, int, list[Any]], None] | None = None,
                target_l0s: Sequence[float | None] | None = None) -> list[TrainResult]:
    """Train ``len(specs)`` SAEs of one architecture and shape in one process (module docstring).

    :param specs: one ``{"arch": ..., "d_sae": ..., **fields}`` mapping (or SAEConfig) per member;
        members may differ in any numeric or boolean field, not in arch, d_in, d_sae or input_norm.
    :param source: one activation source shared by every member, or a list with one source per member.
    :param seeds: init seed of each member (default ``cfg.seed`` for all).
    :param outs: run folder of each member (default: none kept); ``cfg.out`` must be None.
    :param resume: continue every member from the newest step they all have a checkpoint of.
    :param callback: called after every step as ``callback(step, records_or_None)``.
    :param eval_steps: steps (in [1, cfg.steps]) after which ``on_eval`` is called (module docstring).
    :param on_eval: ``on_eval(step, tokens, saes)`` with the members as folded copies.
    :param target_l0s: each member's ``target_l0`` (None: that member's λ1 stays fixed); default ``cfg.target_l0``
        for every member (geomsae/training/l0_control.py).
    :returns: one :class:`~geomsae.train.TrainResult` per member, in the order of ``specs``.
    """
    seeds, paths, per_member = _check_args(specs, source, cfg, seeds, outs)
    bad = [s for s in eval_steps if not (isinstance(s, int) and 1 <= s <= cfg.steps)]
    if bad:
        raise ValueError(f"eval_steps holds {bad!r}, each must be an integer in [1, steps={cfg.steps}]")
    if eval_steps and on_eval is None:
        raise ValueError("eval_steps is given but on_eval is None: pass the function that evaluates")
    n = len(specs)
    srcs = [open_source(s) for s in source] if per_member else [open_source(source)] * n
    if len({s.d_in for s in srcs}) != 1:
        raise ValueError(f"the member sources have different widths {[s.d_in for s in srcs]}")
    data_seeds = [cfg.data_seed if cfg.data_seed is not None else (seeds[i] if per_member else cfg.seed)
                  for i in range(n)]
    if target_l0s is not None and len(target_l0s) != n:
        raise ValueError(f"target_l0s has {len(target_l0s)} entries, the stack has {n} members")
    targets = list(target_l0s) if target_l0s is not None else [cfg.target_l0] * n
    cfgs = [dataclasses.replace(cfg, seed=seeds[i], data_seed=data_seeds[i], target_l0=targets[i],
                                out=None if paths[i] is None else str(paths[i])) for i in range(n)]
    device = resolve_device(cfg.device)
    if resume and any(p is None for p in paths):
        raise ValueError("resume=True needs a folder for every member (outs)")
    with contextlib.ExitStack() as locks:  # one writer per member folder (geomsae.durable.folder_lock)
        for p in paths:
            if p is not None:
                locks.enter_context(durable.folder_lock(p, "train_stack"))
        for p in paths:
            if p is not None and not resume and (ckpt.list_checkpoints(p) or (p / METRICS_FILE).exists()):
                raise ValueError(f"out folder {str(p)!r} already holds a run: pass resume=True or choose another folder")
        at = _resume_step(paths) if resume else None
        if at is not None and cfg.steps < at:
            raise ValueError(f"steps == {cfg.steps}, but the stack is already at step {at}: steps is the runs' total "
                             f"length, so give steps >= {at}")

        with deterministic(cfg.deterministic):
            step, tokens, scales, adam, rngs, saved, docs = 0, 0, [1.0] * n, None, [], [], []
            if at is not None:
                members, adam = [], []
                for i, p in enumerate(paths):
                    where = p / ckpt.CHECKPOINTS / f"step_{at:08d}"
                    doc = ckpt.read_cfg(where)
                    docs.append(doc)
                    check_resume(doc.get("train", {}), cfgs[i], specs[i], doc, where,
                                 controlled=l0_control.PENALTY_FIELD.get(doc["arch"]) if targets[i] else None)
                    members.append(ckpt.load_sae(where, fold=False))
                    a, counters, _, rng = ckpt.read_trainer_state(where / ckpt.TRAINER_FILE)
                    saved.append(counters)
                    adam.append(a)
                    rngs.append(rng["torch"])
                    step, tokens, scales[i] = int(counters["step"]), int(counters["tokens"]), float(counters["input_scale"])
            else:
                members = []
                for i in range(n):
                    members.append(build_sae(specs[i], srcs[i].d_in, cfgs[i]))
                    torch.manual_seed(seeds[i])  # the member's own randomness (e.g. resampling) starts here
                    rngs.append(torch.get_rng_state())
            per_token = members[0].cfg.input_norm == "per_token"
            need_stats = at is None and (cfg.input_norm == "dataset" or cfg.b_dec_init == "mean")
            streams = []
            for i in range(n if per_member else 1):
                it, msq, mean = open_stream(srcs[i], cfgs[i], step, stats=need_stats, per_token=per_token)
                streams.append(it)
                for j in (range(n) if not per_member else [i]):
                    if need_stats and cfg.input_norm == "dataset":
                        scales[j] = math.sqrt(srcs[i].d_in / msq)
                    if need_stats and cfg.b_dec_init == "mean":
                        with torch.no_grad():
                            members[j].b_dec.copy_((mean * (1.0 if per_token else scales[j])).to(members[j].b_dec))
            stack = stack_saes(members).to(device).set_decoder_impl(cfg.decoder)
            stack.rng_states = rngs
            ctl = l0_control.make_controller(stack, cfg, targets)
            if saved:
                l0_control.resume(stack, ctl, saved)
            params = [p for p in stack.parameters() if p.requires_grad]
            opt = make_adam(params, cfg)
            if adam is not None:
                _load_adam(opt, stack, adam)
            metas = [{"train": dataclasses.asdict(cfgs[i]), "input_scale": scales[i], "source": repr(srcs[i]),
                      "source_fingerprint": source_fingerprint(srcs[i])} for i in range(n)]
            for i, doc in enumerate(docs):
                metas[i]["train_history"] = train_history(doc, cfgs[i], at)
            run = Run(stack, opt, params, streams, cfgs, paths, scales, metas, device, step, tokens, stacked=True,
                      per_member=per_member, ctl=ctl)
            return Trainer(run, Hooks(callback, frozenset(eval_steps), on_eval)).fit()


def _load_adam(opt: torch.optim.Optimizer, stack: Any, adam: list[ckpt.AdamState]) -> None:
    """Put the members' Adam states (from their checkpoints) into the stacked optimizer."""
    names = {id(p): name for name, p in stack.named_parameters()}
    state = opt.state_dict()
    for idx, p in enumerate(opt.param_groups[0]["params"]):
        name = names[id(p)]
        if name not in adam[0]:
            continue
        entry = {"step": adam[0][name]["step"]}
        for k in ("exp_avg", "exp_avg_sq"):
            entry[k] = torch.stack([a[name][k].reshape(p.shape[1:]) for a in adam])
        state["state"][idx] = entry
    opt.load_state_dict(state)

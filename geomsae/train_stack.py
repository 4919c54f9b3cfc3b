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

import copy
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from geomsae import checkpoint as ckpt
from geomsae import l0_control
from geomsae.data import open_source
from geomsae.saes import fold_input_scale
from geomsae.saes.stacking import stack_saes, unstack_sae
from geomsae.train import NonFiniteLossError, TrainResult
from geomsae.train_config import TrainConfig, lr_at
from geomsae.train_utils import (
    METRICS_FILE,
    LossWindow,
    TrainingStopped,
    autocast,
    build_sae,
    check_resume,
    deterministic,
    make_adam,
    open_stream,
    resolve_device,
    sae_update,
    sigint_deferred,
    source_fingerprint,
    step_record,
    truncate_log,
)


def clip_members_(params: list[Tensor], max_norm: float) -> Tensor:
    """Clip each member's gradient norm (over all its parameters) to ``max_norm`` in place, as
    ``torch.nn.utils.clip_grad_norm_`` does for one SAE; returns the (S,) norms before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    n = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in grads])  # (P, S)
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(n, *([1] * (g.ndim - 1))))
    return total


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
        for every member (geomsae/l0_control.py).
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
    for p in paths:
        if p is not None and not resume and (ckpt.list_checkpoints(p) or (p / METRICS_FILE).exists()):
            raise ValueError(f"out folder {str(p)!r} already holds a run: pass resume=True or choose another folder")
    at = _resume_step(paths) if resume else None

    with deterministic(cfg.deterministic):
        step, tokens, scales, adam, rngs, saved = 0, 0, [1.0] * n, None, [], []
        if at is not None:
            members, adam = [], []
            for i, p in enumerate(paths):
                where = p / ckpt.CHECKPOINTS / f"step_{at:08d}"
                doc = ckpt.read_cfg(where)
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
        return _run(stack, opt, params, streams, per_member, cfgs, device, paths, step, tokens, scales, metas,
                    callback, set(eval_steps), on_eval, ctl)


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


def _run(stack: Any, opt: torch.optim.Optimizer, params: list[Tensor], streams: list, per_member: bool,
         cfgs: list[TrainConfig], device: torch.device, paths: list[Path | None], step: int, tokens: int,
         scales: list[float], metas: list[dict[str, Any]],
         callback: Callable[[int, list[dict[str, Any]] | None], None] | None, eval_steps: set[int] = frozenset(),
         on_eval: Callable[[int, int, list[Any]], None] | None = None,
         ctl: l0_control.L0Controller | None = None) -> list[TrainResult]:
    from tqdm.auto import tqdm

    cfg, n = cfgs[0], len(cfgs)
    same_scale = len(set(scales)) == 1
    scale_t = torch.tensor(scales, dtype=torch.float32, device=device).view(n, 1, 1)
    for p in paths:
        if p is not None:
            p.mkdir(parents=True, exist_ok=True)
            truncate_log(p / METRICS_FILE, step)

    def save(at: int) -> None:
        if all(p is None for p in paths):
            return
        members = unstack_sae(stack)
        state = ckpt.adam_state(stack, opt)
        for i, p in enumerate(paths):
            if p is None:
                continue
            adam_i = {name: {k: (v if k == "step" else v[i]) for k, v in st.items()} for name, st in state.items()}
            counters = {"step": at, "tokens": tokens, "input_scale": scales[i], "data_position": at,
                        **(ctl.counters(i) if ctl is not None and ctl.targets[i] is not None else {})}
            ckpt.write_checkpoint(p, at, members[i], adam_i, counters, metas[i], pending_input_scale=scales[i],
                                  keep=cfg.keep_checkpoints, rng=stack.rng_states[i])

    def evaluate(at: int) -> None:
        save(at)
        saes = unstack_sae(stack)
        for i, sae in enumerate(saes):
            if scales[i] != 1.0:
                fold_input_scale(sae, scales[i])
            sae.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            on_eval(at, tokens, saes)

    clip = (lambda: clip_members_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else None
    forward = torch.compile(stack) if cfg.compile else stack  # parameters shared with the stack
    check_each_step = device.type == "cpu"
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, unit="step", dynamic_ncols=True,
               desc=f"{n} x {stack.arch}")
    logs = [open(p / METRICS_FILE, "a") if p is not None else None for p in paths]
    recs: list[dict[str, Any]] = [{} for _ in range(n)]
    window = LossWindow(cfg.steps)
    t0, tokens0, mid_step = time.perf_counter(), tokens, False
    try:
        with sigint_deferred(any(p is not None for p in paths)) as stop:
            if step in eval_steps:  # resumed at an evaluation step: its evaluation may not have finished
                evaluate(step)
            while step < cfg.steps:
                if stop.requested:
                    raise TrainingStopped(stop.signum)
                try:
                    xs = [next(it) for it in streams]
                except StopIteration:
                    warnings.warn(f"the activation stream ran out after {step} steps (of {cfg.steps})", stacklevel=2)
                    break
                x = (torch.stack(xs) if per_member else xs[0]).to(device, non_blocking=True)
                if same_scale and scales[0] != 1.0:
                    x = x * scales[0]
                elif not same_scale:
                    x = x * scale_t
                lr = lr_at(step, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                with autocast(cfg.autocast, device):
                    out_ = forward(x)
                    lo = stack.loss(x, out_)
                if (check_each_step or (step + 1) % cfg.log_every == 0) and not bool(torch.isfinite(lo.loss).all()):
                    _diverged(step, lo, lr, save, check_each_step)
                window.add(step, lo.loss)
                mid_step = True
                sae_update(stack, opt, lo.loss.sum(), clip, x, out_)
                step += 1
                tokens += x.shape[-2]
                l0_control.control_step(stack, ctl, step, x, out_.codes)
                mid_step = False
                logged = None
                if step % cfg.log_every == 0 or step == cfg.steps or step == 1:
                    recs = logged = [{**step_record(step, tokens, lr, x, out_, lo, stack, cfg, t0, tokens0, member=i),
                                      **l0_control.log_fields(ctl, i)} for i in range(n)]
                    if step == cfg.steps:  # the last records carry the convergence columns
                        for i, r in enumerate(recs):
                            r.update(window.summary(i))
                    bar.set_postfix(loss=f"{sum(r['loss'] for r in recs) / n:.4g}",
                                    l0=f"{sum(r['l0'] for r in recs) / n:.1f}", refresh=False)
                    for log, rec in zip(logs, recs):
                        if log is not None:
                            log.write(json.dumps(rec) + "\n")
                            log.flush()
                if step in eval_steps:
                    evaluate(step)
                elif cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save(step)
                bar.update(1)
                out_ = lo = None
                if callback is not None:
                    callback(step, logged)
    except KeyboardInterrupt:
        if not mid_step and any(p is not None for p in paths):
            save(step)
            print(f"geomsae train_stack: stopped at step {step}; checkpoints written (resume to continue)",
                  file=sys.stderr)
        raise
    finally:
        bar.close()
        for log in logs:
            if log is not None:
                log.close()
    save(step)
    results = []
    for i, final in enumerate(unstack_sae(stack)):
        if scales[i] != 1.0:
            fold_input_scale(final, scales[i])
        if paths[i] is not None:
            ckpt.save_sae(final, paths[i], extra={**metas[i], "step": step, "tokens": tokens})
        results.append(TrainResult(final, step, tokens, scales[i], copy.copy(recs[i]), paths[i]))
    return results


def _diverged(step: int, lo: Any, lr: float, save: Callable[[int], None], state_is_good: bool) -> None:
    """Raise NonFiniteLossError naming the members whose loss is not finite (after saving
    every member's state before this step, when that state is known to be good)."""
    bad = [i for i, v in enumerate(lo.loss.detach().tolist()) if not math.isfinite(v)]
    if state_is_good:
        save(step)
    where = "; the state before this step is saved in each member's folder" if state_is_good else ""
    raise NonFiniteLossError(f"the training loss of stack member(s) {bad} is not finite at step {step + 1} "
                             f"(lr {lr:.3g}){where}. Lower the learning rate or check the activations.")

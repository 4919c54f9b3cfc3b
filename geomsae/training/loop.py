"""The training loop: one for a single SAE and for a stack of them (issue 26).

:func:`geomsae.train.train` (one SAE, optionally data-parallel) and
:func:`geomsae.train_stack.train_stack` (N SAEs of one shape in batched products) build their model,
optimizer, streams and run folders, then hand them to :class:`Trainer`, whose :meth:`Trainer.fit`
reads as its named steps::

    while step < steps:
        x = self._batch()                 # next batch of every stream, scaled; None when a stream ran out
        glob, local = self._step(x)       # forward, divergence check, backward, Adam, L0 controller
        self._log(glob)                   # metrics.jsonl records (log_every, the first and the last step)
        self._checkpoint_or_evaluate(local)   # eval_steps, else checkpoint_every, else refresh the bar

A single SAE is the one-member case (``stacked=False``): its loss is a scalar, its gradient is clipped
whole, its checkpoint holds the global RNG state; a stack's loss is one per member (their sum is
backpropagated), its gradient is clipped per member and each member's checkpoint holds that member's
RNG state. The step itself (:func:`geomsae.training.step.sae_update`) is the same code for both.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geomsae import checkpoint as ckpt
from geomsae.saes import fold_input_scale
from geomsae.saes.stacking import unstack_sae
from geomsae.training import distributed, l0_control
from geomsae.training.config import TrainConfig, lr_at
from geomsae.training.log import (
    METRICS_FILE,
    LossWindow,
    read_log,
    step_record,
    truncate_log,
)
from geomsae.training.runtime import autocast
from geomsae.training.signals import TrainingStopped, sigint_deferred
from geomsae.training.step import sae_update

BAR_REFRESH_S = 2.0
"""The progress bar's loss, FVU, L0 and dead fraction are refreshed at least this often (seconds)."""


class TrainResult(NamedTuple):
    """What :func:`geomsae.train.train` returns, and :func:`geomsae.train_stack.train_stack` per member."""

    sae: Any
    """The trained SAE with the dataset scale folded in: it takes raw activations."""
    step: int
    """Optimizer steps taken in total (across resumes)."""
    tokens: int
    """Training tokens seen in total."""
    input_scale: float
    """The dataset scale s trained with (1.0 unless input_norm='dataset')."""
    metrics: dict[str, float]
    """The last metrics record (that of the final step)."""
    out: Path | None
    """Folder holding cfg.json + sae.safetensors, metrics.jsonl and checkpoints/, or None."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


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


def bar_fields(rec: dict[str, Any]) -> dict[str, str]:
    """The progress bar's postfix of one metrics record."""
    return {"loss": f"{rec['loss']:.4g}", "fvu": f"{rec['fvu']:.3f}", "l0": f"{rec['l0']:.1f}",
            "dead": f"{rec['dead_fraction']:.3f}"}


def _bar_postfix(recs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One record's fields; a stack's mean loss and L0 over its members."""
    if len(recs) == 1:
        return bar_fields(recs[0])
    n = len(recs)
    return {"loss": f"{sum(r['loss'] for r in recs) / n:.4g}", "l0": f"{sum(r['l0'] for r in recs) / n:.1f}"}


@dataclasses.dataclass
class Run:
    """Everything a run trains with, built by :func:`geomsae.train.train` or :func:`geomsae.train_stack.train_stack`."""

    model: Any
    """The SAE, or the stacked SAE (:func:`geomsae.saes.stacking.stack_saes`), in training space."""
    opt: torch.optim.Optimizer
    """Adam over ``params`` (one optimizer for every member)."""
    params: list[Tensor]
    """The trainable parameters of ``model``."""
    streams: list[Iterator[Tensor]]
    """One batch iterator, or one per member when ``per_member``."""
    cfgs: list[TrainConfig]
    """The training config of each member (they differ only in seed, data seed, target L0 and out)."""
    paths: list[Path | None]
    """Each member's run folder (None: nothing written for it)."""
    scales: list[float]
    """Each member's dataset input scale s (1.0 unless input_norm='dataset')."""
    metas: list[dict[str, Any]]
    """Each member's checkpoint and cfg.json metadata (train config, input scale, source)."""
    device: torch.device
    step: int = 0
    """Optimizer steps already taken (a resumed run starts there)."""
    tokens: int = 0
    """Training tokens already seen."""
    stacked: bool = False
    """True for a stack (losses per member), False for one SAE."""
    per_member: bool = False
    """True when each member reads its own stream (x is (S, B, d_in))."""
    ctl: l0_control.L0Controller | None = None
    """The target-L0 controller (None without a target)."""
    ctx: distributed.Context | None = None
    """The data-parallel context of one SAE's run (None in one process)."""


@dataclasses.dataclass
class Hooks:
    """What the caller sees of a run while it trains."""

    callback: Callable[[int, Any], None] | None = None
    """Called after every step as ``callback(step, records_or_None)`` (one SAE: its record; a stack: the list)."""
    eval_steps: frozenset[int] = frozenset()
    """Steps after which ``on_eval`` is called (every member checkpointed first)."""
    on_eval: Callable[[int, int, list[Any]], None] | None = None
    """``on_eval(step, tokens, saes)`` with the members as folded copies in eval mode, under a forked RNG."""


class Trainer:
    """The training loop of :mod:`geomsae.train` and :mod:`geomsae.train_stack` (module docstring)."""

    def __init__(self, run: Run, hooks: Hooks | None = None) -> None:
        self.r = run
        self.hooks = hooks or Hooks()
        self.cfg = run.cfgs[0]
        self.n = len(run.cfgs)
        self.main = run.ctx is None or run.ctx.is_main
        if not self.main:
            run.paths = [None] * self.n  # rank 0 alone writes
        self.writes = any(p is not None for p in run.paths)
        same = len(set(run.scales)) == 1
        self.scale: float | Tensor = run.scales[0] if same else torch.tensor(
            run.scales, dtype=torch.float32, device=run.device).view(self.n, 1, 1)
        if self.cfg.grad_clip > 0:
            self.clip = ((lambda: clip_members_(run.params, self.cfg.grad_clip)) if run.stacked else
                         (lambda: torch.nn.utils.clip_grad_norm_(run.params, self.cfg.grad_clip)))
        else:
            self.clip = None
        self.forward = torch.compile(run.model) if self.cfg.compile else run.model  # parameters shared with model
        self.check_each_step = run.device.type == "cpu"  # a host sync costs nothing on CPU
        self.window = LossWindow(self.cfg.steps)
        self.recs: list[dict[str, Any]] = [{} for _ in range(self.n)]
        self.logged: list[dict[str, Any]] | None = None
        self.lr = 0.0
        self.mid_step = False

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[TrainResult]:
        """Train to ``cfg.steps``; one :class:`TrainResult` per member."""
        from tqdm.auto import tqdm

        r, cfg = self.r, self.cfg
        for p in r.paths:
            if p is not None:
                p.mkdir(parents=True, exist_ok=True)
                truncate_log(p / METRICS_FILE, r.step)
        self.bar = tqdm(total=cfg.steps, initial=r.step, disable=not (cfg.progress and self.main), unit="step",
                        dynamic_ncols=True, desc=f"{self.n} x {r.model.arch}" if r.stacked else None)
        self.logs = [open(p / METRICS_FILE, "a") if p is not None else None  # noqa: SIM115 (closed in fit)
                     for p in r.paths]
        self.t0, self.tokens0 = time.perf_counter(), r.tokens
        self.shown = self.t0
        try:
            with sigint_deferred(self.writes) as stop:
                if r.step in self.hooks.eval_steps:  # resumed at an evaluation step: it may not have finished
                    self._evaluate()
                while r.step < cfg.steps:
                    if stop.requested:
                        raise TrainingStopped(stop.signum)
                    x = self._batch()
                    if x is None:
                        break
                    glob, local = self._step(x)
                    self._log(glob)
                    self._checkpoint_or_evaluate(local)
                    self.bar.update(1)
                    x = glob = local = None  # free the (B, d_sae) tensors before the next forward
                    if self.hooks.callback is not None:
                        self.hooks.callback(r.step, self._callback_arg())
        except KeyboardInterrupt:
            self._stopped()
            raise
        finally:
            self.bar.close()
            for log in self.logs:
                if log is not None:
                    log.close()
        self._save(r.step)
        self._recover_records()
        return self._finish()

    def _recover_records(self) -> None:
        """A run resumed after its last step (killed between its final checkpoint and the caller's use of the
        result) trained nothing now: its last record is the one metrics.jsonl holds for this step."""
        for i, p in enumerate(self.r.paths):
            if self.recs[i] or p is None:
                continue
            logged = read_log(p / METRICS_FILE)
            if logged and logged[-1].get("step") == self.r.step:
                self.recs[i] = logged[-1]

    # ------------------------------------------------------------------ the named steps
    def _batch(self) -> Tensor | None:
        """The next batch, on the device and scaled: (B, d_in), or (S, B, d_in) per member; None at the end."""
        r = self.r
        try:
            xs = [next(it) for it in r.streams]
        except StopIteration:
            warnings.warn(f"the activation stream ran out after {r.step} steps (of {self.cfg.steps})", stacklevel=3)
            return None
        x = (torch.stack(xs) if r.per_member else xs[0]).to(r.device, non_blocking=True)
        if isinstance(self.scale, Tensor) or self.scale != 1.0:
            x = x * self.scale
        return x

    def _step(self, x: Tensor) -> tuple[tuple[Tensor, Any, Any], tuple[Tensor, Any, Any]]:
        """One optimizer step on ``x``. Returns (x, out, lo) of the global batch and of this rank's batch (the
        same in one process; in a data-parallel run the global ones are the same on every rank)."""
        r, cfg = self.r, self.cfg
        self.lr = lr_at(r.step, cfg)
        for g in r.opt.param_groups:
            g["lr"] = self.lr
        with autocast(cfg.autocast, r.device):
            out = self.forward(x)
            lo = r.model.loss(x, out)
        lo_g, x_g, out_g = lo, x, out
        if r.ctx is not None:
            lo_g, (x_g, out_g) = r.ctx.mean_loss(lo), r.ctx.gather(x, out)
        if ((self.check_each_step or (r.step + 1) % cfg.log_every == 0)
                and not bool(torch.isfinite(lo_g.loss).all())):
            self._diverged(lo_g)
        self.window.add(r.step, lo_g.loss)
        self.mid_step = True
        sae_update(r.model, r.opt, lo.loss.sum() if r.stacked else lo.loss, self.clip, x_g, out_g)
        r.step += 1
        r.tokens += x_g.shape[-2]
        l0_control.control_step(r.model, r.ctl, r.step, x_g, out_g.codes)
        self.mid_step = False
        return (x_g, out_g, lo_g), (x, out, lo)

    def _records(self, x: Tensor, out: Any, lo: Any) -> list[dict[str, Any]]:
        r = self.r
        member = (lambda i: i) if r.stacked else (lambda i: None)
        return [{**step_record(r.step, r.tokens, self.lr, x, out, lo, r.model, self.cfg, self.t0, self.tokens0,
                               member=member(i)), **l0_control.log_fields(r.ctl, i)} for i in range(self.n)]

    def _log(self, glob: tuple[Tensor, Any, Any]) -> None:
        """Write every member's record at the first, every ``log_every``-th and the last step."""
        step, cfg = self.r.step, self.cfg
        self.logged = None
        if not (step % cfg.log_every == 0 or step == cfg.steps or step == 1):
            return
        self.recs = self.logged = self._records(*glob)
        if step == cfg.steps:  # the last records carry the convergence columns
            for i, rec in enumerate(self.recs):
                rec.update(self.window.summary(i))
        self.bar.set_postfix(_bar_postfix(self.recs), refresh=False)
        self.shown = time.perf_counter()
        for log, rec in zip(self.logs, self.recs):
            if log is not None:
                log.write(json.dumps(rec) + "\n")
                log.flush()

    def _checkpoint_or_evaluate(self, local: tuple[Tensor, Any, Any]) -> None:
        """Evaluate at an eval step, else checkpoint every ``checkpoint_every`` steps, else refresh the bar
        every few seconds between log records (from this rank's batch)."""
        step, cfg = self.r.step, self.cfg
        if step in self.hooks.eval_steps:
            self._evaluate()
        elif cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            self._save(step)
        elif cfg.progress and time.perf_counter() - self.shown >= BAR_REFRESH_S:
            self.bar.set_postfix(_bar_postfix(self._records(*local)), refresh=False)
            self.shown = time.perf_counter()

    # ------------------------------------------------------------------ saving, evaluating, finishing
    def _save(self, at: int) -> Path | None:
        """Checkpoint every member with a folder at step ``at``; the (single SAE's) checkpoint folder or None."""
        r = self.r
        if not self.writes:
            return None
        if not r.stacked:
            counters = {"step": at, "tokens": r.tokens, "input_scale": r.scales[0], "data_position": at,
                        **(r.ctl.counters(0) if r.ctl is not None else {})}
            return ckpt.write_checkpoint(r.paths[0], at, r.model, r.opt, counters, r.metas[0],
                                         pending_input_scale=r.scales[0], keep=self.cfg.keep_checkpoints)
        members = unstack_sae(r.model)
        state = ckpt.adam_state(r.model, r.opt)
        for i, p in enumerate(r.paths):
            if p is None:
                continue
            adam_i = {name: {k: (v if k == "step" else v[i]) for k, v in st.items()} for name, st in state.items()}
            counters = {"step": at, "tokens": r.tokens, "input_scale": r.scales[i], "data_position": at,
                        **(r.ctl.counters(i) if r.ctl is not None and r.ctl.targets[i] is not None else {})}
            ckpt.write_checkpoint(p, at, members[i], adam_i, counters, r.metas[i], pending_input_scale=r.scales[i],
                                  keep=self.cfg.keep_checkpoints, rng=r.model.rng_states[i])
        return None

    def _folded(self) -> list[Any]:
        """Copies of the members with their dataset scale folded in (they take raw activations)."""
        r = self.r
        saes = unstack_sae(r.model) if r.stacked else [copy.deepcopy(r.model)]
        for sae, s in zip(saes, r.scales):
            if s != 1.0:
                fold_input_scale(sae, s)
        return saes

    def _evaluate(self) -> None:
        """Checkpoint every member, then ``on_eval`` on folded copies in eval mode (training's RNG untouched)."""
        self._save(self.r.step)
        saes = self._folded()
        for sae in saes:
            sae.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            self.hooks.on_eval(self.r.step, self.r.tokens, saes)

    def _callback_arg(self) -> Any:
        if self.r.stacked or self.logged is None:
            return self.logged
        return self.logged[0]

    def _finish(self) -> list[TrainResult]:
        """Write each member's cfg.json + sae.safetensors (scale folded in) and return the results."""
        r = self.r
        results = []
        for i, final in enumerate(self._folded()):
            if r.paths[i] is not None:
                ckpt.save_sae(final, r.paths[i], extra={**r.metas[i], "step": r.step, "tokens": r.tokens})
            results.append(TrainResult(final, r.step, r.tokens, r.scales[i], copy.copy(self.recs[i]), r.paths[i]))
        return results

    def _stopped(self) -> None:
        """Ctrl-C / SIGTERM: checkpoint the state after the last whole step and say how to continue."""
        if not self.writes or self.mid_step:
            return
        path = self._save(self.r.step)
        if self.r.stacked:
            print(f"geomsae train_stack: stopped at step {self.r.step}; checkpoints written (resume to continue)",
                  file=sys.stderr)
        else:
            print(f"geomsae train: stopped at step {self.r.step}; checkpoint {str(path)!r} (run again with --resume "
                  "to continue)", file=sys.stderr)

    def _diverged(self, lo: Any) -> None:
        """Raise NonFiniteLossError naming the step (and, for a stack, the members whose loss is not finite),
        after saving the state before this step when it is known to be good (the loss is checked every step)."""
        r, step = self.r, self.r.step
        good = self.check_each_step
        where = self._save(step) if good else None
        if r.stacked:
            bad = [i for i, v in enumerate(lo.loss.detach().tolist()) if not math.isfinite(v)]
            saved = "; the state before this step is saved in each member's folder" if good and self.writes else ""
            raise NonFiniteLossError(f"the training loss of stack member(s) {bad} is not finite at step {step + 1} "
                                     f"(lr {self.lr:.3g}){saved}. Lower the learning rate or check the activations.")
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in lo.parts.items())
        msg = f"the training loss is {float(lo.loss.detach())} at step {step + 1} (lr {self.lr:.3g}; {parts})"
        if where is not None:
            msg += f"; the state before this step is saved in {str(where)!r}"
        elif r.paths[0] is not None:  # checked only every log_every steps: the weights may already be bad
            msg = msg.replace(f"at step {step + 1}", f"at step {step + 1} (first seen there)")
            msg += f"; the last checkpoint is {str(ckpt.latest_checkpoint(r.paths[0]))!r}"
        raise NonFiniteLossError(msg + ". Lower the learning rate or check the activations.")

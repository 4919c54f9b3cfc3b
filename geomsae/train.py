"""One trainer for every SAE architecture.

Each step, in this order::

    x   = next batch (· s when input_norm="dataset")
    out = sae(x);  L = sae.loss(x, out)           # stop, after saving, if L is not finite
    L.backward();  sae.remove_parallel_grads_();  clip_grad_norm_(grad_clip)
    adam.step(lr(t));  sae.normalize_decoder_()
    mask = sae.on_step_end(x, out)                 # under no_grad; resets Adam moments of mask

lr(t): linear warm-up over ``lr_warmup_steps``, then constant until ``decay_start·steps``,
then linear or cosine decay to 0 at ``steps``.

Input normalisation: "per_token" makes the SAE rescale each token to norm √d_in itself
(``cfg.input_norm``); "dataset" trains on s·x with s = √(d_in / E‖x‖²) estimated on the first
``input_scale_tokens`` tokens of the seeded stream, and folds s into the saved weights
(:func:`geomsae.saes.fold_input_scale`) so the saved SAE takes raw activations.

Runs are repeatable: ``torch.manual_seed(seed)`` before the SAE's init, data order a pure
function of (seed, step) (see :mod:`geomsae.data`), deterministic algorithms switched on
during training. Checkpoints (``out/checkpoints/step_N/``, see :mod:`geomsae.checkpoint`)
hold the SAE in training space, the Adam moments, the RNG state and the step, so a run
resumed with ``resume=True`` ends with the same weights, bit for bit on CPU, as one never
stopped. Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and raises
:class:`TrainingStopped` (a KeyboardInterrupt); a non-finite loss saves the last good state and
raises :class:`NonFiniteLossError`. A resume falls back to the previous checkpoint when the
newest cannot be read (it is renamed ``.corrupt-step_*``), and drops a torn last line of
metrics.jsonl with a warning.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geomsae import checkpoint as ckpt
from geomsae import distributed, l0_control
from geomsae.data import ActivationSource, open_source
from geomsae.train_config import TrainConfig, lr_at  # noqa: F401 (part of this module's API)
from geomsae.train_utils import (  # noqa: F401 (METRICS_FILE, input_stats: part of this module's API)
    METRICS_FILE,
    LossWindow,
    TrainingStopped,
    autocast,
    build_sae,
    chain,
    check_resume,
    deterministic,
    input_stats,
    log_holds_records,
    make_adam,
    open_stream,
    reset_moments,
    sae_update,
    resolve_device,
    sigint_deferred,
    source_fingerprint,
    step_record,
    truncate_log,
)



class TrainResult(NamedTuple):
    """What :func:`train` returns."""

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


BAR_REFRESH_S = 2.0
"""The progress bar's loss, FVU, L0 and dead fraction are refreshed at least this often (seconds)."""


def bar_fields(rec: dict[str, Any]) -> dict[str, str]:
    """The progress bar's postfix of a metrics record."""
    return {"loss": f"{rec['loss']:.4g}", "fvu": f"{rec['fvu']:.3f}", "l0": f"{rec['l0']:.1f}",
            "dead": f"{rec['dead_fraction']:.3f}"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


def train(sae: Any, source: Any, cfg: TrainConfig | None = None, *, resume: bool = False,
          callback: Callable[[int, dict[str, Any] | None], None] | None = None) -> TrainResult:
    """Train an SAE on activations; see the module docstring for the step and the guarantees.

    :param sae: an SAE (``geomsae.saes.make(...)``; trained in place, in training space), an
        SAEConfig, or ``{"arch": ..., "d_sae": ..., **fields}`` (d_in defaults to the data's;
        initialised under ``torch.manual_seed(seed)``).
    :param source: anything :func:`geomsae.data.open_source` opens.
    :param resume: continue from the newest checkpoint in ``cfg.out`` (start afresh if none);
        the SAE then comes from the checkpoint and ``sae`` must only agree with its config.
    :returns: :class:`TrainResult`; its ``sae`` is a copy with the dataset scale folded in.
    :param callback: called after every step as ``callback(step, record_or_None)``.
    """
    cfg = cfg or TrainConfig()
    src: ActivationSource = open_source(source)
    ctx = distributed.context()  # None unless launched by torchrun with more than one process
    if ctx is not None:
        ctx.local_batch(cfg.batch_size)
        src = distributed.shard_source(src, ctx)
    device = resolve_device(distributed.local_device(cfg.device))
    out = Path(cfg.out) if cfg.out is not None else None
    if resume and out is None:
        raise ValueError("--resume (resume=True) needs --out (cfg.out): the folder holding the checkpoints")
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} is an existing file, not a folder")
    holds_sae = out is not None and ((out / ckpt.CFG_FILE).exists() or (out / ckpt.WEIGHTS_FILE).exists())
    if out is not None and not resume and (ckpt.list_checkpoints(out) or log_holds_records(out / METRICS_FILE)
                                           or holds_sae):
        run = ckpt.list_checkpoints(out) or log_holds_records(out / METRICS_FILE)
        what = "a run" if run else "an SAE (cfg.json, sae.safetensors)"
        raise ValueError(f"out folder {str(out)!r} already holds {what}: pass --resume (resume=True in Python) "
                         "to continue it, or choose another folder")
    loaded = _newest_readable(out) if (resume and out is not None) else None
    last = loaded[0] if loaded else None
    if resume and last is None:
        if holds_sae:
            raise ValueError(f"out folder {str(out)!r} holds an SAE but no checkpoint to continue: "
                             "choose another folder")
        print(f"geomsae train: no checkpoint in {str(out)!r}, starting afresh", file=sys.stderr)
    if ctx is not None:
        ctx.barrier()  # every rank has checked the folder before rank 0 writes to it

    with deterministic(cfg.deterministic):
        if loaded is not None:
            last, doc, model = loaded
            check_resume(doc.get("train", {}), cfg, sae, doc, last,
                         controlled=l0_control.PENALTY_FIELD.get(doc["arch"]) if cfg.target_l0 else None)
            if doc.get("source_fingerprint") not in (None, source_fingerprint(src)):
                warnings.warn(f"resuming {str(out)!r} on other activations: the run began on {doc['source']}, "
                              f"now {src!r}; the input scale and b_dec of the first run are kept", stacklevel=2)
            model = model.to(device)
        else:
            model = build_sae(sae, src.d_in, cfg).to(device)
        model.set_decoder_impl(cfg.decoder)
        if model.cfg.d_in != src.d_in:
            raise ValueError(f"the SAE has d_in == {model.cfg.d_in} but the activations have d_in == {src.d_in}")
        params = [p for p in model.parameters() if p.requires_grad]
        if ctx is not None:
            ctx.broadcast_(model)
            ctx.average_grads(params)
        opt = make_adam(params, cfg)
        ctl = l0_control.make_controller(model, cfg)
        step, tokens, scale = 0, 0, 1.0
        if last is not None:
            counters, _ = ckpt.load_trainer_state(last / ckpt.TRAINER_FILE, model, opt)
            step, tokens, scale = int(counters["step"]), int(counters["tokens"]), float(counters["input_scale"])
            l0_control.resume(model, ctl, [counters])
        else:
            torch.manual_seed(cfg.seed)  # the SAE's own randomness (e.g. resampling) starts here
        return _run(model, opt, params, src, cfg, device, out, step, tokens, scale, last is None, callback, ctx, ctl)


def _newest_readable(out: Path) -> tuple[Path, dict[str, Any], Any] | None:
    """(folder, cfg.json, SAE in training space) of the newest checkpoint that reads back whole,
    or None; an unreadable one is renamed ``.corrupt-step_*`` with a warning naming it."""
    for _, path in reversed(ckpt.list_checkpoints(out)):
        try:
            doc = ckpt.read_cfg(path)
            model = ckpt.load_sae(path, fold=False)
            ckpt.read_trainer_state(path / ckpt.TRAINER_FILE)
            return path, doc, model
        except (ValueError, FileNotFoundError) as exc:
            aside = ckpt.set_aside(path)
            warnings.warn(f"checkpoint {str(path)!r} is unreadable ({exc}); moved to {aside.name!r}, "
                          "trying the one before it", stacklevel=3)
    return None


def _run(sae: Any, opt: torch.optim.Optimizer, params: list[Tensor], src: ActivationSource, cfg: TrainConfig,
         device: torch.device, out: Path | None, step: int, tokens: int, scale: float, fresh: bool,
         callback: Callable[[int, dict[str, Any] | None], None] | None,
         ctx: distributed.Context | None = None, ctl: l0_control.L0Controller | None = None) -> TrainResult:
    from tqdm.auto import tqdm

    per_token = sae.cfg.input_norm == "per_token"
    need_stats = fresh and (cfg.input_norm == "dataset" or cfg.b_dec_init == "mean")
    it, msq, mean = open_stream(src, ctx.local_cfg(cfg) if ctx else cfg, step, stats=need_stats, per_token=per_token)
    if need_stats and ctx is not None:  # the ranks' estimates averaged
        msq, mean = float(ctx.mean(torch.tensor(msq, dtype=torch.float64))), ctx.mean(mean)
    main = ctx is None or ctx.is_main
    if not main:
        out = None  # rank 0 alone writes
    if need_stats:
        if cfg.input_norm == "dataset":
            scale = math.sqrt(src.d_in / msq)
        if cfg.b_dec_init == "mean":
            with torch.no_grad():  # b_dec in training space: s·mean (dataset scale), or the per-token-normalised mean
                sae.b_dec.copy_((mean * (1.0 if per_token else scale)).to(sae.b_dec))
    meta = {"train": dataclasses.asdict(cfg), "input_scale": scale, "source": repr(src),
            "source_fingerprint": source_fingerprint(src)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        truncate_log(out / METRICS_FILE, step)

    def save(at: int) -> Path | None:
        if out is None:
            return None
        counters = {"step": at, "tokens": tokens, "input_scale": scale, "data_position": at,
                    **(ctl.counters(0) if ctl is not None else {})}
        return ckpt.write_checkpoint(out, at, sae, opt, counters, meta, pending_input_scale=scale,
                                     keep=cfg.keep_checkpoints)

    clip = (lambda: torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)) if cfg.grad_clip > 0 else None
    forward = torch.compile(sae) if cfg.compile else sae  # parameters shared with sae: Adam updates them
    check_each_step = device.type == "cpu"  # a host sync costs nothing on CPU
    bar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and main), unit="step", dynamic_ncols=True)
    log = open(out / METRICS_FILE, "a") if out is not None else None
    rec: dict[str, Any] = {}
    window = LossWindow(cfg.steps)
    t0, tokens0, mid_step = time.perf_counter(), tokens, False
    shown = t0
    try:
        with sigint_deferred(out is not None) as stop:
            while step < cfg.steps:
                if stop.requested:
                    raise TrainingStopped(stop.signum)
                try:
                    x = next(it)
                except StopIteration:
                    warnings.warn(f"the activation stream ran out after {step} steps (of {cfg.steps})", stacklevel=2)
                    break
                x = x.to(device, non_blocking=True)
                if scale != 1.0:
                    x = x * scale
                lr = lr_at(step, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                with autocast(cfg.autocast, device):
                    out_ = forward(x)
                    lo = sae.loss(x, out_)
                lo_g, x_g, out_g = lo, x, out_
                if ctx is not None:  # the global batch's loss terms and outputs, the same on every rank
                    lo_g, (x_g, out_g) = ctx.mean_loss(lo), ctx.gather(x, out_)
                if (check_each_step or (step + 1) % cfg.log_every == 0) and not bool(torch.isfinite(lo_g.loss)):
                    _diverged(step, lo_g, lr, save, check_each_step, out)
                window.add(step, lo_g.loss)
                mid_step = True
                sae_update(sae, opt, lo.loss, clip, x_g, out_g)
                step += 1
                tokens += x_g.shape[0]
                l0_control.control_step(sae, ctl, step, x_g, out_g.codes)
                mid_step = False
                logged = None
                now = time.perf_counter()
                if step % cfg.log_every == 0 or step == cfg.steps or step == 1:
                    rec = logged = step_record(step, tokens, lr, x_g, out_g, lo_g, sae, cfg, t0, tokens0)
                    rec.update(l0_control.log_fields(ctl, 0))
                    if step == cfg.steps:  # the last record carries the convergence columns
                        rec.update(window.summary())
                    bar.set_postfix(bar_fields(rec), refresh=False)
                    shown = now
                    if log is not None:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save(step)
                elif cfg.progress and now - shown >= BAR_REFRESH_S:  # between log records, every few seconds
                    bar.set_postfix(bar_fields(step_record(step, tokens, lr, x, out_, lo, sae, cfg, t0, tokens0)),
                                    refresh=False)
                    shown = now
                bar.update(1)
                out_ = lo = out_g = lo_g = x_g = None  # free the (B, d_sae) tensors before the next forward
                if callback is not None:
                    callback(step, logged)
    except KeyboardInterrupt:
        if out is not None and not mid_step:
            path = save(step)
            print(f"geomsae train: stopped at step {step}; checkpoint {str(path)!r} (run again with --resume "
                  "to continue)", file=sys.stderr)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    save(step)
    final = copy.deepcopy(sae)
    if scale != 1.0:
        from geomsae.saes import fold_input_scale

        fold_input_scale(final, scale)
    if out is not None:
        ckpt.save_sae(final, out, extra={**meta, "step": step, "tokens": tokens})
    return TrainResult(final, step, tokens, scale, rec, out)


def _diverged(step: int, lo: Any, lr: float, save: Callable[[int], Path | None], state_is_good: bool,
              out: Path | None) -> None:
    """Raise NonFiniteLossError; save the state first if it is the one before the bad step."""
    where = save(step) if state_is_good else None
    parts = ", ".join(f"{k}={float(v):.4g}" for k, v in lo.parts.items())
    msg = f"the training loss is {float(lo.loss.detach())} at step {step + 1} (lr {lr:.3g}; {parts})"
    if where is not None:
        msg += f"; the state before this step is saved in {str(where)!r}"
    elif out is not None:  # checked only every log_every steps: the weights may already be bad
        msg = msg.replace(f"at step {step + 1}", f"at step {step + 1} (first seen there)")
        msg += f"; the last checkpoint is {str(ckpt.latest_checkpoint(out))!r}"
    raise NonFiniteLossError(msg + ". Lower the learning rate or check the activations.")



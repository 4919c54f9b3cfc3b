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

import contextlib
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geomsae import checkpoint as ckpt
from geomsae import durable
from geomsae.data import ActivationSource, open_source
from geomsae.training import distributed, l0_control
from geomsae.training.config import TrainConfig, lr_at  # noqa: F401 (part of this module's API)
from geomsae.training.log import METRICS_FILE, log_holds_records  # noqa: F401 (METRICS_FILE: this module's API)
from geomsae.training.loop import (  # noqa: F401 (TrainResult, NonFiniteLossError, bar_fields: part of this module's API)
    BAR_REFRESH_S,
    Hooks,
    NonFiniteLossError,
    Run,
    Trainer,
    TrainResult,
    bar_fields,
)
from geomsae.training.resume import check_resume, train_history
from geomsae.training.runtime import deterministic, resolve_device
from geomsae.training.step import build_sae, make_adam, reset_moments  # noqa: F401 (reset_moments: this module's API)
from geomsae.training.stream import input_stats, open_stream, source_fingerprint  # noqa: F401 (input_stats: API)


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
    # one writer per folder: a second train on this --out is refused, not interleaved (rank 0 alone writes)
    lock = durable.folder_lock(out, "geomsae train") if out is not None and (ctx is None or ctx.is_main) \
        else contextlib.nullcontext()
    with lock:
        holds_sae = out is not None and ((out / ckpt.CFG_FILE).exists() or (out / ckpt.WEIGHTS_FILE).exists())
        if out is not None and not resume and (ckpt.list_checkpoints(out) or log_holds_records(out / METRICS_FILE)
                                               or holds_sae):
            run = ckpt.list_checkpoints(out) or log_holds_records(out / METRICS_FILE)
            what = "a run" if run else "an SAE (cfg.json, sae.safetensors)"
            raise ValueError(f"out folder {str(out)!r} already holds {what}: pass --resume (resume=True in Python) "
                             "to continue it, or choose another folder")
        loaded = _newest_readable(out) if (resume and out is not None) else None
        last = loaded[0] if loaded else None
        at = loaded[1].get("step") if loaded else None
        if at is not None and cfg.steps < int(at):
            raise ValueError(f"steps == {cfg.steps}, but the run in {str(out)!r} is already at step {at}: --steps is "
                             f"the run's total length, so give steps >= {at}")
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
            run = Run(model, opt, params, [], [cfg], [out], [scale], [], device, step, tokens, ctl=ctl, ctx=ctx)
            _open_stream(run, src, fresh=last is None)
            if loaded is not None:
                run.metas[0]["train_history"] = train_history(loaded[1], cfg, step)
            return Trainer(run, Hooks(callback=callback)).fit()[0]


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


def _open_stream(run: Run, src: ActivationSource, fresh: bool) -> None:
    """Open the run's batch stream at its step; on a fresh run estimate the dataset scale and the data mean
    (b_dec's start) on the first ``input_scale_tokens`` tokens (averaged over the ranks of a data-parallel run)."""
    cfg, ctx, sae = run.cfgs[0], run.ctx, run.model
    per_token = sae.cfg.input_norm == "per_token"
    need_stats = fresh and (cfg.input_norm == "dataset" or cfg.b_dec_init == "mean")
    it, msq, mean = open_stream(src, ctx.local_cfg(cfg) if ctx else cfg, run.step, stats=need_stats,
                                per_token=per_token)
    if need_stats and ctx is not None:  # the ranks' estimates averaged
        msq, mean = float(ctx.mean(torch.tensor(msq, dtype=torch.float64))), ctx.mean(mean)
    scale = run.scales[0]
    if need_stats:
        if cfg.input_norm == "dataset":
            scale = math.sqrt(src.d_in / msq)
        if cfg.b_dec_init == "mean":
            with torch.no_grad():  # b_dec in training space: s·mean (dataset scale), or the per-token-normalised mean
                sae.b_dec.copy_((mean * (1.0 if per_token else scale)).to(sae.b_dec))
    run.streams, run.scales = [it], [scale]
    run.metas = [{"train": dataclasses.asdict(cfg), "input_scale": scale, "source": repr(src),
                  "source_fingerprint": source_fingerprint(src)}]

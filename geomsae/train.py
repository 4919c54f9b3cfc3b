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
stopped. Ctrl-C finishes the current step, saves a checkpoint and re-raises
KeyboardInterrupt; a non-finite loss saves the last good state and raises
:class:`NonFiniteLossError`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geomsae import checkpoint as ckpt
from geomsae.data import ActivationSource, ChunkedSource, open_source
from geomsae.saes.base import per_token_scale
from geomsae.train_config import TrainConfig, lr_at  # noqa: F401 (part of this module's API)

METRICS_FILE = "metrics.jsonl"


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


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


def input_stats(batches: Iterator[Tensor] | list[Tensor], n_tokens: int, per_token: bool = False) -> tuple[float, Tensor]:
    """(mean ‖x‖², (d_in,) float64 mean of x) over the first ``n_tokens`` rows of ``batches``;
    with ``per_token`` the mean is that of the rows rescaled to norm √d_in (float64 sums)."""
    total, n, vec = 0.0, 0, None
    for x in batches:
        x = x[: n_tokens - n].double()
        total += float(x.pow(2).sum())
        xs = x * per_token_scale(x) if per_token else x
        vec = xs.sum(0) if vec is None else vec + xs.sum(0)
        n += x.shape[0]
        if n >= n_tokens:
            break
    if n == 0 or total <= 0 or vec is None:
        raise ValueError(f"cannot estimate the input statistics: mean ‖x‖² == {total / max(n, 1)} over {n} tokens")
    return total / n, vec / n


def estimate_input_scale(batches: Iterator[Tensor] | list[Tensor], d_in: int, n_tokens: int) -> float:
    """s = √(d_in / mean‖x‖²) over the first ``n_tokens`` rows of ``batches`` (float64 sums)."""
    return math.sqrt(d_in / input_stats(batches, n_tokens)[0])


def _build_sae(spec: Any, d_in: int, cfg: TrainConfig) -> Any:
    """An SAE from an instance, an SAEConfig, or a mapping {"arch": ..., **fields}."""
    from geomsae.saes import ARCHS, BaseSAE, SAEConfig, make

    if isinstance(spec, BaseSAE):
        sae = spec
    else:
        if isinstance(spec, SAEConfig):
            arch = next((a for a, c in ARCHS.items() if type(spec) is c.config_class), None)
            if arch is None:
                raise ValueError(f"no architecture has the config class {type(spec).__name__}")
            fields = dataclasses.asdict(spec)
        elif isinstance(spec, Mapping) and "arch" in spec:
            fields = {k: v for k, v in spec.items() if k != "arch"}
            arch = spec["arch"]
        else:
            raise ValueError(f"cannot build an SAE from a {type(spec).__name__}: pass an SAE, an SAEConfig "
                             "or a dict with 'arch'")
        fields.setdefault("d_in", d_in)
        if cfg.input_norm == "per_token":
            fields["input_norm"] = "per_token"
        if "d_sae" not in fields:
            raise ValueError(f"the SAE spec for arch {arch!r} lacks 'd_sae'")
        torch.manual_seed(cfg.seed)
        sae = make(arch, fields.pop("d_in"), fields.pop("d_sae"), **fields)
    if sae.cfg.d_in != d_in:
        raise ValueError(f"the SAE has d_in == {sae.cfg.d_in} but the activations have d_in == {d_in}")
    if cfg.input_norm == "per_token":
        sae.cfg.input_norm = "per_token"
    elif cfg.input_norm == "dataset" and sae.cfg.input_norm == "per_token":
        raise ValueError("input_norm == 'dataset' but the SAE normalises per token (cfg.input_norm == 'per_token'); "
                         "use input_norm='per_token' or 'none'")
    return sae


def _reset_moments(opt: torch.optim.Optimizer, sae: Any, mask: Tensor) -> None:
    """Zero the Adam moments of the latents in ``mask`` (d_sae,) without a host sync."""
    d_sae = sae.cfg.d_sae
    for name, p in sae.named_parameters():
        st = opt.state.get(p)
        if not st or name == "b_dec":
            continue
        dim = {"W_enc": 0, "b_enc": 0, "W_dec": 1}.get(name)
        if dim is None:
            dim = next((i for i, n in enumerate(p.shape) if n == d_sae), None)
            if dim is None:
                continue
        m = mask.reshape([-1 if i == dim else 1 for i in range(p.ndim)])
        for k in ("exp_avg", "exp_avg_sq"):
            st[k].masked_fill_(m, 0.0)


class _Stop:
    requested = False


@contextlib.contextmanager
def _sigint_deferred(enabled: bool) -> Iterator[_Stop]:
    """Turn the first Ctrl-C into a request honoured between steps; the second aborts."""
    flag = _Stop()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    prev = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        print("\ngeomsae train: interrupted; saving a checkpoint after this step (Ctrl-C again to abort)",
              file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, prev if prev is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _autocast(mode: str, device: torch.device) -> Any:
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _adam(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused (one pass per parameter) where this torch build supports it on the device."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device == {name!r} but CUDA is not available")
    return dev


_RESUME_FIXED = ("batch_size", "seed", "data_seed", "input_norm", "input_scale_tokens", "betas", "adam_eps", "dtype")


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, spec: Any, doc: dict[str, Any], where: Path) -> None:
    for name in _RESUME_FIXED:
        want = getattr(cfg, name)
        got = saved.get(name)
        if isinstance(want, tuple):
            got = tuple(got) if got is not None else got
        if got != want:
            raise ValueError(f"cannot resume from {str(where)!r}: {name} == {want!r}, the checkpoint has {got!r}")
    from geomsae.saes import BaseSAE

    if isinstance(spec, BaseSAE):
        arch, fields = spec.arch, dataclasses.asdict(spec.cfg)
    elif isinstance(spec, Mapping):
        arch, fields = spec.get("arch"), {k: v for k, v in spec.items() if k != "arch"}
    else:
        arch, fields = None, dataclasses.asdict(spec)
    if arch is not None and arch != doc["arch"]:
        raise ValueError(f"cannot resume from {str(where)!r}: arch == {arch!r}, the checkpoint has {doc['arch']!r}")
    for k, v in fields.items():
        if k in doc["cfg"] and k != "input_norm" and doc["cfg"][k] != (list(v) if isinstance(v, tuple) else v):
            raise ValueError(f"cannot resume from {str(where)!r}: SAE {k} == {v!r}, "
                             f"the checkpoint has {doc['cfg'][k]!r}")


def _record(step: int, tokens: int, lr: float, x: Tensor, out: Any, lo: Any, sae: Any,
            cfg: TrainConfig, t0: float, tokens0: int) -> dict[str, Any]:
    from geomsae import metrics

    rec: dict[str, Any] = {"step": step, "tokens": tokens, "lr": lr, "loss": float(lo.loss.detach())}
    rec.update({k: float(v) for k, v in lo.parts.items()})
    try:
        rec["fvu"] = metrics.fvu(x, out.x_hat)
    except ValueError:  # a batch without variance: FVU undefined
        rec["fvu"] = float("nan")
    rec["l0"] = metrics.l0(out.codes)
    rec["dead_fraction"] = float(sae.dead_mask(cfg.dead_window_tokens).float().mean())
    elapsed = time.perf_counter() - t0
    rec["tokens_per_s"] = (tokens - tokens0) / elapsed if elapsed > 0 else 0.0
    return rec


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
    device = _device(cfg.device)
    out = Path(cfg.out) if cfg.out is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs cfg.out (the folder holding the checkpoints)")
    last = ckpt.latest_checkpoint(out) if (resume and out is not None) else None
    if out is not None and not resume and (ckpt.list_checkpoints(out) or (out / METRICS_FILE).exists()):
        raise ValueError(f"out folder {str(out)!r} already holds a run: pass resume=True or choose another folder")
    if resume and last is None:
        print(f"geomsae train: no checkpoint in {str(out)!r}, starting afresh", file=sys.stderr)

    with _deterministic(cfg.deterministic):
        if last is not None:
            doc = ckpt.read_cfg(last)
            _check_resume(doc.get("train", {}), cfg, sae, doc, last)
            model = ckpt.load_sae(last, fold=False).to(device)
        else:
            model = _build_sae(sae, src.d_in, cfg).to(device)
        if model.cfg.d_in != src.d_in:
            raise ValueError(f"the SAE has d_in == {model.cfg.d_in} but the activations have d_in == {src.d_in}")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = _adam(params, cfg)
        step, tokens, scale = 0, 0, 1.0
        if last is not None:
            counters, _ = ckpt.load_trainer_state(last / ckpt.TRAINER_FILE, model, opt)
            step, tokens, scale = int(counters["step"]), int(counters["tokens"]), float(counters["input_scale"])
        else:
            torch.manual_seed(cfg.seed)  # the SAE's own randomness (e.g. resampling) starts here
        return _run(model, opt, params, src, cfg, device, out, step, tokens, scale, last is None, callback)


def _run(sae: Any, opt: torch.optim.Optimizer, params: list[Tensor], src: ActivationSource, cfg: TrainConfig,
         device: torch.device, out: Path | None, step: int, tokens: int, scale: float, fresh: bool,
         callback: Callable[[int, dict[str, Any] | None], None] | None) -> TrainResult:
    from tqdm.auto import tqdm

    finite_epochs = isinstance(src, ChunkedSource) or getattr(src, "_factory", None) is not None
    it = src.batches(cfg.batch_size, seed=cfg.stream_seed, shuffle=True, epochs=None if finite_epochs else 1,
                     start_batch=step, drop_last=True)
    if fresh and (cfg.input_norm == "dataset" or cfg.b_dec_init == "mean"):
        per_token = sae.cfg.input_norm == "per_token"
        if isinstance(src, ChunkedSource):
            probe = src.batches(cfg.batch_size, seed=cfg.stream_seed, epochs=1)  # at most one epoch
            msq, mean = input_stats(probe, min(cfg.input_scale_tokens, src.n_tokens), per_token)
        else:  # a stream can be read once: look at its head and put it back
            head = []
            for x in it:
                head.append(x)
                if sum(h.shape[0] for h in head) >= cfg.input_scale_tokens:
                    break
            msq, mean = input_stats(head, cfg.input_scale_tokens, per_token)
            it = _chain(head, it)
        if cfg.input_norm == "dataset":
            scale = math.sqrt(src.d_in / msq)
        if cfg.b_dec_init == "mean":
            with torch.no_grad():  # b_dec in training space: s·mean (dataset scale), or the per-token-normalised mean
                sae.b_dec.copy_((mean * (1.0 if per_token else scale)).to(sae.b_dec))
    meta = {"train": dataclasses.asdict(cfg), "input_scale": scale, "source": repr(src)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(out / METRICS_FILE, step)

    def save(at: int) -> Path | None:
        if out is None:
            return None
        counters = {"step": at, "tokens": tokens, "input_scale": scale, "data_position": at}
        return ckpt.write_checkpoint(out, at, sae, opt, counters, meta, pending_input_scale=scale,
                                     keep=cfg.keep_checkpoints)

    check_each_step = device.type == "cpu"  # a host sync costs nothing on CPU
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, unit="step", dynamic_ncols=True)
    log = open(out / METRICS_FILE, "a") if out is not None else None
    rec: dict[str, Any] = {}
    t0, tokens0, mid_step = time.perf_counter(), tokens, False
    try:
        with _sigint_deferred(out is not None) as stop:
            while step < cfg.steps:
                if stop.requested:
                    raise KeyboardInterrupt
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
                with _autocast(cfg.autocast, device):
                    out_ = sae(x)
                    lo = sae.loss(x, out_)
                if (check_each_step or (step + 1) % cfg.log_every == 0) and not bool(torch.isfinite(lo.loss)):
                    _diverged(step, lo, lr, save, check_each_step, out)
                mid_step = True
                lo.loss.backward()
                sae.remove_parallel_grads_()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sae.normalize_decoder_()
                with torch.no_grad():
                    mask = sae.on_step_end(x, out_)
                    if mask is not None:
                        _reset_moments(opt, sae, mask)
                step += 1
                tokens += x.shape[0]
                mid_step = False
                logged = None
                if step % cfg.log_every == 0 or step == cfg.steps or step == 1:
                    rec = logged = _record(step, tokens, lr, x, out_, lo, sae, cfg, t0, tokens0)
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", fvu=f"{rec['fvu']:.3f}", l0=f"{rec['l0']:.1f}",
                                    dead=f"{rec['dead_fraction']:.3f}", refresh=False)
                    if log is not None:
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save(step)
                bar.update(1)
                out_ = lo = None  # free the (B, d_sae) tensors before the next forward
                if callback is not None:
                    callback(step, logged)
    except KeyboardInterrupt:
        if out is not None and not mid_step:
            path = save(step)
            print(f"geomsae train: stopped at step {step}; checkpoint {str(path)!r} (resume to continue)",
                  file=sys.stderr)
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


def _chain(head: list[Tensor], rest: Iterator[Tensor]) -> Iterator[Tensor]:
    yield from head
    yield from rest


def _truncate_log(path: Path, step: int) -> None:
    """Drop records after ``step`` (left by a run stopped after its last checkpoint)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    tmp.replace(path)

"""Pieces shared by the single-SAE trainer (:mod:`geomsae.train`) and the stacked one
(:mod:`geomsae.train_stack`): input statistics, building an SAE from a spec, Adam and its
moment resets, signal handling, determinism, resume checks, the metrics record and log."""

from __future__ import annotations

import contextlib
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
from typing import Any

import torch
from torch import Tensor

from geomsae import durable, metrics
from geomsae.data import ChunkedSource, open_source
from geomsae.saes import ARCHS, BaseSAE, SAEConfig, make
from geomsae.saes.base import per_token_scale
from geomsae.train_config import TrainConfig

METRICS_FILE = "metrics.jsonl"


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


def mean_activation(src: Any, n_tokens: int = 262_144, batch: int = 8192) -> Tensor:
    """(d_in,) float32 mean of a source's first ``n_tokens`` activations in stored order (float64 sums; the
    mean-ablation value of the real-model runs)."""
    return input_stats(src.batches(batch, shuffle=False, epochs=1), n_tokens)[1].float()


def estimate_input_scale(batches: Iterator[Tensor] | list[Tensor], d_in: int, n_tokens: int) -> float:
    """s = √(d_in / mean‖x‖²) over the first ``n_tokens`` rows of ``batches`` (float64 sums)."""
    return math.sqrt(d_in / input_stats(batches, n_tokens)[0])


def build_sae(spec: Any, d_in: int, cfg: TrainConfig) -> Any:
    """An SAE from an instance, an SAEConfig, or a mapping {"arch": ..., **fields}."""
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


def reset_moments(opt: torch.optim.Optimizer, sae: Any, mask: Tensor) -> None:
    """Zero the Adam moments of the latents in ``mask`` (d_sae,) without a host sync.

    For a stack, ``mask`` is (S, d_sae) and every parameter has the member dimension first.
    """
    d_sae = sae.cfg.d_sae
    lead = 1 if sae.n_stack else 0
    for name, p in sae.named_parameters():
        st = opt.state.get(p)
        if not st or name == "b_dec":
            continue
        dim = {"W_enc": 0, "b_enc": 0, "W_dec": 1}.get(name)
        if dim is None:
            dim = next((i for i, n in enumerate(p.shape[lead:]) if n == d_sae), None)
            if dim is None:
                continue
        shape = [1] * p.ndim
        shape[lead + dim] = d_sae
        if lead:
            shape[0] = p.shape[0]
        m = mask.reshape(shape)
        for k in ("exp_avg", "exp_avg_sq"):
            st[k].masked_fill_(m, 0.0)


class StopFlag:
    requested = False
    signum: int | None = None
    """The signal that asked to stop (SIGINT or SIGTERM)."""


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM (``kill``, ``timeout``, a cluster scheduler)
    after saving a checkpoint; ``signum`` is the signal."""

    def __init__(self, signum: int | None = None) -> None:
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`TrainingStopped` (a KeyboardInterrupt) in the main
    thread, as Ctrl-C does, instead of killing the process where it stands; the previous handler is
    restored on leaving (a caller in the same process, e.g. a notebook or a test, keeps its own)."""
    def handler(signum: int, frame: Any) -> None:
        raise TrainingStopped(signum)

    if not (hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread()):
        yield
        return
    prev = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


@contextlib.contextmanager
def sigint_deferred(enabled: bool) -> Iterator[StopFlag]:
    """Turn the first SIGINT or SIGTERM into a request honoured between steps; a second one aborts."""
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    prev = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise TrainingStopped(signum)
        flag.requested, flag.signum = True, signum
        name = signal.Signals(signum).name
        print(f"\ngeomsae train: {name} received; saving a checkpoint after this step (send it again to abort)",
              file=sys.stderr)

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in prev.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def autocast(mode: str, device: torch.device) -> Any:
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_adam(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused (one pass per parameter) where this torch build supports it on the device."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kw)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device == {name!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'auto')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device == {name!r} but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device == {name!r} but there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device == {name!r} but MPS is not available")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device == {name!r}: only 'cpu', 'cuda' and 'mps' devices are supported")
    return dev


def sae_update(sae: Any, opt: torch.optim.Optimizer, loss: Tensor, clip: Callable[[], Any] | None,
               x: Tensor, out: Any) -> None:
    """One optimizer update of an SAE or a stack after its forward pass, the same for both trainers.

    backward of ``loss`` (a scalar; a stack passes the sum of its members' losses), the decoder's
    parallel-gradient projection, ``clip()`` when given, the Adam step, zeroed gradients, the
    decoder renormalisation, then the SAE's state trackers (:meth:`BaseSAE.on_step_end` on the batch
    ``x`` and its forward output ``out``), resetting Adam's moments of resampled latents.
    """
    loss.backward()
    sae.remove_parallel_grads_()
    if clip is not None:
        clip()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sae.normalize_decoder_()
    with torch.no_grad():
        mask = sae.on_step_end(x, out)
        if mask is not None:
            reset_moments(opt, sae, mask)


RESUME_FIXED = ("batch_size", "seed", "data_seed", "input_norm", "input_scale_tokens", "betas", "adam_eps", "dtype",
                "target_l0", "l0_control_rate", "l0_control_beta", "l0_control_freeze")
_FIXED_SINCE = {"target_l0", "l0_control_rate", "l0_control_beta", "l0_control_freeze"}
"""Fields newer than some checkpoints: one a checkpoint lacks reads as its default (what that run used)."""


def check_resume(saved: dict[str, Any], cfg: TrainConfig, spec: Any, doc: dict[str, Any], where: Path,
                 controlled: str | None = None) -> None:
    """Raise ValueError where resuming the checkpoint at ``where`` (its cfg.json ``doc``, its training config
    ``saved``) with ``cfg`` and the SAE ``spec`` would change the run; ``controlled``: the SAE field the L0
    controller moves (geomsae/l0_control.py), which may differ from the spec's."""
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


def step_record(step: int, tokens: int, lr: float, x: Tensor, out: Any, lo: Any, sae: Any,
                cfg: TrainConfig, t0: float, tokens0: int, member: int | None = None) -> dict[str, Any]:
    """The metrics.jsonl record of a step; for a stack, that of ``member`` (its slice of
    x when x is per member, of the outputs, losses and dead-latent trackers)."""
    def pick(t: Tensor) -> Tensor:
        return t if member is None else t[member]

    x_m = x if member is None or x.ndim == 2 else x[member]
    rec: dict[str, Any] = {"step": step, "tokens": tokens, "lr": lr, "loss": float(pick(lo.loss.detach()))}
    rec.update({k: float(pick(v)) for k, v in lo.parts.items()})
    try:
        rec["fvu"] = metrics.fvu(x_m, pick(out.x_hat))
    except ValueError:  # a batch without variance: FVU undefined
        rec["fvu"] = float("nan")
    codes = pick(out.codes)
    rec["l0"] = metrics.l0(codes)
    # the authors' dead count: latents with z_j = 0 on every token of this batch (raw rule, one batch)
    rec["dead_last_batch"] = float((metrics.firing_counts(codes) == 0).double().mean())
    rec["dead_fraction"] = float(pick(sae.dead_mask(cfg.dead_window_tokens)).float().mean())
    elapsed = time.perf_counter() - t0
    rec["tokens_per_s"] = (tokens - tokens0) / elapsed if elapsed > 0 else 0.0
    return rec


def open_stream(src: Any, cfg: TrainConfig, start_step: int, *, stats: bool,
                per_token: bool) -> tuple[Iterator[Tensor], float | None, Tensor | None]:
    """The shuffled batch iterator of a run from ``start_step`` on (seeded by ``cfg.stream_seed``)
    and, when ``stats``, (mean ‖x‖², (d_in,) mean) of the first ``cfg.input_scale_tokens`` tokens
    of that stream (per-token normalised for the mean when ``per_token``); else (it, None, None).

    A finite source is probed with a second pass over at most one epoch; a one-shot stream is
    read ahead and its head put back in front of the iterator.
    """
    if isinstance(src, ChunkedSource) and cfg.batch_size > src.n_tokens:
        raise ValueError(f"batch_size == {cfg.batch_size}, must be <= the {src.n_tokens} tokens of {src.name}")
    finite_epochs = isinstance(src, ChunkedSource) or getattr(src, "_factory", None) is not None
    it = src.batches(cfg.batch_size, seed=cfg.stream_seed, shuffle=True, epochs=None if finite_epochs else 1,
                     start_batch=start_step, drop_last=True)
    if not stats:
        return it, None, None
    if isinstance(src, ChunkedSource):
        probe = src.batches(cfg.batch_size, seed=cfg.stream_seed, epochs=1)  # at most one epoch
        msq, mean = input_stats(probe, min(cfg.input_scale_tokens, src.n_tokens), per_token)
        return it, msq, mean
    head = []
    for x in it:
        head.append(x)
        if sum(h.shape[0] for h in head) >= cfg.input_scale_tokens:
            break
    msq, mean = input_stats(head, cfg.input_scale_tokens, per_token)
    return chain(head, it), msq, mean


def start_b_dec(source: Any, cfg: TrainConfig) -> Tensor:
    """The (d_in,) float32 decoder bias a fresh run of ``cfg`` on ``source`` starts from, in input units: zeros for
    ``b_dec_init='zeros'``; for 'mean', the mean of the first ``cfg.input_scale_tokens`` tokens of the run's
    own stream (seeded by ``cfg.stream_seed``, as :func:`open_stream` reads it for the trainers), per-token
    normalised where ``input_norm='per_token'``. A member of a stack reads its stream with
    ``data_seed`` = its seed when the members have their own sources (:func:`geomsae.train_stack.train_stack`).
    """
    src = open_source(source)
    if cfg.b_dec_init == "zeros":
        return torch.zeros(src.d_in)
    _, _, mean = open_stream(src, cfg, 0, stats=True, per_token=cfg.input_norm == "per_token")
    return mean.to(torch.float32)  # as the trainers copy it into b_dec


def source_fingerprint(src: Any, rows: int = 1024) -> str | None:
    """"<n_tokens>:<sha256 of the first ``rows`` tokens, float32>" of a finite source, in file order
    (recorded in checkpoints so that a resume on other activations is noticed); None for a stream."""
    import hashlib


    if not isinstance(src, ChunkedSource):
        return None
    i, a, b = src.segments[0]
    head = src.shards[i].read(a, min(b, a + rows))
    return f"{src.n_tokens}:{hashlib.sha256(head.tobytes()).hexdigest()[:16]}"


def chain(head: list[Tensor], rest: Iterator[Tensor]) -> Iterator[Tensor]:
    yield from head
    yield from rest


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A torn last line (the process was killed while writing
    it) is dropped with a warning naming the file; a bad line before the last raises ValueError
    naming the file, the line and the fix."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    recs = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if i == len(lines) - 1:
                warnings.warn(f"{str(path)!r}: dropped its torn last line {i + 1} (a run killed while "
                              "writing it)", stacklevel=3)
                break
            raise ValueError(f"{str(path)!r} line {i + 1} is not a JSON record ({exc}): delete that line, "
                             "or the file to restart the log") from None
        recs.append(rec)
    return recs


def log_holds_records(path: Path) -> bool:
    """Whether a metrics.jsonl exists and holds anything but whitespace (an early kill leaves it empty)."""
    return path.is_file() and bool(path.read_text(errors="replace").strip())


def truncate_log(path: Path, step: int) -> None:
    """Drop records after ``step`` (left by a run stopped after its last checkpoint) and a torn last line."""
    if not path.exists():
        return
    keep = [json.dumps(r) for r in read_log(path) if r.get("step", 0) <= step]
    durable.write_text(path, "".join(ln + "\n" for ln in keep))


CONVERGENCE_FRAC = 0.1
"""Share of the steps, at the end of a run, over which the loss trend is measured (docs/method.md §7.5)."""


UNCONVERGED_REL_CHANGE = -0.01
"""A run whose ``loss_rel_change`` is below this (its loss still fell by more than 1 % over the last
tenth of its steps) had not converged (docs/method.md §7.5)."""


def unconverged(rel_change: float) -> bool:
    """Whether a run with this ``loss_rel_change`` had not converged (NaN, unknown: False)."""
    return rel_change == rel_change and rel_change < UNCONVERGED_REL_CHANGE


def loss_trend(steps: Any, losses: Any) -> tuple[float, float]:
    """Least-squares slope of the loss against the step, and the relative change it implies.

    :param steps: (T,) step indices; :param losses: (T,) training losses at those steps.
    :returns: (slope per step, slope·(steps[-1] − steps[0] + 1)/mean(loss)): the second is the
        fractional change of the loss across the window (−0.05: it still fell by 5 %).
        (nan, nan) for fewer than 2 points or a zero mean loss.
    """
    import numpy as np

    t = np.asarray(steps, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"steps has {t.size} entries but losses has {y.size}")
    if not (np.isfinite(t).all() and np.isfinite(y).all()):
        raise ValueError("steps and losses must be finite")
    if t.size < 2 or float(np.ptp(t)) == 0.0:
        return math.nan, math.nan
    tc = t - t.mean()
    slope = float((tc * (y - y.mean())).sum() / (tc * tc).sum())
    mean = float(y.mean())
    return slope, (slope * (t[-1] - t[0] + 1) / mean) if mean != 0 else math.nan


class LossWindow:
    """The training losses of the last ``CONVERGENCE_FRAC`` of a run's steps (at least 2), per
    member; :meth:`summary` gives the convergence columns ``loss_slope`` and ``loss_rel_change``.

    A run resumed inside the window holds only the steps after the resume.
    """

    def __init__(self, total_steps: int, frac: float = CONVERGENCE_FRAC) -> None:
        if not 0 < frac <= 1:
            raise ValueError(f"frac == {frac!r}, must be in (0, 1]")
        self.start = total_steps - max(2, math.ceil(frac * total_steps))
        self.steps: list[int] = []
        self.losses: list[Any] = []

    def add(self, step: int, loss: Tensor) -> None:
        """Record the loss of 0-based ``step`` (a scalar, or (S,) per stack member) if it is in the window."""
        if step >= self.start:
            self.steps.append(step)
            self.losses.append(loss.detach().float().reshape(-1).cpu())

    def summary(self, member: int = 0) -> dict[str, float]:
        """{'loss_slope', 'loss_rel_change'} of one member (:func:`loss_trend`)."""
        slope, rel = loss_trend(self.steps, [float(v[member]) for v in self.losses])
        return {"loss_slope": slope, "loss_rel_change": rel}

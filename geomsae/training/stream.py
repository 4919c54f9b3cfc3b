"""The activations a training run reads: its batch stream at a step, the input statistics (dataset scale,
mean, b_dec's start) and the source's fingerprint."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from geomsae.data import ChunkedSource, open_source
from geomsae.saes.base import per_token_scale
from geomsae.training.config import TrainConfig


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


"""One cell of the starvation benchmark (synthetic.starvation): its spiked data (drawn, streamed or cached), the
training config of its SAEs, one stack's training and the columns each trained SAE adds to results.csv."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from geomsae import metrics
from geomsae.metrics import outlier_severity
from geomsae.study import (
    Member,
    Run,
    tables,
    train_and_evaluate,
)
from geomsae.study.stack import train_config
from geomsae.training.stream import start_b_dec
from synthetic.config import StarvationConfig
from synthetic.generators import spiked
from synthetic.stream import SpikedStream

CELL_KEYS = ("rho",)
EXTRA_COLUMNS = [*tables.EVAL_METRICS, *tables.TRUE_DICT_METRICS, *tables.TRUE_CODE_METRICS,
                 "support_precision", "support_recall", "support_f1", *tables.TRAIN_METRICS, "gamma", "gamma_start"]
TIMING_COLUMNS = ["train_time_s"]


def result_columns(cfg: StarvationConfig) -> list[str]:
    """Columns of results.csv, in order."""
    return tables.result_columns(CELL_KEYS, cfg.eval_windows, EXTRA_COLUMNS + TIMING_COLUMNS)


# --------------------------------------------------------------------------- data and one stack
class Data(NamedTuple):
    x_train: Any
    """(steps·batch_size, n) float32 training activations: a tensor, or a :class:`synthetic.stream.SpikedStream`
    of them (``stream_chunk``)."""
    x_eval: torch.Tensor
    """(n_eval, n) float32 held-out activations."""
    z_eval: np.ndarray
    """(n_eval, m) float32 true codes of the held-out tokens."""
    D: np.ndarray
    """(n, m) true dictionary, atoms as columns."""


def make_data(n: int, m: int, k: int, rho: float, n_train: int, n_eval: int, seed: int,
              float_jitter: float = 0.0) -> Data:
    """The spiked data of one (ρ, seed): the first n_train samples train, the rest evaluate.

    ``float_jitter`` > 0 multiplies each training element by (1 + float_jitter·ε), ε ~ N(0, 1) drawn
    from its own generator (seeded by ``seed``), so the held-out data and the truth are unchanged."""
    d = spiked(n=n, m=m, k=k, rho=rho, n_samples=n_train + n_eval, seed=seed)
    x = torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32))
    z_eval = d.codes[n_train:].toarray().astype(np.float32)
    x_train = x[:n_train].clone()
    if float_jitter > 0:  # in row chunks: the same numbers as one draw, without four float64 copies of the data
        rng = np.random.default_rng([seed, 0x6A17])
        for i in range(0, n_train, _JITTER_ROWS):
            part = x_train[i:i + _JITTER_ROWS]
            eps = rng.standard_normal(tuple(part.shape))
            part.copy_((part.double() * torch.from_numpy(1.0 + float_jitter * eps)).float())
    return Data(x_train, x[n_train:].clone(), z_eval, d.dictionary)


_JITTER_ROWS = 1 << 16


_CACHE: OrderedDict[tuple, Data] = OrderedDict()
_CACHE_BYTES = 1 << 30  # keep the newest cells' data up to 1 GiB per process (a stack needs its cells')


def stream_data(n: int, m: int, k: int, rho: float, n_train: int, n_eval: int, seed: int, chunk: int,
                device: str | None = None) -> Data:
    """The data of one (ρ, seed) with the training samples streamed (:class:`synthetic.stream.SpikedStream`,
    chunks of ``chunk`` rows, drawn by torch on ``device`` when given): the held-out samples, the truth and D are
    ``spiked(n_samples=n_eval, seed)``, the training samples fresh draws on that D. Other numbers than
    :func:`make_data`'s, from the same model."""
    d = spiked(n=n, m=m, k=k, rho=rho, n_samples=n_eval, seed=seed)
    return Data(SpikedStream(d.dictionary, k, n_train, seed, chunk, device=device),
                torch.from_numpy(np.ascontiguousarray(d.activations, dtype=np.float32)),
                d.codes.toarray().astype(np.float32), d.dictionary)


def cell_data(cfg: StarvationConfig, rho: float, seed: int) -> Data:
    """:func:`make_data` (or, with ``stream_chunk``, :func:`stream_data`) of one cell, cached per process."""
    base = (cfg.n, cfg.m, cfg.k, float(rho), cfg.steps * cfg.batch_size, cfg.n_eval, seed)
    device = cfg.device if cfg.stream_on_device else None
    key = (*base, "stream", cfg.stream_chunk, device) if cfg.stream_chunk else (*base, cfg.float_jitter)
    if key not in _CACHE:
        _CACHE[key] = (stream_data(*base, cfg.stream_chunk, device) if cfg.stream_chunk
                       else make_data(*base, cfg.float_jitter))
        size = lambda d: d.x_train.nbytes + d.x_eval.nbytes + d.z_eval.nbytes
        while len(_CACHE) > 1 and sum(size(d) for d in _CACHE.values()) > _CACHE_BYTES:
            _CACHE.popitem(last=False)
    return _CACHE[key]


def synthetic_train_config(cfg: StarvationConfig) -> Any:
    """The TrainConfig of every SAE of the benchmark (seeds come per member)."""
    return train_config(cfg, input_scale_tokens=min(65_536, cfg.steps * cfg.batch_size), log_every=cfg.steps,
                        b_dec_init=cfg.b_dec_init,
                        checkpoint_every=0, out=None, progress=False)


def _truth_columns(data: Data, sae: Any) -> dict[str, Any]:
    """Support precision / recall / F1 of the Hungarian-matched atoms, a latent in the support where it fires
    by the folded rule (z_j‖d_j‖ > FIRE_REL · RMS(x), docs/method.md §3), as everywhere else."""
    sae = sae.cpu()
    with torch.no_grad():
        folded = sae.encode(data.x_eval) * sae.W_dec.norm(dim=0)
    tol = metrics.FIRE_REL * metrics.rms_norm(data.x_eval)
    prf = metrics.support_prf(data.z_eval, folded, metrics.hungarian_match(data.D, sae.W_dec.detach().double()),
                              tol=tol)
    return {"support_precision": prf["precision"], "support_recall": prf["recall"], "support_f1": prf["f1"]}


def centering_columns(data: Data, tcfg: Any, seed: int) -> dict[str, float]:
    """The outlier severity γ = ‖μ‖/‖σ‖ of the cell's held-out data (:func:`geomsae.metrics.outlier_severity`;
    arXiv 2605.31518), and ``gamma_start``, the same data's γ about the decoder bias the SAE started from
    (:func:`geomsae.training.stream.start_b_dec` on the member's own training stream): γ for a zero start, near 0
    for a mean start."""
    b0 = start_b_dec(data.x_train, dataclasses.replace(tcfg, seed=seed, data_seed=seed))
    return {"gamma": outlier_severity(data.x_eval), "gamma_start": outlier_severity(data.x_eval, b0)}


def train_stack_job(cfg: StarvationConfig, stack: list[Member]) -> list[Run]:
    """Train and evaluate one stack, each member on its own cell's data (one torch thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = {(m.cell[0], m.seed): cell_data(cfg, m.cell[0], m.seed) for m in stack}
        mine = [data[(m.cell[0], m.seed)] for m in stack]
        tcfg = synthetic_train_config(cfg.for_arm(stack[0].arm))
        outs = stack_folders(cfg, stack) if cfg.checkpoint_every else None
        if outs is not None:
            tcfg = dataclasses.replace(tcfg, checkpoint_every=cfg.checkpoint_every)
        runs = train_and_evaluate(
            stack, cfg, d_sae=cfg.m, train_source=[d.x_train for d in mine], eval_source=[d.x_eval for d in mine],
            tcfg=tcfg, cell_keys=CELL_KEYS, true_dicts=[d.D for d in mine], true_codes=[d.z_eval for d in mine],
            extras=lambda m, res, row: _truth_columns(data[(m.cell[0], m.seed)], res.sae),
            outs=outs, resume=outs is not None)
        gammas = {key: centering_columns(d, tcfg, key[1]) for key, d in data.items()}  # once per (ρ, seed)
        for r in runs:
            r.row.update(gammas[(r.member.cell[0], r.member.seed)])
        return runs
    finally:
        torch.set_num_threads(threads)


def stack_folders(cfg: StarvationConfig, stack: list[Member]) -> list[Path]:
    """The run folder of each member with ``checkpoint_every``: out/stacks/<stack id>/<arm>_rho<ρ>_s<seed>_<value>.

    The stack id hashes its members and length, so a rerun that forms the same stack resumes its checkpoints,
    and a stack formed otherwise (another --workers or --stack-size) starts in folders of its own."""
    import hashlib

    steps = cfg.steps_for(stack[0].arm)
    sid = hashlib.sha256(repr((steps, [m.key for m in stack])).encode()).hexdigest()[:12]
    return [cfg.out_dir / "stacks" / f"{stack[0].arm}_{sid}" / f"{m.arm}_rho{m.cell[0]:g}_s{m.seed}_{m.value:g}"
            for m in stack]

"""The budget of a synthetic.starvation run before it trains: the memory it needs, the FLOPs and time it will take."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from geomsae.study import (
    ARMS,
    Member,
)
from geomsae.study.cost import CPU_GEMM_FLOPS, train_flops_per_token
from geomsae.study.stack import train_members
from geomsae.training.runtime import available_memory as runtime_available_memory
from synthetic.cells import synthetic_train_config
from synthetic.config import StarvationConfig
from synthetic.generators import spiked_dictionary
from synthetic.stream import SpikedStream


def available_memory() -> int | None:
    """Bytes of memory available now on the CPU (:func:`geomsae.training.runtime.available_memory`)."""
    return runtime_available_memory("cpu")


def data_peak_bytes(cfg: StarvationConfig) -> int:
    """Peak bytes one worker needs to draw one cell's data in memory (0 with ``stream_chunk``): the float64
    product, its float32 copy and the training clone (16 bytes per element), and the sparse codes (12 per nonzero)."""
    if cfg.stream_chunk:
        return 0
    rows = max(cfg.steps_for(a) for a in cfg.arms) * cfg.batch_size + cfg.n_eval
    return rows * (16 * cfg.n + 12 * cfg.k)


def check_memory(cfg: StarvationConfig, available: int | None = None) -> None:
    """Refuse, before anything is drawn, a design whose workers cannot even draw one cell's data each (a worker
    holds the data of every cell of its stack, so passing this is necessary, not sufficient: the standard
    preset's workers held 8.8 GB each against 2.2 GB here)."""
    available = available_memory() if available is None else available
    need = data_peak_bytes(cfg) * cfg.workers
    if available is not None and need > available:
        raise MemoryError(f"drawing the training data in memory needs at least {need / 2**30:.1f} GiB "
                          f"({cfg.workers} worker(s) x {data_peak_bytes(cfg) / 2**30:.1f} GiB), and "
                          f"{available / 2**30:.1f} GiB is available: pass --stream-chunk 65536 to draw it "
                          "while training (synthetic/stream.py), or fewer --workers or --steps")


def estimate(cfg: StarvationConfig, steps: int = 20, members: int = 4) -> dict[str, float]:
    """Time ``steps`` steps of a stack of ``members`` aen SAEs at the preset's sizes; extrapolate."""
    torch.set_num_threads(1)
    x = torch.randn(steps * cfg.batch_size, cfg.n)
    stack = [Member("aen", (0.0,), s, cfg.lam_aen) for s in range(min(members, cfg.stack_size))]
    tc = dataclasses.replace(synthetic_train_config(cfg), steps=steps, log_every=steps, input_scale_tokens=x.shape[0])
    train_members(stack[:1], cfg, d_sae=cfg.m, source=x[: 2 * cfg.batch_size], tcfg=dataclasses.replace(tc, steps=2))
    _, wall = train_members(stack, cfg, d_sae=cfg.m, source=x, tcfg=tc)
    per_step = wall / steps / len(stack)  # per SAE
    n_runs = sum(_runs_per_cell(cfg, a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    run_steps = sum(_runs_per_cell(cfg, a) * cfg.steps_for(a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    n_train = max(cfg.steps_for(a) for a in cfg.arms) * cfg.batch_size
    out = {"s_per_step": per_step, "s_per_run": per_step * run_steps / n_runs, "runs_max": n_runs,
           "hours_one_worker": per_step * run_steps / 3600,
           "hours_all_workers": per_step * run_steps / 3600 / cfg.workers,
           "roofline_hours": planned_flops(cfg) / CPU_GEMM_FLOPS / 3600,
           # in memory per cell: the training samples (unless streamed), the held-out samples and their codes
           "data_gb_per_cell": ((0 if cfg.stream_chunk else n_train * cfg.n) + cfg.n_eval * (cfg.n + cfg.m)) * 4 / 1e9}
    if cfg.stream_chunk:  # the time to draw one cell's stream once (each stack draws its cells' streams once)
        device = cfg.device if cfg.stream_on_device else None
        D = spiked_dictionary(np.random.default_rng(0), cfg.n, cfg.m, 0.5, False)
        sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
        SpikedStream(D, cfg.k, n_train, 0, cfg.stream_chunk, device=device).chunk_rows(0)  # warm-up (first kernels)
        sync()
        t0 = time.perf_counter()
        SpikedStream(D, cfg.k, n_train, 0, cfg.stream_chunk, device=device).chunk_rows(0)
        sync()
        out["stream_s_per_cell"] = (time.perf_counter() - t0) * -(-n_train // cfg.stream_chunk)
    return out


def _runs_per_cell(cfg: StarvationConfig, arm: str) -> int:
    """The most SAEs one (ρ, seed) cell trains for ``arm``: its k grid or its sweep points."""
    return len(set(cfg.topk_ks)) if ARMS[arm].start is None else cfg.sweep_points


def planned_flops(cfg: StarvationConfig) -> float:
    """FLOPs of training every SAE of ``cfg`` (the sweep's maximum): Σ_arms runs × its steps × batch × 10·n·m
    (:mod:`geomsae.study.cost`)."""
    run_steps = sum(_runs_per_cell(cfg, a) * cfg.steps_for(a) for a in cfg.arms) * len(cfg.rhos) * len(cfg.seeds)
    return float(run_steps) * cfg.batch_size * train_flops_per_token(cfg.n, cfg.m)

"""geomsae against SAELens v6, side by side in one process: the half of ``bench/train.py --vs saelens``.

Both libraries train the same configuration (d_in, d_sae, batch, fp32, Adam, gradient clipping 1,
the same in-memory activations, no input normalisation) with their own training loops:
:func:`geomsae.train.train` and SAELens' ``SAETrainer.fit``. A step is timed from one step
boundary to the next (geomsae: the trainer's per-step callback; SAELens: its data provider
handing out the next batch), so everything each loop does per step is included.

To let the machine's load hit every contender alike, the timed runs are interleaved: each
round runs every contender once (a fresh SAE, ``warmup`` untimed steps then ``steps`` timed
ones), with a few roofline GEMMs before each run, and the order of the contenders is rotated
from round to round. sae-lens is not a dependency of geomsae; this module needs it installed
(``pip install sae-lens`` in the benchmark's own environment).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from geomsae.study.cost import train_flops_per_token

SAELENS_ARCH = {
    "relu_l1": ("StandardTrainingSAE", "StandardTrainingSAEConfig", {}),
    "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig", {"k": 64}),
    "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", {"k": 64}),
    "gated": ("GatedTrainingSAE", "GatedTrainingSAEConfig", {}),
    "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig", {}),
}
"""geomsae arch → (SAELens training class, its config class, config fields): the architectures both
libraries have (SAELens' standard SAE is the decoder-norm-weighted l1 ReLU SAE, our relu_l1)."""


@dataclass
class Contender:
    name: str
    arch: str
    run: Callable[[], list[float]]
    """Trains a fresh SAE for warmup + steps steps; returns the timed steps' seconds."""


def saelens_step_seconds(arch: str, d_in: int, d_sae: int, x: torch.Tensor, batch: int, warmup: int,
                         steps: int, lr: float) -> list[float]:
    """Seconds of SAELens' timed training steps (``SAETrainer.fit`` on batches of ``x``)."""
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cls_name, cfg_name, fields = SAELENS_ARCH[arch]
    cfg = getattr(sae_lens, cfg_name)(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", **fields)
    torch.manual_seed(0)
    sae = getattr(sae_lens, cls_name)(cfg)
    n = warmup + steps + 1  # fit stops without asking for a batch after the last: one more step to close it
    stamps: list[float] = []

    def provider() -> Any:
        for i in range(n):
            stamps.append(time.perf_counter())  # the previous step has ended
            yield x[(i % (x.shape[0] // batch)) * batch:][:batch]

    tcfg = SAETrainerConfig(total_training_samples=n * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr,
                            device="cpu", logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(tcfg, sae, provider()).fit()
    return [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]


def gemm_seconds(a: torch.Tensor, b: torch.Tensor, reps: int) -> list[float]:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return ts


def side_by_side(contenders: list[Contender], rounds: int, d_in: int, d_sae: int, batch: int,
                 gemm_reps: int = 3) -> tuple[dict[str, list[float]], list[float]]:
    """Interleaved runs: ({name: all timed step seconds}, [GEMM FLOP/s samples]).

    The roofline GEMM is the (batch, d_in) @ (d_in, d_sae) float32 product, timed ``gemm_reps``
    times before every contender's run."""
    a, b = torch.randn(batch, d_in), torch.randn(d_in, d_sae)
    a @ b
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    rates: list[float] = []
    for r in range(rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        if r % 2:
            order = order[::-1]
        for c in order:
            rates += [2 * batch * d_in * d_sae / t for t in gemm_seconds(a, b, gemm_reps)]
            got = c.run()
            times[c.name] += got
            print(f"  round {r + 1}: {c.name:<20} {batch / statistics.median(got):>8,.0f} tok/s "
                  f"(GEMM just before: {statistics.median(rates[-gemm_reps:]) / 1e9:.1f} GFLOP/s)", flush=True)
    return times, rates


def table(times: dict[str, list[float]], rates: list[float], archs: list[str], d_in: int, d_sae: int,
          batch: int) -> list[str]:
    """The printed rows: arch, tokens/s of each library, their ratio, and each as a fraction of the roofline."""
    flops = statistics.median(rates)
    roof = flops / train_flops_per_token(d_in, d_sae)
    lines = [f"matmul ({batch}x{d_in})@({d_in}x{d_sae}): median {flops / 1e9:.1f} GFLOP/s over {len(rates)} samples "
             f"(min {min(rates) / 1e9:.1f}, max {max(rates) / 1e9:.1f}); roofline {roof:,.0f} tokens/s "
             f"(10·d_in·d_sae FLOPs per token)",
             f"{'arch':<16}{'geomsae tok/s':>14}{'SAELens tok/s':>15}{'ratio':>7}{'geomsae/roof':>14}{'SAELens/roof':>14}"
             f"{'steps':>7}"]
    for arch in archs:
        g = batch / statistics.median(times[f"geomsae:{arch}"])
        s_t = times.get(f"saelens:{arch}")
        s = batch / statistics.median(s_t) if s_t else None
        lines.append(f"{arch:<16}{g:>14,.0f}" + (f"{s:>15,.0f}{g / s:>7.2f}" if s else f"{'-':>15}{'-':>7}")
                     + f"{g / roof:>13.0%}" + (f"{s / roof:>14.0%}" if s else f"{'-':>14}")
                     + f"{len(times[f'geomsae:{arch}']):>7}")
    return lines

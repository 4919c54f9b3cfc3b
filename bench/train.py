"""Throughput of a full training step for every architecture, against the matmul roofline.

    python bench/train.py                         # d_in 512, d_sae 4096, batch 4096, fp32
    python bench/train.py --steps 8 --archs relu_l1 aen
    python bench/train.py --device cuda          # same table on a GPU (fp32, TF32 off)

Runs with the glibc malloc tuning that ``geomsae train`` applies (see
:func:`geomsae.commands.train.tune_malloc`; --no-malloc-tuning to compare).
A step is what :func:`geomsae.train.train` does per batch: fetch the batch, forward,
loss, backward, the SAE hooks, gradient clipping, the Adam step (timed from the trainer's
per-step callback, so the data pipeline and bookkeeping are included). The roofline is
this machine's fp32 matmul rate, measured in the same run on (4096×512)@(512×4096),
divided by the ~10·d_in·d_sae FLOPs a token costs (encoder forward 2, decoder forward 2,
decoder backward 4, encoder weight gradient 2; times d_in·d_sae).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import torch

from geomsae.commands.train import tune_malloc
from geomsae.saes import ARCHS
from geomsae.train import TrainConfig, train


@dataclass
class BenchConfig:
    d_in: int = 512
    d_sae: int = 4096
    batch_size: int = 4096
    steps: int = 6  # timed steps per architecture (after `warmup` untimed ones)
    warmup: int = 2
    matmul_reps: int = 7
    archs: list[str] = field(default_factory=lambda: list(ARCHS))
    device: str = "cpu"


ARCH_CFG = {"topk": dict(k=64), "batchtopk": dict(k=64)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_flops(reps: int, device: str) -> list[float]:
    a, b = torch.randn(4096, 512, device=device), torch.randn(512, 4096, device=device)
    a @ b
    _sync(device)
    inner = 1 if device == "cpu" else 50  # a GPU product takes microseconds: time a burst
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        rates.append(inner * 2 * 4096 * 512 * 4096 / (time.perf_counter() - t))
    return rates


def step_seconds(arch: str, c: BenchConfig, x: torch.Tensor) -> list[float]:
    stamps: list[float] = []
    cfg = TrainConfig(steps=c.warmup + c.steps, batch_size=c.batch_size, progress=False, log_every=10**9,
                      checkpoint_every=0, input_norm="none", device=c.device)

    def stamp(step: int, rec: object) -> None:
        _sync(c.device)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    train({"arch": arch, "d_sae": c.d_sae, **ARCH_CFG.get(arch, {})}, x, cfg, callback=stamp)
    stamps.insert(0, t0)
    return [b - a for a, b in zip(stamps[c.warmup:], stamps[c.warmup + 1:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=BenchConfig.steps)
    p.add_argument("--archs", nargs="+", default=list(ARCHS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-malloc-tuning", action="store_true", help="measure without the CLI's glibc malloc tuning")
    args = p.parse_args()
    tuned = not args.no_malloc_tuning and tune_malloc()
    c = BenchConfig(steps=args.steps, archs=args.archs, device=args.device)
    torch.manual_seed(0)
    x = torch.randn(c.batch_size * (c.warmup + c.steps), c.d_in)
    rates = matmul_flops(c.matmul_reps, c.device)
    rows = []
    for arch in c.archs:
        dt = statistics.median(step_seconds(arch, c, x))
        rows.append((arch, dt))
    rates += matmul_flops(c.matmul_reps, c.device)  # before and after: the machine's load drifts
    flops = statistics.median(rates)
    roof = flops / (10 * c.d_in * c.d_sae)
    where = torch.cuda.get_device_name() if c.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {c.device} ({where}); d_in {c.d_in}, d_sae {c.d_sae}, "
          f"batch {c.batch_size}, fp32; malloc tuning {'on' if tuned else 'off'} (as in `geomsae train`)")
    print(f"matmul (4096x512)@(512x4096): median {flops / 1e9:.1f} GFLOP/s "
          f"(min {min(rates) / 1e9:.1f}, max {max(rates) / 1e9:.1f}); roofline {roof:,.0f} tokens/s")
    print(f"{'arch':<16}{'ms/step':>10}{'tokens/s':>12}{'of roofline':>14}")
    for arch, dt in rows:
        tps = c.batch_size / dt
        print(f"{arch:<16}{dt * 1e3:>10.0f}{tps:>12,.0f}{tps / roof:>13.0%}")


if __name__ == "__main__":
    main()

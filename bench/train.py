"""Throughput of a full training step for every architecture, against the matmul roofline.

    python bench/train.py                         # d_in 512, d_sae 4096, batch 4096, fp32
    python bench/train.py --steps 8 --archs relu_l1 aen
    python bench/train.py --device cuda          # same table on a GPU (fp32, TF32 off)
    python bench/train.py --vs saelens --saelens-python /work/venv-saelens/bin/python
                                                  # against SAELens v6, interleaved (bench/vs_saelens.py)

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
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("TQDM_DISABLE", "1")  # read by tqdm when imported: SAELens' fit draws a bar

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
    lr: float = 4e-4


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
                      checkpoint_every=0, input_norm="none", device=c.device, lr=c.lr)

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
    p.add_argument("--vs", choices=["saelens"], help="side by side against another library (CPU, interleaved rounds)")
    p.add_argument("--saelens-python", default=os.environ.get("GEOMSAE_SAELENS_PYTHON"),
                   help="an interpreter with sae-lens installed; --vs saelens re-runs this script with it "
                        "when this one lacks sae_lens (default: $GEOMSAE_SAELENS_PYTHON)")
    p.add_argument("--rounds", type=int, default=3, help="--vs: interleaved rounds (each trains every contender once)")
    p.add_argument("--d-in", type=int, default=BenchConfig.d_in)
    p.add_argument("--d-sae", type=int, default=BenchConfig.d_sae)
    p.add_argument("--batch-size", type=int, default=BenchConfig.batch_size)
    args = p.parse_args()
    if args.vs == "saelens" and importlib.util.find_spec("sae_lens") is None:
        if not args.saelens_python:
            p.error("sae_lens is not importable here: pass --saelens-python (an interpreter with `pip install sae-lens`)")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        os.execve(args.saelens_python, [args.saelens_python, os.path.abspath(__file__), *sys.argv[1:]], env)
    tuned = not args.no_malloc_tuning and tune_malloc()
    c = BenchConfig(d_in=args.d_in, d_sae=args.d_sae, batch_size=args.batch_size, steps=args.steps,
                    archs=args.archs, device=args.device)
    if args.vs:
        return vs_saelens(c, args.rounds, tuned)
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


def vs_saelens(c: BenchConfig, rounds: int, tuned: bool) -> None:
    """geomsae and SAELens on the same activations, interleaved (see bench/vs_saelens.py)."""
    import sae_lens

    from vs_saelens import SAELENS_ARCH, Contender, saelens_step_seconds, side_by_side, table

    if c.device != "cpu":
        raise SystemExit("--vs saelens measures the CPU (the goal is stated there)")
    torch.manual_seed(0)
    n = c.warmup + c.steps
    x = torch.randn(c.batch_size * (n + 1), c.d_in)
    contenders = []
    for arch in c.archs:
        contenders.append(Contender(f"geomsae:{arch}", arch, lambda a=arch: step_seconds(a, c, x[: c.batch_size * n])))
        if arch in SAELENS_ARCH:
            contenders.append(Contender(f"saelens:{arch}", arch, lambda a=arch: saelens_step_seconds(
                a, c.d_in, c.d_sae, x, c.batch_size, c.warmup, c.steps, c.lr)))
    print(f"torch {torch.__version__}, sae-lens {sae_lens.__version__}, cpu ({torch.get_num_threads()} threads); "
          f"d_in {c.d_in}, d_sae {c.d_sae}, batch {c.batch_size}, fp32, Adam lr {c.lr}, grad clip 1; "
          f"malloc tuning {'on' if tuned else 'off'} (both libraries); {rounds} interleaved rounds of "
          f"{c.warmup} warm-up + {c.steps} timed steps per contender; topk/batchtopk k 64", flush=True)
    times, rates = side_by_side(contenders, rounds, c.d_in, c.d_sae, c.batch_size)
    print("\n".join(table(times, rates, c.archs, c.d_in, c.d_sae, c.batch_size)))


if __name__ == "__main__":
    main()

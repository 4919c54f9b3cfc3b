"""Stacked sweeps against one-by-one training, side by side in one process.

    python bench/sweep.py                 # both parts (≈ 3 min on 2 cores)
    python bench/sweep.py --part quick    # 12 SAEs (4 λ × 3 seeds) at n 64, m 256, batch 128, 400 steps
    python bench/sweep.py --part large    # 4 SAEs at n 512, m 4096, batch 4096 (a few timed steps)

Prints, for relu_l1, aen and topk: tokens/s summed over the SAEs for ``train_stack`` and for
``train`` called once per SAE, their ratio, and each as a fraction of the dense roofline
(the measured fp32 GEMM rate ÷ 10·d_in·d_sae FLOPs per token). With the glibc malloc tuning
that ``geomsae train`` applies (both sides get it). Goals (issue 11): quick stacked ≥ 4×
one-by-one; large stacked ≥ 0.9 of the roofline for relu_l1 and aen; topk k 32 with the
sparse decoder ≥ 1.5× the dense roofline (the dense-decoder topk row beside it for the ratio).
relu_l1 and aen use ``decoder='auto'``: at these sizes their codes (density ≈ 0.5 at the
random init of a timed few steps) stay on the dense path.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from geomsae.commands.common import tune_malloc
from geomsae.study.cost import train_flops_per_token
from geomsae.train import TrainConfig, train
from geomsae.train_stack import train_stack


def gemm_rate(n: int = 512, m: int = 4096, b: int = 4096, reps: int = 30) -> float:
    """Median FLOP/s of a (b, n) @ (n, m) float32 product."""
    x, w = torch.randn(b, n), torch.randn(n, m)
    for _ in range(3):
        x @ w
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        x @ w
        ts.append(time.perf_counter() - t)
    return 2 * b * n * m / sorted(ts)[len(ts) // 2]


def quick(rate: float) -> None:
    n, m, batch, steps = 64, 256, 128, 400
    x = torch.randn(steps * batch, n)
    roof = rate / train_flops_per_token(n, m)
    tc = TrainConfig(steps=steps, batch_size=batch, progress=False, log_every=steps, checkpoint_every=0,
                     input_scale_tokens=4096, lr=1e-2)
    knobs = {"relu_l1": ("lam", [0.01, 0.02, 0.05, 0.1]), "aen": ("lam1", [0.002, 0.005, 0.01, 0.02]),
             "topk": ("k", [2, 4, 8, 16])}
    print(f"quick sizes: n {n}, m {m}, batch {batch}, {steps} steps, 12 SAEs (4 knob values x 3 seeds); "
          f"dense roofline {roof:,.0f} tok/s per SAE")
    print(f"{'arch':10s} {'stacked tok/s':>14s} {'1-by-1 tok/s':>13s} {'ratio':>6s} {'stacked/roof':>13s} "
          f"{'1-by-1/roof':>12s}")
    for arch, (key, vals) in knobs.items():
        specs = [{"arch": arch, "d_sae": m, key: v} for v in vals for _ in range(3)]
        seeds = [s for _ in vals for s in range(3)]
        train_stack(specs[:2], x[: 20 * batch], dataclasses.replace(tc, steps=20), seeds=seeds[:2])  # warm-up
        t = time.perf_counter()
        train_stack(specs, x, tc, seeds=seeds)
        ts = time.perf_counter() - t
        t = time.perf_counter()
        for spec, seed in zip(specs, seeds):
            train(spec, x, dataclasses.replace(tc, seed=seed))
        t1 = time.perf_counter() - t
        tok = len(specs) * steps * batch
        print(f"{arch:10s} {tok / ts:14,.0f} {tok / t1:13,.0f} {t1 / ts:6.2f} {tok / ts / roof:13.2f} "
              f"{tok / t1 / roof:12.2f}")


def large(rate: float, timed: int = 6) -> None:
    n, m, batch, s = 512, 4096, 4096, 4
    roof = rate / train_flops_per_token(n, m)
    x = torch.randn((timed + 2) * batch, n)
    print(f"\nlarge: n {n}, m {m}, batch {batch}, a stack of {s}; dense roofline {roof:,.0f} SAE-tokens/s "
          f"(one token of one SAE costs 10·n·m FLOPs, stacked or not)")
    print(f"{'arch':22s} {'tok/s (sum)':>12s} {'of roofline':>12s}")
    for label, arch, key, vals, extra in [
        ("relu_l1", "relu_l1", "lam", [1e-3, 2e-3, 4e-3, 8e-3], {}),
        ("aen", "aen", "lam1", [1e-3, 2e-3, 4e-3, 8e-3], {}),
        ("topk k32 (dense dec.)", "topk", "k", [32] * 4, {"decoder": "dense"}),
        ("topk k32 (sparse dec.)", "topk", "k", [32] * 4, {"decoder": "sparse"}),
    ]:
        specs = [{"arch": arch, "d_sae": m, key: v} for v in vals]
        times: list[float] = []

        def cb(step: int, rec: object, _t=[0.0]) -> None:
            now = time.perf_counter()
            if step > 2:  # the first steps pay for allocation
                times.append(now - _t[0])
            _t[0] = now

        tc = TrainConfig(steps=timed + 2, batch_size=batch, progress=False, log_every=10_000, checkpoint_every=0,
                         input_scale_tokens=batch, lr=1e-4, **extra)
        train_stack(specs, x, tc, seeds=list(range(s)), callback=cb)
        tok_s = s * batch / (sum(times) / len(times))
        print(f"{label:22s} {tok_s:12,.0f} {tok_s / roof:12.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["quick", "large", "all"], default="all")
    a = p.parse_args()
    tuned = tune_malloc()
    rate = gemm_rate()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc tuning {'on' if tuned else 'off'}; "
          f"fp32 GEMM (4096x512 @ 512x4096): {rate / 1e9:.1f} GFLOP/s")
    if a.part in ("quick", "all"):
        quick(rate)
    if a.part in ("large", "all"):
        large(rate)


if __name__ == "__main__":
    main()

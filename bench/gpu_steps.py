"""The measurements of bench/gpu.sh, one part per call (each prints table rows).

    python bench/gpu_steps.py roofline            # bf16 GEMM TFLOP/s of this device
    python bench/gpu_steps.py train --size large  # train-step tokens/s per arch, 4096 x 131072, bf16
    python bench/gpu_steps.py train --size small  # 512 x 4096, bf16
    python bench/gpu_steps.py stack               # stacked sweep of 8 SAEs at 512 x 4096, bf16
    python bench/gpu_steps.py solver              # exact solver samples/s, n 512, m 4096

A train step is the trainer's own (``geomsae.training``: forward + loss under bf16 autocast,
fp32 master weights, backward, clip, fused Adam, decoder renormalisation, state trackers) on a
batch already on the device, timed with ``torch.cuda.synchronize``. Its fraction of the
roofline uses the 10·d_in·d_sae FLOPs per token of ``geomsae.study.cost`` and ``--peak``
(TFLOP/s; default 790, measured on an H200; ``roofline`` prints this device's).
"""

from __future__ import annotations

import argparse
import time

import torch

from geomsae.study.cost import train_flops_per_token

ARCHS = {"relu_l1": {}, "topk": {"k": 64}, "batchtopk": {"k": 64}, "jumprelu": {}, "gated": {}, "en": {},
         "adaptive_lasso": {}, "aen": {}}
SIZES = {"large": (4096, 131_072), "small": (512, 4096)}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def roofline(args: argparse.Namespace) -> None:
    n = 8192
    a = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync()
    t, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    _sync()
    tf = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
    print(f"| roofline | bf16 GEMM {n}^3 | {tf:.0f} TFLOP/s | {tf / args.peak:.2f} of {args.peak:.0f} |")


def _time_steps(sae, x, cfg, steps: int) -> float:
    from geomsae.training.runtime import autocast
    from geomsae.training.step import make_adam, sae_update

    params = [p for p in sae.parameters() if p.requires_grad]
    opt = make_adam(params, cfg)
    clip = lambda: torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)  # noqa: E731
    forward = torch.compile(sae) if cfg.compile else sae
    dev = torch.device(args_device)
    for i in range(2 + steps):
        if i == 2:
            _sync()
            t = time.perf_counter()
        with autocast(cfg.autocast, dev):
            out = forward(x)
            lo = sae.loss(x, out)
        total = lo.loss.sum() if lo.loss.ndim else lo.loss
        sae_update(sae, opt, total, clip, x, out)
        out = lo = total = None
    _sync()
    return time.perf_counter() - t


def train(args: argparse.Namespace) -> None:
    from geomsae.saes import make
    from geomsae.training.config import TrainConfig

    d_in, d_sae = SIZES[args.size]
    cfg = TrainConfig(autocast=args.autocast, compile=args.compile, device=args.device)
    x = torch.randn(args.batch, d_in, device=args.device)
    flops = train_flops_per_token(d_in, d_sae)
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        sae = make(arch, d_in, d_sae, **ARCHS[arch]).to(args.device)
        sae.set_decoder_impl("dense")
        try:
            dt = _time_steps(sae, x, cfg, args.steps)
        except torch.cuda.OutOfMemoryError:
            print(f"| train {args.size} | {arch} | OOM | |")
            continue
        finally:
            del sae
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
        tps = args.batch * args.steps / dt
        print(f"| train {d_in}x{d_sae} {args.autocast} | {arch} | {tps:,.0f} tokens/s | "
              f"{tps * flops / 1e12 / args.peak:.2f} of {args.peak:.0f} TFLOP/s |")


def stack(args: argparse.Namespace) -> None:
    from geomsae.saes import make
    from geomsae.saes.stacking import stack_saes
    from geomsae.training.config import TrainConfig

    d_in, d_sae = SIZES["small"]
    cfg = TrainConfig(autocast=args.autocast, compile=args.compile, device=args.device)
    x = torch.randn(args.batch, d_in, device=args.device)
    flops = train_flops_per_token(d_in, d_sae)
    for arch in ("relu_l1", "aen", "topk"):
        members = []
        for s in range(args.members):
            torch.manual_seed(s)
            members.append(make(arch, d_in, d_sae, **ARCHS[arch]))
        st = stack_saes(members).to(args.device)
        st.set_decoder_impl("dense")
        dt = _time_steps(st, x, cfg, args.steps)
        tps = args.batch * args.steps * args.members / dt
        print(f"| stack {args.members}x {d_in}x{d_sae} {args.autocast} | {arch} | {tps:,.0f} tokens/s (summed) | "
              f"{tps * flops / 1e12 / args.peak:.2f} of {args.peak:.0f} TFLOP/s |")


def solver(args: argparse.Namespace) -> None:
    from geomsae.solvers import solve

    g = torch.Generator(device="cpu").manual_seed(0)
    n, m, b = 512, 4096, 4096
    D = torch.randn(n, m, generator=g)
    D /= D.norm(dim=0)
    Z = torch.zeros(m, b)
    Z[torch.randint(0, m, (32 * b,), generator=g), torch.arange(b).repeat(32)] = torch.rand(32 * b, generator=g)
    X = (D @ Z).T.contiguous()
    Xd, Dd = X.to(args.device), D.to(args.device)
    solve(Xd[:256], Dd, lam1=0.1, lam2=0.05, tol=1e-6)  # warm-up
    _sync()
    t = time.perf_counter()
    res = solve(Xd, Dd, lam1=0.1, lam2=0.05, tol=1e-8)
    _sync()
    dt = time.perf_counter() - t
    gap = float(res.dual_gap.max()) if hasattr(res.dual_gap, "max") else float(res.dual_gap)
    print(f"| solver n {n} m {m} | {b} signals | {b / dt:,.0f} samples/s | max rel. gap {gap:.1e} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["roofline", "train", "stack", "solver"])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--autocast", default="bfloat16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak", type=float, default=790.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    args_device = a.device
    {"roofline": roofline, "train": train, "stack": stack, "solver": solver}[a.part](a)

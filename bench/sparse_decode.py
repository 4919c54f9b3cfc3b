"""Benchmark: sparse decoding (geomsae.saes.sparse) vs the dense decoder, forward + backward, on CPU.

    python bench/sparse_decode.py                      # both sizes: density grid + TopK k=32
    python bench/sparse_decode.py --backward-variants  # also torch's embedding_bag backward vs custom ones
    python bench/sparse_decode.py --quick              # fewer repeats and densities (smoke run)
    python bench/sparse_decode.py --fit --sizes 512,4096,4096 64,256,128 64,512,256 \
        128,1024,256 128,1024,1024 256,2048,1024       # refit geomsae.saes.sparse.CPU_2_THREADS

Every timed call is one decoder forward and backward with the gradient wrt the codes
(z or vals), W_dec and b_dec, as in training: dense ``z @ W_dec.mT + b_dec`` against
:func:`decode_sparse` (ReLU-type codes: each entry nonzero with probability ``density``,
values U(0, 1]) and :func:`decode_topk` (k random distinct indices per row). Calls are
interleaved (dense, sparse, dense, …) so that load from other processes hits both; the
table prints the median of ``repeats`` repeats, each the mean over enough calls to last
``min_repeat_s``. ``--backward-variants`` times, at d_in 512, d_sae 4096, B 4096, k 32,
torch's embedding_bag backward against custom ``autograd.Function``s whose backward uses
``index_add_`` and gathers, or torch.sparse CSR products.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geomsae.saes.sparse import (  # noqa: E402
    CPU_2_THREADS,
    DecodeCost,
    decode_sparse,
    decode_topk,
    sparse_density_max,
    use_sparse_decode,
)


@dataclass
class BenchConfig:
    threads: int = 2
    """torch intra-op threads."""
    sizes: tuple[tuple[int, int, int], ...] = ((512, 4096, 4096), (64, 256, 128))
    """(d_in, d_sae, batch) problems."""
    densities: tuple[float, ...] = (0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
    """Code densities nonzeros / (B·d_sae) for the ReLU-type table."""
    k: int = 32
    """Active latents per row for the TopK table (capped at d_sae // 2)."""
    repeats: int = 5
    """Repeats per timing; the median is reported."""
    min_repeat_s: float = 0.05
    """Each repeat runs the call enough times to last about this long."""
    seed: int = 0
    max_others: float = 0.1
    """A row measured while other processes used more than this share of the CPU is
    measured again (up to ``retries`` times, after a pause); still busy, it is starred and
    left out of ``--fit``."""
    retries: int = 4


def median_ms(fns: list[Callable[[], None]], repeats: int, min_repeat_s: float) -> list[float]:
    """Median over repeats of the mean ms per call of each fn, the fns interleaved."""
    inner = []
    for fn in fns:  # warm up and size the inner loops
        fn()
        t = time.perf_counter()
        fn()
        inner.append(max(1, round(min_repeat_s / max(time.perf_counter() - t, 1e-6))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, n, ts in zip(fns, inner, times):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            ts.append((time.perf_counter() - t) / n * 1e3)
    return [statistics.median(ts) for ts in times]


def load() -> str:
    """The 1-minute load average, printed beside each table."""
    return f"  [load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores]"


class OthersCPU:
    """Share of the machine's CPU used by *other* processes while the block ran (Linux
    /proc/stat minus this process's CPU time; nan elsewhere). On a shared machine a row is
    clean only when this is near 0: 2 OpenMP threads on 2 busy cores time out of all proportion."""

    def __enter__(self) -> OthersCPU:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        others = (self._busy() - self.busy0) - (self._own() - self.own0)
        self.share = max(0.0, others / (wall * (os.cpu_count() or 1)))

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _busy() -> float:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:8]]
        except OSError:
            return float("nan")
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def leaves(d_in: int, d_sae: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    W = torch.randn(d_in, d_sae, generator=gen)
    W /= W.norm(dim=0, keepdim=True)
    return W.requires_grad_(), (0.1 * torch.randn(d_in, generator=gen)).requires_grad_()


def step(out: Tensor, g: Tensor, *params: Tensor) -> None:
    out.backward(g)
    for p in params:
        p.grad = None


def density_table(cfg: BenchConfig, d_in: int, d_sae: int, B: int) -> list[tuple[int, int, int, float, float, float]]:
    """Print the dense-vs-sparse table; return its clean rows (d_in, d_sae, B, density, dense ms, sparse ms)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    W, b = leaves(d_in, d_sae, gen)
    g = torch.randn(B, d_in, generator=gen)
    print(f"\nReLU-type codes, d_in {d_in}, d_sae {d_sae}, batch {B}: forward + backward (ms){load()}")
    print(f"{'density':>8} {'nnz/row':>8} {'dense':>9} {'sparse':>9} {'sparse/dense':>13} {'rule':>6} {'others':>7}")
    rows = []
    for p in cfg.densities:
        mask = torch.rand(B, d_sae, generator=gen) < p
        z = (mask * (1 - torch.rand(B, d_sae, generator=gen))).requires_grad_()
        dense = lambda: step(z @ W.mT + b, g, z, W, b)  # noqa: E731
        sparse = lambda: step(decode_sparse(z, W, b), g, z, W, b)  # noqa: E731
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(5.0)
            with OthersCPU() as others:
                t_d, t_s = median_ms([dense, sparse], cfg.repeats, cfg.min_repeat_s)
            if others.share <= cfg.max_others:
                break
        clean = others.share <= cfg.max_others
        dens = mask.sum().item() / mask.numel()
        rule = "sparse" if use_sparse_decode(dens, d_in, d_sae, B) else "dense"
        print(f"{dens:8.4f} {dens * d_sae:8.1f} {t_d:9.3f} {t_s:9.3f} {t_s / t_d:13.3f} {rule:>6} "
              f"{others.share:7.0%}{'' if clean else ' *'}")
        if clean:
            rows.append((d_in, d_sae, B, dens, t_d, t_s))
    print(f"rule's crossover density for this size: {sparse_density_max(d_in, d_sae, B):.4f}")
    return rows


def topk_table(cfg: BenchConfig, d_in: int, d_sae: int, B: int) -> None:
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    k = min(cfg.k, d_sae // 2)
    W, b = leaves(d_in, d_sae, gen)
    g = torch.randn(B, d_in, generator=gen)
    idx = torch.rand(B, d_sae, generator=gen).argsort(-1)[:, :k].contiguous()  # distinct per row
    vals = torch.rand(B, k, generator=gen).requires_grad_()
    z = torch.zeros(B, d_sae).scatter(-1, idx, vals.detach()).requires_grad_()

    def dense_scatter() -> None:  # what TopKSAE does: scatter into a dense z, then the matmul
        step(torch.zeros(B, d_sae).scatter(-1, idx, vals) @ W.mT + b, g, vals, W, b)

    fns = {
        "dense (z given)": lambda: step(z @ W.mT + b, g, z, W, b),
        "dense (scatter + matmul)": dense_scatter,
        "decode_sparse (z given)": lambda: step(decode_sparse(z, W, b), g, z, W, b),
        "decode_topk": lambda: step(decode_topk(idx, vals, W, b), g, vals, W, b),
    }
    with OthersCPU() as others:
        ts = median_ms(list(fns.values()), cfg.repeats, cfg.min_repeat_s)
    base = ts[0]
    print(f"\nTopK codes, k {k}, d_in {d_in}, d_sae {d_sae}, batch {B}: forward + backward{load()}"
          f"  [others used {others.share:.0%} of the CPU]")
    print(f"{'decoder':<26} {'ms':>9} {'vs dense':>9}")
    for name, t in zip(fns, ts):
        print(f"{name:<26} {t:9.3f} {base / t:8.1f}x")


# ------------------------------------------------- backward variants (not in the library)
class _IndexAddDecode(torch.autograd.Function):
    """embedding_bag forward; backward with index_add_ (per slot j) and chunked gathers."""

    @staticmethod
    def forward(ctx, idx: Tensor, vals: Tensor, W_t: Tensor) -> Tensor:  # (B, k), (B, k), (d_sae, d_in)
        ctx.save_for_backward(idx, vals, W_t)
        return F.embedding_bag(idx, W_t, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, g: Tensor):  # g (B, d_in)
        idx, vals, W_t = ctx.saved_tensors
        gW = torch.zeros_like(W_t)
        for j in range(idx.shape[1]):
            gW.index_add_(0, idx[:, j], g * vals[:, j : j + 1])
        gv = torch.empty_like(vals)
        for s in range(0, idx.shape[0], 256):  # (256, k, d_in) gathered at a time
            gv[s : s + 256] = torch.bmm(W_t[idx[s : s + 256]], g[s : s + 256, :, None])[..., 0]
        return None, gv, gW


class _CSRDecode(torch.autograd.Function):
    """embedding_bag forward; backward with torch.sparse CSR: gW = Aᵀ g, g_vals = SDDMM(g, W_t)."""

    @staticmethod
    def forward(ctx, idx: Tensor, vals: Tensor, W_t: Tensor) -> Tensor:
        ctx.save_for_backward(idx, vals, W_t)
        return F.embedding_bag(idx, W_t, mode="sum", per_sample_weights=vals)

    @staticmethod
    def backward(ctx, g: Tensor):
        idx, vals, W_t = ctx.saved_tensors
        B, k = idx.shape
        d_sae = W_t.shape[0]
        flat = idx.reshape(-1)
        order = flat.argsort()
        crow = torch.zeros(d_sae + 1, dtype=torch.long)
        crow[1:] = torch.bincount(flat, minlength=d_sae).cumsum(0)
        cols = torch.arange(B).repeat_interleave(k)[order]
        gW = torch.sparse_csr_tensor(crow, cols, vals.reshape(-1)[order], (d_sae, B)) @ g
        pattern = torch.sparse_csr_tensor(torch.arange(B + 1) * k, flat, torch.zeros(B * k), (B, d_sae))
        gv = torch.sparse.sampled_addmm(pattern, g, W_t.mT, beta=0.0).values().reshape(B, k)
        return None, gv, gW


def backward_variants(cfg: BenchConfig, d_in: int = 512, d_sae: int = 4096, B: int = 4096, k: int = 32) -> None:
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    W_t = torch.randn(d_sae, d_in, generator=gen).requires_grad_()
    idx = torch.randint(0, d_sae, (B, k), generator=gen)
    vals = torch.rand(B, k, generator=gen).requires_grad_()
    g = torch.randn(B, d_in, generator=gen)
    F.embedding_bag(idx, W_t, mode="sum", per_sample_weights=vals).backward(g)
    ref = vals.grad.clone(), W_t.grad.clone()
    fns = {
        "torch embedding_bag": lambda: F.embedding_bag(idx, W_t, mode="sum", per_sample_weights=vals),
        "custom: index_add_ + gather": lambda: _IndexAddDecode.apply(idx, vals, W_t),
        "custom: CSR mm + SDDMM": lambda: _CSRDecode.apply(idx, vals, W_t),
    }
    for name, f in fns.items():  # the variants agree before they are timed
        vals.grad = W_t.grad = None
        f().backward(g)
        torch.testing.assert_close((vals.grad, W_t.grad), ref, rtol=1e-4, atol=1e-4, msg=name)
    ts = median_ms([lambda f=f: step(f(), g, vals, W_t) for f in fns.values()], cfg.repeats, cfg.min_repeat_s)
    fwd = median_ms([lambda: fns["torch embedding_bag"]().detach()], cfg.repeats, cfg.min_repeat_s)[0]
    print(f"\nBackward variants, transposed weight (d_sae {d_sae}, d_in {d_in}), B {B}, k {k}: "
          f"forward + backward ms (forward alone {fwd:.2f} ms)")
    for name, t in zip(fns, ts):
        print(f"{name:<30} {t:9.2f} {ts[0] / t:6.2f}x of torch")
    # does torch's backward secretly scale with d_sae·d_in beyond the zero fill of the gradient?
    print(f"{'d_sae':>7} {'fwd+bwd ms':>11} {'zeros(d_sae, d_in) ms':>22}")
    for m in (d_sae, 4 * d_sae, 16 * d_sae):
        Wm = torch.randn(m, d_in, generator=gen).requires_grad_()
        im = torch.randint(0, m, (B, k), generator=gen)
        t_fb, t_z = median_ms(
            [lambda Wm=Wm, im=im: step(F.embedding_bag(im, Wm, mode="sum", per_sample_weights=vals), g, vals, Wm),
             lambda m=m: torch.zeros(m, d_in)], cfg.repeats, cfg.min_repeat_s)
        print(f"{m:7d} {t_fb:11.2f} {t_z:22.2f}")


def fit_cost(rows: list[tuple[int, int, int, float, float, float]]) -> DecodeCost:
    """Fit :class:`DecodeCost` to the measured rows (non-negative least squares, relative error)
    and print it with the winner each row had and the one the fit predicts."""
    import numpy as np
    from scipy.optimize import nnls

    d, m, B, p, td, ts = (np.array(c, dtype=float) for c in zip(*rows))
    codes, nnz = B * m, p * B * m
    xd = nnls(np.stack([np.ones_like(d), codes * d], 1) / td[:, None], np.ones_like(td))[0]
    xs = nnls(np.stack([np.ones_like(d), codes, nnz, nnz * d], 1) / ts[:, None], np.ones_like(ts))[0]
    cost = DecodeCost(*(float(f"{v:.3g}") for v in (*xd, *xs)))
    print(f"\nFitted {cost}\n(in geomsae.saes.sparse: {CPU_2_THREADS})")
    ok = sum((a < b) == use_sparse_decode(float(q), int(n), int(k), int(c), cost)
             for n, k, c, q, b, a in zip(d, m, B, p, td, ts))
    print(f"the fit picks the faster decoder on {ok} of the {len(rows)} clean rows; crossovers:")
    for size in dict.fromkeys(zip(d.astype(int), m.astype(int), B.astype(int))):
        print(f"  d_in {size[0]}, d_sae {size[1]}, batch {size[2]}: {sparse_density_max(*map(int, size), cost):.4f}")
    return cost


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backward-variants", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fit", action="store_true", help="fit the DecodeCost model to the density tables")
    p.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    p.add_argument("--threads", type=int, default=BenchConfig.threads)
    p.add_argument("--sizes", nargs="+", default=None, metavar="D_IN,D_SAE,BATCH",
                   help="override BenchConfig.sizes, e.g. --sizes 128,1024,512 64,512,256")
    p.add_argument("--densities", type=float, nargs="+", default=None, help="override the density grid")
    p.add_argument("--size", type=int, choices=range(len(BenchConfig.sizes)), default=None,
                   help="only this entry of BenchConfig.sizes (0: d_in 512, ...; 1: d_in 64, ...)")
    args = p.parse_args()
    cfg = BenchConfig(repeats=args.repeats, threads=args.threads)
    if args.quick:
        cfg = BenchConfig(repeats=2, threads=args.threads, densities=(0.01, 0.1), min_repeat_s=0.01)
    if args.sizes:
        cfg.sizes = tuple(tuple(int(v) for v in sz.split(",")) for sz in args.sizes)  # type: ignore[misc]
    if args.densities:
        cfg.densities = tuple(args.densities)
    if args.size is not None:
        cfg.sizes = (cfg.sizes[args.size],)
    torch.set_num_threads(cfg.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"median of {cfg.repeats} repeats (each >= {cfg.min_repeat_s} s){load()}")
    rows = []
    for d_in, d_sae, B in cfg.sizes:
        rows += density_table(cfg, d_in, d_sae, B)
        topk_table(cfg, d_in, d_sae, B)
    if args.fit:
        fit_cost(rows)
    if args.backward_variants:
        backward_variants(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

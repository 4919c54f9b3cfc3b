"""``geomsae solve``: exact sparse codes for a file of activations, or a planted demo.

    geomsae solve --demo [--rho 0.9 --k 8 ...]
    geomsae solve --data X.npy --dict D.npy --lam1 0.1 --lam2 0.05 --out codes.npy

--out gets the codes of the elastic net (lasso when --lam2 0) with the given --lam1/--lam2, and a
.json of their certificates beside it; with --adaptive the adaptive solution goes to
<out>.adaptive.npy (+ .json).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geomsae import durable
from geomsae.durable import check_new_file


@dataclass
class SolveConfig:
    """Options of ``geomsae solve``."""

    demo: bool = False
    """Plant a sparse code in a coherent (spiked) dictionary, solve it and report the recovery."""
    data: str | None = None
    """A .npy of activations (B, n) to encode (not with --demo)."""
    dict: str | None = None
    """A .npy dictionary (n, m), atoms as columns (not with --demo)."""
    out: str | None = None
    """Where to write the elastic-net codes (.npy added if missing; a .json of certificates beside it)."""
    overwrite: bool = False
    """Replace --out files that exist (never the --data or --dict file this command reads)."""
    lam1: float = 0.05
    """λ1 in canonical units: ½‖x − b − Dz‖² + λ1 Σ w|z| + (λ2/2)‖z‖²."""
    lam2: float = 0.01
    """λ2 in canonical units (0 gives the lasso)."""
    adaptive: bool = True
    """Also solve the adaptive elastic net (EN pilot, then w = (|ẑ| + 1e-6)^(−gamma))."""
    gamma: float = 1.0
    """Exponent of the adaptive weights."""
    signed: bool = False
    """Allow signed codes (default: z ≥ 0, the SAE case)."""
    tol: float = 1e-8
    """Certified relative duality gap to reach."""
    n: int = 64
    """Demo: input dimension."""
    m: int = 256
    """Demo: number of atoms."""
    k: int = 6
    """Demo: active atoms per sample."""
    rho: float = 0.9
    """Demo: coherence of the spiked dictionary d_j ∝ √(1−ρ) u_j + √ρ v."""
    n_samples: int = 256
    """Demo: number of planted samples."""
    seed: int = 0
    """Demo: random seed."""
    progress: bool = True
    """Show a progress bar of the problems solved (on stderr)."""

    def __post_init__(self) -> None:
        if not self.demo and (self.data is None or self.dict is None):
            raise ValueError("geomsae solve needs --demo, or both --data X.npy and --dict D.npy")
        if self.demo and (self.data is not None or self.dict is not None):
            raise ValueError("--demo plants its own data: leave out --data and --dict, or --demo")
        for name in ("lam1", "lam2", "gamma", "tol"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"{name} == {v!r}, must be a finite number")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho == {self.rho}, must be in [0, 1)")
        if not 1 <= self.k <= self.m:
            raise ValueError(f"k == {self.k}, must be in [1, m={self.m}]")


def _planted(cfg: SolveConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    v = rng.standard_normal(cfg.n)
    v /= np.linalg.norm(v)
    U = rng.standard_normal((cfg.n, cfg.m))
    U /= np.linalg.norm(U, axis=0)
    D = np.sqrt(1 - cfg.rho) * U + np.sqrt(cfg.rho) * v[:, None]
    D /= np.linalg.norm(D, axis=0)
    Z = np.zeros((cfg.n_samples, cfg.m))
    for i in range(cfg.n_samples):
        Z[i, rng.choice(cfg.m, cfg.k, replace=False)] = rng.uniform(1, 3, cfg.k)
    return Z @ D.T, D, Z


def _support_scores(Z_true: np.ndarray, Z: np.ndarray) -> tuple[float, float, float, float]:
    t, p = Z_true != 0, Z != 0
    tp = (t & p).sum()
    prec = tp / max(p.sum(), 1)
    rec = tp / max(t.sum(), 1)
    exact = float(np.mean(np.all(t == p, axis=1)))
    return float(prec), float(rec), 2 * prec * rec / max(prec + rec, 1e-12), exact


def run(args: argparse.Namespace) -> int:
    from geomsae.solvers import aen_solve, solve

    cfg: SolveConfig = args.cfg
    out = out_path(cfg.out, overwrite=cfg.overwrite, inputs=(cfg.data, cfg.dict)) if cfg.out else None
    if cfg.demo:
        X, D, Z_true = _planted(cfg)
    else:
        X, D, Z_true = _load_npy(cfg.data, "--data"), _load_npy(cfg.dict, "--dict"), None
    B = X.shape[0] if X.ndim == 2 else 0
    batch = min(4096, max(256, -(-B // 20)))  # about 20 updates of the progress bar
    kw = dict(lam1=cfg.lam1, lam2=cfg.lam2, nonneg=not cfg.signed, tol=cfg.tol)
    results = {}
    t0 = time.perf_counter()
    show = cfg.progress and not cfg.demo
    if show:
        print(f"geomsae solve: {B} problems ...", file=sys.stderr, flush=True)
    results["elastic net" if cfg.lam2 > 0 else "lasso"] = solve(X, D, batch_size=batch, progress=show, **kw)
    if cfg.adaptive:
        if show:
            print("geomsae solve: adaptive (pilot, then reweighted) ...", file=sys.stderr, flush=True)
        results["adaptive elastic net" if cfg.lam2 > 0 else "adaptive lasso"] = aen_solve(
            X, D, gamma=cfg.gamma, batch_size=batch, progress=show, **kw)
    elapsed = time.perf_counter() - t0
    B, n = X.shape
    print(f"geomsae solve: {B} problems, n={n}, m={D.shape[1]}, lam1={cfg.lam1}, lam2={cfg.lam2} (canonical units), {elapsed:.2f} s")
    if cfg.demo:
        G = D.T @ D
        off = G[~np.eye(D.shape[1], dtype=bool)]
        print(f"planted: k={cfg.k} active atoms per sample, spiked dictionary rho={cfg.rho} (mean coherence {off.mean():.3f})")
    header = f"{'method':22s} {'objective':>10s} {'max gap':>9s} {'max rel gap':>11s} {'converged':>9s} {'L0':>6s}"
    if Z_true is not None:
        header += f" {'precision':>9s} {'recall':>6s} {'F1':>5s} {'exact support':>13s}"
    print(header)
    for name, r in results.items():
        line = (f"{name:22s} {np.mean(r.objective):10.4f} {np.max(r.dual_gap):9.1e} {np.max(r.rel_gap):11.1e} "
                f"{int(np.sum(r.converged)):>4d}/{B:<4d} {np.mean(np.count_nonzero(r.codes, axis=1)):6.1f}")
        if Z_true is not None:
            p, rc, f1, ex = _support_scores(Z_true, r.codes)
            line += f" {p:9.3f} {rc:6.3f} {f1:5.3f} {ex:13.3f}"
        print(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for i, (method, r) in enumerate(results.items()):
            path = out if i == 0 else out.with_name(out.stem + ".adaptive.npy")
            meta = {"config": asdict(cfg), "method": method, "dual_gap": np.asarray(r.dual_gap).tolist(),
                    "objective": np.asarray(r.objective).tolist(), "converged": np.asarray(r.converged).tolist()}
            buf = io.BytesIO()
            np.save(buf, np.asarray(r.codes))
            durable.write_bytes(path, buf.getvalue())
            durable.write_json(path.with_suffix(".json"), meta)
            written += [f"{path} ({method})", str(path.with_suffix(".json"))]
        print("wrote " + ", ".join(written))
    return 0


def out_path(out: str, *, overwrite: bool = False, inputs: tuple[str | None, ...] = ()) -> Path:
    """The --out file: '.npy' added when missing (as np.save would), refused when it is a folder, one of the
    ``inputs``, or (without ``overwrite``) an existing file; likewise its .json and .adaptive.npy."""
    path = Path(out)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    for p in (path, path.with_suffix(".json"), path.with_name(path.stem + ".adaptive.npy")):
        check_new_file(p, "--out", overwrite=overwrite, inputs=inputs)
    return path


def _load_npy(path: str, what: str) -> np.ndarray:
    """A numeric .npy, never unpickled; ValueError naming ``what`` otherwise."""
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"{what} {path!r} does not exist") from None
        raise ValueError(f"{what} {path!r} is not a readable .npy array: {' '.join(str(exc).split())}") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise ValueError(f"{what} {path!r} has dtype {getattr(a, 'dtype', type(a).__name__)}, must be a real "
                         "float or integer array")
    if a.ndim != 2:
        raise ValueError(f"{what} {path!r} has shape {a.shape}, must be 2-D")
    return a


def add_parser(sub: argparse._SubParsersAction, name: str, summary: str) -> None:
    p = sub.add_parser(name, help=summary, description=__doc__)
    p.add_arguments(SolveConfig, dest="cfg")
    p.set_defaults(run=run)

r"""The fast batched solver: FISTA with adaptive restarts, polished by exact active-set solves.

Why this algorithm (measured on this project's 2-core CPU, see ``bench/solvers.py``):

* All B problems share D, so every iteration is two dense GEMMs (B×m)·(m×n) and
  (B×n)·(n×m) — the one operation a CPU (or GPU) does near its roofline. Coordinate
  descent is inherently sequential per sample and leaves the GEMM units idle.
* Plain FISTA reaches relative gaps of 1e-8 only slowly on coherent dictionaries (the
  spiked ρ = 0.9 model has active-block condition numbers in the hundreds). But the
  support is identified long before the values converge. Every ``check_every``
  iterations we therefore *polish*: on the current support S with signs s we solve the
  restricted optimality system exactly,

      (D_Sᵀ D_S + λ2 I) z_S = D_Sᵀ y − λ1 W_S s_S,

  by a batched Cholesky factorisation (entries that change sign are dropped and the
  system re-solved), and accept the result where it lowers the objective. With the right
  support the polished code is optimal to machine precision, so the certified gap falls
  from ~1e-4 to ~1e-15 in one step and the sample leaves the batch.
* Converged samples are removed from the batch, so late iterations cost only what the
  hard samples need. Each sample stops when its own certified relative gap
  (P − Dual)/P ≤ tol; the gap is recomputed from scratch, so a wrong polish can never
  be reported as converged.

Adaptive restart: the gradient scheme of O'Donoghue & Candès (2015), per sample.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geomsae.solvers.objective import gap_terms
from geomsae.solvers.problem import (
    Problem,
    check_tol,
    prepare,
    prepare_codes,
    to_output,
)
from geomsae.solvers.working_set import solve_working_set

# algorithm="auto" uses working sets from this many atoms on: measured (bench/solvers.py, this
# 2-core machine under load) 1.15x faster than FISTA at n 512, m 4096 but 2.8x slower at n 64, m 512.
AUTO_WORKING_SET_ATOMS = 2048
# Keep the m×m Gram matrix (for polishing and small-n gradients) up to this many atoms.
GRAM_MAX_ATOMS = 8192
# Elements per polishing block (rows × support²), bounds the memory of the batched solve,
# and rows per block: torch's batched Cholesky on CPU slows down sharply past ~128.
POLISH_BLOCK = 1 << 24
POLISH_ROWS = 128


class ConvergenceWarning(UserWarning):
    """Some samples did not reach the requested certified relative duality gap."""


class SolverResult(NamedTuple):
    """The result of an exact sparse-coding solve, one entry per sample."""

    codes: Any
    """(B, m) codes z, in the caller's array type and dtype ((m,) if X was a vector)."""
    dual_gap: Any
    """(B,) float64 certified duality gap P(z) − Dual(θ) ≥ P(z) − P(z*) (absolute)."""
    n_iter: Any
    """(B,) int64 iterations each sample ran."""
    converged: Any
    """(B,) bool: the certified relative gap dual_gap / P(z) ≤ tol."""
    objective: Any = None
    """(B,) float64 primal objective P(z) at the returned codes."""
    weights: Any = None
    """(B, m) or (m,) float64 adaptive weights used (aen_solve only), else None."""

    @property
    def rel_gap(self) -> Any:
        """(B,) certified relative gap dual_gap / P(z) (0 where P = 0)."""
        obj = self.objective
        if isinstance(obj, Tensor):
            return torch.where(obj > 0, self.dual_gap / obj.clamp_min(1e-300), torch.zeros_like(obj))
        import numpy as np

        return np.where(obj > 0, self.dual_gap / np.maximum(obj, 1e-300), 0.0)


class Context:
    """Per-dictionary precomputation reused across calls (paths, warm starts)."""

    def __init__(self, D: Tensor, lam2: float):
        self.D = D
        self.n, self.m = D.shape
        # Gram-form gradients cost 2Bm² flops against 4Bnm for the D form.
        self.use_gram_grad = self.m <= GRAM_MAX_ATOMS and self.m < 2 * self.n
        self._L: float | None = None
        self._G: Tensor | None = None
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor, Tensor | None]] = {}

    @property
    def L(self) -> float:
        """Lipschitz constant of ½‖y − Dz‖²: ‖D‖₂², computed on first use (FISTA only)."""
        if self._L is None:
            # the top eigenvalue of the smaller Gram matrix (a full SVD of D is ~40x slower on 2 cores)
            D = self.D
            small = D @ D.T if self.n <= self.m else D.T @ D
            self._L = float(torch.linalg.eigvalsh(small)[-1]) * (1 + 1e-12)
        return self._L

    @property
    def G(self) -> Tensor | None:
        """(m, m) DᵀD, computed on first use, or None past GRAM_MAX_ATOMS atoms."""
        if self._G is None and self.m <= GRAM_MAX_ATOMS:
            self._G = self.D.T @ self.D
        return self._G

    def cast(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
        """(D, Dᵀ contiguous, DᵀD or None) in ``dtype``, cached."""
        if dtype not in self._cast:
            G = self.G.to(dtype) if self.use_gram_grad and self.G is not None else None
            self._cast[dtype] = (self.D.to(dtype), self.D.T.to(dtype).contiguous(), G)
        return self._cast[dtype]

    def gram_block(self, idx: Tensor) -> Tensor:
        """(b, s, s) blocks G[idx_i, idx_j] of DᵀD for index rows idx (b, s)."""
        if self.G is not None:  # a flat index_select is ~2.5x faster than G[idx, idx] on CPU
            flat = (idx[:, :, None] * self.m + idx[:, None, :]).reshape(-1)
            return self.G.reshape(-1).index_select(0, flat).view(idx.shape[0], idx.shape[1], idx.shape[1])
        Ds = self.D.T[idx]  # (b, s, n)
        return Ds @ Ds.transpose(1, 2)


def _prox(V: Tensor, thr: Tensor, shrink: float, nonneg: bool) -> Tensor:
    if nonneg:
        return (V - thr).clamp_min(0) * shrink
    return torch.sign(V) * (V.abs() - thr).clamp_min(0) * shrink


def _polish(
    Z: Tensor, DtY: Tensor, YY: Tensor, W: Tensor, prob: Problem, ctx: Context, S: Tensor, eligible: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact solves on candidate supports; returns (candidate codes, accept mask (B,)).

    ``S`` (B, m) bool is the candidate support of each row (the union of the supports at
    this and the previous check, so atoms flickering at the threshold are included and
    the solve decides them); only ``eligible`` rows (B,) with |S| ≤ n are solved: an
    unsettled support would waste an O(|S|³) factorisation.
    """
    B, m = Z.shape
    sizes = S.sum(dim=1)
    eligible = eligible & (sizes > 0) & (sizes <= ctx.n)
    Zc = Z.clone()
    accept = torch.zeros(B, dtype=torch.bool, device=Z.device)
    rows = torch.nonzero(eligible).flatten()
    if rows.numel() == 0:
        return Zc, accept
    # Sort rows by support size so each block pads little.
    rows = rows[torch.argsort(sizes[rows])]
    start = 0
    while start < rows.numel():
        stop = start + 1
        # grow the block while it fits the memory budget at the block's largest size
        while stop < rows.numel() and stop - start < POLISH_ROWS and (stop + 1 - start) * int(sizes[rows[stop]]) ** 2 <= POLISH_BLOCK:
            stop += 1
        blk = rows[start:stop]
        s = int(sizes[blk].max())
        idx = torch.argsort((~S[blk]).to(torch.int8), dim=1, stable=True)[:, :s]  # support first
        mask = torch.arange(s, device=Z.device)[None] < sizes[blk][:, None]
        zero = torch.zeros((), dtype=Z.dtype, device=Z.device)
        zcur = torch.where(mask, Z[blk].gather(1, idx), zero)
        if prob.nonneg:
            signs = torch.ones_like(zcur)
        else:  # atoms at zero take the sign of their correlation with y
            signs = torch.where(zcur != 0, torch.sign(zcur), torch.sign(DtY[blk].gather(1, idx)))
        Graw = ctx.gram_block(idx)
        c = DtY[blk].gather(1, idx)
        w = (W if W.shape[0] == 1 else W[blk]).expand(blk.numel(), -1).gather(1, idx)
        eye = torch.eye(s, dtype=Z.dtype, device=Z.device)

        def objective(z: Tensor, msk: Tensor) -> Tensor:
            zm = torch.where(msk, z, torch.zeros((), dtype=z.dtype, device=z.device))
            quad = torch.einsum("bi,bij,bj->b", zm, Graw, zm)
            return 0.5 * YY[blk] - (zm * c).sum(1) + 0.5 * quad + prob.lam1 * (w * zm.abs()).sum(1) + 0.5 * prob.lam2 * (zm * zm).sum(1)

        Pcur = objective(zcur, zcur != 0)
        ok = torch.ones(blk.numel(), dtype=torch.bool, device=Z.device)
        for _ in range(8):
            mm = mask[:, :, None] & mask[:, None, :]
            A = torch.where(mm, Graw, eye) + prob.lam2 * eye * mask[:, :, None]
            rhs = torch.where(mask, c - prob.lam1 * w * signs, torch.zeros((), dtype=Z.dtype, device=Z.device))
            Lc, info = torch.linalg.cholesky_ex(A)
            ok = info == 0
            Lc = torch.where(ok[:, None, None], Lc, eye)
            zs = torch.cholesky_solve(rhs[:, :, None], Lc)[:, :, 0]
            wrong = mask & (zs * signs <= 0)
            if not bool(wrong.any()):
                break
            mask = mask & ~wrong
        zs = torch.where(mask & ~(zs * signs <= 0), zs, torch.zeros((), dtype=Z.dtype, device=Z.device))
        Pnew = objective(zs, mask)
        acc = ok & torch.isfinite(Pnew) & (Pnew <= Pcur)
        new_rows = torch.zeros(blk.numel(), m, dtype=Z.dtype, device=Z.device).scatter(1, idx, zs)
        Zc[blk] = torch.where(acc[:, None], new_rows, Z[blk])
        accept[blk] = acc
        start = stop
    return Zc, accept


def solve_problem(
    prob: Problem,
    ctx: Context,
    Z0: Tensor | None,
    *,
    tol: float,
    max_iter: int,
    check_every: int = 10,
    polish: bool = True,
    pbar: Any = None,
    it_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Solve every row of ``prob``; returns (Z, gap, P, n_iter, converged, handed_off).

    FISTA iterates in ``it_dtype``; polishing, the certificate and the returned codes are
    float64. With a lower ``it_dtype`` a row whose certified gap stops improving (four
    checks without halving) is *handed off* unconverged, for a float64 run to finish.
    """
    B, m = prob.B, prob.m
    dev, dt = prob.Y.device, prob.Y.dtype
    low = it_dtype != dt
    Z_out = torch.zeros(B, m, dtype=dt, device=dev)
    gap_out = torch.full((B,), float("inf"), dtype=dt, device=dev)
    P_out = torch.full((B,), float("inf"), dtype=dt, device=dev)
    it_out = torch.full((B,), max_iter, dtype=torch.int64, device=dev)
    conv_out = torch.zeros(B, dtype=torch.bool, device=dev)
    hand_out = torch.zeros(B, dtype=torch.bool, device=dev)

    act = torch.arange(B, device=dev)
    sub = prob
    D_it, DT_it, G_it = ctx.cast(it_dtype)
    DtY = sub.Y @ ctx.D  # float64, for polishing
    DtY_it, Y_it = DtY.to(it_dtype), sub.Y.to(it_dtype)
    YY = (sub.Y * sub.Y).sum(1)
    Z = torch.zeros(B, m, dtype=it_dtype, device=dev) if Z0 is None else Z0.to(it_dtype)
    if prob.nonneg:
        Z.clamp_(min=0)
    Zy = Z.clone()
    t = torch.ones(B, 1, dtype=it_dtype, device=dev)
    best = torch.full((B,), float("inf"), dtype=dt, device=dev)
    stall = torch.zeros(B, dtype=torch.int64, device=dev)
    shrink = 1.0 / (1.0 + prob.lam2 / ctx.L)

    S_prev = Z != 0
    it = 0
    while True:
        if it % check_every == 0 or it == max_iter:
            Z64 = Z.to(dt)
            S_now = Z64 != 0
            # polish once the support has (nearly) settled: few atoms entered or left
            changed = (S_now ^ S_prev).sum(dim=1)
            settled = changed <= 2
            S_union = S_now | S_prev
            S_prev = S_now
            acc = None
            if polish and it > 0:
                Zc, acc = _polish(Z64, DtY, YY, sub.W, sub, ctx, S_union, settled)
                Z64 = torch.where(acc[:, None], Zc, Z64)
            P, Dl, _ = gap_terms(Z64, sub)
            gap = P - Dl
            conv = gap <= tol * P.clamp_min(0)
            if polish and it > 0:
                # rows certified without a polish this round get one on their own support,
                # so returned codes are exact (not just within tol) wherever that succeeds
                todo = conv & ~(acc if acc is not None else torch.zeros_like(conv)) & (gap > 0)
                if bool(todo.any()):
                    r = torch.nonzero(todo).flatten()
                    Zr, acc_r = _polish(Z64[r], DtY[r], YY[r], sub.W if sub.W.shape[0] == 1 else sub.W[r], sub.rows(r), ctx, S_now[r], torch.ones_like(todo[r]))
                    if bool(acc_r.any()):
                        Pr, Dr, _ = gap_terms(Zr, sub.rows(r))
                        better = acc_r & (Pr - Dr <= gap[r])
                        rb = r[better]
                        Z64[rb], P[rb], gap[rb] = Zr[better], Pr[better], (Pr - Dr)[better]
            hand = torch.zeros_like(conv)
            if low:
                rel = gap / P.clamp_min(1e-300)
                better = rel < 0.5 * best
                best = torch.where(better, rel, best)
                stall = torch.where(better, torch.zeros_like(stall), stall + 1)
                hand = ~conv & (stall >= 4)
            final = conv | hand if it < max_iter else torch.ones_like(conv)
            if acc is not None and bool(acc.any()):
                Zc_it = Z64.to(it_dtype)
                Z = torch.where(acc[:, None], Zc_it, Z)
                Zy = torch.where(acc[:, None], Zc_it, Zy)
                t = torch.where(acc[:, None], torch.ones_like(t), t)
            if bool(final.any()):
                rows = act[final]
                Z_out[rows], gap_out[rows], P_out[rows] = Z64[final], gap[final], P[final]
                it_out[rows] = it
                conv_out[rows] = conv[final]
                hand_out[rows] = hand[final] & ~conv[final]
                if pbar is not None:
                    pbar.update(int((final & ~hand).sum()))
                keep = ~final
                act, Z, Zy, t, S_prev = act[keep], Z[keep], Zy[keep], t[keep], S_prev[keep]
                DtY, DtY_it, Y_it, YY, best, stall = DtY[keep], DtY_it[keep], Y_it[keep], YY[keep], best[keep], stall[keep]
                sub = sub.rows(keep)
            if act.numel() == 0:
                break
        # one FISTA step on the remaining rows
        if G_it is not None and ctx.use_gram_grad:
            grad = Zy @ G_it - DtY_it
        else:
            grad = (Zy @ DT_it - Y_it) @ D_it
        W_it = sub.W.to(it_dtype)
        Znew = _prox(Zy - grad / ctx.L, (sub.lam1 / ctx.L) * W_it, shrink, sub.nonneg)
        restart = ((Zy - Znew) * (Znew - Z)).sum(1, keepdim=True) > 0
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        beta = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
        t = torch.where(restart, torch.ones_like(t), t_new)
        Zy = Znew + beta * (Znew - Z)
        Z = Znew
        it += 1
    return Z_out, gap_out, P_out, it_out, conv_out, hand_out


def solve(X: Any, D: Any, **kwargs: Any) -> SolverResult:
    """Solve B sparse-coding problems exactly, with a certified duality gap for each.

    For each row x of X (B, n) this minimises, in canonical units (docs/method.md §1),

        F(z; x) = ½‖x − b − Dz‖² + λ1 Σ_j w_j |z_j| + (λ2/2)‖z‖²,   z ≥ 0 if ``nonneg``,

    which covers the lasso (λ2 = 0, w ≡ 1), the elastic net (λ2 > 0), the adaptive lasso
    (λ2 = 0, w from a pilot) and the adaptive elastic net (λ2 > 0, w from a pilot).

    Algorithm: ``algorithm="auto"`` (default) picks ``"working_set"`` for dictionaries of at
    least 2048 atoms and ``"fista"`` below (measured: see ``AUTO_WORKING_SET_ATOMS``).
    ``algorithm="working_set"``: per sample, exact active-set
    Newton solves on a working set of a few hundred atoms, checked on all atoms by the
    certified gap and grown from the KKT violations that gap-safe screening leaves
    (:mod:`geomsae.solvers.working_set`); samples it cannot finish go on to FISTA.
    ``algorithm="fista"``: batched FISTA with per-sample adaptive restarts, polished every
    ``check_every`` iterations by exact batched Cholesky solves on the current support (see
    the module docstring). Either way a sample stops once its certified relative gap
    (P(z) − Dual(θ)) / P(z) ≤ ``tol``; the gap comes from the dual point of
    :func:`geomsae.solvers.duality_gap`, recomputed from scratch.

    Args:
        X: (B, n) or (n,) inputs, numpy or torch (CPU or CUDA), float16/32/64.
        D: (n, m) dictionary, atoms as columns. Columns need not have unit norm (the problem
            is solved as written); an all-zero column raises ValueError.
        lam1: λ1 ≥ 0. lam2: λ2 ≥ 0 (not both 0).
        weights: (m,) or (B, m) per-latent weights w > 0; None means w ≡ 1.
        bias: (n,) bias b subtracted from every x; None means 0.
        nonneg: constrain z ≥ 0 (the SAE case) or allow signed codes.
        tol: certified relative duality gap to reach.
        max_iter: FISTA iterations per sample at most (working-set rounds are counted
            apart, see ``n_iter``); samples that do not converge are
            flagged in ``converged`` and a :class:`ConvergenceWarning` states the worst gap.
        init: (B, m) warm start (negative entries are clipped to 0 when ``nonneg``).
        batch_size: rows solved together (bounds memory: ~6·batch_size·m floats).
        check_every: iterations between certificate checks and polishing.
        progress: show a tqdm bar counting solved samples.
        algorithm: ``"auto"`` (default), ``"working_set"`` or ``"fista"`` (see above).
        precision: ``"mixed"`` (default) runs the FISTA iterations in float32 — twice the
            GEMM throughput on CPU — and polishes, certifies and returns float64 results;
            rows whose float32 progress stalls are finished in float64. ``"double"`` runs
            float64 throughout (the slow reference the tests compare against).

    The problem data are converted to float64; codes come back in X's array type and
    dtype, so a float32 X gets float32 codes of a float64-certified solve (agreeing with
    the float64 solve to float32 rounding, ≈ 1e-7 relative). Gap and objective are float64.
    """
    return Solver(D)(X, **kwargs)


class Solver:
    """:func:`solve` for one dictionary D (n, m), called many times (calibration, paths, sweeps).

    The dictionary's precomputation (DᵀD for the working sets, ‖D‖₂ for FISTA) is done on
    first use and reused by every call, whatever the inputs, λ, weights or bias; a call
    takes the arguments of :func:`solve` except D and returns its :class:`SolverResult`.
    """

    def __init__(self, D: Any):
        self.D = D
        self._ctx: Context | None = None

    def __call__(
        self,
        X: Any,
        *,
        lam1: float,
        lam2: float = 0.0,
        weights: Any = None,
        bias: Any = None,
        nonneg: bool = True,
        tol: float = 1e-8,
        max_iter: int = 20000,
        init: Any = None,
        batch_size: int = 4096,
        check_every: int = 10,
        progress: bool = False,
        precision: str = "mixed",
        algorithm: str = "auto",
    ) -> SolverResult:
        """Solve F(z; x) for every row of X (B, n) or (n,); see :func:`solve`."""
        prob = prepare(X, self.D, lam1=lam1, lam2=lam2, weights=weights, bias=bias, nonneg=nonneg)
        if self._ctx is None:
            self._ctx = Context(prob.D, prob.lam2)
        return _solve_prepared(prob, self._ctx, tol=tol, max_iter=max_iter, init=init, batch_size=batch_size,
                               check_every=check_every, progress=progress, precision=precision, algorithm=algorithm)


def _solve_signature() -> inspect.Signature:
    """:func:`solve`'s signature: ``(X, D, *, <the keywords of Solver.__call__>)``, written once, there."""
    call = inspect.signature(Solver.__call__)
    params = [inspect.Parameter("X", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Any),
              inspect.Parameter("D", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Any)]
    params += [p for name, p in call.parameters.items() if name not in ("self", "X")]
    return call.replace(parameters=params)


solve.__signature__ = _solve_signature()


def _solve_prepared(prob: Problem, ctx: Context, *, tol: float, max_iter: int, init: Any, batch_size: int, check_every: int,
                    progress: bool, precision: str, algorithm: str) -> SolverResult:
    check_tol(tol, max_iter)
    for name, v in (("batch_size", batch_size), ("check_every", check_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
    Z0 = prepare_codes("init", init, prob) if init is not None else None
    Z, gap, P, its, conv = solve_with_context(
        prob, ctx, Z0, tol=tol, max_iter=max_iter, batch_size=batch_size, check_every=check_every, progress=progress, precision=precision,
        algorithm=algorithm,
    )
    return make_result(prob, Z, gap, P, its, conv, tol)


def solve_with_context(
    prob: Problem,
    ctx: Context,
    Z0: Tensor | None,
    *,
    tol: float,
    max_iter: int,
    batch_size: int = 4096,
    check_every: int = 10,
    progress: bool = False,
    precision: str = "mixed",
    algorithm: str = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Chunked driver over the batch; float64 tensors out.

    ``algorithm="working_set"`` first runs :func:`geomsae.solvers.working_set.solve_working_set`
    and hands the rows it leaves unconverged to FISTA (below), warm-started where it stopped;
    ``n_iter`` then counts its rounds plus the FISTA iterations.

    ``precision="mixed"``: FISTA iterates in float32 (twice the GEMM throughput), with
    float64 polishing and certificates; rows whose float32 progress stalls are finished by
    float64 iterations from where they stopped. ``"double"``: float64 throughout.
    """
    if precision not in ("mixed", "double"):
        raise ValueError(f"precision == {precision!r}, must be 'mixed' or 'double'")
    if algorithm not in ("auto", "working_set", "fista"):
        raise ValueError(f"algorithm == {algorithm!r}, must be 'auto', 'working_set' or 'fista'")
    if algorithm == "auto":
        algorithm = "working_set" if ctx.m >= AUTO_WORKING_SET_ATOMS else "fista"
    outs = []
    with tqdm(total=prob.B, desc="solve", unit="sample", disable=not progress, leave=False) as bar:
        for start in range(0, prob.B, batch_size):
            sl = slice(start, start + batch_size)
            sub = prob.rows(sl)
            z0 = None if Z0 is None else Z0[sl]
            if algorithm == "working_set":
                Z, gap, P, its, conv = solve_working_set(sub, ctx, z0, tol=tol)
                bar.update(int(conv.sum()))
                if not bool(conv.all()):
                    rows = torch.nonzero(~conv).flatten()
                    Z2, gap2, P2, its2, conv2 = solve_with_context(
                        sub.rows(rows), ctx, Z[rows], tol=tol, max_iter=max_iter, batch_size=batch_size,
                        check_every=check_every, precision=precision, algorithm="fista")
                    bar.update(int(rows.numel()))
                    Z[rows], gap[rows], P[rows], conv[rows] = Z2, gap2, P2, conv2
                    its[rows] = its[rows] + its2
                outs.append((Z, gap, P, its, conv))
                continue
            it_dtype = torch.float32 if precision == "mixed" else torch.float64
            Z, gap, P, its, conv, hand = solve_problem(sub, ctx, z0, tol=tol, max_iter=max_iter, check_every=check_every, pbar=bar, it_dtype=it_dtype)
            if bool(hand.any()):
                rows = torch.nonzero(hand).flatten()
                left = max_iter - int(its[rows].max())
                Z2, gap2, P2, its2, conv2, _ = solve_problem(sub.rows(rows), ctx, Z[rows], tol=tol, max_iter=max(left, 1), check_every=check_every, pbar=bar)
                Z[rows], gap[rows], P[rows], conv[rows] = Z2, gap2, P2, conv2
                its[rows] = its[rows] + its2
            outs.append((Z, gap, P, its, conv))
    return tuple(torch.cat(parts) for parts in zip(*outs))  # type: ignore[return-value]


def make_result(prob: Problem, Z: Tensor, gap: Tensor, P: Tensor, its: Tensor, conv: Tensor, tol: float, weights: Any = None) -> SolverResult:
    """Warn on non-convergence and convert to the caller's types."""
    if not bool(conv.all()):
        bad = ~conv
        rel = (gap[bad] / P[bad].clamp_min(1e-300)).max().item()
        warnings.warn(
            f"{int(bad.sum())} of {prob.B} samples did not converge: worst certified relative gap {rel:.3g} > tol {tol:.3g} "
            "(raise max_iter or tol; see SolverResult.converged)",
            ConvergenceWarning,
            stacklevel=3,
        )
    return SolverResult(
        codes=to_output(Z, prob),
        dual_gap=to_output(gap, prob, dtype=torch.float64),
        n_iter=to_output(its, prob, dtype=torch.int64),
        converged=to_output(conv, prob, dtype=torch.bool),
        objective=to_output(P, prob, dtype=torch.float64),
        weights=weights,
    )


def lam1_max(X: Any, D: Any, *, weights: Any = None, bias: Any = None, nonneg: bool = True) -> Any:
    """(B,) the smallest λ1 with z* = 0: max_j (Dᵀ(x − b))_j / w_j (|·| when signed)."""
    prob = prepare(X, D, lam1=1.0, lam2=0.0, weights=weights, bias=bias, nonneg=nonneg)
    V = prob.Y @ prob.D
    V = V if nonneg else V.abs()
    return to_output((V / prob.W).amax(dim=1).clamp_min(0), prob, dtype=torch.float64)



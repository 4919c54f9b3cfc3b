r"""Working-set solver: exact active-set Newton solves on a few hundred atoms, checked on all.

Why (measured in ``bench/solvers.py``): an optimal code has a few dozen to a few hundred
active atoms out of thousands, so a first-order method spends nearly all of its dense
GEMMs on atoms that stay at zero. Here each sample carries its own *working set* W of
atoms (its current support plus the atoms closest to violating optimality), and:

1. **Inner solve on W, exact.** The restricted problem

       min_z ½ zᵀ(G_WW + λ2 I)z − q_Wᵀz + λ1 Σ_{j∈W} w_j|z_j|,   q = Dᵀ(x − b),

   (z ≥ 0 if nonneg) is solved by the primal–dual active-set method, a semismooth Newton
   method on the proximal fixed point (Hintermüller, Ito & Kunisch 2002): with
   g = A z − q and a_j = A_jj, the active set is I = {j : |a_j z_j − g_j| > λ1 w_j}
   (signs s = sign(a_j z_j − g_j); for z ≥ 0 only the positive side), and the new code
   solves A_II z_I = q_I − λ1 w_I s_I by a batched float64 Cholesky factorisation, z = 0
   off I. Its fixed points are exactly the optimal codes of the restricted problem, and
   near the solution it stops in a step or two.
2. **Check on all atoms, certified.** The residual r = y − Dz and V = Dᵀr for all m
   atoms (two dense GEMMs) give the certified duality gap of
   :mod:`geomsae.solvers.objective` — the same one every solver reports. Samples with
   gap ≤ tol·P leave the batch. For the others, atoms the gap-safe test of
   :mod:`geomsae.solvers.screening` cannot discard are ranked by their KKT violation
   V_j − λ1 w_j (|V_j| when signed), and W becomes the support plus the best-ranked
   atoms, at least doubling in size.

Samples on which the Newton iteration fails (a singular active block, e.g. exactly
duplicated atoms at λ2 = 0, or a cycling active set) or which do not certify within
``max_outer`` rounds are handed back to the caller (the FISTA solver finishes them from
where they are); the certificate is recomputed from scratch in every case.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from geomsae.solvers.problem import Problem
from geomsae.solvers.objective import dual_from_residual, dual_scale, primal_from_residual
from geomsae.solvers.screening import safe_keep

# Optimality on W: ‖pseudo-gradient‖∞ ≤ OPT_RTOL·‖q‖∞ (float64 rounding of the solve).
OPT_RTOL = 1e-12
# Ridge (relative to the mean diagonal) of a singular Newton block, in the direction only.
RIDGE = 1e-9
# Step sizes tried along each Newton direction, largest first.
ALPHAS = torch.tensor([1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 64, 1 / 256])
# Largest (rows × |W|²) of one batch of gathered Gram blocks, in elements (128 MiB float64).
BLOCK_ELEMENTS = 1 << 24


class WorkingSetConfig(NamedTuple):
    """Knobs of the working-set solver."""

    first_size: int = 64
    """Atoms in the first working set (plus the warm start's support)."""
    max_outer: int = 12
    """Working-set rounds before a sample is handed back unconverged."""
    max_newton: int = 30
    """Active-set Newton steps per round."""


def pseudo_gradient(g: Tensor, z: Tensor, thr: Tensor, valid: Tensor, nonneg: bool) -> Tensor:
    """(b, p) the minimum-norm subgradient of the restricted objective at z (0 ⇔ optimal).

    g = A z − q is the gradient of the smooth part. Where z_j ≠ 0 it is g_j + thr_j sign(z_j);
    where z_j = 0 the part of g_j that the l1 term cannot absorb: g_j ∓ thr_j beyond
    |g_j| > thr_j (for z ≥ 0 only the side that lets z_j grow, g_j < −thr_j).
    """
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    at0 = (g + thr).clamp(max=0) if nonneg else torch.sign(g) * (g.abs() - thr).clamp_min(0)
    pg = torch.where(z != 0, g + thr * torch.sign(z), at0)
    return torch.where(valid, pg, zero)


def restricted_objective(Az: Tensor, z: Tensor, q: Tensor, thr: Tensor) -> Tensor:
    """(...,) ½ zᵀAz − qᵀz + Σ thr|z| from Az = A z, all (..., p)."""
    return (z * (0.5 * Az - q)).sum(-1) + (thr * z.abs()).sum(-1)


def newton_on_block(A: Tensor, q: Tensor, thr: Tensor, valid: Tensor, z: Tensor, nonneg: bool, max_newton: int) -> tuple[Tensor, Tensor, int]:
    """Exact solves of b restricted problems by an orthant-wise Newton (active-set) method.

    Minimises ½ zᵀAz − qᵀz + Σ_j thr_j |z_j| (z ≥ 0 if nonneg) over the ``valid`` entries.
    Each step: the free set F = {z_j ≠ 0} ∪ {pseudo-gradient_j ≠ 0}, its orthant
    ξ = sign(z) (−sign(pg) where z_j = 0), and the minimiser of the quadratic on that orthant
    face, A_FF z_F = q_F − thr_F ξ_F (batched float64 Cholesky; a singular block, e.g.
    duplicated atoms at λ2 = 0, gets a ridge of 1e-9·mean diag in this direction only).
    The step to it is projected onto the orthant (entries that would change sign stop at 0)
    and damped by the best of a few step sizes on the exact objective, so the objective
    never rises; with the right support the full step lands on the exact optimum.

    Args:
        A: (b, p, p) float64 symmetric positive semi-definite (G_WW + λ2 I).
        q: (b, p) linear term Dᵀy restricted to W.
        thr: (b, p) thresholds λ1 w_j > 0.
        valid: (b, p) bool, False on padding.
        z: (b, p) start (zero on padding).
    Returns:
        (z (b, p), ok (b,) bool: the pseudo-gradient vanished (z optimal on W to rounding),
        Newton steps taken).
    """
    b, p = q.shape
    dev, dt = q.device, q.dtype
    ok = torch.zeros(b, dtype=torch.bool, device=dev)
    z = torch.where(valid, z, torch.zeros((), dtype=dt, device=dev))
    todo = torch.arange(b, device=dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    scale = q.abs().amax(1).clamp_min(1e-300)  # (b,) optimality is judged relative to ‖q‖∞
    alphas = ALPHAS.to(dtype=dt, device=dev)
    Az = torch.bmm(A, z[:, :, None])[:, :, 0]
    steps = 0
    for step in range(max_newton + 1):
        At, zt, qt, tt, vt, Azt = A[todo], z[todo], q[todo], thr[todo], valid[todo], Az[todo]
        pg = pseudo_gradient(Azt - qt, zt, tt, vt, nonneg)
        done = pg.abs().amax(1) <= OPT_RTOL * scale[todo]
        ok[todo[done]] = True
        if bool(done.any()):
            keep = ~done
            todo, At, zt, qt, tt, vt, Azt, pg = (t[keep] for t in (todo, At, zt, qt, tt, vt, Azt, pg))
        if todo.numel() == 0 or step == max_newton:
            break
        free = vt & ((zt != 0) | (pg != 0))
        xi = torch.where(zt != 0, torch.sign(zt), -torch.sign(pg))
        xi = torch.where(free, xi, zero)
        cnt = free.sum(1)
        k = max(int(cnt.max()), 1)
        order = torch.argsort((~free).to(torch.int8), dim=1, stable=True)[:, :k]
        inside = torch.arange(k, device=dev)[None] < cnt[:, None]
        Ak = At.gather(1, order[:, :, None].expand(-1, -1, p)).gather(2, order[:, None, :].expand(-1, k, -1))
        eye = torch.eye(k, dtype=dt, device=dev)
        Ak = torch.where(inside[:, :, None] & inside[:, None, :], Ak, eye)
        rhs = torch.where(inside, (qt - tt * xi).gather(1, order), zero)
        Lc, info = torch.linalg.cholesky_ex(Ak)
        if bool((info != 0).any()):
            bad = info != 0
            ridge = RIDGE * torch.diagonal(Ak, dim1=1, dim2=2).mean(1)
            Lr, info_r = torch.linalg.cholesky_ex(Ak + ridge[:, None, None] * eye)
            Lc = torch.where(bad[:, None, None], Lr, Lc)
            info = torch.where(bad, info_r, info)
        good = info == 0
        sol = torch.cholesky_solve(rhs[:, :, None], torch.where(good[:, None, None], Lc, eye))[:, :, 0]
        zn = torch.zeros(todo.numel(), p, dtype=dt, device=dev).scatter(1, order, torch.where(inside, sol, zero))
        # projected, damped step z(α) = P_ξ(z + α(zn − z)): the full step where it lowers
        # the objective (the usual case), else the best α of the grid
        F0 = restricted_objective(Azt, zt, qt, tt)
        z1 = torch.where(zn * xi > 0, zn, zero)
        Az1 = torch.bmm(At, z1[:, :, None])[:, :, 0]
        moved = good & (restricted_objective(Az1, z1, qt, tt) < F0)
        znew, Aznew = torch.where(moved[:, None], z1, zt), torch.where(moved[:, None], Az1, Azt)
        back = torch.nonzero(good & ~moved).flatten()
        if back.numel() > 0:
            d = (zn - zt)[back]
            za = zt[back, None, :] + alphas[None, 1:, None] * d[:, None, :]  # (r, K, p)
            za = torch.where(za * xi[back, None, :] > 0, za, zero)
            Aza = torch.bmm(za, At[back])  # (r, K, p); A is symmetric
            F = restricted_objective(Aza, za, qt[back, None], tt[back, None])
            best = torch.argmin(F, dim=1)
            r = torch.arange(back.numel(), device=dev)
            mb = F[r, best] < F0[back]
            moved[back] = mb
            znew[back] = torch.where(mb[:, None], za[r, best], zt[back])
            Aznew[back] = torch.where(mb[:, None], Aza[r, best], Azt[back])
        z[todo], Az[todo] = znew, Aznew
        steps += 1
        if not bool(moved.all()):  # no descent left at this precision: stop these rows
            stuck = todo[~moved]
            ok[stuck] = False
            todo = todo[moved]
            if todo.numel() == 0:
                break
    return z, ok, steps


def solve_working_set(prob: Problem, ctx, Z0: Tensor | None, *, tol: float, cfg: WorkingSetConfig = WorkingSetConfig()) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Solve every row of ``prob`` by working sets; returns float64 (Z, gap, P, n_iter, converged).

    ``ctx`` is the solver's :class:`geomsae.solvers.fast.Context` (dictionary, Gram
    matrix). ``n_iter`` counts working-set rounds; rows with ``converged`` False are left
    at their best code for the caller to finish.
    """
    B, m = prob.B, prob.m
    n = ctx.n
    dev, dt = prob.Y.device, prob.Y.dtype
    D = ctx.D
    col_norms = D.norm(dim=0)
    Z = torch.zeros(B, m, dtype=dt, device=dev) if Z0 is None else Z0.clone()
    if prob.nonneg:
        Z.clamp_(min=0)
    C = prob.Y @ D  # (B, m) q = Dᵀy
    alive = torch.ones(B, m, dtype=torch.bool, device=dev)  # not yet discarded by the gap-safe test
    gap_out = torch.full((B,), float("inf"), dtype=dt, device=dev)
    P_out = torch.full((B,), float("inf"), dtype=dt, device=dev)
    it_out = torch.zeros(B, dtype=torch.int64, device=dev)
    conv_out = torch.zeros(B, dtype=torch.bool, device=dev)
    act = torch.arange(B, device=dev)  # rows still being solved
    first = min(cfg.first_size, max(n // 2, 1)) if prob.lam2 == 0 else cfg.first_size
    sizes = torch.full((B,), first, dtype=torch.int64, device=dev)
    for rnd in range(cfg.max_outer + 1):
        sub = prob.rows(act)
        Za = Z[act]
        R = sub.Y - Za @ D.T
        V = R @ D
        P = primal_from_residual(R, Za, sub)
        gap = P - dual_from_residual(R, V, sub)
        gap_out[act], P_out[act], it_out[act] = gap, P, rnd
        conv = gap <= tol * P.clamp_min(0)
        conv_out[act] = conv
        if rnd == cfg.max_outer:
            break
        alive[act] &= safe_keep(V, dual_scale(R, V, sub), gap, P, col_norms, sub)
        keep = ~conv
        act, Za, V = act[keep], Za[keep], V[keep]
        if act.numel() == 0:
            break
        sub = sub.rows(keep)
        thr_full = sub.lam1 * sub.W.expand(act.numel(), -1)
        # rank: support first, then the atoms nearest to (or past) violating optimality
        viol = (V if sub.nonneg else V.abs()) - thr_full
        on = Za != 0
        score = torch.where(on, torch.full_like(viol, float("inf")), viol / col_norms[None])
        score = torch.where(alive[act] | on, score, torch.full_like(viol, -float("inf")))
        n_on = on.sum(1)
        want = torch.maximum(sizes[act], 2 * n_on)
        if sub.lam2 == 0:  # more than n atoms of a lasso block are linearly dependent
            want = torch.maximum(want.clamp(max=n), n_on)
        want = torch.minimum(want, alive[act].sum(1).clamp_min(1) + n_on).clamp(max=m)
        sizes[act] = torch.minimum(2 * want, torch.full_like(want, m))
        Znew, failed = _round(sub, ctx, Za, C[act], score, want, n, cfg)
        Z[act] = Znew
        if bool(failed.any()):  # hand these back now: another round would fail the same way
            bad = act[failed]
            Rb = prob.Y[bad] - Z[bad] @ D.T
            sb = prob.rows(bad)
            Vb = Rb @ D
            Pb = primal_from_residual(Rb, Z[bad], sb)
            gap_out[bad], P_out[bad] = Pb - dual_from_residual(Rb, Vb, sb), Pb
            it_out[bad] = rnd + 1
            conv_out[bad] = gap_out[bad] <= tol * Pb.clamp_min(0)
            act = act[~failed]
            if act.numel() == 0:
                break
    return Z, gap_out, P_out, it_out, conv_out


def _round(sub: Problem, ctx, Za: Tensor, C: Tensor, score: Tensor, want: Tensor, n: int, cfg: WorkingSetConfig) -> tuple[Tensor, Tensor]:
    """One working-set round for the rows of ``sub``: (new codes (b, m), failed (b,) bool)."""
    b, m = Za.shape
    dev, dt = Za.device, Za.dtype
    order = torch.argsort(want)
    out = Za.clone()
    failed = torch.zeros(b, dtype=torch.bool, device=dev)
    start = 0
    while start < b:
        p = int(want[order[start]])
        stop = start + 1
        while stop < b and (stop + 1 - start) * int(want[order[stop]]) ** 2 <= BLOCK_ELEMENTS:
            stop += 1
        rows = order[start:stop]
        p = int(want[rows].max())
        idx = torch.topk(score[rows], p, dim=1).indices.sort(dim=1).values  # (r, p), sorted: cache-friendly gathers
        # padding (rows wanting fewer than p atoms, or atoms screened out) is invalid
        sc = score[rows].gather(1, idx)
        kth = torch.topk(score[rows], p, dim=1).values.gather(1, (want[rows] - 1).clamp(max=p - 1)[:, None])
        valid = (sc >= kth) & (torch.isfinite(sc) | (Za[rows].gather(1, idx) != 0))
        A = ctx.gram_block(idx)
        if sub.lam2 > 0:
            A = A + sub.lam2 * torch.eye(p, dtype=dt, device=dev)
        q = C[rows].gather(1, idx)
        W = sub.W if sub.W.shape[0] == 1 else sub.W[rows]
        thr = sub.lam1 * W.expand(rows.numel(), -1).gather(1, idx)
        z0 = torch.where(valid, Za[rows].gather(1, idx), torch.zeros((), dtype=dt, device=dev))
        z, ok, _ = newton_on_block(A, q, thr, valid, z0, sub.nonneg, cfg.max_newton)
        new = torch.zeros(rows.numel(), m, dtype=dt, device=dev).scatter(1, idx, torch.where(valid, z, torch.zeros((), dtype=dt, device=dev)))
        out[rows] = torch.where(ok[:, None], new, Za[rows])
        failed[rows] = ~ok
        start = stop
    return out, failed

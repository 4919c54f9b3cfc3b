"""Amortised vs exact: a trained SAE's encoder against the exact solution of its own problem.

An SAE encoder is a one-step amortised solver of a sparse-coding problem. For a trained
SAE we solve that same problem exactly — same decoder D = W_dec, same bias b = b_dec,
same penalty, in canonical F units (docs/method.md §1) —

    F(z; x) = ½‖x − b − Dz‖² + λ1 Σ_j w_j z_j + (λ2/2)‖z‖²,   z ≥ 0,

and measure how far the encoder's codes are from the optimum (docs/method.md §3, amortisation).
Penalties: aen / adaptive_lasso use the SAE's current adaptive weights, en w ≡ 1,
relu_l1 w_j = ‖W_dec,j‖ (all from ``sae.canonical_penalty()``). TopK, BatchTopK, JumpReLU
and gated SAEs have no l1 objective of their own: for them we solve the non-negative
lasso (λ2 = 0, w ≡ 1) with λ1 calibrated by bisection so that the exact codes' L0
matches the encoder's L0 on a calibration subset (:mod:`geomsae.calibration`); the report says so.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from geomsae import metrics
from geomsae.saes.base import per_token_scale
from geomsae.calibration import calibrate_lam1
from geomsae.solvers import Solver
from geomsae.solvers.problem import prepare
from geomsae.solvers.objective import gap_terms, kkt_residual


@dataclass
class CompareConfig:
    """Options of ``geomsae compare`` (the same fields as the Python API's compare_sae)."""

    n_tokens: int = 4096
    """Held-out tokens to compare on (taken from the end of the data, see held_out)."""
    held_out: float = 0.1
    """Fraction at the end of the data treated as held-out; 1.0 uses the whole file."""
    tol: float = 1e-8
    """Certified relative duality gap of the exact solves."""
    calibrate_tokens: int = 512
    """Tokens used to calibrate λ1 for surrogate penalties (topk, batchtopk, jumprelu, gated)."""
    calibrate_iters: int = 16
    """Solves of each stage of that calibration at most (a secant search in log λ1 on a
    64-token subsample, then on all the calibration tokens)."""
    lipschitz_tokens: int = 64
    """Tokens at which local Lipschitz ratios ‖Δz‖/‖Δx‖ of both maps are measured."""
    lipschitz_eps: float = 1e-3
    """Perturbation size relative to ‖x‖ for the local Lipschitz ratios."""
    seed: int = 0
    """Seed of the perturbation directions."""
    out: str | None = None
    """Output folder for report.json, report.md and report.html (default: RUN/compare)."""
    calibrate: bool = False
    """Solve the non-negative lasso with λ1 calibrated to the encoder's L0 for every SAE, also one
    with an exact penalty of its own (set for an SAE imported without its l1 coefficient)."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "calibrate_tokens", "calibrate_iters", "lipschitz_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} == {v!r}, must be an integer >= 1")
        if not 0 < self.held_out <= 1:
            raise ValueError(f"held_out == {self.held_out!r}, must be in (0, 1]")
        if not (0 < self.tol < 1):
            raise ValueError(f"tol == {self.tol!r}, must be in (0, 1)")
        if not (0 < self.lipschitz_eps < 1):
            raise ValueError(f"lipschitz_eps == {self.lipschitz_eps!r}, must be in (0, 1)")


class Stats(NamedTuple):
    """Summary of a per-token quantity over the tokens compared."""

    mean: float
    median: float
    p90: float
    """90th percentile."""
    max: float

    @classmethod
    def of(cls, t: Tensor) -> Stats:
        a = t.numpy()
        return cls(float(a.mean()), float(np.median(a)), float(np.quantile(a, 0.9)), float(a.max()))


class EncoderLipschitz(NamedTuple):
    """Local Lipschitz ratios ‖Δz‖/‖Δx‖ of the encoder at ``lipschitz_tokens`` tokens."""

    median: float
    max: float
    global_bound_norm_W_enc: float
    """‖W_enc‖₂, a global bound of the (ReLU-type) encoder's ratio."""


class ExactLipschitz(NamedTuple):
    """Local Lipschitz ratios ‖Δz*‖/‖Δx‖ of the exact map at the same tokens and directions."""

    median: float
    max: float
    theory_bound: float
    """min(‖D‖₂/λ2′, 1/(2√λ2′)) for λ2′ > 0 (fixed weights), inf for the lasso."""


class Penalty(NamedTuple):
    """The problem solved exactly, and how its λ1 was chosen."""

    lam1: float
    """λ1′ in canonical F units."""
    lam2: float
    """λ2′ in canonical F units (0: the lasso)."""
    adaptive_weights: bool
    """True when w are the SAE's adaptive weights, False for w ≡ 1 (or relu_l1's ‖W_dec,j‖)."""
    calibrated: bool
    """True when λ1 was calibrated to the encoder's L0 (surrogate SAEs: topk, batchtopk, jumprelu, gated)."""
    how: str
    """One sentence for the report: where the penalty comes from."""
    units: str
    """Always 'canonical F units (docs/method.md §1)'."""
    input_space: str
    """'raw activations', or per-token normalised inputs for input_norm='per_token'."""


@dataclass(frozen=True)
class CompareSummary:
    """The JSON-ready scalars of one comparison (the same input gives them bit for bit)."""

    n_tokens: int
    """Tokens compared, N."""
    objective_gap: Stats
    """F(z_enc) − F(z*) per token."""
    objective_gap_rel: Stats
    """(F(z_enc) − F(z*)) / F(z*) per token."""
    min_objective_gap_minus_certificate: float
    """min over tokens of gap + the exact solve's certified duality gap (≥ 0 up to rounding)."""
    exact_max_rel_dual_gap: float
    """Largest certified relative duality gap of the exact solves."""
    exact_converged_fraction: float
    """Share of the exact solves that reached ``tol``."""
    rel_code_error: Stats
    """‖z_enc − z*‖ / ‖z*‖ per token."""
    support_jaccard: Stats
    """|supp z_enc ∩ supp z*| / |supp z_enc ∪ supp z*| per token (1 when both are empty)."""
    support_precision: Stats
    """Share of the encoder's active latents active in z* too, per token."""
    support_recall: Stats
    """Share of z*'s active latents active in z_enc too, per token."""
    kkt_violation_encoder: Stats
    """KKT residual of z_enc per token."""
    kkt_violation_exact_max: float
    """Largest KKT residual of z* (≈ 0)."""
    fvu_encoder: float
    """FVU of D z_enc + b (inputs in problem space)."""
    fvu_exact: float
    """FVU of D z* + b."""
    l0_encoder: float
    """Mean active latents per token, encoder."""
    l0_exact: float
    """Mean active latents per token, exact map."""
    dead_fraction_encoder: float
    """Share of latents never active under the encoder on these tokens."""
    dead_fraction_exact: float
    """Share of latents never active under the exact map."""
    dead_both: int
    """Latents dead under both maps (starved by the objective)."""
    dead_encoder_only: int
    """Latents dead under the encoder only (starved by amortisation)."""
    dead_exact_only: int
    """Latents dead under the exact map only."""
    lipschitz_encoder: EncoderLipschitz
    """Local Lipschitz ratios of the encoder."""
    lipschitz_exact: ExactLipschitz
    """Local Lipschitz ratios of the exact map."""

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dicts (report.json's ``summary``)."""
        return {f.name: v._asdict() if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


@dataclass(frozen=True, eq=False)
class CompareArrays:
    """Per-token and per-latent arrays behind the report's figures."""

    objective_gap: np.ndarray
    """(N,) F(z_enc) − F(z*)."""
    objective: np.ndarray
    """(N,) F(z*)."""
    jaccard: np.ndarray
    """(N,) support Jaccard of z_enc and z*."""
    freq_encoder: np.ndarray
    """(d_sae,) firing frequency of each latent under the encoder."""
    freq_exact: np.ndarray
    """(d_sae,) firing frequency under the exact map."""
    lipschitz_encoder: np.ndarray
    """(n_lip,) local Lipschitz ratios of the encoder."""
    lipschitz_exact: np.ndarray
    """(n_lip,) local Lipschitz ratios of the exact map."""
    lipschitz_exact_bound: float
    """As :attr:`ExactLipschitz.theory_bound`."""
    lipschitz_encoder_bound: float
    """As :attr:`EncoderLipschitz.global_bound_norm_W_enc`."""


class Timing(NamedTuple):
    """Seconds spent (kept out of report.json, which is reproducible bit for bit)."""

    total_s: float
    solver_s: float
    """In the exact solve of all N tokens."""
    calibrate_s: float
    """In the λ1 calibration (0 for exact penalties)."""
    lipschitz_s: float
    """In the local Lipschitz ratios."""
    solver_share: float
    """solver_s / total_s."""


@dataclass(frozen=True, eq=False)
class CompareResult:
    """One SAE's encoder against the exact solution of its own problem (:func:`compare_sae`)."""

    arch: str
    """The SAE's architecture."""
    sae_cfg: dict[str, Any]
    """The SAE's config as a dict."""
    config: CompareConfig
    """The options of the comparison."""
    penalty: Penalty
    """The problem solved exactly."""
    summary: CompareSummary
    """JSON-ready scalars."""
    arrays: CompareArrays
    """Arrays for the figures."""
    timing: Timing
    """Seconds spent."""
    name: str | None = None
    """Label in the reports (e.g. the run folder's name); None: the arch. Set it with
    ``dataclasses.replace(result, name=...)``."""

    @property
    def label(self) -> str:
        """``name``, or the arch when no name was given."""
        return self.name if self.name is not None else self.arch

    def to_dict(self) -> dict[str, Any]:
        """Legacy form, for callers not yet reading the fields (to be removed): the dict
        :func:`compare_sae` used to return (``config``, ``penalty``, ``summary``, ``arrays``,
        ``timing`` as plain dicts; ``name`` only when set)."""
        out = {"arch": self.arch, "sae_cfg": self.sae_cfg, "config": asdict(self.config),
               "penalty": self.penalty._asdict(), "summary": self.summary.to_dict(),
               "arrays": {f.name: getattr(self.arrays, f.name) for f in dataclasses.fields(self.arrays)},
               "timing": self.timing._asdict()}
        if self.name is not None:
            out["name"] = self.name
        return out

    def __getitem__(self, key: str) -> Any:
        """Legacy read-only ``result["summary"]`` (a key of :meth:`to_dict`), to be removed."""
        return self.to_dict()[key]



def problem_inputs(sae: Any, X: Tensor) -> Tensor:
    """The inputs of the SAE's coding problem: X, or X rescaled per token for input_norm='per_token'."""
    X = X.to(torch.float64)
    if getattr(sae.cfg, "input_norm", "none") == "per_token":
        X = X * per_token_scale(X)
    return X


@torch.no_grad()
def encoder_codes(sae: Any, X: Tensor) -> Tensor:
    """(N, d_sae) float64 codes of the SAE's encoder (eval mode), in batches."""
    was = sae.training
    sae.eval()
    dt = next(sae.parameters()).dtype
    out = torch.cat([sae.encode(X[i : i + 4096].to(dt)) for i in range(0, X.shape[0], 4096)]).double()
    sae.train(was)
    return out


def _support_stats(z_enc: Tensor, z_star: Tensor) -> dict[str, Tensor]:
    a, b = z_enc > 0, z_star > 0
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    na, nb = a.sum(1).double(), b.sum(1).double()
    one = torch.ones_like(inter)
    return {
        "jaccard": torch.where(union > 0, inter / union.clamp_min(1), one),
        "precision": torch.where(na > 0, inter / na.clamp_min(1), one),
        "recall": torch.where(nb > 0, inter / nb.clamp_min(1), one),
    }


def _lipschitz(sae: Any, Xp: Tensor, Xraw: Tensor, z_enc: Tensor, z_star: Tensor, D: Tensor, b: Tensor, pen: dict, cfg: CompareConfig,
               solver: Solver) -> dict[str, Any]:
    g = torch.Generator().manual_seed(cfg.seed)
    n = min(cfg.lipschitz_tokens, Xp.shape[0])
    U = torch.randn(n, Xp.shape[1], generator=g, dtype=torch.float64)
    U = U / U.norm(dim=1, keepdim=True)
    delta = cfg.lipschitz_eps * Xp[:n].norm(dim=1, keepdim=True).clamp_min(1e-12)
    Xp2 = Xp[:n] + delta * U
    # the encoder sees raw inputs; perturb in problem space and map back per token
    if getattr(sae.cfg, "input_norm", "none") == "per_token":
        raw2 = Xp2 / per_token_scale(Xraw[:n].double())
    else:
        raw2 = Xp2
    ze2 = encoder_codes(sae, raw2)
    zs2 = solver(Xp2, lam1=pen["lam1"], lam2=pen["lam2"], weights=pen["weights"], bias=b, tol=1e-12,
                init=z_star[:n], max_iter=50_000).codes
    r_enc = (ze2 - z_enc[:n]).norm(dim=1) / delta[:, 0]
    r_star = (zs2 - z_star[:n]).norm(dim=1) / delta[:, 0]
    W = sae.W_enc.detach().double()
    lam2 = pen["lam2"]
    normD = float(torch.linalg.matrix_norm(D, 2))
    bound = min(normD / lam2, 1 / (2 * math.sqrt(lam2))) if lam2 > 0 else float("inf")
    return {
        "encoder_ratio": r_enc.numpy(),
        "exact_ratio": r_star.numpy(),
        "encoder_bound": float(torch.linalg.matrix_norm(W, 2)),
        "exact_bound": bound,
    }


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"  {msg}", file=sys.stderr, flush=True)


def compare_sae(sae: Any, X: Any, cfg: CompareConfig | None = None, *, progress: bool = False) -> CompareResult:
    """Compare ``sae``'s encoder with the exact solver on activations ``X`` (N, d_in).

    Returns a :class:`CompareResult`: ``summary`` (JSON-ready scalars), ``penalty`` (the
    problem solved and how λ1 was chosen), ``arrays`` (per-token and per-latent numpy arrays
    for figures) and ``timing`` (seconds; kept apart so the summary is reproducible bit for bit).
    ``progress`` names each stage on stderr as it starts and shows the exact solver's bar.
    """
    cfg = cfg or CompareConfig()
    t0 = time.perf_counter()
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, Tensor) else X)
    if X.ndim != 2 or X.shape[1] != sae.cfg.d_in:
        raise ValueError(f"activations have shape {tuple(X.shape)}, must be (N, d_in={sae.cfg.d_in})")
    if not bool(torch.isfinite(X).all()):
        raise ValueError("activations contain NaN or Inf")
    Xp = problem_inputs(sae, X)
    D = sae.W_dec.detach().double()
    b = sae.b_dec.detach().double()
    z_enc = encoder_codes(sae, X)
    cp = sae.canonical_penalty()
    calibrated = not cp.exact or cfg.calibrate
    solver = Solver(D)  # one Gram matrix for the calibration, the exact solve and the Lipschitz ratios
    t_cal = time.perf_counter()
    if calibrated:
        nc = min(cfg.calibrate_tokens, Xp.shape[0])
        _say(progress, f"calibrating λ1 to the encoder's L0 on {nc} tokens (secant search, at most {cfg.calibrate_iters} solves per stage)")
        target = float((z_enc[:nc] > 0).sum(1).double().mean())
        lam1, l0_cal = calibrate_lam1(Xp[:nc], D, b, target, iters=cfg.calibrate_iters, tol=cfg.tol, solver=solver)
        pen = {"lam1": lam1, "lam2": 0.0, "weights": None}
        why = f"{sae.arch} has no l1 objective" if not cp.exact else f"{sae.arch}'s own penalty set aside (calibrate)"
        how = (f"{why}: solved the non-negative lasso (λ2 = 0, w ≡ 1) with λ1 = {lam1:.6g} "
               f"calibrated by a warm-started secant search in log λ1 (at most {cfg.calibrate_iters} solves on a "
               f"subsample, then on all {nc} tokens) so that the exact L0 ({l0_cal:.2f}) matches the "
               f"encoder's L0 ({target:.2f}) on {nc} tokens")
    else:
        w = None if cp.weights is None else cp.weights.detach().double()
        pen = {"lam1": float(cp.lam1), "lam2": float(cp.lam2), "weights": w}
        how = f"the SAE's own penalty ({sae.arch}), converted to canonical F units (λ1′ = d_in·λ1/2, λ2′ = d_in·λ2)"
    t1 = time.perf_counter()
    t_cal = t1 - t_cal
    _say(progress, f"exact solve of {Xp.shape[0]} problems (d_sae {D.shape[1]}) to relative gap {cfg.tol:g}")
    res = solver(Xp, lam1=pen["lam1"], lam2=pen["lam2"], weights=pen["weights"], bias=b, tol=cfg.tol,
                 progress=progress)
    t_solve = time.perf_counter() - t1
    z_star = res.codes
    prob = prepare(Xp, D, lam1=pen["lam1"], lam2=pen["lam2"], weights=pen["weights"], bias=b, nonneg=True)
    P_enc, _, V_enc = gap_terms(z_enc, prob)
    kkt_enc = kkt_residual(z_enc, V_enc, prob)
    obj_gap = P_enc - res.objective
    rel_err = (z_enc - z_star).norm(dim=1) / z_star.norm(dim=1).clamp_min(1e-12)
    sup = _support_stats(z_enc, z_star)
    x_hat_enc = z_enc @ D.T + b
    x_hat_star = z_star @ D.T + b
    fire_enc = (z_enc > 0).sum(0)
    fire_star = (z_star > 0).sum(0)
    dead_enc, dead_star = fire_enc == 0, fire_star == 0
    N = Xp.shape[0]
    t2 = time.perf_counter()
    _say(progress, f"local Lipschitz ratios at {min(cfg.lipschitz_tokens, N)} tokens")
    lip = _lipschitz(sae, Xp, X, z_enc, z_star, D, b, pen, cfg, solver)
    t_lip = time.perf_counter() - t2

    summary = CompareSummary(
        n_tokens=N,
        objective_gap=Stats.of(obj_gap),
        objective_gap_rel=Stats.of(obj_gap / res.objective.clamp_min(1e-300)),
        min_objective_gap_minus_certificate=float((obj_gap + res.dual_gap).min()),
        exact_max_rel_dual_gap=float((res.dual_gap / res.objective.clamp_min(1e-300)).max()),
        exact_converged_fraction=float(res.converged.double().mean()),
        rel_code_error=Stats.of(rel_err),
        support_jaccard=Stats.of(sup["jaccard"]),
        support_precision=Stats.of(sup["precision"]),
        support_recall=Stats.of(sup["recall"]),
        kkt_violation_encoder=Stats.of(kkt_enc),
        kkt_violation_exact_max=float(kkt_residual(z_star, gap_terms(z_star, prob)[2], prob).max()),
        fvu_encoder=metrics.fvu(Xp, x_hat_enc),
        fvu_exact=metrics.fvu(Xp, x_hat_star),
        l0_encoder=metrics.l0(z_enc),
        l0_exact=metrics.l0(z_star),
        dead_fraction_encoder=float(dead_enc.double().mean()),
        dead_fraction_exact=float(dead_star.double().mean()),
        dead_both=int((dead_enc & dead_star).sum()),
        dead_encoder_only=int((dead_enc & ~dead_star).sum()),
        dead_exact_only=int((~dead_enc & dead_star).sum()),
        lipschitz_encoder=EncoderLipschitz(float(np.median(lip["encoder_ratio"])), float(lip["encoder_ratio"].max()),
                                           lip["encoder_bound"]),
        lipschitz_exact=ExactLipschitz(float(np.median(lip["exact_ratio"])), float(lip["exact_ratio"].max()),
                                       lip["exact_bound"]),
    )
    per_token = getattr(sae.cfg, "input_norm", "none") == "per_token"
    penalty = Penalty(lam1=pen["lam1"], lam2=pen["lam2"], adaptive_weights=pen["weights"] is not None,
                      calibrated=calibrated, how=how, units="canonical F units (docs/method.md §1)",
                      input_space="per-token normalised to norm sqrt(d_in)" if per_token else "raw activations")
    arrays = CompareArrays(
        objective_gap=obj_gap.numpy(), objective=res.objective.numpy(), jaccard=sup["jaccard"].numpy(),
        freq_encoder=(fire_enc.double() / N).numpy(), freq_exact=(fire_star.double() / N).numpy(),
        lipschitz_encoder=lip["encoder_ratio"], lipschitz_exact=lip["exact_ratio"],
        lipschitz_exact_bound=lip["exact_bound"], lipschitz_encoder_bound=lip["encoder_bound"],
    )
    total = time.perf_counter() - t0
    timing = Timing(total_s=total, solver_s=t_solve, calibrate_s=t_cal, lipschitz_s=t_lip,
                    solver_share=t_solve / max(total, 1e-9))
    return CompareResult(arch=sae.arch, sae_cfg=sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else asdict(sae.cfg),
                         config=cfg, penalty=penalty, summary=summary, arrays=arrays, timing=timing)

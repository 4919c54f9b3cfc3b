r"""Statement (docs/method.md §1 and §3, amortised encoders): an SAE encoder z = ReLU(W_enc x + c) is a
one-step amortised solver of F. It is ‖W_enc‖₂-Lipschitz, with local Jacobian
diag(1[pre > 0]) W_enc, whatever its training did,

    ‖z_enc(x) − z_enc(x′)‖ ≤ ‖W_enc‖₂ ‖x − x′‖,

while the exact map of the same decoder D = W_dec, bias b = b_dec and penalty (λ1, λ2, w),
for λ2 > 0, obeys ‖z*(x) − z*(x′)‖ ≤ min(‖D‖₂/λ2, 1/(2√λ2)) ‖x − x′‖ (docs/method.md §1).

Derivation. ReLU is 1-Lipschitz and acts coordinatewise, so ‖ReLU(a) − ReLU(a′)‖ ≤ ‖a − a′‖
≤ ‖W_enc‖₂‖x − x′‖; where no pre-activation changes sign the map is affine with Jacobian
diag(1[pre > 0]) W_enc, whose norm is at most ‖W_enc‖₂ (a row selection of W_enc).

What is checked, for aen, en and relu_l1 SAEs trained on the spiked model at each ρ (their
scale folded in, in raw input space, with their own canonical penalty,
:meth:`geomsae.saes.base.BaseSAE.canonical_penalty`): central finite differences of the
encoder against diag(1[pre > 0]) W_enc; the encoder's largest local gain against ‖W_enc‖₂;
and, on the same inputs, the exact map's finite-difference gain along its top direction
against 1/(2√λ2) (:func:`proofs_check.jacobian.jacobian_checks`; relu_l1 has λ2 = 0 and no
bound). The two maps' gains are reported side by side: the encoder's global bound says how
unstable a trained encoder may be, the exact map's what the objective allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geomsae.train import TrainConfig, train
from proofs_check._common import Check, info, upper
from proofs_check.jacobian import FD_TOL, jacobian_checks
from synthetic import spiked

ARCHS = {  # SAE-unit penalties (inputs scaled to E‖x‖² = d_in while training)
    "aen": dict(lam1=5e-3, lam2=1e-3, beta=0.99, warmup_steps=60, ramp_steps=60),
    "en": dict(lam1=5e-3, lam2=1e-3),
    "relu_l1": dict(lam=2e-2),
}


def train_sae(arch: str, X: np.ndarray, m: int, seed: int, steps: int = 300) -> Any:
    """A small SAE of ``arch`` trained on X (N, n) (raw space: the dataset scale folded in)."""
    tc = TrainConfig(steps=steps, batch_size=128, lr=5e-3, lr_warmup_steps=10, seed=seed, log_every=steps,
                     checkpoint_every=0, progress=False, input_scale_tokens=min(len(X), 65_536))
    return train({"arch": arch, "d_sae": m, **ARCHS[arch]}, X.astype(np.float32), tc).sae.eval()


@torch.no_grad()
def encoder_checks(sae: Any, X: np.ndarray, *, claimed_norm: float | None = None, h_rel: float = 1e-4,
                   label: str = "") -> tuple[list[Check], dict[str, Any]]:
    """Encoder Jacobians on X (B, n) against diag(1[pre > 0]) W_enc and ‖W_enc‖₂ (or ``claimed_norm``,
    to break the check on purpose)."""
    W = sae.W_enc.detach().double()
    norm = float(torch.linalg.matrix_norm(W, 2))
    bound = norm if claimed_norm is None else claimed_norm
    sae64 = sae.double()
    Xt = torch.as_tensor(X, dtype=torch.float64)
    pre = sae64(Xt).pre_acts
    fd_err, gains, skipped = [], [], 0
    g = torch.Generator().manual_seed(0)
    for i in range(Xt.shape[0]):
        act = pre[i] > 0
        J = W[act]  # (|active|, n) rows of the affine piece
        gain = float(torch.linalg.matrix_norm(J, 2)) if J.shape[0] else 0.0
        gains.append(gain)
        radius = float(pre[i].abs().min()) / max(norm, 1e-300)  # no pre-activation flips within it
        if J.shape[0] == 0 or radius < 1e-6 * float(Xt[i].norm()):
            skipped += 1  # finite differences there would be rounding noise
            continue
        h = min(h_rel * float(Xt[i].norm()), 0.5 * radius)
        U = torch.randn(3, Xt.shape[1], generator=g, dtype=torch.float64)
        U /= U.norm(dim=1, keepdim=True)
        zp, zm = sae64.encode(Xt[i] + h * U), sae64.encode(Xt[i] - h * U)
        fd = (zp - zm) / (2 * h)  # (3, d_sae)
        want = torch.zeros_like(fd)
        want[:, act] = U @ J.T
        fd_err.append(float((fd - want).norm(dim=1).max()) / max(gain, 1e-12))
    sae.float()
    tag = f" [{label}]" if label else ""
    checks = [
        upper(f"encoder finite differences = diag(1[pre>0]) W_enc (rel. error){tag}", max(fd_err, default=0.0), FD_TOL,
              kind="tolerance", rows=len(fd_err), skipped=skipped),
        upper(f"encoder local gain ≤ ‖W_enc‖₂{tag}", max(gains), bound, norm=norm),
    ]
    return checks, dict(norm=norm, gain_max=max(gains), gain_median=float(np.median(gains)))


def sae_problem(sae: Any) -> dict[str, Any]:
    """The exact problem of ``sae`` in raw input space: D, b, λ1, λ2, weights (numpy float64)."""
    pen = sae.canonical_penalty()
    w = None if pen.weights is None else pen.weights.detach().double().numpy()
    return dict(D=sae.W_dec.detach().double().numpy(), b=sae.b_dec.detach().double().numpy(), lam1=float(pen.lam1),
                lam2=float(pen.lam2), weights=w)


def run(cfg: Any, progress: bool = True) -> tuple[list[Check], dict[str, Any]]:
    """Train aen / en / relu_l1 SAEs on spiked data at each ρ of cfg.rhos (< 0.99) and compare."""
    from tqdm.auto import tqdm


    checks: list[Check] = []
    rows: list[dict[str, Any]] = []
    rhos = [r for r in cfg.rhos if r < 0.99]
    jobs = [(rho, arch) for rho in rhos for arch in ARCHS]
    data: dict[float, np.ndarray] = {}
    for rho, arch in tqdm(jobs, desc="amortised", disable=not progress):
        if rho not in data:
            d = spiked(n=cfg.n, m=cfg.m, k=cfg.k, rho=rho, n_samples=cfg.amortised_train + cfg.jac_samples,
                       seed=cfg.seed + 2)
            data[rho] = d.activations.astype(np.float64)
        X = data[rho]
        sae = train_sae(arch, X[: cfg.amortised_train], cfg.m, cfg.seed)
        Xe = X[cfg.amortised_train:]
        lab = f"{arch} SAE ρ={rho:g}"
        cs, enc = encoder_checks(sae, Xe, label=lab)
        checks += cs
        p = sae_problem(sae)
        ecs, ex = jacobian_checks(p["D"], Xe - p["b"], lam1=p["lam1"], lam2=p["lam2"], weights=p["weights"],
                                  seed=cfg.seed, label=lab, n_dirs=2)
        checks += [c for c in ecs if "top direction" in c.name]
        bound = min(float(np.linalg.norm(p["D"], 2)) / p["lam2"], 1 / (2 * np.sqrt(p["lam2"]))) if p["lam2"] > 0 \
            else float("inf")
        gains = ex.get("fd_gains") or [float("nan")]
        if np.isfinite(bound):  # relu_l1 (λ2 = 0): the exact map has no uniform bound to compare with
            checks.append(info(f"encoder bound ‖W_enc‖₂ / exact-map bound [{lab}]", enc["norm"] / bound))
        rows.append(dict(arch=arch, rho=rho, lam1=p["lam1"], lam2=p["lam2"], enc_norm=enc["norm"],
                         enc_gain_max=enc["gain_max"], enc_gain_median=enc["gain_median"],
                         exact_gain_max=float(np.max(gains)), exact_gain_median=float(np.median(gains)),
                         exact_bound=bound, skipped=int(ex.get("skipped", 0))))
    return checks, dict(rows=rows)

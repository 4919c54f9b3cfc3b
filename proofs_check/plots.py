"""The figures of :data:`proofs_check.report.FIGURES`, drawn from a :class:`proofs_check.report.Results`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from proofs_check.support_recovery import METHODS


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lipschitz(res: Any, path: Path) -> None:
    plt = _plt()
    rows = res.data["lipschitz"]["rows"]
    wit = [c for c in res.checks["lipschitz"] if c.name.startswith("attainment")]
    rhos = sorted({r["rho"] for r in rows})
    cmap = plt.get_cmap("viridis")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    lam = np.logspace(np.log10(min(res.cfg.lam2s)) - 0.3, np.log10(max(res.cfg.lam2s)) + 0.3, 100)
    a1.plot(lam, 1 / (2 * np.sqrt(lam)), "k-", lw=1.5, label="1/(2√λ2)")
    for i, rho in enumerate(rhos):
        col = cmap(i / max(1, len(rhos) - 1))
        for mt, ls, mk in (("EN", "-", "o"), ("AEN", "--", "s")):
            rr = sorted((r for r in rows if r["rho"] == rho and r["method"] == mt), key=lambda r: r["lam2"])
            if rr:
                x = [r["lam2"] for r in rr]
                a1.plot(x, [r["worst"] for r in rr], ls, marker=mk, color=col, label=f"{mt} worst, ρ={rho:g}")
                if mt == "EN":
                    a1.plot(x, [r["random_median"] for r in rr], ":", color=col, alpha=0.6, label=f"EN median (random pairs), ρ={rho:g}")
                    a2.plot(x, [r["worst"] / r["spec"] for r in rr], ls, marker=mk, color=col, label=f"EN ρ={rho:g}")
                else:
                    a2.plot(x, [r["worst"] / r["spec"] for r in rr], ls, marker=mk, color=col, label=f"AEN ρ={rho:g}")
        nd = next(r["norm_D"] for r in rows if r["rho"] == rho)
        a1.plot(lam, nd / lam, color=col, lw=0.8, alpha=0.4)
    if wit:
        a1.plot([c.details["sigma"] ** 2 for c in wit], [c.measured for c in wit], "r*", ms=11, label="attainment witness")
    a1.set(xscale="log", yscale="log", xlabel="λ2", ylabel="‖Δz‖ / ‖Δx‖", title="Exact EN/AEN map: worst ratio vs bound\n(thin: ‖D‖₂/λ2 per ρ)")
    a1.legend(fontsize=6, ncol=2)
    a2.axhline(1, color="k", lw=1)
    a2.axhline(0.9, color="gray", lw=0.8, ls="--")
    a2.set(xscale="log", xlabel="λ2", ylabel="worst / min(‖D‖₂/λ2, 1/(2√λ2))", title="Tightness (≥ 0.9: tight)", ylim=(0, 1.1))
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _lasso(res: Any, path: Path) -> None:
    plt = _plt()
    d = res.data["lasso_instability"]
    rows = d["rows"]
    x = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    a1.plot(x, [r["lasso"]["ratio_max"] for r in rows], "o-", color="C3", label="lasso worst 1/σ_min(D_S)")
    a1.plot(x, [r["lasso"]["ratio_median"] for r in rows], "o:", color="C3", label="lasso median")
    a1.plot(x, [r["EN"]["ratio_max"] for r in rows], "s-", color="C0", label=f"EN worst (λ2={d['en_lam2']:g})")
    a1.plot(x, [r["AEN"]["ratio_max"] for r in rows], "^-", color="C2", label="AEN (fixed w) worst")
    a1.axhline(rows[0]["en_bound"], color="k", lw=1, label="1/(2√λ2)")
    a1.set(xticks=x, xticklabels=[f"{r['rho']:g}" for r in rows], yscale="log", xlabel="ρ", ylabel="local ‖Δz‖/‖Δx‖",
           title="Local gain ‖J‖₂ of the exact map (closed form,\nverified by exact steps inside the piece)")
    a1.legend(fontsize=8)
    deltas = d["deltas"]
    for i, r in enumerate(rows):
        alpha = 0.35 + 0.65 * i / max(1, len(rows) - 1)
        for mt, col, mk in (("lasso", "C3", "o"), ("EN", "C0", "s"), ("AEN", "C2", "^")):
            a2.plot(deltas, r[mt]["flip_rates"], marker=mk, color=col, alpha=alpha, label=f"{mt} ρ={r['rho']:g}")
    a2.set(xscale="log", xlabel="relative perturbation δ", ylabel="support-flip rate", title="Support flips under random perturbations")
    a2.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jacobian(res: Any, path: Path) -> None:
    plt = _plt()
    rows = res.data["jacobian"]["rows"]
    rhos = sorted({r["rho"] for r in rows})
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    lam = np.logspace(np.log10(min(res.cfg.lam2s)) - 0.3, np.log10(max(res.cfg.lam2s)) + 0.3, 100)
    ax.plot(lam, 1 / (2 * np.sqrt(lam)), "k-", label="1/(2√λ2)")
    for i, rho in enumerate(rhos):
        col = cmap(i / max(1, len(rhos) - 1))
        rr = sorted((r for r in rows if r["rho"] == rho and r["lam2"] > 0), key=lambda r: r["lam2"])
        ax.plot([r["lam2"] for r in rr], [r["gain_max"] for r in rr], "-", color=col, label=f"closed form, ρ={rho:g}")
        ax.plot([r["lam2"] for r in rr], [r["fd_gain_max"] for r in rr], "x", color=col, ms=9)
        las = [r for r in rows if r["rho"] == rho and r["lam2"] == 0]
        if las:
            ax.axhline(las[0]["gain_max"], color=col, ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="λ2", ylabel="‖J‖₂ (max over inputs)",
           title="Jacobian norm: closed form (line) and finite differences (×)\ndotted: lasso 1/σ_min(D_S) per ρ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _phase(res: Any, path: Path) -> None:
    plt = _plt()
    cells = [c for c in res.data["support_recovery"]["cells"] if c["noise"] == 0 and c["mag_low"] == 1.0]
    rhos = sorted({c["rho"] for c in cells})
    ks = sorted({c["k"] for c in cells})
    fig, axes = plt.subplots(2, len(METHODS), figsize=(3.4 * len(METHODS), 6.4), squeeze=False, constrained_layout=True)
    for j, mt in enumerate(METHODS):
        for i, key in enumerate(("observed", "predicted")):
            A = np.full((len(ks), len(rhos)), np.nan)
            for c in cells:
                A[ks.index(c["k"]), rhos.index(c["rho"])] = c[mt][key]
            ax = axes[i, j]
            im = ax.imshow(A, vmin=0, vmax=1, cmap="magma", origin="lower", aspect="auto")
            for (a, b), v in np.ndenumerate(A):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
            ax.set(xticks=range(len(rhos)), xticklabels=[f"{r:g}" for r in rhos], yticks=range(len(ks)), yticklabels=ks,
                   xlabel="ρ", ylabel="k", title=f"{mt}: {key}")
    fig.colorbar(im, ax=axes, shrink=0.6, label="exact support recovery rate")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _confusion(res: Any, path: Path) -> None:
    plt = _plt()
    cells = res.data["support_recovery"]["cells"]
    fig, axes = plt.subplots(1, len(METHODS), figsize=(3.4 * len(METHODS), 3.6))
    for ax, mt in zip(axes, METHODS):
        M = np.array([[sum(c[mt]["pred_rec_obs_rec"] for c in cells), sum(c[mt]["pred_rec_obs_fail"] for c in cells)],
                      [sum(c[mt]["pred_fail_obs_rec"] for c in cells), sum(c[mt]["pred_fail_obs_fail"] for c in cells)]])
        ax.imshow(M, cmap="Blues")
        for (a, b), v in np.ndenumerate(M):
            ax.text(b, a, str(v), ha="center", va="center", fontsize=11, color="w" if v > 0.5 * M.max() else "k")
        ties = sum(c[mt]["ties"] for c in cells)
        ax.set(xticks=[0, 1], xticklabels=["obs. recover", "obs. fail"], yticks=[0, 1], yticklabels=["pred. recover", "pred. fail"],
               title=f"{mt}\n(ties, not claimed: {ties})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


DRAW = {"proofs_lipschitz_vs_lam2.png": _lipschitz, "proofs_lasso_instability.png": _lasso, "proofs_jacobian.png": _jacobian,
        "proofs_recovery_phase.png": _phase, "proofs_recovery_confusion.png": _confusion}


def plot_all(res: Any, out_dir: Path, names: list[str]) -> list[Path]:
    """Draw each named figure into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        p = out_dir / name
        DRAW[name](res, p)
        paths.append(p)
    return paths

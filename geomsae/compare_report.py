"""Write the amortised-vs-exact comparison: report.json, report.md, a self-contained report.html.

The HTML embeds its figures as base64 PNGs, so the one file can be mailed or attached.
Timings go to timing.json, apart from report.json, so that the same input gives the same
report.json bit for bit.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from geomsae import durable
from geomsae.compare import CompareResult


def run_labels(paths: Sequence[str | Path]) -> list[str]:
    """Labels of run folders in reports: each folder's name, with as many parent folders as it
    takes to tell it apart from the others (``x/a/run`` and ``x/b/run`` → ``a/run``, ``b/run``);
    a folder given twice gets ``#2``, ``#3``, … on its repeats."""
    parts = [Path(p).resolve().parts for p in paths]
    labels = []
    for i, pa in enumerate(parts):
        n = 1
        while n < len(pa) and any(pb != pa and pb[-n:] == pa[-n:] for pb in parts):
            n += 1
        label = "/".join(pa[-n:])
        repeat = sum(pb == pa for pb in parts[:i])
        labels.append(f"{label}#{repeat + 1}" if repeat else label)
    return labels

# (key in summary, label, format) rows of the side-by-side table
ROWS = [
    ("objective_gap.median", "objective gap F(z_enc) − F(z*), median", ".3g"),
    ("objective_gap_rel.median", "relative objective gap, median", ".3g"),
    ("rel_code_error.median", "relative code error ‖z_enc − z*‖/‖z*‖, median", ".3f"),
    ("support_jaccard.mean", "support Jaccard, mean", ".3f"),
    ("support_precision.mean", "support precision (encoder vs exact), mean", ".3f"),
    ("support_recall.mean", "support recall, mean", ".3f"),
    ("kkt_violation_encoder.median", "KKT violation of z_enc, median", ".3g"),
    ("fvu_encoder", "FVU encoder", ".4f"),
    ("fvu_exact", "FVU exact", ".4f"),
    ("l0_encoder", "L0 encoder", ".2f"),
    ("l0_exact", "L0 exact", ".2f"),
    ("dead_fraction_encoder", "dead fraction encoder", ".3f"),
    ("dead_fraction_exact", "dead fraction exact", ".3f"),
    ("dead_both", "dead under both (latents)", "d"),
    ("dead_encoder_only", "dead only under the encoder", "d"),
    ("dead_exact_only", "dead only under the exact map", "d"),
    ("lipschitz_encoder.median", "local Lipschitz ratio encoder, median", ".3g"),
    ("lipschitz_exact.median", "local Lipschitz ratio exact, median", ".3g"),
    ("lipschitz_exact.theory_bound", "exact-map bound min(‖D‖/λ2, 1/(2√λ2))", ".3g"),
    ("exact_max_rel_dual_gap", "exact solves: max certified relative gap", ".1e"),
]


def _get(rep: CompareResult, key: str) -> Any:
    v: Any = rep.summary
    for part in key.split("."):
        v = getattr(v, part)
    return v


def _fmt(v: Any, f: str) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return format(v, f)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def figures(rep: CompareResult) -> dict[str, bytes]:
    """PNG bytes of the four report figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = rep.arrays
    name = rep.label
    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    rel = np.maximum(a.objective_gap / np.maximum(a.objective, 1e-300), 1e-16)
    ax.hist(np.log10(rel), bins=40, color="C0")
    ax.set_xlabel("log10 relative objective gap (F(z_enc) − F(z*)) / F(z*)")
    ax.set_ylabel("tokens")
    ax.set_title(f"{name}: how suboptimal the encoder is")
    out["gap_hist"] = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(a.jaccard, bins=np.linspace(0, 1, 26), color="C1")
    ax.set_xlabel("support Jaccard (encoder vs exact)")
    ax.set_ylabel("tokens")
    ax.set_title(f"{name}: support agreement")
    out["jaccard_hist"] = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    fe, fs = a.freq_encoder, a.freq_exact
    n = rep.summary.n_tokens
    floor = 0.5 / n
    pe, ps = np.maximum(fe, floor), np.maximum(fs, floor)
    alive = (fe > 0) & (fs > 0)
    ax.scatter(ps[alive], pe[alive], s=5, alpha=0.5, label="alive under both")
    for mask, lab, mk in (((fe == 0) & (fs > 0), "dead under encoder only", "x"), ((fe > 0) & (fs == 0), "dead under exact only", "+"),
                          ((fe == 0) & (fs == 0), "dead under both", "s")):
        if mask.any():
            ax.scatter(ps[mask], pe[mask], s=14, marker=mk, label=f"{lab} ({int(mask.sum())})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("firing frequency, exact map")
    ax.set_ylabel("firing frequency, encoder")
    ax.set_title(f"{name}: per-latent firing (dead at 1/(2N))")
    ax.legend(fontsize=7)
    out["freq_scatter"] = _png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.boxplot([a.lipschitz_encoder, a.lipschitz_exact], tick_labels=["encoder", "exact map"])
    if np.isfinite(a.lipschitz_exact_bound):
        ax.axhline(a.lipschitz_exact_bound, color="C3", ls="--", label="exact-map bound")
    ax.axhline(a.lipschitz_encoder_bound, color="C2", ls=":", label="encoder bound ‖W_enc‖₂")
    ax.set_yscale("log")
    ax.set_ylabel("local ‖Δz‖ / ‖Δx‖")
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: local Lipschitz ratios")
    out["lipschitz"] = _png(fig)
    plt.close(fig)
    return out


def json_report(rep: CompareResult) -> dict[str, Any]:
    """The JSON-ready part of a report (no timings, per-latent frequencies as lists)."""
    return {
        "arch": rep.arch, "name": rep.label, "sae_cfg": rep.sae_cfg, "config": asdict(rep.config),
        "penalty": rep.penalty._asdict(), "summary": rep.summary.to_dict(),
        "per_latent": {"freq_encoder": rep.arrays.freq_encoder.tolist(), "freq_exact": rep.arrays.freq_exact.tolist()},
    }


def markdown_table(reps: Sequence[CompareResult]) -> str:
    """The side-by-side table of :data:`ROWS`, one column per report."""
    lines = ["| metric | " + " | ".join(r.label for r in reps) + " |", "|---|" + "---|" * len(reps)]
    for key, label, f in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(_get(r, key), f) for r in reps) + " |")
    return "\n".join(lines)


def markdown(reps: Sequence[CompareResult]) -> str:
    parts = ["# Amortised vs exact: encoder codes against the exact solution of the same objective", "",
             f"{reps[0].summary.n_tokens} held-out tokens. Problem solved for each SAE (canonical F units, docs/method.md §1):", ""]
    for r in reps:
        p = r.penalty
        parts.append(f"- **{r.label}**: λ1 = {p.lam1:.6g}, λ2 = {p.lam2:.6g}, "
                     f"{'adaptive weights' if p.adaptive_weights else 'w ≡ 1'}; {p.how}; inputs: {p.input_space}.")
    parts += ["", markdown_table(reps), "",
              "The objective gap is never below minus the exact solver's certified gap "
              f"(min over tokens of gap + certificate: {min(r.summary.min_objective_gap_minus_certificate for r in reps):.3g}).", ""]
    return "\n".join(parts)


def html_page(reps: Sequence[CompareResult], pngs: list[dict[str, bytes]]) -> str:
    table_rows = []
    names = [html.escape(r.label) for r in reps]
    table_rows.append("<tr><th>metric</th>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>")
    for key, label, f in ROWS:
        table_rows.append(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{html.escape(_fmt(_get(r, key), f))}</td>" for r in reps) + "</tr>")
    body = ["<h1>Amortised vs exact</h1>", "<ul>"]
    for r in reps:
        body.append(f"<li><b>{html.escape(r.label)}</b>: {html.escape(r.penalty.how)}</li>")
    body += ["</ul>", "<table>", *table_rows, "</table>"]
    for r, figs in zip(reps, pngs):
        body.append(f"<h2>{html.escape(r.label)}</h2><div>")
        for key, data in figs.items():
            b64 = base64.b64encode(data).decode()
            body.append(f'<img alt="{key}" src="data:image/png;base64,{b64}">')
        body.append("</div>")
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}img{margin:4px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>geomsae compare</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def write_reports(reps: Sequence[CompareResult], out: str | Path) -> Path:
    """Write report.json, report.md, report.html (and timing.json) for the
    :func:`geomsae.compare.compare_sae` results ``reps`` into ``out``; return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = [figures(r) for r in reps]
    doc = json_report(reps[0]) if len(reps) == 1 else {"runs": [json_report(r) for r in reps]}
    durable.write_text(out / "report.md", markdown(reps))
    durable.write_text(out / "report.html", html_page(reps, pngs))
    durable.write_json(out / "timing.json", [{"name": r.label, **r.timing._asdict()} for r in reps], indent=1)
    durable.write_json(out / "report.json", doc, indent=1, sort_keys=True)  # last: a report.json means done
    return out

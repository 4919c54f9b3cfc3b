"""The report of a study from its results.csv: matched.csv, verdicts.csv and summary.md.

One report for every study, parameterised by a :class:`Study` (its cell keys, claims,
matched metrics and the prose only it can write). :func:`write_report` reads
``results.csv`` (and ``timing.json`` when present) in a folder and writes:

- ``matched_seeds.csv``: every arm × cell × L0 target × seed (:func:`geomsae.study.matched.matched_seeds`);
- ``matched.csv``: every arm × cell × L0 target (:func:`geomsae.study.matched.matched_table`);
- ``verdicts.csv``: every comparison behind a claim (:func:`geomsae.study.verdicts.comparisons`);
- ``summary.md``: the study's description, the matched-L0 and verdict rules, the verdicts,
  the matched-L0 table, one table per claim, the study's appendix and the list of files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geomsae.study.matched import CLIFF_JUMP, cell_values, matched_columns, matched_seeds, matched_table, seeds_columns
from geomsae.study.tables import read_csv, write_csv
from geomsae.study.verdicts import (FOCUS, MIN_EFFECT, NONINFERIORITY_FVU, SYMBOL, Claim, comparisons, reading,
                                    verdict_columns)

Lines = list[str]


@dataclass(frozen=True)
class Study:
    """What one study reports (everything else of the report is the same for every study)."""

    cell_keys: tuple[str, ...]
    """Columns besides (arm, seed) that tell the cells apart, e.g. ('rho',); () when all share the data."""
    key_labels: dict[str, str]
    """How the summary names each cell key, e.g. {'rho': 'ρ'}."""
    claims: tuple[Claim, ...]
    """The claims tested, in the order of the summary."""
    matched_metrics: tuple[str, ...]
    """Metrics carried to matched.csv (the dead_at_N columns are added after dead_fraction)."""
    matched_caption: str
    """The line under the matched-L0 table's heading: what its cells show."""
    matched_cell: Callable[[dict[str, Any]], str]
    """One cell of that table from a matched.csv row with n_seeds > 0."""
    figures: tuple[str, ...]
    """File names of the study's figures (listed under Files)."""
    describe: Callable[[Any, list[dict[str, Any]]], Lines]
    """``describe(cfg, rows)``: the title and the paragraphs on data and training."""
    notes: Callable[[Any, list[dict[str, Any]], list[dict[str, Any]]], Lines] | None = None
    """``notes(cfg, rows, matched)``: lines after the verdicts (cautions)."""
    appendix: Callable[[Any, list, list, list, dict[str, Any]], Lines] | None = None
    """``appendix(cfg, rows, matched, comparisons, timing)``: sections after the claim tables."""
    digits: int = 3
    """Decimals of Δ and its interval in the claim tables."""
    paired: bool = True
    """Whether the design pairs the arms by seed (same data and init seed): paired verdicts."""


def pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' (scaled), 'mean' when std is nan, 'n/a' when mean is nan."""
    if math.isnan(mean):
        return "n/a"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if not math.isnan(std) else "")


def md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> Lines:
    """A markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in body])


def matched_metrics(study: Study, windows: Sequence[int]) -> list[str]:
    """The study's matched metrics with ``dead_at_{N}`` inserted after dead_fraction."""
    out: list[str] = []
    for m in study.matched_metrics:
        out.append(m)
        if m == "dead_fraction":
            out += [f"dead_at_{w}" for w in sorted(windows)]
    return out


def _label(study: Study, cv: tuple, sep: str = " = ") -> str:
    return ", ".join(f"{study.key_labels.get(k, k)}{sep}{v:g}" for k, v in zip(study.cell_keys, cv))


def _where(study: Study) -> str:
    return " × ".join(["arm", *(study.key_labels.get(k, k) for k in study.cell_keys), "target"])


def rules(study: Study, cfg: Any, targets: Sequence[float]) -> Lines:
    """The matched-L0 and verdict-rule paragraphs."""
    level = f"{100 * cfg.ci_level:g} %"
    deltas = sorted({(cl.metric, cl.delta()) for cl in study.claims})
    lines = ["**Matched L0.** Each arm sweeps its knob (the k grid for TopK-type arms; λ values placed in rounds "
             "otherwise, refined until the two runs bracketing each target are within 1.25× in L0, docs/method.md "
             "§7.2); collapsed runs (held-out FVU ≥ 0.95 or L0 < 0.5) are left out; metrics are interpolated linearly "
             "in log L0 between the two runs adjacent in knob order that bracket the target, per seed — except where "
             f"the dead fraction jumps by more than {100 * CLIFF_JUMP:g} points between them: that seed's value is a "
             "*cliff*, shown with both ends and never interpolated. Then mean ± sample std over the seeds with a value. "
             f"Targets: L0 ∈ {{{', '.join(f'{t:g}' for t in targets)}}}. A latent fires on a token when its folded "
             "contribution z_j‖d_j‖ exceeds 1e-3 × the data's RMS norm (docs/method.md §3).", ""]
    text = (f"**Verdict rule.** Δ = AEN's advantage in the claimed direction, "
            f"{'paired by seed (the seeds where both arms have a value)' if study.paired else 'unpaired (Welch)'}, "
            f"with its {level} t confidence interval [lo, hi]. Minimum effects δ: "
            + ", ".join(f"{m.replace('_', ' ')} {d:g}" for m, d in deltas)
            + ". Outcome: 'better' if lo > 0 and Δ ≥ δ; 'worse' if hi < 0 and Δ ≤ −δ; 'equivalent' if −δ < lo and "
            "hi < δ; 'underpowered' otherwise (the interval is wider than the effect it must resolve); 'n/a' with "
            "fewer than 2 seeds. A claim holds where AEN is 'better' and does not hold where 'worse'.")
    for cl in study.claims:
        if cl.margin is not None:
            text += (f" ({cl.id}) is a non-inferiority claim with margin {cl.margin:g} on {cl.metric.replace('_', ' ')}: "
                     "it holds where lo > −margin, does not hold where hi < −margin, else is underpowered.")
            break
    for cid in dict.fromkeys(cl.id for cl in study.claims if cl.other is not None):
        sub = [cl for cl in study.claims if cl.id == cid]
        names = [cl.metric.replace("_", " ") for cl in sub]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        text += (f" For ({cid}) the comparison is AEN vs {sub[0].other.upper()} on {listed}; it holds where they are "
                 f"equivalent or EN is better, and AEN better counts against ({cid}).")
    text += (" Each claim is reported as the table of its comparisons and a one-line reading that counts them by "
             "label and arm — not as a majority vote.")
    return lines + [text, ""]


def _verdict_lines(study: Study, comps: list[dict[str, Any]], cells: list[tuple]) -> Lines:
    lines = ["## Verdicts", ""]
    for cid in dict.fromkeys(cl.id for cl in study.claims):
        sub_claims = [cl for cl in study.claims if cl.id == cid]
        sub = [c for c in comps if c["claim"] == cid]
        by = "metric" if sub_claims[0].other is not None else "other"
        lines.append(f"- **({cid})** {sub_claims[0].text}: {reading(sub, by)}.")
        if study.cell_keys:
            per = []
            for cv in cells:
                d = [c["verdict"] for c in sub if c["verdict"] != "n/a" and tuple(c[k] for k in study.cell_keys) == cv]
                per.append(f"{_label(study, cv, '=')}: " + "/".join(f"{d.count(lab)}{SYMBOL[lab]}" for lab in
                                                                     ("holds", "does not hold", "equivalent",
                                                                      "underpowered")))
            keys = ", ".join(study.key_labels.get(k, k) for k in study.cell_keys)
            lines.append(f"  - by {keys} (✓ holds / ✗ does not hold / = equivalent / ? underpowered): " + "; ".join(per))
    return lines


def _grid(study: Study, cells: list[tuple], targets: Sequence[float], corner: str, names: Sequence[str],
          cell: Callable[[str, tuple, float], str], titled: bool = True) -> Lines:
    """Tables with one row per name: with cell keys one per target (titled 'L0 = t:'), columns =
    cells; without, one table whose columns are the targets."""
    if not study.cell_keys:
        return md_table([corner, *(f"L0 = {t:g}" for t in targets)],
                        [[n] + [cell(n, (), t) for t in targets] for n in names]) + [""]
    out: Lines = []
    for t in targets:
        out += [f"L0 = {t:g}:", ""] if titled else []
        out += md_table([corner, *(_label(study, cv) for cv in cells)],
                        [[n] + [cell(n, cv, t) for cv in cells] for n in names]) + [""]
    return out


def summary_lines(study: Study, cfg: Any, rows: list[dict[str, Any]], matched: list[dict[str, Any]],
                  comps: list[dict[str, Any]], timing: dict[str, Any]) -> Lines:
    """The text of summary.md (every number computed from the tables)."""
    arms = list(dict.fromkeys(r["arm"] for r in matched))
    targets = sorted({r["l0_target"] for r in matched})
    cells = cell_values(matched, study.cell_keys)
    n_all = len({r["seed"] for r in rows})
    idx = {(r["arm"], *(r[k] for k in study.cell_keys), r["l0_target"]): r for r in matched}
    lines = study.describe(cfg, rows) + [""] + rules(study, cfg, targets) + _verdict_lines(study, comps, cells)
    if study.notes is not None:
        lines += study.notes(cfg, rows, matched)

    def mcell(arm: str, cv: tuple, t: float) -> str:
        r = idx[(arm, *cv, t)]
        cliff = ""
        if int(r.get("n_cliff", 0)) > 0:
            cliff = (f"cliff×{int(r['n_cliff'])}: L0 {r['cliff_l0_dense']:.1f}→{r['cliff_l0_sparse']:.1f}, dead "
                     f"{100 * r['cliff_dead_dense']:.0f}→{100 * r['cliff_dead_sparse']:.0f} %")
        if int(r["n_seeds"]) == 0:
            return cliff or "n/a"
        return (study.matched_cell(r) + ("" if int(r["n_seeds"]) >= n_all else f" (n={int(r['n_seeds'])})")
                + (f"; {cliff}" if cliff else ""))

    head = f"## Matched-L0 table (L0 = {targets[0]:g})" if study.cell_keys else "## Matched-L0 table"
    lines += ["", head, "", study.matched_caption + " (n/a: not bracketed; cliff×c: c seeds whose bracketing runs "
              "straddle a jump in dead fraction, their mean ends dense → sparse).", ""]
    lines += _grid(study, cells, targets[:1] if study.cell_keys else targets, "arm", arms, mcell, titled=False)
    for cid in dict.fromkeys(cl.id for cl in study.claims):
        sub_claims = [cl for cl in study.claims if cl.id == cid]
        sub = [c for c in comps if c["claim"] == cid]
        if not sub:
            continue
        ablation = sub_claims[0].other is not None
        by = "metric" if ablation else "other"
        legend = ("Cells: verdict (✓ holds, ✗ does not hold, = equivalent, ? underpowered, – n/a), AEN's advantage Δ "
                  f"[{100 * cfg.ci_level:g} % CI]")
        if ablation:
            legend += f". Rows: metric; Δ > 0 means AEN is better (which counts against ({cid}))."
        else:
            cl = sub_claims[0]
            legend += f" on `{cl.metric}`; AEN {'higher' if cl.higher_is_better else 'lower'} is better."
        look = {(c[by], *(c[k] for k in study.cell_keys), c["l0_target"]): c for c in sub}

        def ccell(name: str, cv: tuple, t: float, look: dict = look) -> str:
            c = look[(name, *cv, t)]
            d = study.digits
            return SYMBOL[c["verdict"]] + ("" if c["verdict"] == "n/a" else
                                           f" {c['aen_advantage']:+.{d}f} [{c['ci_lo']:+.{d}f}, {c['ci_hi']:+.{d}f}]")

        names = list(dict.fromkeys(c[by] for c in sub))
        lines += [f"## ({cid}) {sub_claims[0].text}", "", f"Reading: {reading(sub, by)}.", "", legend, ""]
        lines += _grid(study, cells, targets, by, names, ccell)
    if study.appendix is not None:
        lines += study.appendix(cfg, rows, matched, comps, timing)
    lines += ["## Files", "", f"- `results.csv`: one row per SAE; `matched_seeds.csv`: {_where(study)} × seed; "
              f"`matched.csv`: {_where(study)}; `verdicts.csv`: every comparison above with its means, interval, "
              "outcome and seed counts; `firing_hist.csv`; `config.json`; `timing.json`.",
              "- Figures: " + ", ".join(f"`{f}`" for f in study.figures) + "."]
    return lines


def write_report(folder: str | Path, cfg: Any, study: Study) -> dict[str, Path]:
    """Write matched.csv, verdicts.csv and summary.md from folder/results.csv; returns their paths.

    ``cfg`` is the study's config (a :class:`geomsae.study.settings.StudySettings`): arms,
    l0_targets, eval_windows and ci_level are read here, the rest by the study's own text.
    """
    out = Path(folder)
    rows = read_csv(out / "results.csv")
    metrics = matched_metrics(study, cfg.eval_windows)
    arms = [a for a in cfg.arms if any(r["arm"] == a for r in rows)]
    per_seed = matched_seeds(rows, sorted(cfg.l0_targets), metrics, arms, study.cell_keys)
    write_csv(out / "matched_seeds.csv", seeds_columns(metrics, study.cell_keys), per_seed)
    matched = matched_table(rows, sorted(cfg.l0_targets), metrics, arms, study.cell_keys, seeds_table=per_seed)
    write_csv(out / "matched.csv", matched_columns(metrics, study.cell_keys), matched)
    comps = comparisons(per_seed, study.claims, study.cell_keys, paired=study.paired, level=cfg.ci_level)
    write_csv(out / "verdicts.csv", verdict_columns(study.cell_keys), comps)
    timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    (out / "summary.md").write_text("\n".join(summary_lines(study, cfg, rows, matched, comps, timing)) + "\n")
    return {"matched_seeds": out / "matched_seeds.csv", "matched": out / "matched.csv", "verdicts": out / "verdicts.csv",
            "summary": out / "summary.md"}


__all__ = ["Study", "write_report", "summary_lines", "rules", "matched_metrics", "pm", "md_table", "FOCUS",
           "MIN_EFFECT", "NONINFERIORITY_FVU"]

"""The project's figure sources: each redraws (or retrains) one experiment's figures into an output folder."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

from figures.registry import (
    DATA_DIR,
    FIGURES_DIR,
    REGISTRY,
    Source,
    register,
    register_where,
)
from geomsae.study.cost import CPU_GEMM_FLOPS
from llm_eval import curve_report
from llm_eval import plots as llm_plots
from llm_eval import starvation as llm_starvation
from llm_eval.config import PRESETS as LLM_PRESETS
from synthetic import authors, centering, compare_arms, length, plots, starvation
from synthetic.budget import planned_flops
from synthetic.resume import same_config


def starvation_preset(quick: bool) -> str:
    """The starvation preset behind the figures: 'quick' with --quick, else 'standard' (the committed verdicts)."""
    return "quick" if quick else "standard"


def _same_config(folder: Path, cfg_dict: dict) -> bool:
    saved = folder / "config.json"
    return saved.exists() and (folder / "results.csv").exists() and same_config(json.loads(saved.read_text()), cfg_dict)


def _starvation(out_dir: Path, quick: bool, force: bool = False) -> list[Path]:
    """Run, reuse or redraw the starvation benchmark, then copy its figures and evidence into out_dir.

    Reuses runs/starvation_<preset>/ when its config is the preset's; otherwise, without --quick,
    redraws from the committed evidence in figures/data/starvation_<preset>/ (copied into the run
    folder first, so the report never writes into the committed data); otherwise trains."""
    import dataclasses

    cfg = starvation.PRESETS[starvation_preset(quick)]
    cfg_dict = json.loads(json.dumps(dataclasses.asdict(cfg)))
    run = cfg.out_dir
    evidence = DATA_DIR / f"starvation_{cfg.preset}"
    if not force and _same_config(run, cfg_dict):
        print(f"figures: reusing {run} (same config; --force retrains)", file=sys.stderr)
        starvation.report(cfg)
    elif not force and not quick and _same_config(evidence, cfg_dict):
        print(f"figures: redrawing from the committed evidence {evidence} (--force retrains)", file=sys.stderr)
        copy_evidence(evidence, run)
        starvation.report(cfg)
    else:
        if (run / "results.csv").exists():  # another config's (or --force): keep it, train into a fresh folder
            aside = _set_aside(run)
            print(f"figures: moved the earlier {run} to {aside}", file=sys.stderr)
        if not quick:
            est = planned_flops(cfg) / CPU_GEMM_FLOPS / 3600
            print(f"figures: training the {cfg.preset} preset ({est:.1f} h at the roofline, about 6x that on 2 "
                  "CPU cores); use --quick for the quick preset", file=sys.stderr)
        starvation.run(cfg)
    out = []
    for name, _ in plots.FIGURES:
        shutil.copyfile(run / name, Path(out_dir) / name)
        out.append(Path(out_dir) / name)
    shutil.copyfile(run / "summary.md", Path(out_dir) / "starvation_summary.md")
    if Path(out_dir).resolve() != FIGURES_DIR.resolve() or quick:
        copy_evidence(run, Path(out_dir) / "data" / f"starvation_{cfg.preset}")
    elif run.resolve() != evidence.resolve():
        copy_evidence(run, evidence)
    return out


def _set_aside(folder: Path) -> Path:
    """Rename ``folder`` to the first free ``<name>.replaced-<n>`` beside it (nothing computed is deleted)."""
    n = 1
    while (aside := folder.with_name(f"{folder.name}.replaced-{n}")).exists():
        n += 1
    folder.rename(aside)
    return aside


LENGTH_FIGURES = {"length_verdicts.png": "Length ablation: share of each verdict label among the defined comparisons "
                                         "of every synthetic claim against training steps (6 arms × 3 ρ × 3 seeds per "
                                         "length)",
                  "length.md": "the length table: per claim and length, comparisons by label and the share of runs "
                               "whose loss still fell by > 1 % over their last tenth"}
"""The length ablation's outputs (synthetic/length.py)."""


def length_folders() -> list[Path]:
    """Committed length-ablation runs (figures/data/length_<steps>/), by steps."""
    found = [p for p in DATA_DIR.glob("length_*") if (p / "verdicts.csv").exists() and p.name[7:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[7:]))


def _length(out_dir: Path, quick: bool) -> list[Path]:
    """Redraw the length-ablation figure and table from the committed runs (nothing is trained)."""
    folders = length_folders()
    if len(folders) < 2:
        raise FileNotFoundError(f"fewer than 2 length runs committed in {DATA_DIR} (length_<steps>/)")
    paths = length.write(folders, Path(out_dir))
    return [p for p in paths if p.name in LENGTH_FIGURES]


EVIDENCE = ("config.json", "results.csv", "matched_seeds.csv", "matched.csv", "verdicts.csv", "firing_hist.csv",
            "timing.json", "summary.md")
"""The files of a study run that are committed beside its summary, so every verdict can be recomputed without training
(``python -m figures --only starvation`` copies them into runs/starvation_standard/ and redoes the report from them)."""


def copy_evidence(run: Path, dest: Path) -> list[Path]:
    """Copy the :data:`EVIDENCE` files present in ``run`` into ``dest`` (a committed folder); returns the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in EVIDENCE:
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
            out.append(dest / name)
    return out


def _compare_arms(out_dir: Path, quick: bool) -> list[Path]:
    """Train aen / en / relu_l1 / topk at ρ = 0.9 and compare each encoder with its exact map."""
    preset = starvation_preset(quick)
    cfg = compare_arms.CompareArmsConfig(starvation_preset=preset, l0_target=4.0, out=f"runs/compare_arms_{preset}")
    run, _ = compare_arms.run(cfg)
    out = []
    for name in (compare_arms.FIGURE[0], compare_arms.TABLE):
        shutil.copyfile(run / name, Path(out_dir) / name)
        out.append(Path(out_dir) / name)
    return out


def _llm(out_dir: Path, quick: bool) -> list[Path]:
    """Redraw the real-model figures from the committed results (the run itself takes hours)."""
    cfg = LLM_PRESETS["smollm2-cpu"]
    if not (cfg.results_dir / "results.csv").exists():
        raise FileNotFoundError(f"{cfg.results_dir / 'results.csv'} is missing: run "
                                "`python -m llm_eval.starvation --preset smollm2-cpu` (hours on 2 CPU cores)")
    paths = llm_starvation.report(cfg, out_dir)
    shutil.copyfile(cfg.results_dir / "summary.md", Path(out_dir) / "llm_summary.md")
    return paths


def _llm_long(out_dir: Path, quick: bool) -> list[Path]:
    """Redraw the starvation-over-training figure from the committed curves.csv of smollm2-long."""
    cfg = LLM_PRESETS["smollm2-long"]
    paths = curve_report.report(cfg, out_dir)
    shutil.copyfile(cfg.results_dir / "summary.md", Path(out_dir) / "llm_long_summary.md")
    return [p for p in paths if Path(p).suffix == ".png"]


AUTHORS_DIR = DATA_DIR / "authors"
"""The committed evidence of the authors' spiked rows (:data:`EVIDENCE` of ``--preset authors``)."""
AUTHORS_VARIANTS = (("b_dec 0, 5k steps", "authors_topk_bdec_zeros_5000"),
                    ("b_dec mean, 5k steps", "authors_topk_bdec_mean_5000"))
"""(label, folder in :data:`DATA_DIR`) of the TopK probe runs shown beside the authors' rows, where committed
(``--arms topk --steps 5000 --b-dec-init zeros|mean``: the decoder-bias init decides whether TopK starves)."""


def _authors(out_dir: Path, quick: bool) -> list[Path]:
    """Redraw the authors' table beside ours (table and figure) from the committed results.csv."""
    variants = [(label, DATA_DIR / name) for label, name in AUTHORS_VARIANTS
                if (DATA_DIR / name / "results.csv").exists()]
    return authors.write(AUTHORS_DIR, Path(out_dir), variants)


CENTERING_DIRS = ("centering_zeros", "centering_mean")
"""The committed runs of the centering factorial (issue 24), one per start of b_dec, in :data:`DATA_DIR`."""


def _centering(out_dir: Path, quick: bool) -> list[Path]:
    """Redraw the centering factorial's table, CSV and figure from the committed results.csv of both starts."""
    beside = [AUTHORS_DIR] if (AUTHORS_DIR / "results.csv").exists() else []  # the 50,000-step mean-start rows
    return centering.write([DATA_DIR / name for name in CENTERING_DIRS] + beside, Path(out_dir))


def register_builtins(quick: bool = False) -> dict[str, str]:
    """Register the project's sources; returns {name: reason} for those skipped."""
    skipped: dict[str, str] = {}

    register(Source(
        "starvation", _starvation,
        "Feature starvation on the spiked model: every SAE arm across coherence ρ at matched L0 (issue 4)",
        "python -m synthetic.starvation --preset standard   (--preset quick with --quick)",
        "runs/starvation_<preset>/ (results.csv, matched.csv, verdicts.csv, firing_hist.csv, summary.md); "
        "starvation_summary.md here is a copy of the summary; the CSVs behind it are committed in "
        "data/starvation_<preset>/ beside this index (standard in figures/, quick in figures/quick/)",
        dict(plots.FIGURES)))

    register(Source(
        "compare_arms", _compare_arms,
        "Amortised vs exact on the spiked model at ρ = 0.9: aen, en, relu_l1, topk encoders (trained as in the "
        "starvation preset) against the exact solution of their own objective (issue 6)",
        "python -m synthetic.compare_arms   (geomsae compare on each SAE)",
        "runs/compare_arms_<preset>/ (report.json, report.md, report.html); compare_arms.md here is the table",
        {compare_arms.FIGURE[0]: compare_arms.FIGURE[1], compare_arms.TABLE: "the side-by-side table (markdown)"}))
    if quick:
        REGISTRY.pop("length", None)
        skipped["length"] = "the length ablation is redrawn without --quick only (python -m figures --only length)"
    else:
        register(Source(
            "length", _length,
            "Length ablation: every synthetic claim's verdicts against training length (125 to 8,000 steps, every arm; "
            "the slow arms further) and each arm's convergence by doubling (issue 12)",
            "for s in 125 500 2000 4000 8000; do python -m synthetic.starvation --preset length --steps $s "
            "--resample-every $((s/3+1)) --out runs/length_$s; done; python -m synthetic.starvation --preset length "
            "--arms aen relu_l1 --steps 16000 --resample-every 5334 --out runs/length_16000; python -m "
            "synthetic.starvation --preset length --arms aen --steps 32000 --resample-every 10667 --out "
            "runs/length_32000; python -m synthetic.length runs/length_*",
            "figures/data/length_<steps>/ (config.json, results.csv, verdicts.csv, summary.md of each length)",
            LENGTH_FIGURES))

    register_where((AUTHORS_DIR / "results.csv").exists(), Source(
        "authors", _authors,
        "The authors' spiked table (n 256, m 1024, k 16, 12.8 M tokens per SAE): our rows beside theirs, cell by "
        "cell (issue 12)",
        "python -m synthetic.starvation --preset authors --rhos 0.3 0.9; the TopK probes: python -m "
        "synthetic.starvation --preset authors --rhos 0.3 0.9 --arms topk --steps 5000 --resample-every 1667 "
        "--b-dec-init zeros|mean --out runs/authors_topk_bdec_<init>_5000   (figures here are redrawn from their "
        "committed results)",
        "figures/data/authors/ and figures/data/authors_topk_bdec_<init>_5000/ (config.json, results.csv, "
        "matched.csv, verdicts.csv, firing_hist.csv, timing.json, summary.md)",
        {authors.FIGURE[0]: authors.FIGURE[1], authors.TABLE: "the table: ours ‖ theirs per (ρ, arm), and the run "
         "picked in each cell with its knob and convergence"}), skipped,
        "figures/data/authors/results.csv is missing: run `python -m synthetic.starvation --preset authors --rhos 0.3 "
        "0.9` (hours on 2 CPU cores) and commit its evidence there")

    register_where(all((DATA_DIR / name / "results.csv").exists() for name in CENTERING_DIRS), Source(
        "centering", _centering,
        "The centering factorial on the authors' design (n 256, m 1024, k 16, 5,000 steps, 6 arms, 2 seeds): dead "
        "latents at L0 16 with b_dec started at zero and at the data mean, on the held-out tokens and on the last "
        "training batch, beside the authors' (issue 24)",
        "python -m synthetic.starvation --preset centering --b-dec-init zeros|mean --out "
        "runs/centering_<init>; python -m synthetic.centering runs/centering_zeros runs/centering_mean",
        "figures/data/centering_<init>/ (config.json, results.csv, matched.csv, verdicts.csv, firing_hist.csv, "
        "timing.json, summary.md); centering.csv here holds the per-seed values at L0 16",
        {centering.FIGURE[0]: centering.FIGURE[1], centering.TABLE: "the table: γ by ρ; the authors' cells with "
         "both starts on both measurements; growth with ρ; AEN against each arm at each start",
         centering.DATA: "the per-seed values at L0 16 behind the table (start, arm, ρ, seed)"}), skipped,
        "figures/data/centering_zeros|mean/results.csv are missing: run the centering preset (python -m "
        "synthetic.starvation --preset centering --b-dec-init zeros|mean) and commit its evidence there")

    register(Source(
        "llm_eval", _llm,
        "Feature starvation on SmolLM2-135M (layer 15 residual stream, Python docs): every arm against L0 (issue 7)",
        "python -m llm_eval.starvation --preset smollm2-cpu   (figures here are redrawn from its committed results)",
        "llm_eval/results/smollm2-cpu/ (results.csv, matched.csv, verdicts.csv, summary.md); "
        "llm_summary.md here is a copy of the summary", dict(llm_plots.FIGURES)))

    long_csv = LLM_PRESETS["smollm2-long"].results_dir / "curves.csv"
    shown = long_csv.relative_to(FIGURES_DIR.parent) if long_csv.is_relative_to(FIGURES_DIR.parent) else long_csv
    register_where(long_csv.exists(), Source(
        "llm_long", _llm_long,
        "Starvation over training on SmolLM2-135M: dead and near-starved fractions against tokens seen (issue 13)",
        "python -m llm_eval.starvation --preset smollm2-long   (figures here are redrawn from its committed curves.csv)",
        "llm_eval/results/smollm2-long/ (curves.csv, summary.md, timing.json); figures/llm_long_summary.md is a "
        "copy of the summary", dict([llm_plots.CURVE_FIGURE])), skipped,
        f"{shown} is missing: run `python -m llm_eval.starvation --preset smollm2-long` (hours on 2 CPU cores; "
        "--estimate-only prints the plan)")
    try:
        pc = importlib.import_module("proofs_check")
        make = getattr(pc, "make_figures", None)
        docs = dict(getattr(pc, "FIGURES", []))
    except ImportError as e:
        make, docs = None, {}
        skipped["proofs_check"] = f"not importable ({e})"
    if make is not None:
        register(Source("proofs_check", lambda out, quick, force=False: make(out, quick),
                        "Property checks of docs/method.md §1 on synthetic ground truth (Lipschitz bounds, lasso instability, "
                        "Jacobian, support recovery)",
                        "python -m proofs_check --quick   (or without --quick)",
                        "proofs_check/report.md and proofs_check/config.json", docs))
    elif "proofs_check" not in skipped:
        skipped["proofs_check"] = "proofs_check.make_figures does not exist yet"
    return skipped



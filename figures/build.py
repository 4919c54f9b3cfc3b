"""Run the registered figure sources and write figures/README.md, the index of every figure."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from figures.registry import FIGURES_DIR, REGISTRY, Source
from figures.sources import register_builtins


def write_readme(out_dir: Path, built: dict[str, list[Path]], quick: bool, skipped: dict[str, str],
                 failed: dict[str, str] | None = None, registry: dict[str, Source] | None = None) -> Path:
    """figures/README.md: every registered source, its figures, command and data."""
    failed = failed or {}
    registry = REGISTRY if registry is None else registry
    flag = " --quick" if quick else ""
    what = ("every source retrained at quick sizes (n 64, m 256, 400 steps, 3 seeds)" if quick else
            "the committed set: the standard starvation preset and the length ablation redrawn from their evidence in "
            "figures/data/, the amortised-vs-exact reports and the theorem checks run at full size")
    lines = ["# Figures", "", f"Regenerate: `python -m figures{flag}` (this index was written by it: {what}). "
             f"One source: `python -m figures{flag} --only NAME`.", ""]
    for name, src in registry.items():
        lines += [f"## {name}", "", src.description, "", f"- command: `{src.command}`", f"- data: {src.data}", ""]
        if name in failed:
            lines += [f"Not regenerated: {failed[name]}", ""]
        paths = built.get(name, [])
        lines += ["| figure | shows |", "|---|---|"]
        names = list(src.figure_docs) + [p.name for p in paths if p.name not in src.figure_docs]  # a stable order
        for fname in names:
            lines.append(f"| [{fname}]({fname}) | {src.figure_docs.get(fname, '')} |")
        lines.append("")
    for name, why in skipped.items():
        lines += [f"## {name} (skipped)", "", why, ""]
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(lines))
    return path


def default_out(quick: bool) -> Path:
    """figures/ for the committed set, figures/quick/ with --quick."""
    return FIGURES_DIR / "quick" if quick else FIGURES_DIR


def build(out_dir: str | Path | None = None, quick: bool = False, only: list[str] | None = None,
          force: bool = False, registry: dict[str, Source] | None = None) -> dict[str, list[Path]]:
    """Run every source of ``registry`` (default: the built-ins, registered now), or those in
    ``only``, into out_dir (default :func:`default_out`) and write README.md; returns {source: paths written}."""
    out = Path(out_dir) if out_dir is not None else default_out(quick)
    out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    if registry is None:
        skipped = register_builtins(quick)
        registry = REGISTRY
    for name, why in skipped.items():
        print(f"figures: skipping {name}: {why}", file=sys.stderr)
    unknown = sorted(set(only or []) - set(registry))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; registered: {sorted(registry)}")
    built: dict[str, list[Path]] = {}
    failed: dict[str, str] = {}
    for name, src in registry.items():
        if only and name not in only:
            continue
        print(f"figures: {name} ...", file=sys.stderr)
        try:
            built[name] = list(src.make_figures(out, quick, force=force) if _takes_force(src.make_figures)
                               else src.make_figures(out, quick))
        except Exception as e:  # one broken source must not lose the others' figures
            failed[name] = f"{type(e).__name__}: {e}"
            print(f"figures: {name} failed: {failed[name]}", file=sys.stderr)
    write_readme(out, built, quick, skipped, failed, registry)
    if failed:
        raise RuntimeError(f"figure source(s) failed: {failed}")
    return built


def _takes_force(fn: Callable) -> bool:
    try:
        return "force" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False



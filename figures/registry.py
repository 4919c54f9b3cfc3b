"""The figure sources' registry: what a source is, where the committed evidence lies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

FIGURES_DIR = Path(__file__).resolve().parent

class Source(NamedTuple):
    """One registered producer of figures."""

    name: str
    """Short name (``--only NAME``)."""
    make_figures: Callable[[Path, bool], list[Path]]
    """``make_figures(out_dir, quick)``: writes the PNGs into out_dir, returns their paths."""
    description: str
    """One line: what the figures show."""
    command: str
    """The command that regenerates the data and figures on its own."""
    data: str
    """Where the data behind the figures lies."""
    figure_docs: dict[str, str]
    """File name -> one-line description of each figure."""


REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add (or replace) a source in :data:`REGISTRY`."""
    REGISTRY[source.name] = source
    return source


DATA_DIR = FIGURES_DIR / "data"
"""Committed evidence of the long runs (one folder per run: :data:`EVIDENCE` files)."""


def register_where(present: bool, source: Source, skipped: dict[str, str], missing: str) -> None:
    """Register ``source`` where its committed evidence is ``present``; else drop it and say why in ``skipped``."""
    if present:
        register(source)
    else:
        REGISTRY.pop(source.name, None)
        skipped[source.name] = missing



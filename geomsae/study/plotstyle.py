"""The plot style every study's figures share: one colour per arm (AEN in black, drawn on top), the
file format, and the firing-histogram panel.

matplotlib is imported on first use (:func:`pyplot`, with the Agg backend), never at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geomsae.study.verdicts import FOCUS

DPI = 100
"""Resolution of every saved figure."""
HIST_EDGES = (-8.0, 0.0)
"""log10 firing-frequency range of the histogram bins 1 … n (bin 0 counts the dead latents)."""


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def arm_colors(arms: list[str]) -> dict[str, Any]:
    """arm -> colour: tab10 in the order given, AEN black."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {a: ("black" if a == FOCUS else cmap(i % 10)) for i, a in enumerate(arms)}


def line_style(arm: str) -> dict[str, Any]:
    """Line width and z-order of an arm's lines (AEN thicker, on top)."""
    return dict(lw=2.5, zorder=5) if arm == FOCUS else dict(lw=1.2)


def hist_panel(ax: Any, counts: Any, arm: str) -> None:
    """Draw firing-histogram ``counts`` (bin 0 = dead, not drawn) as filled stairs on ``ax``."""
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    edges = np.linspace(*HIST_EDGES, len(counts))
    ax.stairs(counts[1:], edges, fill=True, alpha=0.7, color="black" if arm == FOCUS else "tab:blue")
    ax.set_yticks([])


def save(fig: Any, path: str | Path) -> Path:
    """Lay out, save at :data:`DPI` and close ``fig``; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return Path(path)

"""geomsae: adaptive elastic-net sparse autoencoders and exact sparse-coding solvers.

Sub-packages are imported lazily so that ``import geomsae`` stays cheap:

- :mod:`geomsae.solvers` — exact, certified solvers of the sparse-coding map (docs/method.md §1);
- :mod:`geomsae.saes` — the SAE zoo (docs/method.md §2) and ``make(arch, d_in, d_sae, **cfg)``;
- :mod:`geomsae.metrics` — the metrics of docs/method.md §3 as pure functions;
- :mod:`geomsae.train` — one trainer for every architecture.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"solvers", "saes", "metrics", "train", "checkpoint", "data", "shards", "activations", "compare", "fidelity", "lm"}


def load(path: Any, device: Any = "cpu") -> Any:
    """Load a trained SAE folder (``cfg.json`` + ``sae.safetensors``); never unpickles."""
    from geomsae.checkpoint import load_sae

    return load_sae(path, device=device)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"geomsae.{name}")
    raise AttributeError(f"module 'geomsae' has no attribute {name!r}")

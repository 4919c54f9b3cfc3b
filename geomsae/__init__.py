"""geomsae: adaptive elastic-net sparse autoencoders and exact sparse-coding solvers.

The public modules, imported on first use so that ``import geomsae`` stays cheap (no torch):

- :mod:`geomsae.saes` — the SAE zoo (docs/method.md §2) and ``make(arch, d_in, d_sae, **cfg)``;
- :mod:`geomsae.solvers` — exact, certified solvers of the sparse-coding map (docs/method.md §1);
- :mod:`geomsae.train` — ``train(spec, data, TrainConfig(...))``: one SAE (the loop: :mod:`geomsae.training.loop`);
- :mod:`geomsae.train_stack` — ``train_stack(specs, data, cfg)``: N SAEs of one shape at once;
- :mod:`geomsae.training` — the layer behind both (config, the loop, step, stream, log, resume, L0 control);
- :mod:`geomsae.evaluate`, :mod:`geomsae.metrics` — held-out evaluation and the metrics of docs/method.md §3;
- :mod:`geomsae.compare` — a trained encoder's codes against the exact solution of its objective;
- :mod:`geomsae.data`, :mod:`geomsae.shards`, :mod:`geomsae.activations`, :mod:`geomsae.lm` — activation
  sources, shard folders, harvesting from a language model;
- :mod:`geomsae.fidelity` — an SAE spliced into a language model (CE loss recovered, KL);
- :mod:`geomsae.checkpoint` — SAE folders (cfg.json + sae.safetensors) and training checkpoints;
- :mod:`geomsae.interop` — SAELens and sparsify folders, both ways;
- :mod:`geomsae.study` — the experiment engine (arms, sweeps, matched-L0 tables, verdicts).

and :func:`load`, which reads a trained SAE folder.
"""

from __future__ import annotations

from geomsae.version import __version__

_MODULES = ("activations", "checkpoint", "compare", "data", "evaluate", "fidelity", "interop", "lm", "metrics",
            "saes", "shards", "solvers", "study", "train", "train_stack", "training")

__all__ = ["__version__", "load", *_MODULES]


def load(path, device="cpu"):  # noqa: ANN001, ANN201 (typing would import torch)
    """Load a trained SAE folder (``cfg.json`` + ``sae.safetensors``) as a module taking raw activations;
    never unpickles. ``device``: where its weights go."""
    from geomsae.checkpoint import load_sae

    return load_sae(path, device=device)


def __getattr__(name: str):  # noqa: ANN202
    if name in _MODULES:
        import importlib

        return importlib.import_module(f"geomsae.{name}")
    raise AttributeError(f"module 'geomsae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

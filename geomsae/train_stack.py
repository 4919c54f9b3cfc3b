"""Stacked training: N SAEs of one architecture and shape trained at once (STUB: loops over train()).

The real implementation replaces this body; the signature is the contract.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from geomsae.train import TrainResult, train
from geomsae.train_config import TrainConfig


def train_stack(specs: Sequence[Any], source: Any, cfg: TrainConfig, *, seeds: Sequence[int] | None = None,
                outs: Sequence[str | os.PathLike | None] | None = None, resume: bool = False) -> list[TrainResult]:
    """Train ``len(specs)`` SAEs of one architecture and shape in one process.

    :param specs: one ``{"arch": ..., "d_sae": ..., **fields}`` mapping per member (as :func:`train`).
    :param source: one activation source shared by every member, or a list with one source per member.
    :param seeds: init seed of each member (default ``cfg.seed`` for all).
    :param outs: run folder of each member (default: none kept); ``cfg.out`` must be None.
    :returns: one :class:`TrainResult` per member, equal to a solo :func:`train` of that member with
        ``TrainConfig(seed=seeds[i], data_seed=...)`` to float tolerance.
    """
    n = len(specs)
    seeds = list(seeds) if seeds is not None else [cfg.seed] * n
    outs = list(outs) if outs is not None else [None] * n
    per_member = isinstance(source, (list, tuple))
    results = []
    for i in range(n):
        src = source[i] if per_member else source
        data_seed = cfg.data_seed if cfg.data_seed is not None else (seeds[i] if per_member else cfg.seed)
        c = dataclasses.replace(cfg, seed=seeds[i], data_seed=data_seed,
                                out=None if outs[i] is None else str(outs[i]))
        results.append(train(specs[i], src, c, resume=resume))
    return results

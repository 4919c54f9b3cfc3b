"""metrics.jsonl: the record of a step, reading and truncating the log, and the loss trend of a run's last tenth."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from geomsae import durable, metrics
from geomsae.training.config import TrainConfig

METRICS_FILE = "metrics.jsonl"


def step_record(step: int, tokens: int, lr: float, x: Tensor, out: Any, lo: Any, sae: Any,
                cfg: TrainConfig, t0: float, tokens0: int, member: int | None = None) -> dict[str, Any]:
    """The metrics.jsonl record of a step; for a stack, that of ``member`` (its slice of
    x when x is per member, of the outputs, losses and dead-latent trackers)."""
    def pick(t: Tensor) -> Tensor:
        return t if member is None else t[member]

    x_m = x if member is None or x.ndim == 2 else x[member]
    rec: dict[str, Any] = {"step": step, "tokens": tokens, "lr": lr, "loss": float(pick(lo.loss.detach()))}
    rec.update({k: float(pick(v)) for k, v in lo.parts.items()})
    try:
        rec["fvu"] = metrics.fvu(x_m, pick(out.x_hat))
    except ValueError:  # a batch without variance: FVU undefined
        rec["fvu"] = float("nan")
    codes = pick(out.codes)
    rec["l0"] = metrics.l0(codes)
    # the authors' dead count: latents with z_j = 0 on every token of this batch (raw rule, one batch)
    rec["dead_last_batch"] = float((metrics.firing_counts(codes) == 0).double().mean())
    rec["dead_fraction"] = float(pick(sae.dead_mask(cfg.dead_window_tokens)).float().mean())
    elapsed = time.perf_counter() - t0
    rec["tokens_per_s"] = (tokens - tokens0) / elapsed if elapsed > 0 else 0.0
    return rec


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A torn last line (the process was killed while writing
    it) is dropped with a warning naming the file; a bad line before the last raises ValueError
    naming the file, the line and the fix."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    recs = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if i == len(lines) - 1:
                warnings.warn(f"{str(path)!r}: dropped its torn last line {i + 1} (a run killed while "
                              "writing it)", stacklevel=3)
                break
            raise ValueError(f"{str(path)!r} line {i + 1} is not a JSON record ({exc}): delete that line, "
                             "or the file to restart the log") from None
        recs.append(rec)
    return recs


def log_holds_records(path: Path) -> bool:
    """Whether a metrics.jsonl exists and holds anything but whitespace (an early kill leaves it empty)."""
    return path.is_file() and bool(path.read_text(errors="replace").strip())


def truncate_log(path: Path, step: int) -> None:
    """Drop records after ``step`` (left by a run stopped after its last checkpoint) and a torn last line."""
    if not path.exists():
        return
    keep = [json.dumps(r) for r in read_log(path) if r.get("step", 0) <= step]
    durable.write_text(path, "".join(ln + "\n" for ln in keep))


CONVERGENCE_FRAC = 0.1
"""Share of the steps, at the end of a run, over which the loss trend is measured (docs/method.md §7.5)."""


UNCONVERGED_REL_CHANGE = -0.01
"""A run whose ``loss_rel_change`` is below this (its loss still fell by more than 1 % over the last
tenth of its steps) had not converged (docs/method.md §7.5)."""


def unconverged(rel_change: float) -> bool:
    """Whether a run with this ``loss_rel_change`` had not converged (NaN, unknown: False)."""
    return rel_change == rel_change and rel_change < UNCONVERGED_REL_CHANGE


def loss_trend(steps: Any, losses: Any) -> tuple[float, float]:
    """Least-squares slope of the loss against the step, and the relative change it implies.

    :param steps: (T,) step indices; :param losses: (T,) training losses at those steps.
    :returns: (slope per step, slope·(steps[-1] − steps[0] + 1)/mean(loss)): the second is the
        fractional change of the loss across the window (−0.05: it still fell by 5 %).
        (nan, nan) for fewer than 2 points or a zero mean loss.
    """
    import numpy as np

    t = np.asarray(steps, dtype=np.float64).reshape(-1)
    y = np.asarray(losses, dtype=np.float64).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"steps has {t.size} entries but losses has {y.size}")
    if not (np.isfinite(t).all() and np.isfinite(y).all()):
        raise ValueError("steps and losses must be finite")
    if t.size < 2 or float(np.ptp(t)) == 0.0:
        return math.nan, math.nan
    tc = t - t.mean()
    slope = float((tc * (y - y.mean())).sum() / (tc * tc).sum())
    mean = float(y.mean())
    return slope, (slope * (t[-1] - t[0] + 1) / mean) if mean != 0 else math.nan


class LossWindow:
    """The training losses of the last ``CONVERGENCE_FRAC`` of a run's steps (at least 2), per
    member; :meth:`summary` gives the convergence columns ``loss_slope`` and ``loss_rel_change``.

    A run resumed inside the window holds only the steps after the resume.
    """

    def __init__(self, total_steps: int, frac: float = CONVERGENCE_FRAC) -> None:
        if not 0 < frac <= 1:
            raise ValueError(f"frac == {frac!r}, must be in (0, 1]")
        self.start = total_steps - max(2, math.ceil(frac * total_steps))
        self.steps: list[int] = []
        self.losses: list[Any] = []

    def add(self, step: int, loss: Tensor) -> None:
        """Record the loss of 0-based ``step`` (a scalar, or (S,) per stack member) if it is in the window."""
        if step >= self.start:
            self.steps.append(step)
            self.losses.append(loss.detach().float().reshape(-1).cpu())

    def summary(self, member: int = 0) -> dict[str, float]:
        """{'loss_slope', 'loss_rel_change'} of one member (:func:`loss_trend`)."""
        slope, rel = loss_trend(self.steps, [float(v[member]) for v in self.losses])
        return {"loss_slope": slope, "loss_rel_change": rel}


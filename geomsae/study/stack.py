"""One stack: SAEs of one architecture trained by one :func:`geomsae.train_stack.train_stack` call,
then evaluated into results rows.

A :class:`Member` is one SAE of a sweep: an arm, the study's cell (e.g. ``(ρ,)``), a seed
and the knob's value. :func:`stacks` cuts a round's members into stacks (one architecture
each, at most ``stack_size`` members); :func:`train_and_evaluate` trains one stack and turns
every member into a :class:`Run` (results row + firing histogram).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from geomsae.study.arms import ARMS, arm_fields, arm_spec, hparams_json
from geomsae.study.evaluation import evaluation_row, training_row
from geomsae.train_stack import train_stack
from geomsae.training.config import TrainConfig


class Member(NamedTuple):
    """One SAE of a sweep."""

    arm: str
    """Name in :data:`geomsae.study.arms.ARMS`."""
    cell: tuple[Any, ...]
    """Values of the study's cell keys (e.g. ``(rho,)``; ``()`` when the data is the same for all)."""
    seed: int
    """Init seed (and, in the synthetic study, the data seed)."""
    value: float
    """The arm's knob: k, or λ rounded to 3 significant digits."""

    @property
    def key(self) -> tuple:
        """(arm, *cell, seed, value) as floats: the key of :func:`geomsae.study.tables.run_key`."""
        return (self.arm, *(float(c) for c in self.cell), int(self.seed), float(self.value))


class Run(NamedTuple):
    """A trained and evaluated member."""

    member: Member
    """What was trained."""
    row: dict[str, Any]
    """Its results.csv row."""
    hist: list[int]
    """Its held-out log10 firing-frequency histogram (dead latents in bin 0)."""


def stacks(members: Sequence[Member], stack_size: int,
           steps_of: Callable[[str], int] | None = None) -> list[list[Member]]:
    """Cut ``members`` into stacks of one architecture (and one training length) and at most
    ``stack_size`` members.

    Architectures in order of first appearance; within one, members sorted by (cell, seed,
    arm, value) so that a stack spans few cells, then split into ceil(n/stack_size) stacks of
    near-equal size (the first ones one larger).

    :param steps_of: an arm's training length (e.g. ``settings.steps_for``); arms of one
        architecture but different lengths go to different stacks. None: one length for all.
    """
    if not (isinstance(stack_size, int) and stack_size >= 1):
        raise ValueError(f"stack_size == {stack_size!r}, must be an integer >= 1")
    by_arch: dict[tuple[str, int], list[Member]] = {}
    for m in members:
        by_arch.setdefault((ARMS[m.arm].arch, 0 if steps_of is None else steps_of(m.arm)), []).append(m)
    out = []
    for group in by_arch.values():
        group = sorted(group, key=lambda m: (tuple(m.cell), m.seed, m.arm, m.value))
        n_stacks = math.ceil(len(group) / stack_size)
        size, extra = divmod(len(group), n_stacks)
        start = 0
        for i in range(n_stacks):
            stop = start + size + (i < extra)
            out.append(group[start:stop])
            start = stop
    return out


def arm_settings(settings: Any, arm: str) -> Any:
    """``settings`` as ``arm``'s SAEs see them (:meth:`StudySettings.for_arm`: its own length); runners whose
    settings have no per-arm lengths get them unchanged."""
    for_arm = getattr(settings, "for_arm", None)
    return settings if for_arm is None else for_arm(arm)


def train_config(settings: Any, **overrides: Any) -> Any:
    """The :class:`geomsae.training.config.TrainConfig` of a study's SAEs.

    From the settings: steps, batch_size, lr (warm-up over 5 % of the steps), dead_window_tokens,
    device, autocast; inputs scaled to E‖x‖² = d_in (``input_norm='dataset'``, folded into the
    saved weights). ``overrides`` set any other field (logging, checkpoints, input_scale_tokens).
    """
    kw: dict[str, Any] = dict(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                              lr_warmup_steps=max(1, settings.steps // 20), input_norm="dataset",
                              dead_window_tokens=settings.dead_window_tokens, device=settings.device,
                              autocast=settings.autocast)
    kw.update(overrides)
    return TrainConfig(**kw)


def train_members(stack: Sequence[Member], settings: Any, *, d_sae: int, source: Any, tcfg: Any,
                  outs: Sequence[Any] | None = None, resume: bool = False) -> tuple[list[Any], float]:
    """Train one stack in one ``train_stack`` call; (TrainResult per member, wall seconds).

    :param source: one activation source for every member, or a list with one per member.
    """
    archs = {ARMS[m.arm].arch for m in stack}
    if len(archs) != 1:
        raise ValueError(f"a stack holds one architecture, got {sorted(archs)}")
    lengths = {arm_settings(settings, m.arm).steps for m in stack}
    if len(lengths) > 1 or (lengths != {settings.steps} and lengths != {tcfg.steps}):
        raise ValueError(f"the stack's arms train for {sorted(lengths)} steps (settings.arm_steps) but its "
                         f"TrainConfig for {tcfg.steps}; build it from arm_settings(settings, arm)")
    specs = [arm_spec(arm_settings(settings, m.arm), m.arm, m.value, d_sae) for m in stack]
    t0 = time.perf_counter()
    results = train_stack(specs, source, tcfg, seeds=[m.seed for m in stack], outs=outs, resume=resume)
    return list(results), time.perf_counter() - t0


def train_and_evaluate(stack: Sequence[Member], settings: Any, *, d_sae: int, train_source: Any, eval_source: Any,
                       tcfg: Any, cell_keys: Sequence[str] = (), true_dicts: Sequence[Any] | None = None,
                       true_codes: Sequence[Any] | None = None,
                       extras: Callable[[Member, Any, dict[str, Any]], dict[str, Any]] | None = None,
                       outs: Sequence[Any] | None = None, resume: bool = False,
                       on_run: Callable[[Run], None] | None = None) -> list[Run]:
    """Train one stack, evaluate each member on its held-out data; one :class:`Run` per member.

    :param train_source: shared, or one per member (see :func:`train_members`).
    :param eval_source: held-out activations, shared or one per member.
    :param true_dicts: ground-truth dictionary per member (adds mmcs, recovery_rate, mmcs_1to1 and chance levels).
    :param true_codes: ground-truth codes of each member's held-out tokens (adds mcc, mcc_chance, mcc_cc).
    :param extras: ``extras(member, train_result, row) -> {column: value}``, the study's own
        columns (``row`` holds the columns so far, the SAE is ``train_result.sae``).
    :param on_run: called with each Run as soon as it is evaluated (e.g. to save it at once).

    ``train_time_s`` is the stack's training wall time divided by its members; loss_slope and
    loss_rel_change come from the run's last metrics record (:func:`training_row`).
    """
    results, wall = train_members(stack, settings, d_sae=d_sae, source=train_source, tcfg=tcfg, outs=outs,
                                  resume=resume)
    runs = []
    for i, (m, res) in enumerate(zip(stack, results)):
        fields = arm_fields(arm_settings(settings, m.arm), m.arm, m.value)
        param = ARMS[m.arm].param
        row: dict[str, Any] = {"arm": m.arm, "arch": ARMS[m.arm].arch, **dict(zip(cell_keys, m.cell)),
                               "seed": m.seed, "param": param, "value": fields[param], "hparams": hparams_json(fields)}
        metrics, hist = evaluation_row(
            res.sae.eval(), eval_source[i] if isinstance(eval_source, (list, tuple)) else eval_source,
            windows=tuple(settings.eval_windows), true_dict=None if true_dicts is None else true_dicts[i],
            true_codes=None if true_codes is None else true_codes[i], device=settings.device)
        row.update(metrics)
        row.update(training_row(res.metrics))
        row["train_time_s"] = wall / len(stack)
        if extras is not None:
            row.update(extras(m, res, row))
        run = Run(m, row, hist)
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return runs

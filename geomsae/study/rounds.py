"""The sweep of a whole study in rounds: every cell proposes its next knob values, one round trains them all.

A *cell* is one (arm, data setting, seed); its runs differ only in the arm's knob.
:func:`sweep` repeats until no cell proposes anything:

1. each cell plans its values (:func:`plan`): round 1 is the k grid of a TopK-type arm, or
   :func:`geomsae.study.sweep.bracket` around a penalty arm's start λ; later rounds are
   :func:`geomsae.study.sweep.propose` from the (λ, L0) points so far, within
   ``sweep_points`` values per cell;
2. planned values found in ``known`` (the rows of an earlier, interrupted run) are reused as
   they are, never trained again; a penalty cell trains a new value only while it has fewer
   than ``sweep_points`` distinct values, known ones included;
3. the rest is one round: :func:`train_round` cuts it into stacks (one architecture, at most
   ``stack_size`` members; :func:`geomsae.study.stack.stacks`) and runs a job on each.

Plans read L0 as written to results.csv (10 significant digits), so a resumed run plans
exactly as an uninterrupted one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from geomsae.study.arms import ARMS
from geomsae.study.stack import Member, Run, stacks
from geomsae.study.sweep import bracket, propose
from geomsae.study.tables import as_written


class Cell(NamedTuple):
    """The runs of one arm on one data setting with one seed."""

    arm: str
    """Name in :data:`geomsae.study.arms.ARMS`."""
    cell: tuple[Any, ...]
    """Values of the study's cell keys (``()`` when every cell shares the data)."""
    seed: int
    """The seed of its SAEs."""


def plan(settings: Any, arm_name: str, points: Mapping[float, float], first: bool) -> list[float]:
    """The knob values one cell asks for in a round, given its {value: L0} points so far."""
    arm = ARMS[arm_name]
    if arm.start is None:
        return [float(k) for k in sorted(set(settings.topk_ks))] if first else []
    if first:
        return bracket(arm.start(settings), min(settings.bracket_points, settings.sweep_points),
                       settings.bracket_factor)
    return propose(points.items(), settings.l0_targets, settings.sweep_points - len(points))


def train_round(members: Sequence[Member], job: Callable[[list[Member]], list[Run]], *, stack_size: int,
                workers: int = 1, on_stack: Callable[[list[Member], list[Run]], None] | None = None,
                steps_of: Callable[[str], int] | None = None) -> list[Run]:
    """Train and evaluate one round: ``job(stack)`` on every stack of :func:`stacks`.

    :param job: trains and evaluates one stack, returns its runs (e.g. a ``functools.partial``
        of :func:`geomsae.study.stack.train_and_evaluate`'s caller); must be picklable when
        ``workers > 1``.
    :param workers: processes ('spawn') running stacks side by side, largest stacks first; 1 runs in-process.
    :param on_stack: called in this process as each stack finishes (progress, saving).
    :param steps_of: each arm's training length, so a stack holds one (:func:`stacks`).
    :returns: the runs, stack by stack in the order of :func:`stacks` (not of completion).
    """
    todo = stacks(members, stack_size, steps_of)
    done: dict[int, list[Run]] = {}
    if workers == 1 or len(todo) == 1:
        for i, s in enumerate(todo):
            done[i] = job(s)
            if on_stack is not None:
                on_stack(s, done[i])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn")) as pool:
            order = sorted(range(len(todo)), key=lambda i: -len(todo[i]))
            futs = {pool.submit(job, todo[i]): i for i in order}
            for f in as_completed(futs):
                i = futs[f]
                done[i] = f.result()
                if on_stack is not None:
                    on_stack(todo[i], done[i])
    return [r for i in range(len(todo)) for r in done[i]]


def _cell_of(key: tuple) -> tuple[str, tuple, int]:
    return key[0], tuple(key[1:-2]), int(key[-2])


def sweep(settings: Any, cells: Sequence[Cell], train: Callable[[list[Member]], list[Run]], *,
          known: Mapping[tuple, tuple[dict[str, Any], list[int]]] | None = None,
          log: Callable[[str], None] | None = None) -> list[Run]:
    """Every run of ``cells``, round by round (see the module docstring).

    :param train: trains one round (e.g. :func:`train_round` with the study's job), returns its runs.
    :param known: {(arm, *cell, seed, value): (row, histogram)} of runs done earlier (results.csv).
    :returns: the runs of every round in order, reused ones included (as Runs of their known rows).
    """
    known = known or {}
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    known_values: dict[tuple, set[float]] = {}
    for k in known:
        known_values.setdefault(_cell_of(k), set()).add(float(k[-1]))
    points: dict[Cell, dict[float, float]] = {c: {} for c in cells}
    runs: list[Run] = []
    rnd = 1
    while True:
        todo, reused = [], []
        for c in cells:
            ck = (c.arm, tuple(float(v) for v in c.cell), int(c.seed))
            distinct = set(points[c]) | known_values.get(ck, set())
            for v in plan(settings, c.arm, points[c], rnd == 1):
                m = Member(c.arm, tuple(c.cell), c.seed, v)
                if m.key in known:
                    reused.append(Run(m, *known[m.key]))
                elif ARMS[c.arm].start is None or len(distinct | {v}) <= settings.sweep_points:
                    todo.append(m)
                    distinct.add(v)
        if not todo and not reused:
            break
        log(f"round {rnd}: {len(todo)} SAEs to train, {len(reused)} reused from earlier runs")
        new = train(todo) if todo else []
        by_cell = {(c.arm, tuple(c.cell), c.seed): c for c in cells}
        for run in reused + list(new):
            m = run.member
            points[by_cell[(m.arm, tuple(m.cell), m.seed)]][float(m.value)] = as_written(run.row["l0"])
        runs += reused + list(new)
        rnd += 1
    return runs

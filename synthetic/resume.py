"""Whether a run folder of synthetic.starvation may be resumed by a config, and the runs it already holds."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from geomsae.study import (
    tables,
)
from synthetic.cells import CELL_KEYS
from synthetic.config import StarvationConfig

RESULT_NEUTRAL = ("out", "workers", "checkpoint_every")
"""Config fields that do not change a run's results (where it is written; how many processes train its
stacks, which are bit-identical across worker counts on CPU; how often a stack is checkpointed, a resumed
stack continuing exactly), so :func:`same_config` ignores them."""


def same_config(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a saved config.json describes the run ``current`` (both as JSON dicts). A field the saved
    config lacks (it predates the field) counts as that field's default, which reproduces the older
    behaviour; :data:`RESULT_NEUTRAL` fields are ignored, :data:`EXTENDABLE` ones may have grown; any other
    difference, or a saved field unknown now, makes them different."""
    defaults = json.loads(json.dumps(dataclasses.asdict(StarvationConfig())))
    if set(saved) - set(current):
        return False
    for k in EXTENDABLE:
        old, new = saved.get(k, defaults[k]), current[k]
        if (old > new) if isinstance(new, (int, float)) else not set(old) <= set(new):
            return False
    old_arms = set(saved.get("arms", defaults["arms"]))
    old_steps, new_steps = set(saved.get("arm_steps", defaults["arm_steps"])), set(current["arm_steps"])
    if not old_steps <= new_steps or any(e.split("=")[0].strip() in old_arms for e in new_steps - old_steps):
        return False  # an arm already trained keeps its length; an added arm may bring its own
    return all(saved.get(k, defaults.get(k)) == v for k, v in current.items()
               if k not in RESULT_NEUTRAL and k not in EXTENDABLE and k != "arm_steps")


EXTENDABLE = ("sweep_points", "rhos", "seeds", "arms", "topk_ks")
"""Config fields a resumed run may extend (never shrink): a trained SAE depends only on its own cell (arm, ρ,
seed) and λ or k, not on how many λ its cell may try nor on which other cells, arms or k the design has, so a
rerun with more ``sweep_points`` (a number, raised) or more ``rhos`` / ``seeds`` / ``arms`` / ``topk_ks``
(lists, supersets) keeps every finished SAE: the old cells replay their rounds exactly and the new cells start
theirs (a longer length run of a few more arms goes into the same folder). ``arm_steps`` may gain entries for
the added arms only: an arm already trained keeps its length."""


def resume_rows(out: Path, cfg_json: str) -> dict[tuple, tuple[dict[str, Any], list[int]]]:
    """The runs already in ``out`` (results.csv + firing_hist.csv, written after every stack) when its
    config.json is ``cfg_json``; {} for a fresh folder. Raises FileExistsError when ``out`` holds runs of
    another config, so a run never mixes with, or overwrites, a different design's results."""
    if not (out / "results.csv").exists():
        return {}
    saved = out / "config.json"
    if not saved.exists() or not same_config(json.loads(saved.read_text()), json.loads(cfg_json)):
        raise FileExistsError(f"{out} holds the results of another configuration ({saved}); give another --out "
                              "or remove that folder")
    known = tables.load_runs(out, CELL_KEYS)
    print(f"synthetic.starvation: resuming {out}: {len(known)} SAEs already trained", file=sys.stderr)
    return known

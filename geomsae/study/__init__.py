"""The study engine: from arms and settings to trained SAEs, matched-L0 tables and verdicts.

Every starvation study (``synthetic.starvation``, ``llm_eval.starvation``) is a thin runner on
top of this package: it says where the activations come from and what its report says; the
machinery is here, once.

- :mod:`~geomsae.study.settings` — :class:`StudySettings`, the fields every runner's config inherits;
- :mod:`~geomsae.study.arms` — the arms (:data:`ARMS`): architecture, fixed fields, knob;
- :mod:`~geomsae.study.sweep` — where a penalty arm's λ values go, round by round (pure);
- :mod:`~geomsae.study.stack` — one ``train_stack`` call of one architecture, evaluated into rows;
- :mod:`~geomsae.study.rounds` — the sweep of every cell in rounds, each round trained in stacks;
- :mod:`~geomsae.study.evaluation` — one evaluation as the metric columns of a row;
- :mod:`~geomsae.study.tables` — results.csv / firing_hist.csv: columns, writing, reading;
- :mod:`~geomsae.study.matched` — metrics at matched L0 per seed (collapsed runs out, cliffs apart), then over seeds;
- :mod:`~geomsae.study.verdicts` — claims and the verdict rule (paired t intervals, minimum effects, readings);
- :mod:`~geomsae.study.tuning` — choosing a grid point (the AEN grid) on a validation run;
- :mod:`~geomsae.study.report` — matched.csv, verdicts.csv and summary.md of a :class:`Study`;
- :mod:`~geomsae.study.curves` — when to evaluate a run as it trains, and whether a curve still grows;
- :mod:`~geomsae.study.plotstyle` — colours, line styles and file format of the figures.
"""

from geomsae.study.arms import ARMS, Arm
from geomsae.study.report import Study, write_report
from geomsae.study.rounds import Cell, sweep, train_round
from geomsae.study.settings import StudySettings
from geomsae.study.stack import Member, Run, train_and_evaluate
from geomsae.study.verdicts import Claim

__all__ = ["ARMS", "Arm", "Cell", "Claim", "Member", "Run", "Study", "StudySettings", "sweep", "train_round",
           "train_and_evaluate", "write_report"]

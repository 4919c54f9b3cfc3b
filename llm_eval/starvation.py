"""Feature starvation on a real language model (issue 7; docs/method.md §3, §4, §5).

    python -m llm_eval.starvation --preset smollm2-cpu              # SmolLM2-135M, 2 CPU cores (see below)
    python -m llm_eval.starvation --preset pythia70m --model ./pythia-70m --text data/pile-sample
    python -m llm_eval.starvation --preset llama8b --model ./Llama-3.1-8B --text data/pile-sample
    python -m llm_eval.starvation --preset smollm2-cpu --report-only  # redo matched.csv, summary.md, figures
    python -m llm_eval.starvation --preset smollm2-long               # starvation over training (llm_eval.long)

Steps, each resumable (run the same command again after a crash or Ctrl-C):

1. harvest ``train_tokens`` activations of the training documents and ``eval_tokens`` of the
   held-out documents (:func:`geomsae.activations.harvest`, BOS and massive-activation tokens
   dropped) into ``out/acts_train`` and ``out/acts_eval``;
2. sweep every (arm, seed) cell (:data:`geomsae.study.ARMS`) along the arm's sparsity knob in
   rounds (:func:`geomsae.study.sweep`): the ``topk_ks`` grid, or ``sweep_points`` λ values that
   bracket the ``l0_targets``. A round's SAEs of one architecture (every seed and λ, topk with
   topk_auxk) train together by :func:`geomsae.train_stack.train_stack`, in stacks of at most
   ``stack_size``, over the one shared activation cache (data order ``data_seed``; the seeds
   differ in the init), into ``out/saes/<arm>_s<seed>_<param><value>`` (inputs scaled to
   E‖x‖² = d_in, the scale folded into the saved weights);
3. evaluate each on the held-out activations (:func:`geomsae.study.evaluation.evaluation_row`)
   and splice it into the model on ``ce_contexts`` held-out contexts
   (:func:`geomsae.fidelity.lm_fidelity`: CE loss recovered against zero and mean ablation — the
   mean of the training activations — and the KL to the clean logits); write the row to
   ``results.csv`` at once;
4. write ``matched.csv``, ``verdicts.csv``, ``summary.md`` (:func:`geomsae.study.write_report`
   with :data:`llm_eval.report.STUDY`) and the figures (:mod:`llm_eval.plots`) into ``results``
   (default ``llm_eval/results/<preset>``, the small files that are committed; activations and
   SAEs stay in ``out``).

A row already in results.csv is never recomputed (the sweep reuses it and plans around it), and
each stack resumes from its members' checkpoints, so an interrupted run continues where it was.
``config.json`` beside the results records the configuration; ``timing.json`` the throughputs.
"""

from __future__ import annotations

import argparse
import sys

from geomsae.config_cli import OneLineErrors
from geomsae.config_cli import parse_config as parse_dataclass
from llm_eval import long
from llm_eval.config import PRESETS, LLMStarvationConfig
from llm_eval.estimate import estimate
from llm_eval.runner import EXTRA_COLUMNS, Runner, report, result_columns  # noqa: F401 (this module's API)


def parse_config(argv: list[str] | None = None) -> tuple[LLMStarvationConfig, argparse.Namespace]:
    """Preset, then every field overridable as --kebab-case; (config, namespace holding report_only)."""
    pre = OneLineErrors(add_help=False, prog="python -m llm_eval.starvation")
    pre.add_argument("--preset", choices=sorted(PRESETS), default="smollm2-cpu")
    known, _ = pre.parse_known_args(argv)

    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--report-only", action="store_true", help="redo matched.csv, summary.md and the figures")
        p.add_argument("--estimate-only", action="store_true",
                       help="print the planned cost (tokens, FLOPs, hours at the measured rates) and stop")

    return parse_dataclass(LLMStarvationConfig, argv, defaults=PRESETS[known.preset], prog="python -m llm_eval.starvation",
                           description=__doc__.split("\n\n")[0], add_extra=extra)


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse_config(argv)
    if cfg.curve_tokens and ns.estimate_only:
        print(estimate(cfg))
        return 0
    if cfg.curve_tokens:  # starvation over training (llm_eval.long)
        return long.main(cfg, report_only=ns.report_only)
    if ns.estimate_only:
        raise SystemExit("--estimate-only needs a preset with long runs (curve_tokens > 0, e.g. smollm2-long)")
    if ns.report_only:
        for path in report(cfg):
            print(path)
        return 0
    Runner(cfg).run()
    print(f"llm_eval: results in {cfg.results_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


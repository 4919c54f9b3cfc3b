"""Real language models: the starvation comparison on harvested activations (issue 7).

- :mod:`llm_eval.config` — :class:`LLMStarvationConfig` and the presets (smollm2-cpu, smollm2-long, pythia70m, llama8b, tiny, tiny-long);
- :mod:`llm_eval.starvation` — ``python -m llm_eval.starvation --preset NAME``: harvest, train, evaluate, splice;
- :mod:`llm_eval.report` — the study's claims and prose (the report is :func:`geomsae.study.write_report`);
- :mod:`llm_eval.plots` — the figures, from results.csv (and curves.csv);
- :mod:`llm_eval.long` — presets with ``curve_tokens`` (smollm2-long, issue 13): starvation over training;
- :mod:`llm_eval.curve_report` — its curves.csv and summary.md (PARTIAL until complete);
- :mod:`llm_eval.estimate` — its planned cost (``--estimate-only``).

Harvesting, the LM hooks, the fidelity metrics and the study engine (arms, sweeps, stacked
training, matched L0, verdicts) are library features (:mod:`geomsae.activations`,
:mod:`geomsae.lm`, :mod:`geomsae.fidelity`, :mod:`geomsae.study`); this folder only runs the experiment.
"""

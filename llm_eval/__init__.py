"""Real language models: the starvation comparison on harvested activations (issue 7).

- :mod:`llm_eval.config` — :class:`LLMStarvationConfig` and the presets (smollm2-cpu, pythia70m, llama8b, tiny);
- :mod:`llm_eval.starvation` — ``python -m llm_eval.starvation --preset NAME``: harvest, train, evaluate, splice;
- :mod:`llm_eval.report` — the study's claims and prose (the report is :func:`geomsae.study.write_report`);
- :mod:`llm_eval.plots` — the figures, from results.csv.

Harvesting, the LM hooks, the fidelity metrics and the study engine (arms, sweeps, stacked
training, matched L0, verdicts) are library features (:mod:`geomsae.activations`,
:mod:`geomsae.lm`, :mod:`geomsae.fidelity`, :mod:`geomsae.study`); this folder only runs the experiment.
"""

"""Real language models: the starvation comparison on harvested activations (issue 7).

- :mod:`llm_eval.config` — :class:`LLMStarvationConfig` and the presets (smollm2-cpu, pythia70m, llama8b, tiny);
- :mod:`llm_eval.starvation` — ``python -m llm_eval.starvation --preset NAME``: harvest, train, evaluate, splice;
- :mod:`llm_eval.report`, :mod:`llm_eval.plots` — matched-L0 verdicts, summary.md and figures from results.csv.

Harvesting, the LM hooks and the fidelity metrics are library features (:mod:`geomsae.activations`,
:mod:`geomsae.lm`, :mod:`geomsae.fidelity`); this folder only runs the experiment.
"""

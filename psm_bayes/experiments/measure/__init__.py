"""Measurement stages: what the language model is asked, and what it answers (cached, resumable).

* :mod:`~psm_bayes.experiments.measure.screening` -- probe source and trait screening;
* :mod:`~psm_bayes.experiments.measure.persona_table` -- the persona table and its separation;
* :mod:`~psm_bayes.experiments.measure.pretraining_prior` -- the EM pre-training prior from the table;
* :mod:`~psm_bayes.experiments.measure.icl` -- many-shot in-context curves -> ``ICLData``;
* :mod:`~psm_bayes.experiments.measure.finetune` / :mod:`~psm_bayes.experiments.measure.lora` -- LoRA SFT
  dose-responses -> ``SFTShiftData``;
* :mod:`~psm_bayes.experiments.measure.surface` -- statement features of the base model;
* :mod:`~psm_bayes.experiments.measure.scoring` -- the shared scoring and cache helpers.

A measurement stage imports neither :mod:`~psm_bayes.experiments.analysis` nor
:mod:`~psm_bayes.experiments.output` (tests/test_architecture.py).
"""

"""Experiments with a real language model (``psm-bayes run``), as stages.

* :mod:`~psm_bayes.experiments.config` -- :class:`ExperimentConfig` (every setting);
* :mod:`~psm_bayes.experiments.design` -- stage 1: roles of the probe statements (disjoint splits);
* :mod:`~psm_bayes.experiments.persona_table` -- stage 2: persona table, persona separation;
* :mod:`~psm_bayes.experiments.pretraining_prior` -- the EM pre-training prior from the table;
* :mod:`~psm_bayes.experiments.icl` -- stage 3: in-context curves -> ``ICLData``;
* :mod:`~psm_bayes.experiments.finetune` -- stage 4: LoRA SFT shifts -> ``SFTShiftData``;
* :mod:`~psm_bayes.experiments.fits` -- stage 5: NUTS fits of every model;
* :mod:`~psm_bayes.experiments.summary` -- stage 6: the statistics (``results.json``);
* :mod:`~psm_bayes.experiments.plots`, :mod:`~psm_bayes.experiments.report`,
  :mod:`~psm_bayes.experiments.outputs` -- plots, ``report.md``, files;
* :mod:`~psm_bayes.experiments.pipeline` -- :func:`run_experiment`, the short chain of stages.
"""

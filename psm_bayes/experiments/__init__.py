"""Experiments with a real language model (``psm-bayes run``).

* :mod:`~psm_bayes.experiments.prior` -- persona table and the EM pre-training prior;
* :mod:`~psm_bayes.experiments.icl` -- in-context curves -> ``ICLData``;
* :mod:`~psm_bayes.experiments.finetune` -- LoRA SFT shifts -> ``SFTShiftData``;
* :mod:`~psm_bayes.experiments.nexttoken` -- fast shared-prefix next-token option scoring;
* :mod:`~psm_bayes.experiments.pipeline` -- :func:`run_experiment` and :class:`ExperimentConfig`;
* :mod:`~psm_bayes.experiments.report` -- ``report.md``, plots, fits, ``results.json``;
* :mod:`~psm_bayes.experiments.commands` -- the ``run`` subcommand.
"""

"""Experiments with a real language model (``psm-bayes run``), in three sub-packages.

* :mod:`~psm_bayes.experiments.config` -- :class:`ExperimentConfig` (every setting);
* :mod:`~psm_bayes.experiments.design` -- the roles of the probe statements (disjoint splits);
* :mod:`~psm_bayes.experiments.measure` -- measurement stages (screening, persona table, ICL, SFT,
  statement features, scoring);
* :mod:`~psm_bayes.experiments.analysis` -- evidence, fits, refits, checks, criteria, statistics, power;
* :mod:`~psm_bayes.experiments.output` -- plots, ``report.md``, files;
* :mod:`~psm_bayes.experiments.pipeline` -- :func:`run_experiment`, the short chain of stages
  (a new observable is one measurement module plus one line there).
"""

"""Analysis of the measurements: evidence, fits, grouped cross-validation, checks, criteria, statistics.

* :mod:`~psm_bayes.experiments.analysis.evidence` -- measurements -> ``SelectionData`` per dataset;
* :mod:`~psm_bayes.experiments.analysis.fitting` -- NUTS under the convergence policy (:class:`FitSettings`);
* :mod:`~psm_bayes.experiments.analysis.refits` -- item-integrated terms, exact leave-one-item-out refits;
* :mod:`~psm_bayes.experiments.analysis.fits` -- the run's fits and their comparison;
* :mod:`~psm_bayes.experiments.analysis.checks` -- prior predictive and power-scaling checks;
* :mod:`~psm_bayes.experiments.analysis.criteria` -- the pre-stated criteria and their verdicts;
* :mod:`~psm_bayes.experiments.analysis.summary`, :mod:`~psm_bayes.experiments.analysis.bootstrap`,
  :mod:`~psm_bayes.experiments.analysis.predictive`, :mod:`~psm_bayes.experiments.analysis.curves` --
  statistics of ``results.json`` and of the plots;
* :mod:`~psm_bayes.experiments.analysis.power` -- power analysis.

Analysis imports no output module (tests/test_architecture.py).
"""

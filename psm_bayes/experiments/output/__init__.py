"""Output of a run: plots, ``report.md`` and the files (every one written atomically).

* :mod:`~psm_bayes.experiments.output.plots` -- the report's figures;
* :mod:`~psm_bayes.experiments.output.report` -- ``report.md``;
* :mod:`~psm_bayes.experiments.output.outputs` -- JSON, text, NetCDF and CSV files.
"""

"""Simulation studies: declarative grids of simulate-fit-score cells, run locally or on Ray.

See :mod:`psm_bayes.study.spec` (the :class:`Study` format) and
:mod:`psm_bayes.study.runner` (:func:`run_study`). Models come from
:mod:`psm_bayes.models.catalogue`.
"""

from psm_bayes.study.runner import StudyRun, cell_metrics, collect, run_cell, run_study
from psm_bayes.study.spec import Cell, Study

__all__ = ["Cell", "Study", "StudyRun", "cell_metrics", "collect", "run_cell", "run_study"]

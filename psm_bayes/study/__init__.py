"""Simulation studies: declarative grids of simulate-fit-score cells, run locally or on Ray.

See :mod:`psm_bayes.study.spec` (the :class:`Study` format) and
:mod:`psm_bayes.study.runner` (:func:`run_study`).
"""

from psm_bayes.study.registry import ModelEntry, get_model, model_names, register_model
from psm_bayes.study.runner import StudyRun, cell_metrics, collect, run_cell, run_study
from psm_bayes.study.spec import Cell, Study

__all__ = ["Cell", "ModelEntry", "Study", "StudyRun", "cell_metrics", "collect", "get_model", "model_names",
           "register_model", "run_cell", "run_study"]

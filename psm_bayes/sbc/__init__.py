"""Simulation-based calibration (Talts et al. 2018) for any catalogued psm-bayes model.

One concern per module:

* :mod:`~psm_bayes.sbc.config`: :class:`SBCConfig`, the drivers, the documented SBC sizes;
* :mod:`~psm_bayes.sbc.prior`: true values and replicated data from the prior predictive;
* :mod:`~psm_bayes.sbc.kernels`: one fit of one replicate (:class:`NUTSKernel`, :class:`FitKernel`);
* :mod:`~psm_bayes.sbc.driver`: :func:`run_sbc`, the loop / vmap chunks / Ray over replicates;
* :mod:`~psm_bayes.sbc.simuk_driver`: the same run driven by simuk (cross-check);
* :mod:`~psm_bayes.sbc.ranks`: ranks, the simultaneous ECDF band test (arviz_stats), contraction;
* :mod:`~psm_bayes.sbc.result`: :class:`SBCResult` (verdict, contraction, tables);
* :mod:`~psm_bayes.sbc.plots`: rank histograms and ECDF-difference figures;
* :mod:`~psm_bayes.sbc.store`: results written atomically and read back;
* :mod:`~psm_bayes.sbc.table`: the SBC table of every catalogued model (and its subtle-fault row).
"""

from psm_bayes.sbc.config import METHODS, SBC_SIZES, SBCConfig, default_method
from psm_bayes.sbc.driver import run_sbc
from psm_bayes.sbc.kernels import FitKernel, NUTSKernel
from psm_bayes.sbc.prior import draw_prior
from psm_bayes.sbc.result import SBCResult
from psm_bayes.sbc.store import load_result, save_result

__all__ = ["METHODS", "SBC_SIZES", "FitKernel", "NUTSKernel", "SBCConfig", "SBCResult", "default_method",
           "draw_prior", "load_result", "run_sbc", "save_result"]

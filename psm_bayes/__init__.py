"""psm-bayes: Bayesian models of how language models select personas.

Light at import: data containers and simulation are numpy/xarray only; the
NumPyro, Pyro and transformers parts load when first used.
"""

from psm_bayes.data import DataError, Episodes, ItemSet, LogLikTable, PersonaSet, PSMData, SOURCES

__all__ = ["DataError", "Episodes", "ItemSet", "LogLikTable", "PersonaSet", "PSMData", "SOURCES"]
__version__ = "0.1.0"

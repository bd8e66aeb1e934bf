"""Simulate persona-mixture data with known truth (re-exported from the model family).

The simulators live with their model families (models never import this
module); this module keeps the short import path
``from psm_bayes.simulate import simulate``.
"""

from psm_bayes.models.design import Simulation, check_fractions, episode_design, random_loglik
from psm_bayes.models.persona_mixture import simulate

__all__ = ["Simulation", "simulate", "random_loglik", "check_fractions", "episode_design"]

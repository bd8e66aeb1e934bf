"""The persona-selection family: names and priors shared by every backend (data: :mod:`.selection_data`).

The canonical persona-selection model (PSM, catalogue name
``persona_selection``): the Assistant is ONE latent persona ``k``.

* pre-training prior ``pi`` over personas (``data.prior_weights``, or a latent
  ``prior_weights ~ Dirichlet``);
* post-training: ``log q(k | D_sft) = log pi_k + beta_sft * sum_sft log p(y | x, k)``,
  normalised over ``k``;
* runtime context: ``log q(k | D_sft, C) = log q(k | D_sft) + beta_icl * sum_shots log p(y | x, k)``;
* prediction: ``log p(o | i, C) = log_softmax_o(log sum_k q(k | D_sft, C) p(o | i, k)
  + authorial_bias * bias_direction[i, o] + drift[C] * [o is Yes])``.

``beta_sft`` and ``beta_icl`` are evidence strengths (exponents on the
evidence), never temperatures on a persona's answers. With evidence count
tensors ``S[c, i, o]`` (SFT episodes) and ``E[c, i, o]`` (in-context shots) of
condition ``c`` the posterior is ``softmax_k(log pi + beta_sft <S_c, L_k> +
beta_icl <E_c, L_k>)``: SFT-only, ICL-only and SFT-then-ICL conditions are
one model observed on different data.

**Per-condition Yes/No drift** (every model of the family, PSM and nulls
alike): each condition ``c`` other than ``base`` has its own Yes offset,
pooled within its condition type ``g = type(c)`` (``icl-n<n>``,
``sft-k<step>``, ``cross``) and written centred::

    drift[c] ~ Normal(response_bias[g], drift_sd[g])      (plate ``drift_condition``)

(``offset_c ~ Normal(mu_g, tau_g)``); ``base`` conditions have none (the
zero reference). Centred, because every condition is measured on all
evaluation items, so each offset is well identified by its data. The
evaluation items are label-balanced (half match with Yes), so a Yes offset
moves the matching log-odds of half the items up and half down, and is
identified apart from the persona term, which moves them by trait.
``Priors(condition_drift=False)`` leaves one offset per type only (the model
before per-condition drift: the SBC fault and the with/without comparison).

Nulls on the same data (see :mod:`psm_bayes.models.selection_model`):
``response_bias`` (the drift term alone), ``trait_indicator``,
``profile_similarity`` (a persona-profile / Yes-tendency kernel),
``surface_similarity`` (similarity of the statement texts),
``generic_shift`` (one shift of every item's matching answer), and
``permuted_personas``; ``encompassing`` is PSM + surface similarity + drift
and reports the persona term's share ``persona_weight``.

Observations (either or both): sampled ``episodes`` (site ``y``, plate
``episode``, one Categorical per episode, so the pointwise log-likelihood is
per episode however rows are aggregated) and real-LLM ``measurements`` (site
``logodds``, plate ``measurement``: the observed log-odds of the matching
answer ~ Normal or Student-t around the predicted log-odds plus an item random
effect ``item_effect[item] ~ Normal(0, item_sd)``, centred like the drift: each measured item
appears in every condition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from psm_bayes.models.selection_data import BASE_TYPE, SelectionData, profile_similarity
from psm_bayes.validation import check_priors

__all__ = ["BASE_TYPE", "DESCRIPTIONS", "DETERMINISTIC", "DIMS", "ENCOMPASSING", "LATENTS", "MODELS",
           "NULL_MODELS", "OBSERVED", "PERSONA_MODELS", "Priors", "SIZES", "SelectionData", "profile_similarity"]

PERSONA_MODELS: tuple[str, ...] = ("persona_selection", "permuted_personas")
NULL_MODELS: tuple[str, ...] = ("response_bias", "trait_indicator", "profile_similarity", "surface_similarity",
                                "generic_shift")
ENCOMPASSING = "encompassing"
MODELS: tuple[str, ...] = PERSONA_MODELS + NULL_MODELS + (ENCOMPASSING,)

OBSERVED: tuple[str, ...] = ("y", "logodds")
DIMS: dict[str, list[str]] = {
    "prior_weights": ["persona"],
    "response_bias": ["condition_type"],
    "drift_sd": ["condition_type"],
    "drift": ["drift_condition"],
    "item_effect": ["measured_item"],
    "y": ["episode"],
    "logodds": ["measurement"],
    "logodds_mean": ["measurement"],
}
DETERMINISTIC: tuple[str, ...] = ("logodds_mean", "persona_weight")
DENSE_MASS: tuple[tuple[str, ...], ...] = (("response_bias", "drift", "item_effect"),)
"""One dense NUTS mass-matrix block (:attr:`psm_bayes.models.base.ModelSpec.dense_mass`). The Yes offsets
and the item effects share one direction the data pin only through the ``base`` condition: every
condition's ``drift`` (and its type's ``response_bias``) up by ``d`` and each item's effect down by ``d``
times the Yes/No sign of its matching answer leaves every other condition's log-odds unchanged. On the
default ICL data the posterior correlation along it is -0.99; with a diagonal mass matrix NUTS crawled
along it (bulk ESS 18-20 of 600 draws, R-hat 1.08, the common shift's sd underestimated 2.5x), with this
block it mixes (ESS >= 500, R-hat <= 1.01; ``benchmarks/README.md``)."""
_NOISE = ("response_bias", "drift_sd", "item_sd", "logodds_sd")
# main parameters of each model (recovery / SBC / contraction); present when the data supports them
LATENTS: dict[str, tuple[str, ...]] = {
    "persona_selection": ("beta_sft", "beta_icl") + _NOISE,
    "permuted_personas": ("beta_sft", "beta_icl") + _NOISE,
    "response_bias": _NOISE,
    "trait_indicator": ("same_trait_shift", "other_trait_shift") + _NOISE,
    "profile_similarity": ("profile_shift",) + _NOISE,
    "surface_similarity": ("surface_shift",) + _NOISE,
    "generic_shift": ("generic_shift",) + _NOISE,
    "encompassing": ("beta_sft", "beta_icl", "surface_shift", "persona_weight") + _NOISE,
}
SIZES: dict[str, Any] = {"n_personas": 3, "n_traits": 2, "n_eval": 4, "n_shot_items": 4, "shots": (2,),
                         "sft_episodes": 4, "observation": "both", "n_episodes": 5}
"""Small default design of :func:`psm_bayes.models.selection_simulate.simulate` (quick SBC / smoke runs):
ICL, SFT and cross (SFT, then opposite-pole shots) conditions observed as episodes and as log-odds, so
every latent of :data:`LATENTS` and both observed sites exist."""
DESCRIPTIONS: dict[str, str] = {
    "persona_selection": "canonical PSM: one latent persona, SFT and in-context evidence in one posterior",
    "permuted_personas": "PSM with persona labels shuffled independently within each trait (null)",
    "response_bias": "null: each item's zero-shot answers plus the per-condition Yes drift, nothing else",
    "trait_indicator": "null: same-trait and other-trait items shift by separate constants",
    "profile_similarity": "null: an item's shift grows with its persona-profile (Yes-tendency) similarity to "
                          "the evidence items",
    "surface_similarity": "null: an item's shift grows with the similarity of its statement text to the "
                          "evidence statements (LM hidden states, Yes/No sign projected out)",
    "generic_shift": "null: one shift of the matching answer for every item of a condition, whatever its trait",
    "encompassing": "PSM + surface similarity + drift; persona_weight = the persona term's share of the shift",
}


@dataclass(frozen=True)
class Priors:
    """Hyperparameters of every model of the family (each model reads the fields it uses).

    Parameters
    ----------
    prior_weights_concentration : float
        Symmetric Dirichlet hyperprior of ``prior_weights`` when the data has none.
    beta_loc, beta_scale : float
        ``beta_sft, beta_icl ~ LogNormal(beta_loc, beta_scale)`` (evidence strengths).
    bias_scale : float
        ``authorial_bias ~ Normal(0, bias_scale)``.
    response_bias_scale : float
        ``response_bias[type] ~ Normal(0, response_bias_scale)``: the mean Yes offset (logit) of a type.
    drift_sd_scale : float
        ``drift_sd[type] ~ HalfNormal(drift_sd_scale)``: the sd of the conditions' Yes offsets within a type
        (2 nats: LoRA runs of one checkpoint were measured to differ by up to ~4 nats).
    condition_drift : bool
        Per-condition offsets (default); ``False``: one offset per type (no ``drift_sd`` / ``drift``).
    shift_scale : float
        Null shift coefficients ``~ Normal(0, shift_scale)`` (log-odds of the matching answer).
    half_dose_loc, half_dose_scale : float
        ``half_dose ~ LogNormal``: evidence count at which a null's shift is half its coefficient.
    item_sd_scale, logodds_sd_scale : float
        HalfNormal scales of the item random-effect sd and the measurement noise sd.
    logodds_df : float, optional
        Student-t degrees of freedom of ``logodds``; ``None`` for Normal.
    permutation_seed : int
        Seed of ``permuted_personas``' fixed permutation.
    """

    prior_weights_concentration: float = 1.0
    beta_loc: float = 0.0
    beta_scale: float = 1.0
    bias_scale: float = 1.0
    response_bias_scale: float = 2.0
    drift_sd_scale: float = 2.0
    condition_drift: bool = True
    shift_scale: float = 2.0
    half_dose_loc: float = float(np.log(4.0))
    half_dose_scale: float = 1.0
    item_sd_scale: float = 1.0
    logodds_sd_scale: float = 1.0
    logodds_df: float | None = None
    permutation_seed: int = 0

    def __post_init__(self) -> None:
        check_priors(self, real=("beta_loc", "half_dose_loc", "permutation_seed"), optional=("logodds_df",),
                     flags=("condition_drift",))

"""The persona-mixture model: PSM with an ensemble of simultaneously active personas.

A variant of the persona selection model (the canonical one, with a single
latent Assistant persona, is ``persona_selection``): here every episode
draws its own persona from the assistant's persona weights ``w``, so the
assistant behaves as a mixture of personas that are all active at once.

Generative story (one maths in :mod:`psm_bayes.models.maths`):

* ``prior_weights`` (pre-training prior over personas): given in the data,
  or ``~ Dirichlet(prior_weights_concentration)`` when the data has none;
* ``w ~ Dirichlet(concentration * prior_weights)``: post-training's assistant
  persona weights;
* ``beta_sft, beta_icl ~ LogNormal(beta_loc, beta_scale)``: evidence strengths
  (tempering exponents on the persona log-likelihoods of ``sft`` and ``icl``
  episodes);
* ``authorial_bias ~ Normal(0, bias_scale)``: one logit offset along
  ``bias_direction`` shared by every persona (only when the data has a
  ``bias_direction``);
* ``y[e] ~ Categorical(p_{source[e]}(. | item[e]))`` in plate ``episode``,
  marginalised over personas;
* ``p_item`` (deterministic, dims ``item, option``): the assistant's predicted
  answer distribution at ``beta = 1`` for every item (held-out items included).

Backends: :mod:`psm_bayes.models.persona_mixture_numpyro` and
:mod:`psm_bayes.models.persona_mixture_pyro`, same site names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psm_bayes.data import Episodes, LogLikTable, PersonaSet, PSMData, SOURCES
from psm_bayes.validation import check_priors
from psm_bayes.models import maths
from psm_bayes.models.design import Simulation, check_fractions, episode_design, random_loglik

NAME = "persona_mixture"
DIMS: dict[str, list[str]] = {
    "w": ["persona"],
    "prior_weights": ["persona"],
    "y": ["episode"],
    "p_item": ["item", "option"],
}
DETERMINISTIC: tuple[str, ...] = ("p_item",)
OBSERVED: dict[str, str] = {"y": "episodes.option"}
"""Observed site -> data field (rows aggregated by ``episodes.count``)."""
LATENTS: tuple[str, ...] = ("prior_weights", "w", "beta_sft", "beta_icl", "authorial_bias")


@dataclass(frozen=True)
class Priors:
    """Hyperparameters of :func:`persona_mixture`.

    Parameters
    ----------
    concentration : float
        Dirichlet concentration of ``w`` around ``prior_weights``.
    prior_weights_concentration : float
        Symmetric Dirichlet hyperprior when ``prior_weights`` is latent.
    beta_loc, beta_scale : float
        LogNormal prior of ``beta_sft`` and ``beta_icl``.
    bias_scale : float
        Normal prior scale of ``authorial_bias``.
    """

    concentration: float = 20.0
    prior_weights_concentration: float = 1.0
    beta_loc: float = 0.0
    beta_scale: float = 0.5
    bias_scale: float = 1.0

    def __post_init__(self) -> None:
        check_priors(self, real=("beta_loc",))








def simulate(n_personas: int = 8, n_items: int = 60, n_options: int = 2, n_episodes: int = 500, *,
             seed: int = 0, priors: Priors | None = None, loglik: LogLikTable | None = None,
             icl_fraction: float = 0.3, heldout_fraction: float = 0.2, latent_prior: bool = False,
             authorial_bias: bool = True, loglik_scale: float = 2.0,
             truth: dict | None = None) -> Simulation:
    """Draw a data set from the persona-mixture generative model (numpy, same maths as the model).

    Parameters
    ----------
    n_personas, n_items, n_options : int
        Size of the random log-likelihood table (ignored when ``loglik`` is given).
    n_episodes : int
        Number of observed episodes.
    seed : int
        Seed of every random choice (same seed, same data).
    priors : Priors, optional
        Hyperparameters to draw the truth from.
    loglik : LogLikTable, optional
        Use this table (e.g. real LLM scores) instead of a random one.
    icl_fraction : float
        Probability that an episode is in-context (``icl``) rather than ``sft``.
    heldout_fraction : float
        Fraction of items that receive no episodes.
    latent_prior : bool
        If True, ``prior_weights`` is drawn but not given to the data
        (the model must infer it).
    authorial_bias : bool
        Include a random ``bias_direction`` (one favoured option per item)
        and draw ``authorial_bias``.
    loglik_scale : float
        Scale of the random persona logits.
    truth : dict, optional
        Fix some parameters (``w``, ``prior_weights``, ``beta_sft``,
        ``beta_icl``, ``authorial_bias``) instead of drawing them.
    """
    check_fractions(icl_fraction, heldout_fraction)
    priors = priors or Priors()
    rng = np.random.default_rng(seed)
    table = loglik if loglik is not None else random_loglik(n_personas, n_items, n_options, rng, loglik_scale)
    L = table.array
    K, n_items, n_options = L.shape
    fixed = dict(truth or {})

    pi = np.asarray(fixed.get("prior_weights", rng.dirichlet(np.full(K, priors.prior_weights_concentration))))
    pi = np.clip(pi, 1e-12, None) / np.clip(pi, 1e-12, None).sum()
    w = np.asarray(fixed.get("w", rng.dirichlet(priors.concentration * pi)))
    w = np.clip(w, 1e-12, None) / np.clip(w, 1e-12, None).sum()
    beta = [float(fixed.get(f"beta_{s}", rng.lognormal(priors.beta_loc, priors.beta_scale))) for s in SOURCES]
    bias = d = None
    if authorial_bias:
        bias = float(fixed.get("authorial_bias", rng.normal(0.0, priors.bias_scale)))
        d = np.zeros((n_items, n_options))
        d[np.arange(n_items), rng.integers(0, n_options, n_items)] = 1.0

    held, item_idx, source_idx = episode_design(rng, n_items, n_episodes, icl_fraction, heldout_fraction)
    persona = rng.choice(K, size=n_episodes, p=w)
    lp = np.stack([maths.persona_log_probs(maths.NUMPY, L, b, bias, d) for b in beta])  # (2, K, I, O)
    p = np.exp(lp[source_idx, persona, item_idx])
    option = (rng.random(n_episodes)[:, None] > np.cumsum(p / p.sum(-1, keepdims=True), -1)).sum(-1)
    option = np.minimum(option, n_options - 1)

    items = np.array(table.items, dtype=object)
    data = PSMData(
        loglik=table,
        episodes=Episodes(items[item_idx], option, np.array(SOURCES, dtype=object)[source_idx]),
        prior_weights=None if latent_prior else pi,
        bias_direction=d,
        personas=PersonaSet(table.personas),
    )
    p_item = np.exp(maths.assistant_log_probs(maths.NUMPY, np.log(w), L, 1.0, bias, d))
    true = {"w": w, "prior_weights": pi, "beta_sft": beta[0], "beta_icl": beta[1], "persona": persona,
            "p_item": p_item}
    if bias is not None:
        true["authorial_bias"] = bias
    return Simulation(data, true, tuple(items[held].tolist()))


def simulate_data(priors: Priors | None = None, *, seed: int, **sizes) -> tuple[PSMData, dict]:
    """Catalogue simulator: ``(data, truth)`` from :func:`simulate` (``sizes`` as its keywords)."""
    sim = simulate(seed=seed, priors=priors, **sizes)
    return sim.data, sim.truth

"""Simulate persona-selection data with known truth.

Uses the same maths as the models (:mod:`psm_bayes.models.maths`, numpy ops),
so data simulated here is data from :func:`persona_selection` itself: what
parameter recovery and simulation-based calibration need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psm_bayes.data import Episodes, LogLikTable, PersonaSet, PSMData, SOURCES
from psm_bayes.models import maths
from psm_bayes.models.persona_selection import Priors


@dataclass(frozen=True)
class Simulation:
    """A simulated data set and the truth behind it.

    Attributes
    ----------
    data : PSMData
        Observed data (episodes only on the training items).
    truth : dict
        ``w``, ``prior_weights``, ``beta_sft``, ``beta_icl``,
        ``authorial_bias`` (if any), ``persona`` (the persona behind each
        episode) and ``p_item`` (true answer distribution of every item).
    heldout_items : tuple of str
        Items with no episodes, for checking held-out predictions.
    """

    data: PSMData
    truth: dict
    heldout_items: tuple[str, ...]


def random_loglik(n_personas: int, n_items: int, n_options: int, rng: np.random.Generator,
                  scale: float = 2.0) -> LogLikTable:
    """A random ``log p(option | item, persona)`` table (normal logits, log-softmaxed)."""
    from scipy.special import log_softmax

    logits = rng.normal(0.0, scale, size=(n_personas, n_items, n_options))
    return LogLikTable.from_array(log_softmax(logits, axis=-1), [f"p{k}" for k in range(n_personas)],
                                  [f"i{i}" for i in range(n_items)])


def check_fractions(icl_fraction: float, heldout_fraction: float) -> None:
    """Validate the episode-design fractions of a simulator."""
    if not 0 <= icl_fraction <= 1:
        raise ValueError(f"icl_fraction: expected a probability in [0, 1], got {icl_fraction}")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction: expected a fraction in [0, 1), got {heldout_fraction}")


def episode_design(rng: np.random.Generator, n_items: int, n_episodes: int, icl_fraction: float,
                   heldout_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out items, and the item and source index of each episode.

    A ``heldout_fraction`` of the items gets no episodes; episodes pick the
    other items uniformly and are in-context (source 1) with probability
    ``icl_fraction``.
    """
    n_held = int(round(heldout_fraction * n_items))
    order = rng.permutation(n_items)
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    item_idx = rng.choice(train, size=n_episodes)
    source_idx = (rng.random(n_episodes) < icl_fraction).astype(np.int64)
    return held, item_idx, source_idx


def simulate(n_personas: int = 8, n_items: int = 60, n_options: int = 2, n_episodes: int = 500, *,
             seed: int = 0, priors: Priors | None = None, loglik: LogLikTable | None = None,
             icl_fraction: float = 0.3, heldout_fraction: float = 0.2, latent_prior: bool = False,
             authorial_bias: bool = True, loglik_scale: float = 2.0,
             truth: dict | None = None) -> Simulation:
    """Draw a data set from the persona-selection generative model.

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

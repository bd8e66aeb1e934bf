"""Simulation designs shared by the simulators of every model: a random persona table and the episode design.

:class:`Simulation` is what a model family's ``simulate`` returns; the
catalogue's ``simulate`` entries return ``(data, truth)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from psm_bayes.data import LogLikTable


@dataclass(frozen=True)
class Simulation:
    """A simulated data set and the truth behind it.

    Attributes
    ----------
    data
        Observed data (episodes only on the training items).
    truth : dict
        The true latent values (and model-specific derived quantities, e.g.
        the persona behind each episode).
    heldout_items : tuple of str
        Items with no episodes, for checking held-out predictions.
    """

    data: Any
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

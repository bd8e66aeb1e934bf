"""Prior draws for SBC: the true latents and the replicated data, from the model's own prior predictive."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.inference import get_backend
from psm_bayes.models.base import spec_of


def draw_prior(model: Callable, data: Any, replicates: int, *, seed: int, priors: Any = None,
               latents: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw ``replicates`` (latents, observed) pairs from the model's prior predictive.

    Parameters
    ----------
    model : callable
        A psm-bayes model (any backend).
    data
        Data template; its observed fields are replaced by the draws.
    replicates : int
        Number of draws.
    seed : int
        Seed of the draws.
    priors : optional
        The model's priors (default if None).
    latents : sequence of str, optional
        Latent sites to return (default: every sample site that is neither
        observed nor deterministic, in model order).

    Returns
    -------
    latents, observed : dict of arrays
        ``{site: (replicates, ...)}`` for the latent and the observed sites.
    """
    spec = spec_of(model)
    out = get_backend(spec.backend).prior_predictive(model, data, seed=seed, priors=priors, num_samples=replicates)
    names = list(latents) if latents is not None else [
        k for k in out if k not in spec.observed and k not in spec.deterministic]
    missing = [k for k in list(names) + list(spec.observed) if k not in out]
    if missing:
        raise ValueError(f"latents: sites {missing} are not sample sites of model {spec.name!r}; "
                         f"it has {sorted(out)}")
    return {k: np.asarray(out[k]) for k in names}, {k: np.asarray(out[k]) for k in spec.observed}


def latent_shapes(latents: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """``{site: shape}`` of one draw of each latent (``latents`` as returned by :func:`draw_prior`)."""
    return {k: tuple(np.shape(v)[1:]) for k, v in latents.items()}

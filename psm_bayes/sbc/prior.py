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
        Latent sites to return, those of them the model samples on this
        design (default: every sample site that is neither observed nor
        deterministic, in model order).

    Returns
    -------
    latents, observed : dict of arrays
        ``{site: (replicates, ...)}`` for the latent and the observed sites
        (the observed sites the model has on this design).
    """
    spec = spec_of(model)
    out = get_backend(spec.backend).prior_predictive(model, data, seed=seed, priors=priors, num_samples=replicates)
    observed = [k for k in spec.observed if k in out]
    names = [k for k in out if k not in spec.observed and k not in spec.deterministic] if latents is None \
        else [k for k in latents if k in out]  # a model's sites may depend on the design (e.g. no SFT evidence)
    if not names or not observed:
        raise ValueError(f"latents: model {spec.name!r} on this design has sample sites {sorted(out)}; expected "
                         f"some of the latents {list(latents or [])} and observed sites {list(spec.observed)}")
    return {k: np.asarray(out[k]) for k in names}, {k: np.asarray(out[k]) for k in observed}


def latent_shapes(latents: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """``{site: shape}`` of one draw of each latent (``latents`` as returned by :func:`draw_prior`)."""
    return {k: tuple(np.shape(v)[1:]) for k, v in latents.items()}

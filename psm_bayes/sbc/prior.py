"""Prior draws for SBC: the true latents and the replicated data, from the model's own prior predictive."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from psm_bayes.inference import get_backend
from psm_bayes.models.base import spec_of


def draw_prior(model: Callable, data: Any, replicates: int, *, seed: int, priors: Any = None,
               latents: Sequence[str] | None = None, scale: Mapping[str, float] | None = None,
               redraw: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
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
    scale : mapping of str to float, optional
        A deliberate simulator fault (NumPyro models): the observed sites
        are drawn again with these latent sites multiplied by the factors,
        while the returned latents keep the unscaled values, as a simulator
        that misreports a scale would (e.g. ``{"drift_sd": 1.5}``).
    redraw : sequence of str
        With ``scale``: latent sites drawn again in the scaled simulation,
        given the scaled values (the sites whose distribution the scaled
        site sets: ``("drift",)`` for ``drift_sd``, so the drift spreads
        1.5x wider than the recorded ``drift_sd`` says); their returned
        values stay the first draws.

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
    if scale:
        out = dict(out) | _rescaled_observations(model, data, out, scale, seed=seed, priors=priors, redraw=redraw)
    return {k: np.asarray(out[k]) for k in names}, {k: np.asarray(out[k]) for k in observed}


def _rescaled_observations(model: Callable, data: Any, draws: dict, scale: Mapping[str, float], *, seed: int,
                           priors: Any, redraw: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The observed sites drawn at ``draws``' latent values with the sites of ``scale`` multiplied
    (the sites of ``redraw`` drawn again given them)."""
    import jax
    from numpyro.infer import Predictive

    spec = spec_of(model)
    if spec.backend != "numpyro":
        raise ValueError(f"scale: a scaled simulator needs a NumPyro model, not {spec.backend}")
    missing = sorted((set(scale) | set(redraw)) - set(draws))
    if missing:
        raise ValueError(f"scale: the model has no sites {missing} on this design; it has {sorted(draws)}")
    fixed = {k: np.asarray(v) * scale.get(k, 1.0) for k, v in draws.items()
             if k not in spec.observed and k not in spec.deterministic and k not in redraw}
    out = Predictive(model, posterior_samples=fixed, return_sites=list(spec.observed))(
        jax.random.fold_in(jax.random.PRNGKey(seed), 7), spec.unobserve(data), priors)
    return {k: np.asarray(v) for k, v in out.items() if k in spec.observed}


def latent_shapes(latents: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """``{site: shape}`` of one draw of each latent (``latents`` as returned by :func:`draw_prior`)."""
    return {k: tuple(np.shape(v)[1:]) for k, v in latents.items()}

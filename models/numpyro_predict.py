"""Simulation helpers shared by the NumPyro ICL / SFT / joint models.

* :func:`simulate` -- data drawn from a model itself with some parameters
  fixed (``numpyro.infer.Predictive`` under ``handlers.condition``): what
  parameter-recovery tests need;
* :func:`design_simulator` -- a catalogue simulator drawing the truth and the
  data from a model's prior predictive on a design.

Both read the model's :class:`~psm_bayes.models.base.ModelSpec`
(``unobserve`` and ``with_observed``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import Predictive

from psm_bayes.models.base import spec_of


def latent_sites(model: Callable, data: Any, priors: Any = None) -> list[str]:
    """Names of the latent (unobserved, non-deterministic) sample sites of ``model`` on ``data``."""
    spec = spec_of(model)
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(spec.unobserve(data), priors)
    return [name for name, s in tr.items()
            if s["type"] == "sample" and not s["is_observed"] and name not in spec.observed]


def simulate(model: Callable, data: Any, params: Mapping[str, Any], *, seed: int,
             priors: Any = None) -> tuple[Any, dict[str, np.ndarray]]:
    """One data set drawn from ``model`` with the latents in ``params`` fixed.

    Parameters
    ----------
    model : callable
        A NumPyro psm-bayes model whose spec has ``with_observed``.
    data
        Its data object (observed fields are ignored).
    params : mapping
        Values of (some) latent sites; the others are drawn from the prior.
    seed : int
        Same seed, same draw.
    priors : optional
        The model's priors object.

    Returns
    -------
    (data, dict)
        ``data`` with the observed sites replaced by the draw, and every
        site's value (latents, deterministic and observed sites).
    """
    spec = spec_of(model)  # callers configure JAX first (psm_bayes.inference.configure_jax)
    if spec.with_observed is None:
        raise TypeError(f"model: {spec.name} has no with_observed in its ModelSpec")
    cond = handlers.condition(model, data={k: np.asarray(v) for k, v in params.items()})
    out = Predictive(cond, num_samples=1)(jax.random.PRNGKey(seed), spec.unobserve(data), priors)
    sites = {k: np.asarray(v)[0] for k, v in out.items()}
    for k, v in params.items():
        sites.setdefault(k, np.asarray(v))
    return spec.with_observed(data, {k: sites[k] for k in spec.observed}), sites


def design_simulator(model: Callable, design: Callable) -> Callable:
    """A catalogue simulator ``simulate(priors=None, *, seed, **sizes) -> (data, truth)``.

    ``design(seed=, **sizes)`` builds the data template (or a tuple whose
    first item is one); the truth (latent sites) and the observations are
    drawn from ``model``'s own prior predictive.
    """

    def simulate_from_prior(priors: Any = None, *, seed: int, **sizes) -> tuple[Any, dict[str, np.ndarray]]:
        template = design(seed=seed, **sizes)
        template = template[0] if isinstance(template, tuple) else template
        data, sites = simulate(model, template, {}, seed=seed, priors=priors)
        latent = latent_sites(model, template, priors)
        return data, {k: sites[k] for k in latent}

    simulate_from_prior.__doc__ = f"Data and truth drawn from the prior predictive of {spec_of(model).name}."
    return simulate_from_prior

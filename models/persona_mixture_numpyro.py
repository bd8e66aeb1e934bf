"""NumPyro backend of the persona-mixture model (site names as in the Pyro backend)."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from psm_bayes.data import PSMData
from psm_bayes.models import maths
from psm_bayes.models import persona_mixture as psm
from psm_bayes.models.base import ModelSpec, psm_model

_OPS = maths.jax_ops()


@psm_model(ModelSpec(psm.NAME, "numpyro", psm.OBSERVED, psm.DIMS, PSMData.coords, deterministic=psm.DETERMINISTIC,
                     units="episodes"))
def persona_mixture(data: PSMData, priors: psm.Priors | None = None) -> None:
    """The persona-mixture model in NumPyro; see :mod:`psm_bayes.models.persona_mixture`."""
    priors = priors or psm.Priors()
    L = jnp.asarray(data.loglik.array)
    K = data.n_personas
    if data.prior_weights is None:
        pi = numpyro.sample("prior_weights", dist.Dirichlet(jnp.full(K, priors.prior_weights_concentration)))
    else:
        pi = jnp.asarray(data.prior_weights)
    w = numpyro.sample("w", dist.Dirichlet(priors.concentration * pi))
    beta_sft = numpyro.sample("beta_sft", dist.LogNormal(priors.beta_loc, priors.beta_scale))
    beta_icl = numpyro.sample("beta_icl", dist.LogNormal(priors.beta_loc, priors.beta_scale))
    bias = d = None
    if data.bias_direction is not None:
        bias = numpyro.sample("authorial_bias", dist.Normal(0.0, priors.bias_scale))
        d = jnp.asarray(data.bias_direction)
    log_w = jnp.log(w)
    ep = data.episodes
    logits = maths.episode_logits(_OPS, log_w, L, jnp.asarray(data.item_index), jnp.asarray(ep.source_index),
                                  beta_sft, beta_icl, bias, d)
    obs = None if ep.option is None else jnp.asarray(ep.option)
    with numpyro.plate("episode", len(ep)), handlers.scale(scale=jnp.asarray(ep.count, dtype=float)):
        numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)
    numpyro.deterministic("p_item", jnp.exp(maths.assistant_log_probs(_OPS, log_w, L, 1.0, bias, d)))

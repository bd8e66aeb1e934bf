"""NumPyro backend of the persona-space model (site names as in the Pyro backend)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from psm_bayes.models import maths
from psm_bayes.models import persona_space as ps
from psm_bayes.models.base import ModelSpec, psm_model

_OPS = maths.jax_ops()


@psm_model(ModelSpec(ps.NAME, "numpyro", ps.OBSERVED, ps.DIMS, ps.PersonaSpaceData.coords, units="episodes"))
def persona_space(data: ps.PersonaSpaceData, priors: ps.PersonaSpacePriors | None = None) -> None:
    """The persona-space model in NumPyro; see :mod:`psm_bayes.models.persona_space`."""
    priors = priors or ps.PersonaSpacePriors()
    B, a = jnp.asarray(data.loadings), jnp.asarray(data.intercepts)
    z = numpyro.sample("z", dist.MultivariateNormal(jnp.asarray(data.prior_mean),
                                                    scale_tril=priors.prior_scale * jnp.asarray(data.prior_chol)))
    beta_sft = numpyro.sample("beta_sft", dist.LogNormal(priors.beta_loc, priors.beta_scale))
    beta_icl = numpyro.sample("beta_icl", dist.LogNormal(priors.beta_loc, priors.beta_scale))
    bias = numpyro.sample("response_bias", dist.Normal(0.0, priors.bias_scale))
    ep = data.episodes
    logits = ps.episode_logits(_OPS, B, a, z, jnp.asarray(data.item_index), jnp.asarray(ep.source_index),
                               beta_sft, beta_icl, bias)
    obs = None if ep.option is None else jnp.asarray(ep.option)
    with numpyro.plate("episode", len(ep)), handlers.scale(scale=jnp.asarray(ep.count, dtype=float)):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=obs)
    numpyro.deterministic("p_item", jax.nn.sigmoid(ps.item_logits(B, a, z) + bias))

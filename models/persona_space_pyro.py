"""Pyro backend of the persona-space model (site names as in the NumPyro backend).

Tensors are float64 regardless of torch's default dtype.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from psm_bayes.models import maths
from psm_bayes.models import persona_space as ps
from psm_bayes.models.base import ModelSpec, psm_model

_OPS = maths.torch_ops()


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


@psm_model(ModelSpec(ps.NAME, "pyro", ps.OBSERVED, ps.DIMS, ps.PersonaSpaceData.coords, units="episodes"))
def persona_space(data: ps.PersonaSpaceData, priors: ps.PersonaSpacePriors | None = None) -> None:
    """The persona-space model in Pyro; see :mod:`psm_bayes.models.persona_space`."""
    priors = priors or ps.PersonaSpacePriors()
    B, a = _t(data.loadings), _t(data.intercepts)
    z = pyro.sample("z", dist.MultivariateNormal(_t(data.prior_mean),
                                                 scale_tril=priors.prior_scale * _t(data.prior_chol)))
    beta_sft = pyro.sample("beta_sft", dist.LogNormal(_t(priors.beta_loc), _t(priors.beta_scale)))
    beta_icl = pyro.sample("beta_icl", dist.LogNormal(_t(priors.beta_loc), _t(priors.beta_scale)))
    bias = pyro.sample("response_bias", dist.Normal(_t(0.0), _t(priors.bias_scale)))
    ep = data.episodes
    logits = ps.episode_logits(_OPS, B, a, z, torch.as_tensor(data.item_index), torch.as_tensor(ep.source_index),
                               beta_sft, beta_icl, bias)
    obs = None if ep.option is None else _t(ep.option)
    with pyro.plate("episode", len(ep)), poutine.scale(scale=_t(ep.count)):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=obs)
    pyro.deterministic("p_item", torch.sigmoid(ps.item_logits(B, a, z) + bias))

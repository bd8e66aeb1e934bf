"""Pyro backend of the persona-mixture model (site names as in the NumPyro backend).

Tensors are float64 regardless of torch's default dtype.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from psm_bayes.data import PSMData
from psm_bayes.models import maths
from psm_bayes.models import persona_mixture as psm
from psm_bayes.models.base import ModelSpec, psm_model

_OPS = maths.torch_ops()


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


@psm_model(ModelSpec(psm.NAME, "pyro", psm.OBSERVED, psm.DIMS, PSMData.coords, deterministic=psm.DETERMINISTIC,
                     units="episodes"))
def persona_mixture(data: PSMData, priors: psm.Priors | None = None) -> None:
    """The persona-mixture model in Pyro; see :mod:`psm_bayes.models.persona_mixture`."""
    priors = priors or psm.Priors()
    L = _t(data.loglik.array)
    K = data.n_personas
    if data.prior_weights is None:
        pi = pyro.sample("prior_weights", dist.Dirichlet(_t([priors.prior_weights_concentration] * K)))
    else:
        pi = _t(data.prior_weights)
    w = pyro.sample("w", dist.Dirichlet(priors.concentration * pi))
    beta_sft = pyro.sample("beta_sft", dist.LogNormal(_t(priors.beta_loc), _t(priors.beta_scale)))
    beta_icl = pyro.sample("beta_icl", dist.LogNormal(_t(priors.beta_loc), _t(priors.beta_scale)))
    bias = d = None
    if data.bias_direction is not None:
        bias = pyro.sample("authorial_bias", dist.Normal(_t(0.0), _t(priors.bias_scale)))
        d = _t(data.bias_direction)
    log_w = torch.log(w)
    ep = data.episodes
    logits = maths.episode_logits(_OPS, log_w, L, torch.as_tensor(data.item_index),
                                  torch.as_tensor(ep.source_index), beta_sft, beta_icl, bias, d)
    obs = None if ep.option is None else torch.as_tensor(ep.option)
    with pyro.plate("episode", len(ep)), poutine.scale(scale=_t(ep.count)):
        pyro.sample("y", dist.Categorical(logits=logits), obs=obs)
    pyro.deterministic("p_item", torch.exp(maths.assistant_log_probs(_OPS, log_w, L, 1.0, bias, d)))

"""NumPyro SFT-shift models ``psm_sft`` and ``null_sft``; see :mod:`psm_bayes.models.sft_shift`.

Both observe ``shift`` in plate ``item`` as ``Normal(shift_mean, sigma)``
and record the deterministic ``shift_mean``.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from psm_bayes.models import maths
from psm_bayes.models import sft_shift as sft
from psm_bayes.models.base import ModelSpec, psm_model
from psm_bayes.models.numpyro_predict import design_simulator
from psm_bayes.models.icl_curves import yes_sign
from psm_bayes.models.sft_shift import SFTPriors, SFTShiftData

_OPS = maths.jax_ops()


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, "numpyro", {"shift": "shift"}, sft.DIMS, SFTShiftData.coords)


def observe_shift(data: SFTShiftData, mean, sigma, site: str = "shift") -> None:
    """Record ``{site}_mean`` and observe ``site ~ Normal(mean, sigma)`` in plate ``item``."""
    numpyro.deterministic(f"{site}_mean", mean)
    obs = None if data.shift is None else jnp.asarray(data.shift)
    with numpyro.plate("item", len(data)):
        numpyro.sample(site, dist.Normal(mean, sigma), obs=obs)


def psm_sft_mean(data: SFTShiftData, beta, bias):
    """Predicted ``shift_mean`` of ``psm_sft``; also records the SFT persona weights ``w``."""
    log_pi = jnp.log(jnp.asarray(data.prior_weights))
    train = jnp.asarray(data.train_loglik)
    numpyro.deterministic("w", jnp.exp(sft.sft_log_weights(_OPS, log_pi, train, beta)))
    return sft.psm_sft_shift(_OPS, log_pi, train, jnp.asarray(data.target_loglik), data.target_option, beta, bias)


@psm_model(_spec("psm_sft"))
def psm_sft(data: SFTShiftData, priors: SFTPriors | None = None) -> None:
    """Persona selection by fine-tuning evidence.

    ``w = softmax(log pi + beta_sft * train_loglik)``; ``shift_mean_i =
    logit p_w(target | i) - logit p_pi(target | i)``. Sites ``beta_sft ~
    LogNormal``, ``authorial_bias ~ Normal``, ``sigma ~ HalfNormal``,
    ``w`` (deterministic), ``shift``.
    """
    priors = priors or SFTPriors()
    beta = numpyro.sample("beta_sft", dist.LogNormal(priors.beta_loc, priors.beta_scale))
    bias = numpyro.sample("authorial_bias", dist.Normal(0.0, priors.bias_scale))
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    observe_shift(data, psm_sft_mean(data, beta, bias), sigma)


@psm_model(_spec("null_sft"))
def null_sft(data: SFTShiftData, priors: SFTPriors | None = None) -> None:
    """No persona-level generalisation: ``shift_mean_i = delta * trained_i + c + response_bias * s_i``.

    ``s_i = +1`` where item ``i``'s matching answer is Yes, ``-1`` otherwise,
    so ``response_bias`` is a change of the Yes/No offset caused by SFT.
    Sites ``delta ~ Normal``, ``c ~ Normal``, ``response_bias ~ Normal(0,
    bias_scale)``, ``sigma ~ HalfNormal``, ``shift``.
    """
    priors = priors or SFTPriors()
    delta = numpyro.sample("delta", dist.Normal(0.0, priors.delta_scale))
    c = numpyro.sample("c", dist.Normal(0.0, priors.offset_scale))
    bias = numpyro.sample("response_bias", dist.Normal(0.0, priors.bias_scale))
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    sign = jnp.asarray(yes_sign(data.target_option))
    observe_shift(data, delta * jnp.asarray(data.trained, dtype=float) + c + bias * sign, sigma)


SFT_MODELS: dict[str, Callable] = {m.spec.name: m for m in (psm_sft, null_sft)}
"""The SFT models by name."""

simulate_psm_sft = design_simulator(psm_sft, sft.make_sft_design)
simulate_null_sft = design_simulator(null_sft, sft.make_sft_design)

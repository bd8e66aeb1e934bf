"""NumPyro ICL-curve models: ``psm_icl``, ``bayesian_icl_law``, ``power_law``, ``bounded_power_law``.

The maths and data live in :mod:`psm_bayes.models.icl_curves` (see its
docstring for the equations). Every model observes ``nll`` in plate
``measurement`` as ``LogNormal(log nll_mean, sigma)`` (positive, so simulated
data is always valid) and records ``nll_mean``; per-curve parameters sit in
plate ``curve``. Model comparison and extrapolation (which need fits) live in
:mod:`psm_bayes.comparison`.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from psm_bayes.models import icl_curves as icl
from psm_bayes.models import maths
from psm_bayes.models.base import ModelSpec, psm_model
from psm_bayes.models.icl_curves import ICLData, ICLPriors
from psm_bayes.models.numpyro_predict import design_simulator

_OPS = maths.jax_ops()


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, "numpyro", {"nll": "nll"}, icl.DIMS, ICLData.coords)


def observe_nll(data: ICLData, mean, sigma, priors: ICLPriors | None = None) -> None:
    """Record ``nll_mean`` and observe ``nll ~ LogNormal(log nll_mean, sigma)`` in plate ``measurement``.

    With ``priors`` (the curve laws) and a known matching answer per row,
    first add ``response_bias ~ Normal(0, priors.bias_scale)`` on the log-odds
    of "Yes" (:func:`~psm_bayes.models.icl_curves.with_response_bias`).
    """
    if priors is not None and data.target_option is not None:
        bias = numpyro.sample("response_bias", dist.Normal(0.0, priors.bias_scale))
        mean = icl.with_response_bias(_OPS, mean, bias, jnp.asarray(icl.yes_sign(data.target_option)))
    numpyro.deterministic("nll_mean", mean)
    obs = None if data.nll is None else jnp.asarray(data.nll)
    with numpyro.plate("measurement", len(data)):
        numpyro.sample("nll", dist.LogNormal(jnp.log(mean), sigma), obs=obs)


def psm_icl_sites(data: ICLData, priors: ICLPriors, beta_name: str = "beta_icl", bias=None):
    """Sample ``beta_icl`` (and ``authorial_bias`` unless given) and return the predicted ``nll_mean``.

    Shared with the joint model, which passes its own ``bias``.
    """
    icl.require_psm(data, "psm_icl")
    beta = numpyro.sample(beta_name, dist.LogNormal(priors.beta_loc, priors.beta_scale))
    if bias is None:
        bias = numpyro.sample("authorial_bias", dist.Normal(0.0, priors.bias_scale))
    return icl.psm_icl_nll(_OPS, jnp.log(jnp.asarray(data.prior_weights)), jnp.asarray(data.shot_loglik),
                           jnp.asarray(data.target_loglik), data.target_option, beta, bias)


@psm_model(_spec("psm_icl"))
def psm_icl(data: ICLData, priors: ICLPriors | None = None) -> None:
    """Persona selection by in-context evidence.

    ``w_r = softmax(log pi + beta_icl * shot_loglik_r)``; ``nll_mean_r = -log
    sum_k w_rk softmax(L[k, i_r] + authorial_bias * d)[target]`` with ``d``
    one-hot on Yes. Sites ``beta_icl ~ LogNormal``, ``authorial_bias ~
    Normal``, ``sigma ~ HalfNormal``, ``nll``.
    """
    priors = priors or ICLPriors()
    mean = psm_icl_sites(data, priors)
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    observe_nll(data, mean, sigma)  # psm_icl's Yes offset is authorial_bias, inside the personas' answers


@psm_model(_spec("bayesian_icl_law"))
def bayesian_icl_law(data: ICLData, priors: ICLPriors | None = None) -> None:
    """Arora et al. (2024) Bayesian ICL law with two latent tasks per curve.

    Sites ``K`` (ICL efficiency, shared), per curve ``rho``, ``P``, ``u``
    (``Q = P u`` deterministic) and, with ``priors.separate_target``,
    ``p_target`` and ``q``; ``sigma``, ``nll``.
    """
    priors = priors or ICLPriors()
    K = numpyro.sample("K", dist.LogNormal(priors.efficiency_loc, priors.efficiency_scale))
    with numpyro.plate("curve", data.n_curves):
        rho = numpyro.sample("rho", dist.Beta(priors.rho_a, priors.rho_b))
        P = numpyro.sample("P", dist.Beta(priors.P_a, priors.P_b))
        u = numpyro.sample("u", dist.Beta(priors.u_a, priors.u_b))
        if priors.separate_target:
            p_t = numpyro.sample("p_target", dist.Beta(1.0, 1.0))
            q = numpyro.sample("q", dist.Beta(1.0, 1.0))
    numpyro.deterministic("Q", P * u)
    log_P, log_Q = jnp.log(P), jnp.log(P) + jnp.log(u)
    log_p, log_q = (jnp.log(p_t), jnp.log(q)) if priors.separate_target else (log_P, log_Q)
    c = data.curve_index
    mean = icl.bayesian_law_nll(_OPS, jnp.asarray(data.n_shots, dtype=float), K, jnp.log(rho)[c],
                                jnp.log1p(-rho)[c], log_P[c], log_Q[c], log_p[c], log_q[c])
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    observe_nll(data, mean, sigma, priors)


@psm_model(_spec("power_law"))
def power_law(data: ICLData, priors: ICLPriors | None = None) -> None:
    """``nll_c(n) = C_c (n + 1)^(-alpha_c)``; sites ``C``, ``alpha`` (per curve), ``sigma``, ``nll``."""
    priors = priors or ICLPriors()
    with numpyro.plate("curve", data.n_curves):
        C = numpyro.sample("C", dist.LogNormal(priors.C_loc, priors.C_scale))
        alpha = numpyro.sample("alpha", dist.LogNormal(priors.alpha_loc, priors.alpha_scale))
    c = data.curve_index
    mean = icl.power_law_nll(jnp.asarray(data.n_shots, dtype=float), C[c], alpha[c])
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    observe_nll(data, mean, sigma, priors)


@psm_model(_spec("bounded_power_law"))
def bounded_power_law(data: ICLData, priors: ICLPriors | None = None) -> None:
    """Anil et al. (2024): ``nll_c(n) = C_c (1 + n / n_inf_c)^(-alpha_c) + K_c``.

    Sites ``C``, ``alpha``, ``n_inf``, ``K_floor`` (the floor ``K_c``; named
    so as not to clash with the Bayesian law's efficiency ``K``), ``sigma``,
    ``nll``.
    """
    priors = priors or ICLPriors()
    with numpyro.plate("curve", data.n_curves):
        C = numpyro.sample("C", dist.LogNormal(priors.C_loc, priors.C_scale))
        alpha = numpyro.sample("alpha", dist.LogNormal(priors.alpha_loc, priors.alpha_scale))
        n_inf = numpyro.sample("n_inf", dist.LogNormal(priors.n_inf_loc, priors.n_inf_scale))
        floor = numpyro.sample("K_floor", dist.HalfNormal(priors.floor_scale))
    c = data.curve_index
    mean = icl.bounded_power_law_nll(jnp.asarray(data.n_shots, dtype=float), C[c], alpha[c], n_inf[c], floor[c])
    sigma = numpyro.sample("sigma", dist.HalfNormal(priors.sigma_scale))
    observe_nll(data, mean, sigma, priors)


ICL_MODELS: dict[str, Callable] = {m.spec.name: m for m in (psm_icl, bayesian_icl_law, power_law,
                                                             bounded_power_law)}
"""The four ICL models by name."""

simulate_psm_icl = design_simulator(psm_icl, icl.make_icl_design)
simulate_bayesian_icl_law = design_simulator(bayesian_icl_law, icl.make_icl_design)
simulate_power_law = design_simulator(power_law, icl.make_icl_design)
simulate_bounded_power_law = design_simulator(bounded_power_law, icl.make_icl_design)

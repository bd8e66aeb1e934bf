"""NumPyro ICL-curve models: ``psm_icl``, ``bayesian_icl_law``, ``power_law``, ``bounded_power_law``.

The maths and data live in :mod:`psm_bayes.models.icl_curves` (see its
docstring for the equations). Every model observes ``nll`` in plate
``measurement`` as ``Normal(nll_mean, sigma)`` and records ``nll_mean``;
per-curve parameters sit in plate ``curve``.

Also here (they need fits): :func:`extrapolation_error` and
:func:`compare_icl_models`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from psm_bayes.data import DataError
from psm_bayes.models import icl_curves as icl
from psm_bayes.models import maths
from psm_bayes.models.base import ModelSpec, psm_model
from psm_bayes.models.icl_curves import ICLData, ICLPriors
from psm_bayes.models.numpyro_predict import design_simulator

_OPS = maths.jax_ops()


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, "numpyro", ("nll",), icl.DIMS, ICLData.coords, icl.unobserve, icl.observed_values,
                     with_observed=icl.with_observed)


def observe_nll(data: ICLData, mean, sigma) -> None:
    """Record ``nll_mean`` and observe ``nll ~ Normal(mean, sigma)`` in plate ``measurement``."""
    numpyro.deterministic("nll_mean", mean)
    obs = None if data.nll is None else jnp.asarray(data.nll)
    with numpyro.plate("measurement", len(data)):
        numpyro.sample("nll", dist.Normal(mean, sigma), obs=obs)


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
    observe_nll(data, mean, sigma)


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
    observe_nll(data, mean, sigma)


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
    observe_nll(data, mean, sigma)


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
    observe_nll(data, mean, sigma)


ICL_MODELS: dict[str, Callable] = {m.spec.name: m for m in (psm_icl, bayesian_icl_law, power_law,
                                                             bounded_power_law)}
"""The four ICL models by name."""

simulate_psm_icl = design_simulator(psm_icl, icl.make_icl_design)
simulate_bayesian_icl_law = design_simulator(bayesian_icl_law, icl.make_icl_design)
simulate_power_law = design_simulator(power_law, icl.make_icl_design)
simulate_bounded_power_law = design_simulator(bounded_power_law, icl.make_icl_design)


def predicted_nll(model: Callable, dt, data: ICLData, *, seed: int = 0, priors: ICLPriors | None = None) -> np.ndarray:
    """Posterior predictive mean of ``nll`` on the rows of ``data``.

    The noise is zero-mean, so the posterior predictive mean equals the
    posterior mean of ``nll_mean`` (computed exactly, without noise draws).
    """
    from psm_bayes.models.numpyro_predict import predict_sites

    return predict_sites(model, dt, data, ["nll_mean"], seed=seed, priors=priors)["nll_mean"].mean(0)


def extrapolation_error(model: Callable, train: ICLData, test: ICLData, seed: int, *,
                        priors: ICLPriors | None = None, **fit_kwargs) -> dict[str, float]:
    """Fit ``model`` on ``train`` (NUTS) and score its predictions of ``test.nll``.

    Parameters
    ----------
    model : callable
        One of the ICL models.
    train, test : ICLData
        E.g. from :func:`~psm_bayes.models.icl_curves.extrapolation_split`
        (same ``curves`` order); ``test.nll`` must be observed.
    seed : int
        Seed of the fit.
    priors : ICLPriors, optional
    **fit_kwargs
        Passed to :func:`psm_bayes.inference.fit_nuts` (``num_warmup``, ...).

    Returns
    -------
    dict
        ``rmse`` and ``nrmse`` (RMSE / population sd of the observed test
        ``nll``) of the posterior predictive mean; see
        :func:`~psm_bayes.models.icl_curves.extrapolation_metrics`.
    """
    from psm_bayes.inference import fit_nuts

    if test.nll is None:
        raise DataError("test.nll: expected observed values to score predictions against")
    if tuple(train.curves) != tuple(test.curves):
        raise DataError("test.curves: expected the same curves order as train (use extrapolation_split)")
    dt = fit_nuts(model, train, seed=seed, priors=priors, predictive=False, **fit_kwargs)
    return icl.extrapolation_metrics(test.nll, predicted_nll(model, dt, test, seed=seed, priors=priors))


def compare_icl_models(data: ICLData, seed: int, *, models: Sequence[str] | None = None, fraction: float = 0.5,
                       priors: ICLPriors | None = None, **fit_kwargs):
    """Compare the ICL models by PSIS-LOO and by extrapolation error.

    Each model is fitted to all of ``data`` (for ``az.compare``) and, for
    the extrapolation columns, to the small-``n`` rows of
    :func:`~psm_bayes.models.icl_curves.extrapolation_split` (``fraction``)
    and scored on the rest.

    Parameters
    ----------
    data : ICLData
        Observed ``nll``; ``psm_icl`` is included only when the PSM fields
        are present (default ``models``).
    seed : int
    models : sequence of str, optional
        Names from :data:`ICL_MODELS`.
    fraction : float
    priors : ICLPriors, optional
    **fit_kwargs
        Passed to :func:`psm_bayes.inference.fit_nuts`.

    Returns
    -------
    pandas.DataFrame
        ``az.compare`` columns (rank, elpd, elpd_diff, weight, ...) indexed by
        model name, plus ``rmse`` and ``nrmse`` (extrapolation).
    """
    import arviz as az

    from psm_bayes.inference import fit_nuts

    if data.nll is None:
        raise DataError("nll: expected observed values to compare models on")
    names = list(models) if models is not None else [n for n in ICL_MODELS if n != "psm_icl" or data.has_psm]
    unknown = [n for n in names if n not in ICL_MODELS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; expected names from {list(ICL_MODELS)}")
    train, test = icl.extrapolation_split(data, fraction)
    fits, extra = {}, {}
    for name in names:
        fits[name] = fit_nuts(ICL_MODELS[name], data, seed=seed, priors=priors, **fit_kwargs)
        extra[name] = extrapolation_error(ICL_MODELS[name], train, test, seed, priors=priors, **fit_kwargs)
    table = az.compare(fits)
    table["rmse"] = [extra[n]["rmse"] for n in table.index]
    table["nrmse"] = [extra[n]["nrmse"] for n in table.index]
    return table

"""Model comparison that needs fits: ICL-curve extrapolation and LOO tables.

Layer: uses models and inference (models never fit themselves).

* :func:`predict_sites` -- sites of a NumPyro model evaluated at the posterior
  draws of a fit, on (possibly different) data, e.g. ``nll_mean`` on held-out
  rows;
* :func:`predicted_nll`, :func:`extrapolation_error`,
  :func:`compare_icl_models` -- the ICL-curve laws compared by PSIS-LOO and by
  extrapolation to larger shot counts.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.diagnostics import draws
from psm_bayes.inference import configure_jax, fit_nuts
from psm_bayes.models.icl_curves import ICLData, ICLPriors, extrapolation_metrics, extrapolation_split
from psm_bayes.models.numpyro_predict import latent_sites
from psm_bayes.models.base import spec_of
from psm_bayes.validation import DataError


def predict_sites(model: Callable, dt, data: Any, sites: list[str], *, seed: int = 0,
                  priors: Any = None) -> dict[str, np.ndarray]:
    """``sites`` of ``model`` on ``data`` at each posterior draw of ``dt``.

    Only latent sites are substituted (deterministic sites are recomputed
    for ``data``), so ``data`` may hold other rows than the fitted data, as
    long as per-group parameters line up (same ``curves`` / items).

    Returns
    -------
    dict
        ``{site: (S, ...)}`` with ``S`` = chains x draws.
    """
    import jax
    from numpyro.infer import Predictive

    configure_jax()
    post = dt["posterior"]
    latents = {n: draws(dt, n) for n in latent_sites(model, data, priors) if n in post}
    pred = Predictive(model, posterior_samples=latents, return_sites=list(sites))(
        jax.random.PRNGKey(seed), spec_of(model).unobserve(data), priors)
    return {k: np.asarray(v) for k, v in pred.items()}


def predicted_nll(model: Callable, dt, data: ICLData, *, seed: int = 0, priors: ICLPriors | None = None) -> np.ndarray:
    """Predicted ``nll`` on the rows of ``data``: posterior mean of ``nll_mean``.

    The posterior mean of ``nll_mean`` (the median of the LogNormal noise),
    computed exactly, without noise draws.
    """
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
    if test.nll is None:
        raise DataError("test.nll: expected observed values to score predictions against")
    if tuple(train.curves) != tuple(test.curves):
        raise DataError("test.curves: expected the same curves order as train (use extrapolation_split)")
    dt = fit_nuts(model, train, seed=seed, priors=priors, predictive=False, **fit_kwargs)
    return extrapolation_metrics(test.nll, predicted_nll(model, dt, test, seed=seed, priors=priors))


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
        Names from :data:`psm_bayes.models.icl_curves_numpyro.ICL_MODELS`.
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

    from psm_bayes.models.icl_curves_numpyro import ICL_MODELS

    if data.nll is None:
        raise DataError("nll: expected observed values to compare models on")
    names = list(models) if models is not None else [n for n in ICL_MODELS if n != "psm_icl" or data.has_psm]
    unknown = [n for n in names if n not in ICL_MODELS]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; expected names from {list(ICL_MODELS)}")
    train, test = extrapolation_split(data, fraction)
    fits, extra = {}, {}
    for name in names:
        fits[name] = fit_nuts(ICL_MODELS[name], data, seed=seed, priors=priors, **fit_kwargs)
        extra[name] = extrapolation_error(ICL_MODELS[name], train, test, seed, priors=priors, **fit_kwargs)
    table = az.compare(fits)
    table["rmse"] = [extra[n]["rmse"] for n in table.index]
    table["nrmse"] = [extra[n]["nrmse"] for n in table.index]
    return table

"""NUTS and SVI for NumPyro models."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, init_to_median, log_likelihood
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from psm_bayes.inference.datatree import build_datatree
from psm_bayes.inference.jax_config import configure_jax
from psm_bayes.models.base import spec_of

_EXTRA = ("diverging", "energy", "num_steps", "accept_prob")


def _by_chain(samples: dict[str, Any], n_chains: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v).reshape((n_chains, -1) + np.shape(v)[1:]) for k, v in samples.items()}


def pointwise_log_likelihood(model: Callable, data: Any, priors: Any, flat: dict) -> dict[str, np.ndarray]:
    """``{observed site: (S, N)}`` log-likelihood of each unit (one episode, aggregated rows expanded)."""
    spec = spec_of(model)
    ll = log_likelihood(model, flat, spec.per_unit(data), priors)
    return {k: np.asarray(v) for k, v in ll.items() if k in spec.observed}


def _predictive_groups(model: Callable, data: Any, priors: Any, flat: dict, n_chains: int, key) -> tuple[dict, dict]:
    """(log_likelihood, posterior_predictive) per observed site and unit (episode), by chain."""
    spec = spec_of(model)
    ll = pointwise_log_likelihood(model, data, priors, flat)
    pred = Predictive(model, posterior_samples=flat, return_sites=list(spec.observed))(key, spec.unobserve(data), priors)
    return _by_chain(ll, n_chains), _by_chain(pred, n_chains)


def fit_nuts(model: Callable, data: Any, *, seed: int, priors: Any, num_warmup: int, num_samples: int,
             num_chains: int, target_accept: float, max_tree_depth: int, predictive: bool, progress: bool):
    """NumPyro NUTS -> DataTree (see :func:`psm_bayes.inference.fit_nuts`)."""
    configure_jax()
    spec = spec_of(model)
    method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    mcmc = MCMC(NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                     init_strategy=init_to_median),
                num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, chain_method=method,
                progress_bar=progress)
    key_run, key_pred = jax.random.split(jax.random.PRNGKey(seed))
    mcmc.run(key_run, data, priors, extra_fields=_EXTRA)
    samples = mcmc.get_samples()
    extra = mcmc.get_extra_fields(group_by_chain=True)
    steps = np.asarray(extra["num_steps"])
    stats = {"diverging": np.asarray(extra["diverging"]), "energy": np.asarray(extra["energy"]),
             "n_steps": steps, "tree_depth": np.floor(np.log2(steps + 1)).astype(np.int64),
             "acceptance_rate": np.asarray(extra["accept_prob"])}
    ll = pp = None
    if predictive:
        ll, pp = _predictive_groups(model, data, priors, samples, num_chains, key_pred)
    return build_datatree(spec, data, posterior=_by_chain(samples, num_chains), sample_stats=stats,
                          log_likelihood=ll, posterior_predictive=pp,
                          attrs={"inference": "nuts", "inference_library": "numpyro", "seed": seed,
                                 "num_warmup": num_warmup, "chain_method": method})


def fit_svi(model: Callable, data: Any, *, seed: int, priors: Any, guide: str, num_steps: int,
            learning_rate: float, num_draws: int, predictive: bool, progress: bool):
    """NumPyro SVI -> DataTree (see :func:`psm_bayes.inference.fit_svi`)."""
    configure_jax()
    spec = spec_of(model)
    guide_cls = AutoNormal if guide == "normal" else AutoMultivariateNormal
    g = guide_cls(model, init_loc_fn=init_to_median)
    svi = SVI(model, g, numpyro.optim.Adam(learning_rate), Trace_ELBO())
    key_run, key_draw, key_det, key_pred = jax.random.split(jax.random.PRNGKey(seed), 4)
    result = svi.run(key_run, num_steps, data, priors, progress_bar=progress)
    latent = g.sample_posterior(key_draw, result.params, sample_shape=(num_draws,))
    # deterministic sites evaluated at the guide's draws
    samples = Predictive(model, posterior_samples=latent)(key_det, spec.unobserve(data), priors)
    samples = {k: v for k, v in samples.items() if k not in spec.observed}
    samples.update(latent)
    ll = pp = None
    if predictive:
        ll, pp = _predictive_groups(model, data, priors, samples, 1, key_pred)
    return build_datatree(spec, data, posterior=_by_chain(samples, 1), log_likelihood=ll, posterior_predictive=pp,
                          extra={"svi": {"loss": _step_array(result.losses)}},
                          attrs={"inference": f"svi-{guide}", "inference_library": "numpyro", "seed": seed})


def _step_array(losses) -> Any:
    import xarray as xr

    return xr.DataArray(np.asarray(losses), dims=("step",))


def prior_predictive(model: Callable, data: Any, *, seed: int, priors: Any = None, num_samples: int = 500) -> dict:
    """Prior and prior-predictive draws ``{site: (num_samples, ...)}`` (observed sites unobserved)."""
    configure_jax()
    spec = spec_of(model)
    out = Predictive(model, num_samples=num_samples)(jax.random.PRNGKey(seed), spec.unobserve(data), priors)
    return {k: np.asarray(v) for k, v in out.items()}


def log_density(model: Callable, data: Any, priors: Any, values: dict[str, Any]) -> float:
    """Log joint density of ``model`` at the latent ``values``, in float64."""
    from numpyro.infer.util import log_density as _log_density

    configure_jax()
    vals = {k: jax.numpy.asarray(np.asarray(v, dtype=float)) for k, v in values.items()}
    return float(_log_density(model, (data, priors), {}, vals)[0])

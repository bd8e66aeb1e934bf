"""NUTS and SVI for NumPyro models."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import numpyro
from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_median, log_likelihood
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal

from psm_bayes.inference import compiled, nuts
from psm_bayes.inference.datatree import build_datatree
from psm_bayes.inference.jax_config import configure_jax
from psm_bayes.models.base import spec_of


def _by_chain(samples: dict[str, Any], n_chains: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v).reshape((n_chains, -1) + np.shape(v)[1:]) for k, v in samples.items()}


def pointwise_log_likelihood(model: Callable, data: Any, priors: Any, flat: dict) -> dict[str, np.ndarray]:
    """``{observed site: (S, N)}`` log-likelihood of each unit (one episode, aggregated rows expanded)."""
    spec = spec_of(model)
    unit = spec.per_unit(data)
    ll = compiled.call("log_likelihood", lambda s: log_likelihood(model, s, unit, priors), flat)
    return {k: np.asarray(v) for k, v in ll.items() if k in spec.observed}


def _predictive_groups(model: Callable, data: Any, priors: Any, flat: dict, n_chains: int, key) -> tuple[dict, dict]:
    """(log_likelihood, posterior_predictive) per observed site and unit (episode), by chain."""
    spec = spec_of(model)
    ll = pointwise_log_likelihood(model, data, priors, flat)
    bare = spec.unobserve(data)
    sites = list(spec.observed)
    pred = compiled.call("posterior_predictive",
                         lambda k, s: Predictive(model, posterior_samples=s, return_sites=sites)(k, bare, priors),
                         key, flat)
    return _by_chain(ll, n_chains), _by_chain(pred, n_chains)


def fit_nuts(model: Callable, data: Any, *, seed: int, priors: Any, num_warmup: int, num_samples: int,
             num_chains: int, target_accept: float, max_tree_depth: int, predictive: bool, progress: bool,
             chain_method: str | None = None, init: str = "median"):
    """NumPyro NUTS -> DataTree (see :func:`psm_bayes.inference.fit_nuts`).

    NUTS runs as a compiled program shared by every fit of the same model
    structure and settings (:mod:`psm_bayes.inference.nuts`); ``chain_method``
    defaults to :data:`psm_bayes.inference.nuts.DEFAULT_CHAIN_METHOD`.
    """
    from tqdm import tqdm

    configure_jax()
    spec = spec_of(model)
    method = nuts.resolve_chain_method(chain_method, num_chains)
    settings = nuts.Settings(int(num_warmup), int(num_samples), int(num_chains), float(target_accept),
                             int(max_tree_depth), method, init=str(init))
    bar = tqdm(total=2 if predictive else 1, desc=f"NUTS {spec.name}", unit="step", disable=not progress)
    key_run, key_pred = jax.random.split(jax.random.PRNGKey(seed))
    posterior, extra = nuts.sample(model, data, priors, key_run, settings)
    bar.update()
    steps = extra["num_steps"]
    stats = {"diverging": extra["diverging"], "energy": extra["energy"],
             "n_steps": steps, "tree_depth": np.floor(np.log2(steps + 1)).astype(np.int64),
             "acceptance_rate": extra["accept_prob"]}
    ll = pp = None
    if predictive:
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in posterior.items()}
        ll, pp = _predictive_groups(model, data, priors, flat, num_chains, key_pred)
        bar.update()
    bar.close()
    return build_datatree(spec, data, posterior=posterior, sample_stats=stats,
                          log_likelihood=ll, posterior_predictive=pp,
                          attrs={"inference": "nuts", "inference_library": "numpyro", "seed": seed,
                                 "num_warmup": num_warmup, "chain_method": method, "init": extra["init"]})


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

"""NUTS and SVI for Pyro models (float64 throughout).

Pyro's small tensor operations are dominated by thread overhead: one gradient
took 7.7 ms with 1 torch thread and 100-300 ms with 2 on a busy 2-core machine.
Fits therefore run with ``$PSM_BAYES_TORCH_THREADS`` torch threads (default 1)
and restore the previous setting afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal, init_to_median

from psm_bayes.inference.datatree import build_datatree
from psm_bayes.models.base import spec_of


@contextlib.contextmanager
def _torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("PSM_BAYES_TORCH_THREADS", "1"))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _with_torch_threads(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _torch_threads():
            return fn(*args, **kwargs)

    return wrapper


def _seed(seed: int) -> None:
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _by_chain(flat: dict[str, torch.Tensor], n_chains: int) -> dict[str, np.ndarray]:
    return {k: _np(v).reshape((n_chains, -1) + tuple(v.shape[1:])) for k, v in flat.items()}


def pointwise_log_likelihood(model: Callable, data: Any, priors: Any, flat: dict[str, torch.Tensor]) -> dict:
    """``{observed site: (S, N)}`` log-likelihood of each unit (one episode, aggregated rows expanded).

    Replays a trace per draw on the model's one-row-per-unit data.
    """
    spec = spec_of(model)
    data = spec.per_unit(data)
    n = next(iter(flat.values())).shape[0]
    out: dict[str, list] = {k: [] for k in spec.observed}
    with torch.no_grad():
        for s in range(n):
            draw = {k: v[s] for k, v in flat.items()}
            tr = poutine.trace(poutine.condition(model, draw)).get_trace(data, priors)
            for name in spec.observed:
                if name in tr.nodes:  # a model may observe only some of its sites, as its data holds them
                    site = tr.nodes[name]
                    out[name].append(_np(site["fn"].log_prob(site["value"])))
    return {k: np.stack(v) for k, v in out.items() if v}


def _own_shapes(model: Callable, data: Any, priors: Any, draws: dict[str, torch.Tensor]) -> dict:
    """Predictive pads sites outside plates with singleton plate dims: restore each site's own shape."""
    with torch.no_grad():
        one = poutine.trace(model).get_trace(data, priors)  # a prior draw: only the shapes are used
    return {k: v.reshape((v.shape[0],) + tuple(one.nodes[k]["value"].shape)) for k, v in draws.items()}


def _complete(model: Callable, data: Any, priors: Any, latent: dict, n_chains: int, predictive: bool) -> dict:
    """Deterministic sites, log-likelihood and posterior predictive for latent draws ``(S, ...)``."""
    spec = spec_of(model)
    with torch.no_grad():
        pred = Predictive(model, posterior_samples=latent)(spec.unobserve(data), priors)
    pred = _own_shapes(model, spec.unobserve(data), priors, pred)
    post = dict(latent)
    post.update({k: v for k, v in pred.items() if k not in spec.observed and k not in latent})
    groups = {"posterior": _by_chain(post, n_chains)}
    if predictive:
        ll = pointwise_log_likelihood(model, data, priors, latent)
        groups["log_likelihood"] = {k: v.reshape((n_chains, -1) + v.shape[1:]) for k, v in ll.items()}
        groups["posterior_predictive"] = _by_chain({k: pred[k] for k in spec.observed if k in pred}, n_chains)
    return groups


def _mass_blocks(model: Callable, data: Any, priors: Any) -> list[tuple[str, ...]]:
    """The model's dense mass-matrix blocks (``ModelSpec.dense_mass``) over the sites it samples on ``data``."""
    spec = spec_of(model)
    if not spec.dense_mass:
        return []
    with torch.random.fork_rng():               # tracing draws from the prior: leave the fit's RNG stream alone
        tr = poutine.trace(model).get_trace(data, priors)
    latent = [n for n, site in tr.nodes.items() if site["type"] == "sample" and not site["is_observed"]]
    return list(spec.mass_blocks(latent))


@_with_torch_threads
def fit_nuts(model: Callable, data: Any, *, seed: int, priors: Any, num_warmup: int, num_samples: int,
             num_chains: int, target_accept: float, max_tree_depth: int, predictive: bool, progress: bool,
             init: str = "median"):
    """Pyro NUTS -> DataTree (chains run one after another, see :func:`psm_bayes.inference.fit_nuts`)."""
    if init != "median":
        raise ValueError(f"init: the Pyro backend starts at the prior median only, got {init!r} "
                         "(init='laplace' is the NumPyro backend's)")
    spec = spec_of(model)
    _seed(seed)
    latent_chains, diverging = [], []
    blocks = _mass_blocks(model, data, priors)
    for c in range(num_chains):
        kernel = NUTS(model, target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                      init_strategy=init_to_median, full_mass=blocks or False)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=1,
                    disable_progbar=not progress)
        mcmc.run(data, priors)
        latent_chains.append(mcmc.get_samples())
        div = np.zeros(num_samples, dtype=bool)
        idx = np.asarray(mcmc.diagnostics()["divergences"]["chain 0"], dtype=int)
        div[idx] = True
        diverging.append(div)
    latent = {k: torch.cat([ch[k] for ch in latent_chains]) for k in latent_chains[0]}
    groups = _complete(model, data, priors, latent, num_chains, predictive)
    return build_datatree(spec, data, sample_stats={"diverging": np.stack(diverging)}, **groups,
                          attrs={"inference": "nuts", "inference_library": "pyro", "seed": seed,
                                 "num_warmup": num_warmup})


@_with_torch_threads
def fit_svi(model: Callable, data: Any, *, seed: int, priors: Any, guide: str, num_steps: int,
            learning_rate: float, num_draws: int, predictive: bool, progress: bool):
    """Pyro SVI -> DataTree (see :func:`psm_bayes.inference.fit_svi`)."""
    import xarray as xr
    from tqdm.auto import tqdm

    spec = spec_of(model)
    _seed(seed)
    guide_cls = AutoNormal if guide == "normal" else AutoMultivariateNormal
    g = guide_cls(model, init_loc_fn=init_to_median)
    svi = SVI(model, g, pyro.optim.Adam({"lr": learning_rate}), Trace_ELBO())
    losses = np.empty(num_steps)
    for step in tqdm(range(num_steps), disable=not progress, desc="svi"):
        losses[step] = svi.step(data, priors)
    with torch.no_grad():
        draws = [g() for _ in range(num_draws)]
    latent = {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
    groups = _complete(model, data, priors, latent, 1, predictive)
    return build_datatree(spec, data, **groups, extra={"svi": {"loss": xr.DataArray(losses, dims=("step",))}},
                          attrs={"inference": f"svi-{guide}", "inference_library": "pyro", "seed": seed})


def log_density(model: Callable, data: Any, priors: Any, values: dict[str, Any]) -> float:
    """Log joint density of ``model`` at ``values`` (latent sites), in float64."""
    cond = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in values.items()}
    tr = poutine.trace(poutine.condition(model, cond)).get_trace(data, priors)
    return float(tr.log_prob_sum())


@_with_torch_threads
def prior_predictive(model: Callable, data: Any, *, seed: int, priors: Any = None, num_samples: int = 500) -> dict:
    """Prior and prior-predictive draws ``{site: (num_samples, ...)}`` (observed sites unobserved)."""
    spec = spec_of(model)
    _seed(seed)
    with torch.no_grad():
        out = Predictive(model, num_samples=num_samples)(spec.unobserve(data), priors)
    return {k: _np(v) for k, v in _own_shapes(model, spec.unobserve(data), priors, out).items()}

"""SBC driven by simuk (the ArviZ project's SBC library) for NumPyro models.

simuk runs NumPyro's ``MCMC`` on one NUTS kernel per replicate: it draws the
truth and the data from the model's prior predictive, fits each replicate and
ranks the true values. Its model must take the observed sites as keyword
arguments, so the psm-bayes model is wrapped: ``wrapped(y=None)`` runs
``model(unobserve(data), priors)`` conditioned on the given observations.

This path builds a new ``MCMC`` (and recompiles) per replicate, so it is slower
than :class:`~psm_bayes.sbc.kernels.NUTSKernel` (``benchmarks/bench_sbc.py``);
the package keeps it to cross-check the fast path's verdict on the same model.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.models.base import spec_of
from psm_bayes.sbc.config import SBCConfig


def simuk_model(model: Callable, data: Any, priors: Any = None) -> Callable:
    """``model`` as a NumPyro function of its observed sites (keyword arguments, default None)."""
    from numpyro import handlers

    spec = spec_of(model)
    free = spec.unobserve(data)

    def wrapped(**obs):
        given = {k: v for k, v in obs.items() if v is not None}
        return handlers.condition(model, data=given)(free, priors) if given else model(free, priors)

    wrapped.__signature__ = inspect.Signature(
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in spec.observed])
    wrapped.__name__ = f"{spec.name}_simuk"
    return wrapped


def run_simuk(model: Callable, data: Any, replicates: int, *, seed: int, priors: Any = None,
              config: SBCConfig | None = None, latents: Sequence[str] | None = None, progress: bool = False
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run :class:`simuk.SBC` on ``model`` and return what it drew and fitted.

    Parameters
    ----------
    model, data, priors, config, latents
        As in :func:`psm_bayes.sbc.run_sbc`. One chain per replicate (simuk
        ranks chain 0 only); ``num_draws * thin`` post-warm-up iterations
        thinned by ``thin``.
    replicates : int
    seed : int
        simuk's seed (its prior draws and fits).
    progress : bool

    Returns
    -------
    truth, samples, stats
        ``{name: (R, ...)}``, ``{name: (R, 1, L, ...)}`` and ``{"divergences": (R, 1)}``.
    """
    import simuk
    from numpyro.infer import NUTS

    config = config or SBCConfig()
    if config.num_chains != 1:
        raise ValueError(f"config.num_chains: simuk ranks one chain; expected 1, got {config.num_chains}")
    spec = spec_of(model)
    wrapped = simuk_model(model, data, priors)
    example = {k: np.asarray(v) for k, v in spec.observed_values(data).items()}
    kernel = NUTS(wrapped, target_accept_prob=config.target_accept, max_tree_depth=config.max_tree_depth)
    sbc = simuk.SBC(kernel, num_simulations=replicates, seed=seed, data_dir=example, progress_bar=progress,
                    sample_kwargs={"num_warmup": config.num_warmup, "num_samples": config.num_draws * config.thin,
                                   "thinning": config.thin, "num_chains": 1, "progress_bar": False})
    sbc.run_simulations()
    if len(sbc.posteriors) != replicates:
        raise RuntimeError(f"simuk finished {len(sbc.posteriors)} of {replicates} replicates (see its log)")
    names = list(latents) if latents is not None else [k for k in sbc.var_names if k not in spec.deterministic]
    truth = {k: np.asarray(sbc.ref_params[k])[:replicates] for k in names}
    samples = {k: np.stack([np.asarray(p[k].values) for p in sbc.posteriors]) for k in names}
    stats = {"divergences": np.zeros((replicates, 1))}
    return truth, samples, stats

"""Inference for any psm-bayes model: ``fit_nuts`` and ``fit_svi`` return ArviZ DataTrees.

The backend (NumPyro or Pyro) is read from the model's
:class:`~psm_bayes.models.base.ModelSpec` and looked up in
:mod:`psm_bayes.inference.backends`; nothing here imports a specific model.
Programs call :func:`configure_jax` (float64, host devices; optionally a
persistent compilation cache folder) at start; the NumPyro fit functions
call it too. Nothing runs at import time.

NumPyro NUTS compiles once per model structure and settings: later fits of
data with the same structure (new observed values, a resampled design of the
same sizes) reuse the compiled program, with the same draws a fresh
compilation gives (:mod:`psm_bayes.inference.compiled`,
:mod:`psm_bayes.inference.nuts`).
"""

from __future__ import annotations

from typing import Any, Callable

from psm_bayes.inference.backends import BACKENDS, check_backend, get_backend
from psm_bayes.inference.jax_config import configure_jax
from psm_bayes.models.base import spec_of

NUTS_INITS: tuple[str, ...] = ("median", "laplace")
"""Chain starts of :func:`fit_nuts` (``init``; :mod:`psm_bayes.inference.nuts`)."""

__all__ = ["fit_nuts", "fit_svi", "setup", "configure_jax", "get_backend", "BACKENDS"]


def setup(backend: str = "numpyro") -> None:
    """Configure ``backend`` for this process (for NumPyro: :func:`configure_jax`)."""
    if check_backend(backend) == "numpyro":
        configure_jax()


def _backend(model: Callable):
    return get_backend(spec_of(model).backend)


def fit_nuts(model: Callable, data: Any, *, seed: int, priors: Any = None, num_warmup: int = 500,
             num_samples: int = 500, num_chains: int = 2, target_accept: float = 0.8,
             max_tree_depth: int = 10, predictive: bool = True, progress: bool = False, init: str = "median"):
    """Fit ``model`` to ``data`` with NUTS.

    Parameters
    ----------
    model : callable
        A psm-bayes model (NumPyro or Pyro backend).
    data
        The model's data object (e.g. :class:`~psm_bayes.data.PSMData`).
    seed : int
        Same seed, same draws (bit for bit on the same machine, whether the
        compiled program is reused or not).
    priors : optional
        The model's priors object (default: its defaults).
    num_warmup, num_samples, num_chains : int
        Warm-up and kept draws per chain; number of chains.
    target_accept : float
        Target acceptance probability of step-size adaptation.
    max_tree_depth : int
        NUTS maximum tree depth.
    predictive : bool
        Also draw the posterior predictive and the deterministic sites.
    progress : bool
        Show a progress bar.
    init : {"median", "laplace"}
        ``"median"``: chains start at the prior median and warm-up adapts the
        mass matrix; ``"laplace"`` (NumPyro backend): chains start at draws
        from the Laplace approximation at the posterior mode, whose
        covariance is a fixed dense mass matrix (warm-up adapts the step
        size only; :mod:`psm_bayes.inference.nuts`).

    Returns
    -------
    xarray.DataTree
        Groups ``posterior`` (latents and deterministic sites),
        ``sample_stats`` (``diverging``, ``energy``, ``tree_depth``/``n_steps``,
        ``acceptance_rate``), ``log_likelihood`` (pointwise, for LOO),
        ``posterior_predictive``, ``observed_data``.
    """
    if num_samples < 1 or num_warmup < 0 or num_chains < 1:
        raise ValueError("num_samples >= 1, num_warmup >= 0 and num_chains >= 1 expected, got "
                         f"{num_samples}, {num_warmup}, {num_chains}")
    if init not in NUTS_INITS:
        raise ValueError(f"init: expected one of {NUTS_INITS}, got {init!r}")
    return _backend(model).fit_nuts(model, data, seed=seed, priors=priors, num_warmup=num_warmup,
                                    num_samples=num_samples, num_chains=num_chains,
                                    target_accept=target_accept, max_tree_depth=max_tree_depth,
                                    predictive=predictive, progress=progress, init=init)


def fit_svi(model: Callable, data: Any, *, seed: int, priors: Any = None, guide: str = "normal",
            num_steps: int = 2000, learning_rate: float = 0.02, num_draws: int = 1000,
            predictive: bool = True, progress: bool = False):
    """Fit ``model`` to ``data`` with stochastic variational inference.

    Parameters
    ----------
    model : callable
        A psm-bayes model (NumPyro or Pyro backend).
    data
        The model's data object.
    seed : int
        Same seed, same result.
    priors : optional
        The model's priors object.
    guide : {"normal", "mvn"}
        ``AutoNormal`` (mean field) or ``AutoMultivariateNormal``; both
        initialised at the prior median.
    num_steps : int
        Adam steps on the ELBO.
    learning_rate : float
        Adam learning rate.
    num_draws : int
        Draws from the fitted guide stored as one chain.
    predictive, progress : bool
        As in :func:`fit_nuts`.

    Returns
    -------
    xarray.DataTree
        As :func:`fit_nuts` (one chain, no ``sample_stats``), plus group
        ``svi`` with the ELBO loss trace ``loss`` (dim ``step``).
    """
    if guide not in ("normal", "mvn"):
        raise ValueError(f"guide: expected 'normal' or 'mvn', got {guide!r}")
    if num_steps < 1 or num_draws < 1:
        raise ValueError(f"num_steps and num_draws must be >= 1, got {num_steps}, {num_draws}")
    return _backend(model).fit_svi(model, data, seed=seed, priors=priors, guide=guide, num_steps=num_steps,
                                   learning_rate=learning_rate, num_draws=num_draws, predictive=predictive,
                                   progress=progress)

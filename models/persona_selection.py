"""The persona-selection model (PSM): backend-independent parts.

Generative story (one maths in :mod:`psm_bayes.models.maths`):

* ``prior_weights`` (pre-training prior over personas): given in the data,
  or ``~ Dirichlet(prior_weights_concentration)`` when the data has none;
* ``w ~ Dirichlet(concentration * prior_weights)``: post-training's assistant
  persona weights;
* ``beta_sft, beta_icl ~ LogNormal(beta_loc, beta_scale)``: evidence strengths
  (tempering exponents on the persona log-likelihoods of ``sft`` and ``icl``
  episodes);
* ``authorial_bias ~ Normal(0, bias_scale)``: one logit offset along
  ``bias_direction`` shared by every persona (only when the data has a
  ``bias_direction``);
* ``y[e] ~ Categorical(p_{source[e]}(. | item[e]))`` in plate ``episode``,
  marginalised over personas;
* ``p_item`` (deterministic, dims ``item, option``): the assistant's predicted
  answer distribution at ``beta = 1`` for every item (held-out items included).

Backends: :mod:`psm_bayes.models.persona_selection_numpyro` and
:mod:`psm_bayes.models.persona_selection_pyro`, same site names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from psm_bayes.data import Episodes, PSMData
from psm_bayes.models import maths

NAME = "persona_selection"
DIMS: dict[str, list[str]] = {
    "w": ["persona"],
    "prior_weights": ["persona"],
    "y": ["episode"],
    "p_item": ["item", "option"],
}
DETERMINISTIC: tuple[str, ...] = ("p_item",)
LATENTS: tuple[str, ...] = ("prior_weights", "w", "beta_sft", "beta_icl", "authorial_bias")


@dataclass(frozen=True)
class Priors:
    """Hyperparameters of :func:`persona_selection`.

    Parameters
    ----------
    concentration : float
        Dirichlet concentration of ``w`` around ``prior_weights``.
    prior_weights_concentration : float
        Symmetric Dirichlet hyperprior when ``prior_weights`` is latent.
    beta_loc, beta_scale : float
        LogNormal prior of ``beta_sft`` and ``beta_icl``.
    bias_scale : float
        Normal prior scale of ``authorial_bias``.
    """

    concentration: float = 20.0
    prior_weights_concentration: float = 1.0
    beta_loc: float = 0.0
    beta_scale: float = 0.5
    bias_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("concentration", "prior_weights_concentration", "beta_scale", "bias_scale"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"priors.{name}: expected a positive finite number, got {v!r}")
        if not np.isfinite(self.beta_loc):
            raise ValueError(f"priors.beta_loc: expected a finite number, got {self.beta_loc!r}")


def unobserve(data: PSMData) -> PSMData:
    """``data`` with the chosen options removed (prior / posterior predictive)."""
    return data.replace(episodes=data.episodes.without_options())


def observed_values(data: PSMData) -> dict[str, np.ndarray]:
    """Observed arrays per site."""
    return {} if data.episodes.option is None else {"y": data.episodes.option}


def with_observed(data: PSMData, values: dict) -> PSMData:
    """``data`` with the chosen options set to ``values["y"]`` (inverse of :func:`observed_values`)."""
    ep = data.episodes
    return data.replace(episodes=Episodes(ep.item, np.asarray(values["y"]), ep.source, ep.count))


def _draws(dt, name: str) -> np.ndarray | None:
    post = dt["posterior"]
    if name not in post:
        return None
    return post[name].values.reshape((-1,) + post[name].shape[2:])


def responsibilities(dt, data: PSMData) -> xr.DataArray:
    """Posterior responsibilities ``p(persona | episode, data)``.

    Averages ``w_k p(y_e | k) / sum_j w_j p(y_e | j)`` over posterior draws.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit of :func:`persona_selection` (posterior with ``w``, ``beta_*``).
    data : PSMData
        The data it was fitted to (options observed).

    Returns
    -------
    xarray.DataArray
        Dims ``(episode, persona)``; rows sum to one.
    """
    if data.episodes.option is None:
        raise ValueError("data.episodes.option: responsibilities need observed options")
    w, b_sft, b_icl, bias = (_draws(dt, n) for n in ("w", "beta_sft", "beta_icl", "authorial_bias"))
    L = data.loglik.array
    acc = np.zeros((len(data.episodes), data.n_personas))
    for s in range(w.shape[0]):
        lr = maths.episode_responsibilities(
            maths.NUMPY, np.log(w[s]), L, data.item_index, data.episodes.source_index, data.episodes.option,
            b_sft[s], b_icl[s], None if bias is None else bias[s], data.bias_direction)
        acc += np.exp(lr)
    return xr.DataArray(acc / w.shape[0], dims=("episode", "persona"),
                        coords={"persona": list(data.loglik.personas)}, name="responsibility")


def predictive(dt, data: PSMData, items: list[str] | None = None) -> xr.DataArray:
    """Posterior predictive ``p(option | item) = sum_k w_k p(option | item, k)``.

    Works for items outside the fitted data too: pass a ``data`` whose
    ``loglik`` holds the held-out items (same personas).

    Returns
    -------
    xarray.DataArray
        Dims ``(sample, item, option)`` of predicted probabilities per draw.
    """
    w, bias = _draws(dt, "w"), _draws(dt, "authorial_bias")
    L = data.loglik.values if items is None else data.loglik.values.sel(item=items)
    d = data.bias_direction
    if d is not None and items is not None:
        d = d[[data.loglik.items.index(i) for i in items]]
    out = np.stack([
        np.exp(maths.assistant_log_probs(maths.NUMPY, np.log(w[s]), L.values, 1.0,
                                         None if bias is None else bias[s], d))
        for s in range(w.shape[0])])
    return xr.DataArray(out, dims=("sample", "item", "option"),
                        coords={"item": L.coords["item"].values}, name="p_item")

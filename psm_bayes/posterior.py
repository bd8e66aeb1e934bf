"""Posterior summaries of fitted models, read from ArviZ DataTrees.

Layer: after inference (models never read fits). Every function takes a fit
(``xarray.DataTree``) and the data it was fitted to.

* ``persona_mixture``: :func:`responsibilities`, :func:`predictive`;
* SFT-shift models: :func:`predicted_vs_observed`, :func:`shift_correlation`;
* ``psm_joint``: :func:`beta_contrast`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from psm_bayes.data import PSMData
from psm_bayes.diagnostics import draws
from psm_bayes.models import maths
from psm_bayes.models.sft_shift import SFTShiftData
from psm_bayes.validation import fail


def _maybe(dt, name: str) -> np.ndarray | None:
    """Draws of an optional site (``None`` when the model had no such site, e.g. no bias direction)."""
    return draws(dt, name) if name in dt["posterior"].data_vars else None


def responsibilities(dt, data: PSMData) -> xr.DataArray:
    """Posterior responsibilities ``p(persona | episode, data)``.

    Averages ``w_k p(y_e | k) / sum_j w_j p(y_e | j)`` over posterior draws.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit of ``persona_mixture`` (posterior with ``w``, ``beta_*``).
    data : PSMData
        The data it was fitted to (options observed).

    Returns
    -------
    xarray.DataArray
        Dims ``(episode, persona)``; rows sum to one.
    """
    if data.episodes.option is None:
        raise ValueError("data.episodes.option: responsibilities need observed options")
    w, b_sft, b_icl, bias = (_maybe(dt, n) for n in ("w", "beta_sft", "beta_icl", "authorial_bias"))
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
    w, bias = draws(dt, "w"), _maybe(dt, "authorial_bias")
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


def predicted_vs_observed(dt, data: SFTShiftData, prob: float = 0.9, site: str = "shift") -> pd.DataFrame:
    """Per item: observed shift, posterior mean prediction and central intervals.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit of an SFT model (or the joint model) with ``shift_mean`` in the
        posterior and ``shift`` in the posterior predictive.
    data : SFTShiftData
        The data fitted (``shift`` observed).
    prob : float
        Interval mass (default 0.9, equal-tailed).
    site : str
        Observed site name (``"shift"``).

    Returns
    -------
    pandas.DataFrame
        Indexed by item: ``trait``, ``trained``, ``observed``, ``predicted``
        (posterior mean of ``shift_mean``), ``mean_lo``/``mean_hi``
        (interval of ``shift_mean``), ``pred_lo``/``pred_hi`` (interval of
        the posterior predictive, noise included).
    """
    if data.shift is None:
        fail("shift", "expected observed shifts to compare with")
    q = [(1 - prob) / 2, (1 + prob) / 2]
    mean = draws(dt, f"{site}_mean")
    rep = draws(dt, site, "posterior_predictive")
    mq, rq = np.quantile(mean, q, axis=0), np.quantile(rep, q, axis=0)
    return pd.DataFrame({"trait": data.trait, "trained": data.trained, "observed": data.shift,
                         "predicted": mean.mean(0), "mean_lo": mq[0], "mean_hi": mq[1],
                         "pred_lo": rq[0], "pred_hi": rq[1]}, index=pd.Index(data.item, name="item"))


def shift_correlation(dt, data: SFTShiftData, prob: float = 0.9) -> tuple[float, tuple[float, float]]:
    """Pearson correlation of predicted and observed shifts, over posterior draws.

    For each draw ``s``, ``r_s = corr(shift_mean[s, :], observed)``.

    Returns
    -------
    (float, (float, float))
        Posterior mean of ``r`` and its equal-tailed ``prob`` interval.
    """
    if data.shift is None:
        fail("shift", "expected observed shifts to correlate with")
    mean = draws(dt, "shift_mean")
    obs = data.shift - data.shift.mean()
    dev = mean - mean.mean(1, keepdims=True)
    denom = np.sqrt((dev ** 2).sum(1) * (obs ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dev @ obs) / denom
    lo, hi = np.nanquantile(r, [(1 - prob) / 2, (1 + prob) / 2])
    return float(np.nanmean(r)), (float(lo), float(hi))


def beta_contrast(dt, prob: float = 0.9):
    """Posterior of the evidence strengths and the shared bias from one ``psm_joint`` fit.

    ``beta_sft`` and ``beta_icl`` both temper a log-likelihood in nats (summed
    over training episodes or over shots), so their ratio compares how much
    one nat of fine-tuning evidence and one nat of in-context evidence move
    the persona weights.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit of ``psm_joint``.
    prob : float
        Equal-tailed interval mass.

    Returns
    -------
    pandas.DataFrame
        Rows ``beta_icl``, ``beta_sft``, ``authorial_bias``,
        ``log_beta_ratio`` (``log(beta_sft / beta_icl)``); columns ``mean``,
        ``sd``, ``lo``, ``hi``; ``attrs["p_sft_stronger"] = P(beta_sft >
        beta_icl)``.
    """
    x = {n: draws(dt, n) for n in ("beta_icl", "beta_sft", "authorial_bias")}
    x["log_beta_ratio"] = np.log(x["beta_sft"]) - np.log(x["beta_icl"])
    q = [(1 - prob) / 2, (1 + prob) / 2]
    table = pd.DataFrame({n: {"mean": v.mean(), "sd": v.std(), "lo": np.quantile(v, q[0]), "hi": np.quantile(v, q[1])}
                          for n, v in x.items()}).T
    table.attrs["p_sft_stronger"] = float(np.mean(x["beta_sft"] > x["beta_icl"]))
    return table

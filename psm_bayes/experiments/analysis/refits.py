"""Leave-one-item-out densities with the item's random effect integrated out, and exact refits.

Every model of the family gives each evaluation item a random effect
``item_sd * z_item`` shared by all its measurements, so an item's own
``z_item`` is learnt from the very measurements that are left out: PSIS-LOO
on the raw pointwise log-likelihood then has Pareto ``k > 0.7`` for most items.
The held-out item's effect is a *new* draw, so the right log-likelihood per
item and posterior draw ``theta_s`` is the integrated one

    log p(y_item | theta_s) = log integral prod_r p(y_r | m_r(theta_s) + item_sd_s z, sd_s) N(z | 0, 1) dz

(Vehtari, Mononen, Tolvanen, Sivula & Winther 2016, "Bayesian leave-one-out
cross-validation approximations for Gaussian latent variable models"),
computed by Gauss-Hermite quadrature centred and scaled on each item's
conditional posterior of ``z`` (:func:`integrated_item_loglik`). PSIS runs on
those terms; where ``k`` still exceeds 0.7 the model is refitted without the
item (:func:`exact_refit`) and the item's density is the posterior mean of the
same integral under the refit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psm_bayes.experiments.analysis.fitting import FitSettings, fit_with_refit

QUADRATURE_NODES = 24
"""Gauss-Hermite nodes per item and draw (adaptive: centred on the item's conditional posterior of ``z``)."""
MAX_REFIT_DRAWS = 400
"""Posterior draws of a refit used for the held-out density (evenly spaced)."""
_CHUNK_ELEMENTS = 8_000_000


def integrated_item_loglik(y: np.ndarray, mean: np.ndarray, item_sd: np.ndarray, sd: np.ndarray,
                           df: float | None, group: np.ndarray, n_groups: int) -> np.ndarray:
    """``log integral prod_{r in g} p(y_r | mean_r + item_sd z, sd) N(z | 0, 1) dz`` per draw and group.

    Parameters
    ----------
    y : array (row,)
        Observed log-odds.
    mean : array (draw, row)
        Each row's mean without the item effect.
    item_sd, sd : arrays (draw,)
        Item-effect sd and measurement scale.
    df : float or None
        Student-t degrees of freedom (None: Normal).
    group : array of int (row,)
        Group (item) of each row, in ``0 .. n_groups - 1``.

    Returns
    -------
    array (draw, group)
    """
    from numpy.polynomial.hermite_e import hermegauss
    from scipy import stats
    from scipy.special import logsumexp

    x, w = hermegauss(QUADRATURE_NODES)
    log_w = np.log(w / w.sum()) - stats.norm.logpdf(x)           # weights of integral f(x) dx
    onehot = np.eye(n_groups)[group]                                # (row, group)
    count = onehot.sum(0)
    S, R = mean.shape
    out = np.empty((S, n_groups))
    step = max(1, _CHUNK_ELEMENTS // (QUADRATURE_NODES * max(R, n_groups)))
    for a in range(0, S, step):
        m, a_sd, s_ = mean[a:a + step], item_sd[a:a + step, None], sd[a:a + step, None]
        # Normal approximation of z's conditional posterior per group: centre and (widened) scale
        prec = 1.0 + count[None] * (a_sd / s_) ** 2
        mu = (a_sd / s_ ** 2) * ((y[None] - m) @ onehot) / prec                    # (draw, group)
        scale = 1.5 / np.sqrt(prec)
        z = mu[:, None, :] + scale[:, None, :] * x[None, :, None]                  # (draw, node, group)
        loc = m[:, None, :] + a_sd[:, :, None] * z[:, :, group]                    # (draw, node, row)
        ll = _logpdf(y, loc, s_[:, :, None], df)
        summed = ll @ onehot                                                       # (draw, node, group)
        terms = summed + stats.norm.logpdf(z) + np.log(scale)[:, None, :] + log_w[None, :, None]
        out[a:a + step] = logsumexp(terms, axis=1)
    return out


def _logpdf(y: np.ndarray, loc: np.ndarray, scale: np.ndarray, df: float | None) -> np.ndarray:
    """Normal (``df`` None) or Student-t log density, written out: scipy's generic ``logpdf`` took 60 ns per
    element against 6 here (equal to 1e-15), and this is called on draws x nodes x rows (5e8 on the run's ICL data)."""
    from scipy.special import gammaln

    u = (y - loc) / scale
    if df is None:
        return -0.5 * u * u - np.log(scale) - 0.5 * np.log(2 * np.pi)
    const = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi)
    return const - np.log(scale) - (df + 1) / 2 * np.log1p(u * u / df)


def row_means(dt: Any, data: Any) -> np.ndarray:
    """Each measurement's mean without its item effect, ``logodds_mean - item_effect[item]``: (draw, row)."""
    post = dt["posterior"]
    flat = lambda k: np.asarray(post[k].values, dtype=float).reshape(-1, *post[k].shape[2:])  # noqa: E731
    _, pos = data.measured_items
    return flat("logodds_mean") - flat("item_effect")[:, pos]


def fit_item_loglik(dt: Any, data: Any, priors: Any) -> np.ndarray:
    """Integrated log-likelihood ``(chain, draw, measured item)`` of a fit, from its ``logodds_mean``.

    ``logodds_mean - item_effect`` is each row's mean without the item
    effect (:func:`row_means`); items are in the order of ``np.unique(data.measurement_item)``.
    """
    post = dt["posterior"]
    C, D = int(post.sizes["chain"]), int(post.sizes["draw"])
    uniq, pos = data.measured_items
    ll = integrated_item_loglik(np.asarray(data.logodds, float), row_means(dt, data),
                                np.asarray(post["item_sd"].values, dtype=float).reshape(-1),
                                np.asarray(post["logodds_sd"].values, dtype=float).reshape(-1),
                                priors.logodds_df, pos, uniq.size)
    return ll.reshape(C, D, uniq.size)


def loio_means(dt: Any, data: Any, item_ll: np.ndarray, exact: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-item-out predicted mean of every measurement (without the held-out item's own effect).

    Row ``r`` of item ``i``: ``E[mean_r | y without item i]``, the posterior mean of :func:`row_means`
    re-weighted by PSIS with item ``i``'s integrated log-likelihood ``item_ll`` (chain, draw, item) -- the
    same terms as the grouped cross-validation.  A held-out item's effect is a new draw with mean 0, so it
    is not in the prediction (it cancels in a contrast of one item).  ``exact`` maps an item (data index)
    to the predicted means of its rows from an exact refit without it (:func:`exact_refit`), used instead
    of PSIS where Pareto ``k`` > 0.7.

    Returns
    -------
    pred : array (row,)
    pareto_k : array (measured item,)
    """
    import xarray as xr

    uniq, pos = data.measured_items
    lw, k = xr.DataArray(np.asarray(item_ll, float), dims=("chain", "draw", "item")).azstats.psislw(
        r_eff=1.0, dim=["chain", "draw"])
    w = np.exp(lw.transpose("item", "chain", "draw").values.reshape(uniq.size, -1))      # (item, draw)
    means = row_means(dt, data)                                                          # (draw, row)
    pred = np.einsum("rs,sr->r", w[pos], means)
    for item, rows_pred in (exact or {}).items():
        pred[data.measurement_item == item] = rows_pred
    return pred, np.asarray(k.values, float)


def without_item(data: Any, item: int) -> Any:
    """``data`` with every measurement of ``item`` removed (the design is unchanged)."""
    keep = data.measurement_item != item
    if keep.all():
        raise ValueError(f"item: {item} has no measurement")
    return data.replace(measurement_condition=data.measurement_condition[keep],
                        measurement_item=data.measurement_item[keep], logodds=data.logodds[keep])


def heldout_elpd(name: str, data: Any, dt: Any, item: int, priors: Any) -> float:
    """``log p(y_item | y_rest)`` of model ``name`` from ``dt``, a fit to :func:`without_item` ``(data, item)``."""
    return heldout(name, data, dt, item, priors)[0]


def heldout(name: str, data: Any, dt: Any, item: int, priors: Any) -> tuple[float, np.ndarray]:
    """:func:`heldout_elpd` and the posterior mean of each of the item's rows' means without the item
    effect (the item's leave-one-item-out predictions, rows in data order).

    The rows' means at each draw come from the model run in numpy
    (:func:`psm_bayes.models.selection_simulate.log_probs_numpy`), the item
    effect is integrated (:func:`integrated_item_loglik`), then averaged over draws.
    """
    from scipy.special import logsumexp

    from psm_bayes.models.selection_simulate import log_probs_numpy

    rows = data.measurement_item == item
    y, cond = np.asarray(data.logodds, float)[rows], data.measurement_condition[rows]
    post = dt["posterior"]
    names = [k for k in post.data_vars if k not in ("item_effect", "logodds_mean")]
    flat = {k: np.asarray(post[k].values).reshape((-1,) + post[k].shape[2:]) for k in names}
    n = len(flat["logodds_sd"])
    match = int(data.matching_option[item])
    other = [o for o in range(data.loglik.shape[2]) if o != match]
    draws = np.unique(np.linspace(0, n - 1, min(n, MAX_REFIT_DRAWS)).round().astype(int))
    means = []
    for s in draws:
        lp = log_probs_numpy(name, data, {k: flat[k][s] for k in names}, priors)[cond, item]
        means.append(lp[:, match] - logsumexp(lp[:, other], axis=1))
    ll = integrated_item_loglik(y, np.stack(means), flat["item_sd"][draws].astype(float),
                                flat["logodds_sd"][draws].astype(float), priors.logodds_df,
                                np.zeros(y.size, dtype=int), 1)[:, 0]
    return float(logsumexp(ll) - np.log(ll.size)), np.stack(means).mean(0)


def exact_refit(name: str, data: Any, item: int, settings: FitSettings, seed: int, **kw: Any
                ) -> tuple[float, np.ndarray]:
    """Refit model ``name`` without ``item``: the item's held-out log predictive density and row predictions.

    ``kw`` goes to :func:`~psm_bayes.experiments.analysis.fitting.fit_with_refit` (e.g. ``on_refit``).
    """
    from psm_bayes.models import catalogue

    priors = settings.priors()
    dt = fit_with_refit(catalogue.model(name), without_item(data, item), settings, seed, priors=priors, **kw)
    return heldout(name, data, dt, item, priors)

"""Uncertainty that respects the design: a two-way cluster bootstrap over conditions and items.

A contrast, a correlation or a prediction error of the experiment is a
statistic of rows indexed by (condition, item).  Rows of one condition share
its drift (a LoRA run's or a shot sequence's Yes tendency moves every item
it is measured on), and rows of one item share the item's effect, so neither
the rows nor the items are independent: an item-level standard error treats
a handful of shared condition offsets as if each item had its own.

:func:`two_way_weights` resamples conditions and items *independently*
(Owen 2007, "The pigeonhole bootstrap"; Cameron, Gelbach & Miller 2011,
two-way clustering): in replicate ``b`` row ``(c, i)`` enters with weight
``n_c * n_i``, the number of times its condition and its item were drawn.
Every statistic here is a weighted statistic of the rows, so one weight
matrix serves them all.  The interval of a statistic is its estimate
``+/- t * se`` with ``se`` the sd over replicates and ``t`` the Student-t
quantile with ``min(conditions, items) - 1`` degrees of freedom (few
clusters: a percentile interval would be too short).  The test
``tests/test_criteria.py::test_two_way_bootstrap_covers_where_the_item_se_does_not``
shows on simulated contrasts with a shared per-condition offset that the
item-level interval covers too rarely and this one near nominal.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 1000
"""Bootstrap replicates of every reported interval."""
PROB = 0.9
"""Central probability of every reported interval."""
METHOD = ("two-way cluster bootstrap (conditions and items resampled independently, "
          f"{N_BOOT} replicates); interval: estimate +/- t(min(conditions, items) - 1) x bootstrap se")


def two_way_weights(conditions: np.ndarray, items: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0
                    ) -> np.ndarray:
    """``(n_boot, row)`` weights: ``n_c * n_i``, the draws of each row's condition and of its item.

    Parameters
    ----------
    conditions, items : array (row,)
        Cluster labels of each row (any hashable values; a condition cluster
        may be a tuple encoded as a string, e.g. ``"honesty/o0"``).
    n_boot : int
    seed : int
        Same seed, same replicates.
    """
    cond_u, cond = np.unique(np.asarray(conditions).astype(str), return_inverse=True)
    item_u, item = np.unique(np.asarray(items).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    wc = rng.multinomial(cond_u.size, np.full(cond_u.size, 1.0 / cond_u.size), size=n_boot)
    wi = rng.multinomial(item_u.size, np.full(item_u.size, 1.0 / item_u.size), size=n_boot)
    return (wc[:, cond] * wi[:, item]).astype(float)


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_r w[b, r] x[r] / sum_r w[b, r]`` per replicate (NaN where a replicate has no row)."""
    den = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (w @ np.asarray(x, float)) / np.where(den > 0, den, 1.0), np.nan)


def weighted_r(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation of ``x`` and ``y`` per replicate (NaN where undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    s, sx, sy = w.sum(-1), w @ x, w @ y
    cxy, cxx, cyy = s * (w @ (x * y)) - sx * sy, s * (w @ (x * x)) - sx ** 2, s * (w @ (y * y)) - sy ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cxy / np.sqrt(cxx * cyy)
    return np.where((cxx > 1e-12 * s ** 2) & (cyy > 1e-12 * s ** 2), r, np.nan)


def weighted_rmse(err: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Root mean squared ``err`` per replicate."""
    return np.sqrt(weighted_mean(np.asarray(err, float) ** 2, w))


def interval(estimate: float, reps: np.ndarray, n_conditions: int, n_items: int, prob: float = PROB,
             bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict:
    """``{estimate, se, lo, hi, prob, n_conditions, n_items, n_boot}`` (se: sd over finite replicates;
    ``lo`` and ``hi`` clipped to ``bounds``, e.g. [-1, 1] for a correlation)."""
    from scipy import stats

    reps = np.asarray(reps, float)
    ok = reps[np.isfinite(reps)]
    out = {"estimate": float(estimate), "se": float("nan"), "lo": None, "hi": None, "prob": prob,
           "n_conditions": int(n_conditions), "n_items": int(n_items), "n_boot": int(ok.size)}
    if ok.size < 2 or not np.isfinite(estimate):
        return out
    se = float(ok.std(ddof=1))
    t = float(stats.t.ppf((1 + prob) / 2, max(min(n_conditions, n_items) - 1, 1)))
    return out | {"se": se, "lo": float(max(estimate - t * se, bounds[0])),
                  "hi": float(min(estimate + t * se, bounds[1]))}


def _sizes(conditions: np.ndarray, items: np.ndarray) -> tuple[int, int]:
    return len(np.unique(np.asarray(conditions).astype(str))), len(np.unique(np.asarray(items).astype(str)))


def mean_interval(x: np.ndarray, conditions: np.ndarray, items: np.ndarray, *, seed: int = 0,
                  n_boot: int = N_BOOT, prob: float = PROB) -> dict:
    """The mean of ``x`` over rows with its two-way bootstrap se and interval (:func:`interval`) as ``mean``."""
    x = np.asarray(x, float)
    if x.size == 0:
        return {"mean": float("nan"), "se": float("nan"), "lo": None, "hi": None, "n_items": 0, "n_conditions": 0}
    w = two_way_weights(conditions, items, n_boot=n_boot, seed=seed)
    out = interval(float(x.mean()), weighted_mean(x, w), *_sizes(conditions, items), prob)
    out["mean"] = out.pop("estimate")
    return out


def prediction_intervals(obs: np.ndarray, preds: dict, conditions: np.ndarray, items: np.ndarray, *,
                         reference: str, seed: int = 0, n_boot: int = N_BOOT, prob: float = PROB) -> dict:
    """Out-of-sample prediction scores of several models on the same rows, with two-way bootstrap intervals.

    Parameters
    ----------
    obs : array (row,)
    preds : dict of str to array (row,)
        Each model's prediction of every row.
    conditions, items : array (row,)
        Cluster labels (:func:`two_way_weights`).
    reference : str
        The model every other is compared with (the PSM).

    Returns
    -------
    dict
        ``{model: {"r": interval, "rmse": interval, "rmse_minus_reference": interval}}``; the last is
        this model's RMSE minus the reference's, on the same replicates (positive: the reference
        predicts better).
    """
    obs = np.asarray(obs, float)
    w = two_way_weights(conditions, items, n_boot=n_boot, seed=seed)
    sizes = _sizes(conditions, items)
    rmse = {m: (float(np.sqrt(np.mean((np.asarray(p) - obs) ** 2))), weighted_rmse(np.asarray(p) - obs, w))
            for m, p in preds.items()}
    out = {}
    for m, p in preds.items():
        r_hat = weighted_r(p, obs, np.ones((1, obs.size)))[0]
        out[m] = {"r": interval(r_hat, weighted_r(p, obs, w), *sizes, prob, bounds=(-1.0, 1.0)),
                  "rmse": interval(rmse[m][0], rmse[m][1], *sizes, prob)}
        if m != reference and reference in rmse:
            out[m]["rmse_minus_reference"] = interval(rmse[m][0] - rmse[reference][0],
                                                      rmse[m][1] - rmse[reference][1], *sizes, prob)
    return out

"""Prior predictive checks, prior-data conflicts and power-scaling prior sensitivity of the fits to real data.

* :func:`prior_predictive_check` -- the model run forward in numpy
  (:func:`psm_bayes.models.selection_simulate.forward`) on the real design,
  ``draws`` times from the prior: the 90% interval of each group's mean
  log-odds (by shot count, pole, matching option...) against the observed mean.
  An observed mean outside it says the priors did not anticipate the data.
* :func:`prior_data_conflict` -- every parameter of every fit (PSM and
  nulls) whose posterior median lies outside the central 99% of its prior
  (:func:`prior_dist`, the family's priors written once here);
* :func:`power_scaling` -- :func:`arviz_stats.psense_summary` (Kallioinen et
  al. 2024): how much each main parameter's posterior moves when the prior or
  the likelihood is raised to a power near 1, from the fit's own draws (PSIS
  re-weighting, no refit).  The log prior of each draw is computed here from
  the family's :class:`~psm_bayes.models.selection.Priors` (every model-level
  prior; the item effects' standard-normal prior is part of the likelihood's
  hierarchy and is not scaled).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAIN = ("beta_icl", "beta_sft", "authorial_bias", "response_bias", "drift_sd", "same_trait_shift",
        "other_trait_shift", "profile_shift", "surface_shift", "generic_shift", "half_dose", "item_sd", "logodds_sd")
"""Model-level parameters of the family (those checked for sensitivity)."""


def interval_check(draws: np.ndarray, rows: pd.DataFrame, by: list[str], centre: str) -> list[dict]:
    """Observed mean log-odds per group of ``by`` against the 90% interval of the group mean of ``draws``.

    ``draws`` is (draw, row) over the measurement ``rows`` (in order; columns ``by`` and ``logodds``);
    each group's record holds ``observed``, ``centre`` (the draws' mean), ``lo``, ``hi``,
    ``outside_90`` and ``n``.
    """
    out = []
    for key, g in rows.reset_index(drop=True).groupby(by):
        idx = g.index.to_numpy()
        means = draws[:, idx].mean(1)
        lo, hi = np.quantile(means, [0.05, 0.95])
        obs = float(g["logodds"].mean())
        out.append(dict(zip(by, key if isinstance(key, tuple) else (key,)))
                   | {"observed": obs, centre: float(means.mean()), "lo": float(lo), "hi": float(hi),
                      "outside_90": bool(obs < lo or obs > hi), "n": int(len(idx))})
    return out


def prior_predictive_check(name: str, data: Any, rows: pd.DataFrame, by: list[str], priors: Any, *,
                           draws: int = 200, seed: int = 0) -> list[dict]:
    """Observed mean log-odds per group of ``by`` vs the 90% interval of the prior predictive group mean.

    ``rows`` are the measurement rows of ``data`` in order (columns ``by`` and ``logodds``).
    """
    from psm_bayes.models.selection_simulate import forward

    design = data.unobserve()
    sims = np.stack([forward(name, design, priors, seed=seed * 100_003 + s)["logodds"] for s in range(draws)])
    return interval_check(sims, rows, by, "prior_mean")


SHIFTS = ("same_trait_shift", "other_trait_shift", "profile_shift", "surface_shift", "generic_shift")
"""Null shift coefficients (prior ``Normal(0, shift_scale)``)."""
NOT_CHECKED = ("prior_weights", "item_effect", "logodds_mean", "drift", "persona_weight")
"""Posterior variables with no prior of their own here: per-persona / per-item / per-condition effects
(their Dirichlet / standard-normal priors are part of the hierarchy) and deterministic sites."""


def prior_dist(name: str, priors: Any) -> Any:
    """The prior of model-level parameter ``name`` (a frozen :mod:`scipy.stats` distribution), or None."""
    from scipy import stats

    lognormal = {"beta_icl": (priors.beta_loc, priors.beta_scale), "beta_sft": (priors.beta_loc, priors.beta_scale),
                 "half_dose": (priors.half_dose_loc, priors.half_dose_scale)}
    normal = {"authorial_bias": priors.bias_scale, "response_bias": priors.response_bias_scale}
    half = {"item_sd": priors.item_sd_scale, "logodds_sd": priors.logodds_sd_scale, "drift_sd": priors.drift_sd_scale}
    if name in lognormal:
        return stats.lognorm(s=lognormal[name][1], scale=np.exp(lognormal[name][0]))
    if name in normal or name in SHIFTS:
        return stats.norm(scale=normal.get(name, priors.shift_scale))
    if name in half:
        return stats.halfnorm(scale=half[name])
    return None


def log_prior(dt: Any, priors: Any) -> np.ndarray:
    """Log prior density ``(chain, draw)`` of every model-level parameter in the fit's posterior."""
    post = dt["posterior"]
    total = 0.0
    for k in post.data_vars:
        dist = prior_dist(k, priors)
        if dist is None:
            continue
        v = np.asarray(post[k].values, dtype=float)
        total = total + dist.logpdf(v).reshape(v.shape[0], v.shape[1], -1).sum(-1)
    return np.asarray(total)


def prior_data_conflict(fits: dict, priors: Any, tail: float = 0.005) -> list[dict]:
    """Every scalar or per-type parameter of every fit whose posterior median has prior CDF outside
    [``tail``, 1 - ``tail``].

    A posterior variable neither in :data:`NOT_CHECKED` nor with a prior here (:func:`prior_dist`) is listed
    with ``prior_quantile`` None (``no_prior_data_conflict`` is then not judged: nothing is skipped silently).
    """
    out = []
    for fit, dt in fits.items():
        post = dt["posterior"]
        for name in post.data_vars:
            if name in NOT_CHECKED:
                continue
            v, dist = np.asarray(post[name].values), prior_dist(name, priors)
            if dist is None or v.ndim > 3 or (v.ndim == 3 and post[name].dims[-1] != "condition_type"):
                out.append({"fit": fit, "parameter": name, "posterior_median": None, "prior_quantile": None})
                continue
            meds = np.median(v.reshape(v.shape[0] * v.shape[1], -1), axis=0)
            labels = ([str(c) for c in post[name].coords[post[name].dims[-1]].values] if v.ndim == 3 else [""])
            for med, lab in zip(meds, labels):
                q = float(dist.cdf(float(med)))
                if q < tail or q > 1 - tail:
                    out.append({"fit": fit, "parameter": name + (f"[{lab}]" if lab else ""),
                                "posterior_median": float(med), "prior_quantile": q})
    return out


def power_scaling(dt: Any, priors: Any, threshold: float = 0.05) -> list[dict]:
    """Prior and likelihood power-scaling sensitivity of the main parameters (:func:`arviz_stats.psense_summary`).

    Returns
    -------
    list of dict
        One per scalar parameter: ``parameter``, ``prior``, ``likelihood`` (sensitivities) and
        ``diagnosis`` (arviz_stats' wording: prior-data conflict, strong prior / weak likelihood, or ok).
    """
    import arviz as az
    from arviz_stats import psense_summary

    post = dt["posterior"]
    names = [k for k in MAIN if k in post.data_vars]
    ll = np.asarray(dt["log_likelihood"]["logodds"].values, dtype=float)
    pdict = {k: np.asarray(post[k].values) for k in names}
    dims = {k: [f"{k}_dim"] for k in names if pdict[k].ndim == 3}
    tree = az.from_dict({"posterior": pdict, "log_prior": {"lp": log_prior(dt, priors)},
                         "log_likelihood": {"logodds": ll}}, dims={**dims, "logodds": ["measurement"]})
    import logging

    log = logging.getLogger("arviz_stats.psense")   # its "we detected potential issues" note: the report says it
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        table = psense_summary(tree, var_names=names, threshold=threshold)
    finally:
        log.setLevel(level)
    out = []
    for label, row in table.iterrows():
        diag = str(row["diagnosis"])
        out.append({"parameter": str(label), "prior": float(row["prior"]), "likelihood": float(row["likelihood"]),
                    "diagnosis": "ok" if diag.strip() in ("✓", "") else diag})
    return out

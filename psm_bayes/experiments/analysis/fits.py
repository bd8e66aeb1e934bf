"""Stage 5 of the experiment: NUTS fits of the PSM and its nulls, compared by grouped cross-validation.

Every model of the persona-selection family (the PSM, the nulls of
:data:`NULLS` and, where the data have statement-text features, the
``encompassing`` model) is fitted to the same
:class:`~psm_bayes.models.selection.SelectionData` (:mod:`psm_bayes.experiments.analysis.evidence`);
every fit follows the convergence policy of :func:`fit_with_refit`.

Comparison (:func:`grouped_compare`): leave-one-item-out cross-validation.
The log-likelihood of every measurement of an evaluation item (all its
conditions: shot counts, poles, seeds, checkpoints) forms one term per item,
with the item's random effect integrated out (a held-out item's effect is a
new draw; :mod:`psm_bayes.experiments.analysis.refits`), and PSIS-LOO runs on those item terms -- an item is held out
with all its conditions, so the nested shot prefixes and repeated conditions
of an item never sit on both sides.  Items whose Pareto ``k`` exceeds 0.7 are
counted (``pareto_k_bad``): PSIS is unreliable for them, so (with
``FitSettings.exact_refits``) the model is refitted without the item and its
held-out density computed exactly (:mod:`psm_bayes.experiments.analysis.refits`).
The same item terms give the stacking weights (arviz_stats ``compare(method="stacking")``)
and the leave-one-item-out predictions of every row (:func:`psm_bayes.experiments.analysis.refits.loio_means`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from psm_bayes.experiments.analysis.fitting import (CV_METHOD, ENCOMPASSING, PARETO_K_BAD, PSM, FitSettings,
                                                    fit_with_refit)
from psm_bayes.experiments.analysis.refits import exact_refit, fit_item_loglik, loio_means
from psm_bayes.experiments.stagelog import StageLog


def grouped_loo(dt: Any, groups: np.ndarray, loglik: np.ndarray | None = None) -> dict:
    """PSIS-LOO with one term per group: ``loglik`` (chain, draw, group), else ``logodds`` summed within ``groups``.

    Returns
    -------
    dict
        ``elpd``, ``se``, ``elpd_i`` (per group, in ``np.unique(groups)`` order), ``pareto_k``,
        ``pareto_k_bad`` (count of k > 0.7), ``groups``.
    """
    import arviz as az

    uniq, inv = np.unique(groups, return_inverse=True)
    if loglik is None:
        ll = np.asarray(dt["log_likelihood"]["logodds"].values)            # (chain, draw, measurement)
        summed = np.zeros(ll.shape[:2] + (uniq.size,))
        np.add.at(summed, (slice(None), slice(None), inv), ll)
    else:
        summed = np.asarray(loglik, dtype=float)
        if summed.shape[-1] != uniq.size:
            raise ValueError(f"loglik: expected {uniq.size} groups on the last axis, got shape {summed.shape}")
    post = {"logodds_sd": np.asarray(dt["posterior"]["logodds_sd"].values)}
    res = az.loo(az.from_dict({"posterior": post, "log_likelihood": {"logodds": summed}},
                              dims={"logodds": ["group"]}), pointwise=True)
    k = np.asarray(res.pareto_k).ravel()
    elpd_i = np.asarray(res.elpd_i).ravel()
    return {"elpd": float(res.elpd), "se": float(res.se), "elpd_i": elpd_i, "pareto_k": k,
            "pareto_k_bad": int((k > PARETO_K_BAD).sum()), "groups": uniq}


def grouped_compare(fits: dict, groups: np.ndarray, refit: Any = None, loglik: dict | None = None) -> dict:
    """``{"method", "rows": {model: {elpd, se, elpd_diff, dse, psm_minus, psm_minus_se, pareto_k_bad}}}``.

    ``elpd_diff`` / ``dse``: behind the best model (paired over items); ``psm_minus`` / ``psm_minus_se``:
    the PSM's elpd minus this model's (positive: PSM predicts held-out items better).  ``refit(model,
    group)``, when given, returns the exact held-out elpd of a group whose Pareto k exceeds 0.7; it
    replaces the PSIS value (``exact_refits`` counts them per model).  ``loglik`` maps a model to its
    per-group log-likelihood (chain, draw, group), e.g. with the item effect integrated out
    (:func:`psm_bayes.experiments.analysis.refits.fit_item_loglik`); default: the pointwise values summed.
    """
    loglik = loglik or {}
    loo = {n: grouped_loo(dt, groups, loglik.get(n)) for n, dt in fits.items()}
    for n, r in loo.items():
        bad = np.flatnonzero(r["pareto_k"] > PARETO_K_BAD) if refit is not None else []
        for j in bad:
            r["elpd_i"][j] = refit(n, r["groups"][j])
        r["exact_refits"] = len(bad)
        if len(bad):
            r["elpd"] = float(r["elpd_i"].sum())
            r["se"] = float(np.sqrt(len(r["elpd_i"])) * r["elpd_i"].std())
    best = max(loo, key=lambda n: loo[n]["elpd"])
    n_groups = len(loo[best]["elpd_i"])
    weights = stacking_weights({n: r["elpd_i"] for n, r in loo.items()})
    rows = {}
    for n, r in loo.items():
        d_best = loo[best]["elpd_i"] - r["elpd_i"]
        row = {"elpd": r["elpd"], "se": r["se"], "elpd_diff": float(d_best.sum()),
               "dse": float(np.sqrt(n_groups) * d_best.std()), "pareto_k_bad": r["pareto_k_bad"],
               "exact_refits": r["exact_refits"], "stacking_weight": weights[n],
               "max_pareto_k": float(r["pareto_k"].max())}
        if PSM in loo:
            d = loo[PSM]["elpd_i"] - r["elpd_i"]
            row.update(psm_minus=float(d.sum()), psm_minus_se=float(np.sqrt(n_groups) * d.std()))
        rows[n] = row
    return {"method": CV_METHOD, "n_groups": int(n_groups), "best": best, "rows": rows,
            "pareto_k": {n: r["pareto_k"].tolist() for n, r in loo.items()},
            "groups": [str(g) for g in loo[best]["groups"]]}


def stacking_weights(elpd_i: dict) -> dict:
    """Stacking weights of models from their pointwise (per item) held-out log densities.

    arviz_stats ``compare(method="stacking")`` (Yao, Vehtari, Simpson & Gelman 2018) on the
    item terms of :func:`grouped_compare` (exact refits included); one model gets weight 1.
    """
    import xarray as xr
    from arviz_stats import compare
    from arviz_stats.utils import ELPDData

    if len(elpd_i) < 2:
        return {n: 1.0 for n in elpd_i}
    data = {n: ELPDData(elpd=float(np.sum(v)), se=float(np.sqrt(len(v)) * np.std(v)), p=0.0, n_samples=1,
                        n_data_points=len(v), scale="log", warning=False, good_k=PARETO_K_BAD,
                        elpd_i=xr.DataArray(np.asarray(v, float), dims=["group"]))
            for n, v in elpd_i.items()}
    table = compare(data, method="stacking", round_to="none")
    return {n: float(table.loc[n, "weight"]) for n in elpd_i}


@dataclass(frozen=True)
class FitStage:
    """Output of :func:`fit_models` for one language model.

    Attributes
    ----------
    fits : dict of str to xarray.DataTree
        ``"<dataset>/<model>"`` (datasets ``icl``, ``sft``, ``joint``).
    compare : dict
        ``{"icl": grouped_compare(...), "sft": ...}``.
    models : tuple of str
        Models compared (PSM first, then the nulls, then ``encompassing`` when fitted).
    loio : dict of str to numpy.ndarray
        ``"<dataset>/<model>"`` (``icl``, ``sft``) -> leave-one-item-out predicted mean of every
        measurement row (:func:`psm_bayes.experiments.analysis.refits.loio_means`; exact refits where Pareto k > 0.7).
    """

    fits: dict
    compare: dict
    models: tuple[str, ...]
    loio: dict = field(default_factory=dict)


def fit_models(datasets: Any, settings: FitSettings, models: tuple[str, ...], seed: int = 0,
               log: StageLog | None = None, prefix: str = "") -> FitStage:
    """Fit ``models`` (and ``encompassing`` where the data have a surface kernel) to the ICL and SFT data,
    and ``models`` to the joint data (every null predicts the cross conditions).

    Parameters
    ----------
    datasets : Datasets
    settings : FitSettings
    models : tuple of str
        Catalogue names (the PSM and the nulls to compare).
    seed : int
        Base seed; fit ``j`` of a dataset uses ``seed + 100 d + j``.
    log : StageLog, optional
    prefix : str
        Stage-name prefix in the log (e.g. the language model).
    """
    from psm_bayes.models import catalogue

    log = log or StageLog()
    priors = settings.priors()
    models = tuple(models)
    compared = models + ((ENCOMPASSING,) if ENCOMPASSING not in models
                         and datasets.icl.surface_similarity is not None else ())
    fits, compare, loio = {}, {}, {}
    plan = [("icl", datasets.icl, compared), ("sft", datasets.sft, compared)]
    plan += [("joint", datasets.joint, models)] if settings.joint else []

    def fit(m: str, data: Any, s: int, tag: str) -> Any:
        log.stage(tag)
        dt = fit_with_refit(catalogue.model(m), data, settings, s, on_refit=lambda msg: log.note(f"{tag}: {msg}"),
                            priors=priors)
        log.done(tag)
        return dt

    for d, (name, data, names) in enumerate(plan):
        for j, m in enumerate(names):
            fits[f"{name}/{m}"] = fit(m, data, seed + 100 * d + j, f"{prefix}NUTS {name}/{m}")
        if name == "joint":
            continue
        exact: dict = {m: {} for m in names}

        def refit(m: str, item: int, data=data, d=d, tag=name) -> float:
            label = f"{prefix}exact refit {tag}/{m} without item {item}"
            log.stage(label)
            elpd, pred = exact_refit(m, data, int(item), settings, seed + 100 * d + 50 + int(item),
                                     on_refit=lambda msg: log.note(f"{label}: {msg}"))
            log.done(label)
            exact[m][int(item)] = pred
            return elpd
        ll = {m: fit_item_loglik(fits[f"{name}/{m}"], data, priors) for m in names}
        compare[name] = grouped_compare({m: fits[f"{name}/{m}"] for m in names}, data.measurement_item,
                                        refit if settings.exact_refits else None, ll)
        for m in names:
            loio[f"{name}/{m}"] = loio_means(fits[f"{name}/{m}"], data, ll[m], exact[m])[0]
    return FitStage(fits, compare, compared, loio)

"""Stage 5 of the experiment: NUTS fits of the PSM and its nulls, compared by grouped cross-validation.

Every model of the persona-selection family (catalogue names
``persona_selection``, ``response_bias``, ``trait_indicator``,
``similarity``, ``permuted_personas``) is fitted to the same
:class:`~psm_bayes.models.selection.SelectionData` (:mod:`psm_bayes.experiments.evidence`).

Comparison (:func:`grouped_compare`): leave-one-item-out cross-validation.
The log-likelihood of every measurement of an evaluation item (all its
conditions: shot counts, poles, seeds, checkpoints) forms one term per item,
with the item's random effect integrated out (a held-out item's effect is a
new draw; :mod:`psm_bayes.experiments.refits`), and PSIS-LOO runs on those item terms -- an item is held out
with all its conditions, so the nested shot prefixes and repeated conditions
of an item never sit on both sides.  Items whose Pareto ``k`` exceeds 0.7 are
counted (``pareto_k_bad``): PSIS is unreliable for them, so (with
``FitSettings.exact_refits``) the model is refitted without the item and its
held-out density computed exactly (:mod:`psm_bayes.experiments.refits`).

:func:`prior_data_conflict` names every scalar parameter whose posterior
median lies outside the central 99% of its prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from psm_bayes.experiments.stagelog import StageLog

PSM = "persona_selection"
NULLS: tuple[str, ...] = ("response_bias", "trait_indicator", "similarity", "permuted_personas")
PARETO_K_BAD = 0.7
CV_METHOD = ("leave-one-item-out cross-validation: log-likelihood of all conditions of an evaluation item with "
             "the item's random effect integrated out (adaptive Gauss-Hermite); PSIS-LOO, with an exact refit "
             f"without the item wherever Pareto k > {PARETO_K_BAD} (pareto_k_bad counts those items, "
             "exact_refits the refits made)")


@dataclass(frozen=True)
class FitSettings:
    """NUTS settings of every fit.

    Parameters
    ----------
    num_warmup, num_samples, num_chains : int
    target_accept : float
    refit_unconverged : bool
        Refit once (2x warm-up and draws, ``target_accept`` 0.95) when max
        R-hat >= 1.01 or min bulk ESS < 100 per chain.
    saved_loglik_draws, saved_predictive_draws : int
        Draws (all chains together) kept in the saved ``fits/*.nc`` for the
        pointwise log-likelihood and the posterior predictive
        (:func:`psm_bayes.experiments.outputs.compact_fit`); the report's
        numbers use every draw.
    logodds_df : float, optional
        Student-t degrees of freedom of the observed log-odds (``None``: Normal).
    exact_refits : bool
        Refit without each item whose Pareto ``k`` exceeds 0.7 in the
        grouped cross-validation (:mod:`psm_bayes.experiments.refits`).
    """

    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 2
    target_accept: float = 0.9
    refit_unconverged: bool = True
    saved_loglik_draws: int = 500
    saved_predictive_draws: int = 100
    logodds_df: float | None = 5.0
    exact_refits: bool = True

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_chains"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        for name in ("num_warmup", "saved_loglik_draws", "saved_predictive_draws"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)!r}")
        if not 0.5 <= float(self.target_accept) < 1:
            raise ValueError(f"target_accept: expected in [0.5, 1), got {self.target_accept!r}")
        if self.logodds_df is not None and not self.logodds_df > 0:
            raise ValueError(f"logodds_df: expected > 0 or None, got {self.logodds_df!r}")

    @property
    def nuts(self) -> dict:
        """Keyword arguments of :func:`psm_bayes.inference.fit_nuts` (without the seed)."""
        return {"num_warmup": self.num_warmup, "num_samples": self.num_samples, "num_chains": self.num_chains,
                "target_accept": self.target_accept}

    def priors(self) -> Any:
        """The family's :class:`~psm_bayes.models.selection.Priors` (Student-t observations)."""
        from psm_bayes.models.selection import Priors

        return Priors(logodds_df=self.logodds_df)


def fit_with_refit(model: Any, data: Any, settings: FitSettings, seed: int, **kw: Any) -> Any:
    """NUTS with ``settings``; one refit (seed + 1000, 2x warm-up and draws, target_accept 0.95) if unconverged."""
    from psm_bayes.inference import fit_nuts

    dt = fit_nuts(model, data, seed=seed, **settings.nuts, **kw)
    if settings.refit_unconverged:
        d = fit_diagnostics(dt)
        if d["max_rhat"] >= 1.01 or d["min_ess_bulk"] < 100 * settings.num_chains:
            first = {k: d[k] for k in ("max_rhat", "min_ess_bulk", "divergences")}
            dt = fit_nuts(model, data, seed=seed + 1000, num_warmup=2 * settings.num_warmup,
                          num_samples=2 * settings.num_samples, num_chains=settings.num_chains,
                          target_accept=max(settings.target_accept, 0.95), **kw)
            dt.attrs["refit"] = 1
            dt.attrs["first_fit"] = str(first)
    return dt


def fit_diagnostics(dt: Any) -> dict:
    """``max_rhat``, ``min_ess_bulk``, ``divergences`` and ``ok`` of a fit (latent sites)."""
    from psm_bayes.diagnostics import check

    v = check(dt)
    post = dt["posterior"]
    return {"max_rhat": float(v.max_rhat), "min_ess_bulk": float(v.min_ess_bulk), "divergences": int(v.divergences),
            "ok": bool(v.ok), "problems": list(v.problems),
            "chains": int(post.sizes.get("chain", 1)), "draws": int(post.sizes.get("draw", 0)),
            "refit": bool(dt.attrs.get("refit", 0)), "first_fit": str(dt.attrs.get("first_fit", ""))}


def posterior_summary(dt: Any, name: str, prob: float = 0.9) -> dict:
    """Mean, sd and central ``prob`` interval of a scalar posterior variable."""
    x = np.asarray(dt["posterior"][name].values).ravel()
    lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": float(x.mean()), "sd": float(x.std()), "lo": float(lo), "hi": float(hi), "prob": prob}


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
    (:func:`psm_bayes.experiments.refits.fit_item_loglik`); default: the pointwise values summed.
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
    rows = {}
    for n, r in loo.items():
        d_best = loo[best]["elpd_i"] - r["elpd_i"]
        row = {"elpd": r["elpd"], "se": r["se"], "elpd_diff": float(d_best.sum()),
               "dse": float(np.sqrt(n_groups) * d_best.std()), "pareto_k_bad": r["pareto_k_bad"],
               "exact_refits": r["exact_refits"],
               "max_pareto_k": float(r["pareto_k"].max())}
        if PSM in loo:
            d = loo[PSM]["elpd_i"] - r["elpd_i"]
            row.update(psm_minus=float(d.sum()), psm_minus_se=float(np.sqrt(n_groups) * d.std()))
        rows[n] = row
    return {"method": CV_METHOD, "n_groups": int(n_groups), "best": best, "rows": rows,
            "pareto_k": {n: r["pareto_k"].tolist() for n, r in loo.items()},
            "groups": [str(g) for g in loo[best]["groups"]]}


def _prior_cdf(name: str, x: float, pr: Any) -> float | None:
    from scipy import stats

    if name in ("beta_sft", "beta_icl"):
        return float(stats.lognorm.cdf(x, s=pr.beta_scale, scale=np.exp(pr.beta_loc)))
    if name == "half_dose":
        return float(stats.lognorm.cdf(x, s=pr.half_dose_scale, scale=np.exp(pr.half_dose_loc)))
    scales = {"response_bias": pr.response_bias_scale, "authorial_bias": pr.bias_scale,
              "same_trait_shift": pr.shift_scale, "other_trait_shift": pr.shift_scale,
              "similarity_shift": pr.shift_scale}
    if name in scales:
        return float(stats.norm.cdf(x, scale=scales[name]))
    half = {"item_sd": pr.item_sd_scale, "logodds_sd": pr.logodds_sd_scale}
    if name in half:
        return float(stats.halfnorm.cdf(x, scale=half[name]))
    return None


def prior_data_conflict(fits: dict, priors: Any, tail: float = 0.005) -> list[dict]:
    """Every scalar (or per-type) parameter whose posterior median has prior CDF < ``tail`` or > 1 - ``tail``."""
    out = []
    for fit, dt in fits.items():
        post = dt["posterior"]
        for name in post.data_vars:
            v = np.asarray(post[name].values)
            if v.ndim > 3 or (v.ndim == 3 and name != "response_bias"):
                continue
            meds = np.median(v.reshape(v.shape[0] * v.shape[1], -1), axis=0)
            labels = ([str(c) for c in post[name].coords[post[name].dims[-1]].values] if v.ndim == 3 else [""])
            for med, lab in zip(meds, labels):
                q = _prior_cdf(name, float(med), priors)
                if q is not None and (q < tail or q > 1 - tail):
                    out.append({"fit": fit, "parameter": name + (f"[{lab}]" if lab else ""),
                                "posterior_median": float(med), "prior_quantile": q})
    return out


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
        Models compared (PSM first).
    """

    fits: dict
    compare: dict
    models: tuple[str, ...]


def fit_models(datasets: Any, settings: FitSettings, models: tuple[str, ...], seed: int = 0,
               log: StageLog | None = None, prefix: str = "") -> FitStage:
    """Fit ``models`` to the ICL and SFT data, and the PSM and ``response_bias`` to the joint data.

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
    fits, compare = {}, {}
    plan = [("icl", datasets.icl, models), ("sft", datasets.sft, models),
            ("joint", datasets.joint, tuple(m for m in (PSM, "response_bias") if m in models))]
    for d, (name, data, names) in enumerate(plan):
        for j, m in enumerate(names):
            log.stage(f"{prefix}NUTS {name}/{m}")
            fits[f"{name}/{m}"] = fit_with_refit(catalogue.model(m), data, settings, seed + 100 * d + j,
                                                 priors=priors)
            log.done(f"{prefix}NUTS {name}/{m}")
        if name != "joint":
            from psm_bayes.experiments.refits import fit_item_loglik

            refit = None
            if settings.exact_refits:
                from psm_bayes.experiments.refits import exact_refit

                def refit(m: str, item: int, data=data, d=d, tag=name) -> float:
                    log.stage(f"{prefix}exact refit {tag}/{m} without item {item}")
                    out = exact_refit(m, data, int(item), settings, seed + 100 * d + 50 + int(item))
                    log.done(f"{prefix}exact refit {tag}/{m} without item {item}")
                    return out
            ll = {m: fit_item_loglik(fits[f"{name}/{m}"], data, priors) for m in names}
            compare[name] = grouped_compare({m: fits[f"{name}/{m}"] for m in names}, data.measurement_item, refit,
                                            ll)
    return FitStage(fits, compare, tuple(models))

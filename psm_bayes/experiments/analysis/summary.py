"""Stage 6a of the experiment: the statistics of the report (no plotting, no files).

:func:`model_summary` turns one language model's stage outputs into its
``results["models"][name]`` block: design and label balance, persona
separation, ICL and SFT contrasts (the bias-cancelling primary observable)
with two-way (condition x item) bootstrap uncertainty (:mod:`psm_bayes.experiments.analysis.bootstrap`),
the grouped-CV comparisons with stacking weights, the out-of-sample predictions
(:mod:`psm_bayes.experiments.analysis.predictive`), posterior summaries (the encompassing model's
``persona_weight``), predictive checks, prior-data conflicts of every fit and the diagnostics
with every refit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.analysis.checks import interval_check, power_scaling, prior_data_conflict, prior_predictive_check
from psm_bayes.experiments.analysis.curves import icl_views
from psm_bayes.experiments.analysis.bootstrap import mean_interval
from psm_bayes.experiments.analysis.fitting import ENCOMPASSING, PSM, fit_diagnostics, posterior_summary
from psm_bayes.experiments.analysis.predictive import (contrast_prediction, cross_prediction, half_max_shots, lora_cluster,
                                              sequence_cluster)


def mean_se(x: np.ndarray) -> dict:
    """Mean, standard error and count."""
    x = np.asarray(x, dtype=float)
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return {"mean": float(x.mean()) if x.size else float("nan"), "se": se, "n_items": int(x.size)}


def contrast_table(contrasts: pd.DataFrame, by: list[str], cluster: Any, seed: int = 0) -> list[dict]:
    """Mean of ``contrast`` per group of ``by``, with a two-way (condition x item) bootstrap se and 90% interval.

    ``cluster(rows)`` gives each row's condition cluster (:func:`~psm_bayes.experiments.analysis.predictive.sequence_cluster`
    for ICL, :func:`~psm_bayes.experiments.analysis.predictive.lora_cluster` for SFT); ``se_items`` is the
    item-only se (items treated as independent, each item's rows averaged first) for comparison.
    """
    out = []
    for key, g in contrasts.groupby(by):
        iv = mean_interval(g["contrast"].to_numpy(float), cluster(g), g["item"].to_numpy(), seed=seed)
        naive = mean_se(g.groupby("item")["contrast"].mean().to_numpy())
        iv = {k: iv[k] for k in ("mean", "se", "lo", "hi", "n_items", "n_conditions")}
        out.append(dict(zip(by, key if isinstance(key, tuple) else (key,))) | iv | {"se_items": naive["se"]})
    return out


def sft_contrasts(meas: pd.DataFrame) -> pd.DataFrame:
    """Per (SFT trait, seed, step, item): log-odds after the ``+`` fine-tune minus after the ``-`` fine-tune.

    ``same_trait`` marks items of the trait fine-tuned; the other rows are cross-trait (trained on
    ``sft_trait``, measured on ``item_trait``).
    """
    sft = meas[meas["kind"] == "sft"]
    wide = sft.pivot_table(index=["sft_trait", "seed", "step", "item", "item_id", "item_trait"], columns="pole",
                           values="logodds").reset_index()
    wide["contrast"] = wide["+"] - wide["-"]
    wide["same_trait"] = wide["item_trait"] == wide["sft_trait"]
    wide.columns.name = None
    return wide.rename(columns={"+": "plus", "-": "minus"})


def predictive_check(dt: Any, rows: pd.DataFrame, by: list[str]) -> list[dict]:
    """Observed vs posterior-predicted mean log-odds (90% interval of the group mean) per group of ``by``."""
    mean = np.asarray(dt["posterior"]["logodds_mean"].values)
    return interval_check(mean.reshape(-1, mean.shape[-1]), rows, by, "predicted")


def separation_summary(personas: Any) -> dict:
    """Per persona form: separation by trait, means and the EM prior (``persona_separation``)."""
    ids = personas.personas.ids
    out = {}
    for mode, sep in personas.separation.items():
        prior = personas.mode_priors[mode]
        out[mode] = {"by_trait": {t: {k: float(v) for k, v in row.items()} for t, row in sep.iterrows()},
                     "mean_separation": float(sep["separation"].mean()),
                     "prior": dict(zip(ids, map(float, prior))),
                     "prior_max_over_min": float(np.max(prior) / np.min(prior))}
    return out


def model_summary(cfg: Any, loaded_info: dict, design: Any, personas: Any, icl: Any, sft: Any, datasets: Any,
                  fitted: Any) -> dict:
    """One language model's results block (see the module docstring)."""
    f = fitted.fits
    priors = cfg.fit.priors()
    ic = icl.contrasts
    n_max = max(design.n_values)
    at_max = ic[(ic["n_shots"] == n_max) & ic["same_trait"]]
    sc = sft_contrasts(sft.measurements)
    icl_rows = datasets.rows["icl"]
    diagnostics = {}
    for name, dt in f.items():
        d = fit_diagnostics(dt)
        which = name.split("/")[0]
        if which in fitted.compare:
            row = fitted.compare[which]["rows"][name.split("/")[1]]
            d["pareto_k_bad"] = row["pareto_k_bad"]
            d["exact_refits"] = row.get("exact_refits", 0)
        diagnostics[name] = d
    trained = sft.trained_measurements.assign(shift=lambda t: t["logodds"] - t["before"])
    betas = {name: {b: posterior_summary(f[name], b) for b in ("beta_icl", "beta_sft") if b in f[name]["posterior"]}
             for name in f if name.endswith(PSM)}
    return {
        "model": dict(loaded_info),
        "criteria_se": cfg.criteria_se,
        "design": {"label_balance": design.label_balance(),
                   "roles": {k: int(len(v)) for k, v in design.roles().items()},
                   "sft_traits": list(design.sft_traits), "n_values": list(design.n_values)},
        "sizes": {"personas": len(personas.personas), "table_items": int(len(design.table_idx)),
                  "icl_measurements": int(len(icl_rows)), "sft_measurements": int(len(datasets.rows["sft"])),
                  "conditions_icl": datasets.icl.n_conditions, "conditions_sft": datasets.sft.n_conditions},
        "prior": {"weights": dict(zip(personas.personas.ids, map(float, personas.prior_weights))),
                  "em_iterations": personas.em.n_iter, "em_converged": personas.em.converged,
                  "fitted_on": "neutral answers to the prior items only"},
        "persona_separation": separation_summary(personas),
        "icl": {"contrast": contrast_table(ic, ["n_shots", "same_trait"], sequence_cluster, cfg.seed),
                "contrast_by_trait": contrast_table(ic[ic["same_trait"]], ["shot_trait", "n_shots"],
                                                    sequence_cluster, cfg.seed),
                "contrast_at_max_shots": (contrast_table(at_max.assign(at="max"), ["at"], sequence_cluster, cfg.seed)
                                          or [mean_interval(np.zeros(0), [], [])])[0] | {"n_shots": int(n_max)},
                "half_max_shots": half_max_shots(ic, seed=cfg.seed),
                "compare": fitted.compare["icl"],
                "contrast_prediction": contrast_prediction(icl_rows, fitted.loio, fitted.models, seed=cfg.seed),
                "predictive_check": {m: predictive_check(f[f"icl/{m}"], icl_rows, ["n_shots", "pole", "matching"])
                                     for m in fitted.models},
                "prior_predictive_check": {m: prior_predictive_check(m, datasets.icl, icl_rows,
                                                                     ["n_shots", "pole", "matching"], priors,
                                                                     seed=cfg.seed)
                                           for m in fitted.models},
                **icl_views(cfg, design, personas, icl, datasets, fitted)},   # curves, q(k | context), table vs ICL
        "sft": {"contrast": contrast_table(sc, ["step", "same_trait"], lora_cluster, cfg.seed),
                "dose_response": contrast_table(sc[sc["same_trait"]], ["step"], lora_cluster, cfg.seed),
                "by_trait_pair": contrast_table(sc, ["sft_trait", "item_trait", "step"], lora_cluster, cfg.seed),
                "trained_items_shift": contrast_table(trained.assign(contrast=trained["shift"]),
                                                      ["sft_trait", "pole", "step"], lora_cluster, cfg.seed),
                "compare": fitted.compare["sft"], "losses": sft.losses, "training": sft.info},
        "posteriors": betas,
        "prior_data_conflict": prior_data_conflict(f, priors),
        "power_scaling": {name: power_scaling(f[name], priors) for name in f if name.endswith(PSM)},
        "cross_prediction": cross_prediction(f, datasets, tuple(m for m in fitted.models if m != ENCOMPASSING),
                                             priors, cfg.seed),
        "encompassing": {which: posterior_summary(f[f"{which}/{ENCOMPASSING}"], "persona_weight")
                         for which in ("icl", "sft") if f"{which}/{ENCOMPASSING}" in f},
        "diagnostics": diagnostics,
    }

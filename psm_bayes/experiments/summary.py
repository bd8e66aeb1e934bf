"""Stage 6a of the experiment: the statistics of the report (no plotting, no files).

:func:`model_summary` turns one language model's stage outputs into its
``results["models"][name]`` block: design and label balance, persona
separation, ICL and SFT contrasts (the bias-cancelling primary observable)
with item-level uncertainty, the grouped-CV comparisons, posterior summaries,
predictive checks, prior-data conflicts and the cross-prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.checks import interval_check, power_scaling, prior_predictive_check
from psm_bayes.experiments.fits import PSM, fit_diagnostics, posterior_summary, prior_data_conflict


def mean_se(x: np.ndarray) -> dict:
    """Mean, standard error and count."""
    x = np.asarray(x, dtype=float)
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return {"mean": float(x.mean()) if x.size else float("nan"), "se": se, "n_items": int(x.size)}


def bootstrap_r(pred: np.ndarray, obs: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000,
                seed: int = 0) -> dict:
    """Pearson r of ``pred`` vs ``obs`` with a 90% interval from resampling ``groups`` (items)."""
    pred, obs = np.asarray(pred, float), np.asarray(obs, float)
    if pred.size < 3 or pred.std() == 0 or obs.std() == 0:
        return {"r": float("nan"), "lo": None, "hi": None}
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(uniq.size)]
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, uniq.size, uniq.size)])
        p, o = pred[idx], obs[idx]
        if p.std() > 0 and o.std() > 0:
            rs.append(np.corrcoef(p, o)[0, 1])
    lo, hi = np.quantile(rs, [0.05, 0.95]) if rs else (np.nan, np.nan)
    return {"r": float(np.corrcoef(pred, obs)[0, 1]), "lo": float(lo), "hi": float(hi)}


def contrast_table(contrasts: pd.DataFrame, by: list[str]) -> list[dict]:
    """Mean and se (over items, after averaging each item's rows) of ``contrast`` per group of ``by``."""
    out = []
    for key, g in contrasts.groupby(by):
        per_item = g.groupby("item")["contrast"].mean().to_numpy()
        out.append(dict(zip(by, key if isinstance(key, tuple) else (key,))) | mean_se(per_item))
    return out


def sft_contrasts(meas: pd.DataFrame, sft_trait: str) -> pd.DataFrame:
    """Per (seed, step, item): log-odds after the ``+`` fine-tune minus after the ``-`` fine-tune."""
    sft = meas[meas["kind"] == "sft"]
    wide = sft.pivot_table(index=["seed", "step", "item", "item_id", "item_trait"], columns="pole",
                           values="logodds").reset_index()
    wide["contrast"] = wide["+"] - wide["-"]
    wide["same_trait"] = wide["item_trait"] == sft_trait
    wide.columns.name = None
    return wide.rename(columns={"+": "plus", "-": "minus"})


def _predicted_contrast(dt: Any, rows: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior-mean predicted and observed ``+`` minus ``-`` contrasts of paired rows, and their items."""
    mean = np.asarray(dt["posterior"]["logodds_mean"].values)
    mean = mean.reshape(-1, mean.shape[-1]).mean(0)
    r = rows.assign(pred=mean, row=np.arange(len(rows)))
    r = r[r["pole"].isin(["+", "-"])]
    wide = r.pivot_table(index=keys + ["item"], columns="pole", values=["pred", "logodds"]).dropna()
    return ((wide["pred"]["+"] - wide["pred"]["-"]).to_numpy(),
            (wide["logodds"]["+"] - wide["logodds"]["-"]).to_numpy(), wide.index.get_level_values("item").to_numpy())


def predictive_check(dt: Any, rows: pd.DataFrame, by: list[str]) -> list[dict]:
    """Observed vs posterior-predicted mean log-odds (90% interval of the group mean) per group of ``by``."""
    mean = np.asarray(dt["posterior"]["logodds_mean"].values)
    return interval_check(mean.reshape(-1, mean.shape[-1]), rows, by, "predicted")


def cross_prediction(fits: dict, datasets: Any, priors: Any, seed: int) -> dict | None:
    """Out-of-sample predictions of the cross conditions from the ``joint`` fits (PSM and ``response_bias``)."""
    from psm_bayes.comparison import predict_sites
    from psm_bayes.models import catalogue

    if datasets.cross is None:
        return None
    rows = datasets.rows["cross"].tail(datasets.n_cross).reset_index(drop=True)
    obs = rows["logodds"].to_numpy()
    out: dict[str, Any] = {"n": int(datasets.n_cross), "rmse": {}, "by_pole_and_shots": []}
    preds = {}
    for m in (PSM, "response_bias"):
        if f"joint/{m}" not in fits:
            continue
        p = predict_sites(catalogue.model(m), fits[f"joint/{m}"], datasets.cross, ["logodds_mean"], seed=seed,
                          priors=priors)["logodds_mean"][:, -datasets.n_cross:]
        preds[m] = p
        out["rmse"][m] = float(np.sqrt(np.mean((p.mean(0) - obs) ** 2)))
    for (pole, n), g in rows.groupby(["pole", "n_shots"]):
        row = {"fine_tuned_pole": pole, "shots_of_other_pole": int(n), "observed": float(g["logodds"].mean())}
        for m, p in preds.items():
            d = p[:, g.index.to_numpy()].mean(1)
            row[m] = float(d.mean())
            row[f"{m}_lo"], row[f"{m}_hi"] = (float(x) for x in np.quantile(d, [0.05, 0.95]))
        out["by_pole_and_shots"].append(row)
    return out


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
    at_max = ic[(ic["n_shots"] == n_max) & ic["same_trait"]].groupby("item")["contrast"].mean().to_numpy()
    sc = sft_contrasts(sft.measurements, design.sft_trait)
    icl_rows = datasets.rows["icl"]
    contrast_pred = {}
    for m in fitted.models:
        p, o, items = _predicted_contrast(f[f"icl/{m}"], icl_rows, ["shot_trait", "ordering", "n_shots"])
        contrast_pred[m] = bootstrap_r(p, o, items, seed=cfg.seed)
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
                   "sft_trait": design.sft_trait, "n_values": list(design.n_values)},
        "sizes": {"personas": len(personas.personas), "table_items": int(len(design.table_idx)),
                  "icl_measurements": int(len(icl_rows)), "sft_measurements": int(len(datasets.rows["sft"])),
                  "conditions_icl": datasets.icl.n_conditions, "conditions_sft": datasets.sft.n_conditions},
        "prior": {"weights": dict(zip(personas.personas.ids, map(float, personas.prior_weights))),
                  "em_iterations": personas.em.n_iter, "em_converged": personas.em.converged,
                  "fitted_on": "neutral answers to the prior items only"},
        "persona_separation": separation_summary(personas),
        "icl": {"contrast": contrast_table(ic, ["n_shots", "same_trait"]),
                "contrast_by_trait": contrast_table(ic[ic["same_trait"]], ["shot_trait", "n_shots"]),
                "contrast_at_max_shots": mean_se(at_max) | {"n_shots": int(n_max)},
                "compare": fitted.compare["icl"], "contrast_prediction": contrast_pred,
                "predictive_check": {m: predictive_check(f[f"icl/{m}"], icl_rows, ["n_shots", "pole", "matching"])
                                     for m in fitted.models},
                "prior_predictive_check": {m: prior_predictive_check(m, datasets.icl, icl_rows,
                                                                     ["n_shots", "pole", "matching"], priors,
                                                                     seed=cfg.seed)
                                           for m in fitted.models}},
        "sft": {"contrast": contrast_table(sc, ["step", "same_trait"]),
                "dose_response": contrast_table(sc[sc["same_trait"]], ["step"]),
                "trained_items_shift": contrast_table(trained.assign(contrast=trained["shift"]), ["pole", "step"]),
                "compare": fitted.compare["sft"], "losses": sft.losses},
        "posteriors": betas,
        "prior_data_conflict": prior_data_conflict(f, priors),
        "power_scaling": {name: power_scaling(f[name], priors) for name in f if name.endswith(PSM)},
        "cross_prediction": cross_prediction(f, datasets, priors, cfg.seed),
        "diagnostics": diagnostics,
    }

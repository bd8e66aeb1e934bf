"""Stage 6a of the experiment: the statistics of the report (no plotting, no files).

:func:`summarise` turns the stage outputs into the ``results.json`` dict;
:func:`compare_tables` gives the PSIS-LOO tables it (and the report) use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.fits import fit_diagnostics, posterior_summary


def compare_tables(fits: Any) -> dict[str, pd.DataFrame]:
    """``{"icl": ..., "sft": ...}``: ``arviz.compare`` of the ICL laws and of the SFT models."""
    import arviz as az

    return {"icl": az.compare({n: fits.fits[n] for n in fits.icl_models}),
            "sft": az.compare({n: fits.fits[n] for n in fits.sft_models})}


def compare_records(table: pd.DataFrame) -> dict:
    """An ``arviz.compare`` table as ``{model: {rank, elpd, se, ...}}``."""
    cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "warning") if c in table.columns]
    out = {}
    for name, row in table[cols].iterrows():
        out[str(name)] = {c: (bool(row[c]) if c == "warning" else float(row[c])) for c in cols}
    return out


def shift_means(meas: pd.DataFrame, trait: str) -> dict:
    """Mean, sd and count of the SFT shift for trained items, held-out same-trait and other-trait items."""
    m = meas.assign(group=np.where(meas["trained"], "trained items",
                                   np.where(meas["item_trait"] == trait, "held-out, same trait",
                                            "held-out, other traits")))
    g = m.groupby("group")["shift"].agg(["mean", "std", "count"])
    return {k: {"mean": float(r["mean"]), "sd": float(r["std"]) if np.isfinite(r["std"]) else 0.0,
                "n": int(r["count"])} for k, r in g.iterrows()}


def separation_summary(personas: Any) -> dict:
    """Per persona form: separation by trait, means and the EM prior (``results["persona_separation"]``)."""
    ids = personas.personas.ids
    out = {}
    for mode, sep in personas.separation.items():
        prior = personas.mode_priors[mode]
        out[mode] = {"by_trait": {t: {k: float(v) for k, v in row.items()} for t, row in sep.iterrows()},
                     "mean_plus": float(sep["plus"].mean()), "mean_minus": float(sep["minus"].mean()),
                     "mean_separation": float(sep["separation"].mean()),
                     "prior": dict(zip(ids, map(float, prior))),
                     "prior_max_over_min": float(np.max(prior) / np.min(prior))}
    return out


def joint_summary(dt: Any) -> dict:
    """``psm_joint`` posteriors and the ratio ``beta_sft / beta_icl``."""
    out = {n: posterior_summary(dt, n) for n in ("beta_icl", "beta_sft", "authorial_bias")}
    post = dt["posterior"]
    ratio = np.asarray(post["beta_sft"].values).ravel() / np.asarray(post["beta_icl"].values).ravel()
    out["p_beta_sft_gt_beta_icl"] = float(np.mean(ratio > 1))
    out["beta_sft_over_beta_icl"] = {"median": float(np.median(ratio)), "lo": float(np.quantile(ratio, 0.05)),
                                     "hi": float(np.quantile(ratio, 0.95))}
    return out


def summarise(cfg: Any, model: dict, design: Any, personas: Any, icl: Any, sft: Any, fits: Any,
              tables: dict[str, pd.DataFrame]) -> dict:
    """The ``results.json`` dict of one run.

    Parameters
    ----------
    cfg : ExperimentConfig
    model : dict
        ``{"key": ..., "model_id": ...}`` of the scoring model.
    design : Design
    personas : PersonaStage
    icl : ICLStage
    sft : SFTStage
    fits : FitStage
    tables : dict
        :func:`compare_tables` of ``fits``.
    """
    from psm_bayes.posterior import shift_correlation

    probes = design.probes
    f = fits.fits
    corr = {n: shift_correlation(f[n], sft.data) for n in fits.sft_models}
    pidx = design.persona_idx
    return {
        "config": cfg.to_dict(),
        "model": dict(model),
        "sizes": {"personas": len(personas.personas), "table_items": len(design.table_idx),
                  "icl_rows": len(icl.data), "icl_curves": icl.data.n_curves, "sft_items": len(sft.data),
                  "sft_train_examples": len(design.sft_train)},
        "prior": {"weights": dict(zip(personas.personas.ids, map(float, personas.prior_weights))),
                  "em_iterations": personas.em.n_iter, "em_converged": personas.em.converged,
                  "em_objective": float(personas.em.loglik[-1]), "persona_context": personas.context,
                  "persona_examples": {t: [probes.items.ids[i] for i in pidx[probes.trait[pidx] == t]]
                                       for t in design.traits}},
        "persona_separation": separation_summary(personas),
        "diagnostics": {n: fit_diagnostics(dt) for n, dt in f.items()},
        "icl": {"loo": compare_records(tables["icl"]),
                "extrapolation": {n: {k: float(v) for k, v in m.items()} for n, m in fits.extrapolation.items()},
                "extrapolation_split": {"train_max_shots": fits.train_max_shots, "test_shots": list(fits.test_shots)},
                "beta_icl": posterior_summary(f["psm_icl"], "beta_icl"),
                "authorial_bias": posterior_summary(f["psm_icl"], "authorial_bias")},
        "sft": {"loo": compare_records(tables["sft"]),
                "correlation": {n: {"mean": c[0], "lo": c[1][0], "hi": c[1][1], "prob": 0.9} for n, c in corr.items()},
                "beta_sft": posterior_summary(f["psm_sft"], "beta_sft"),
                "mean_shift": shift_means(sft.measurements, design.sft_trait),
                "losses": {str(k): v for k, v in sft.info["losses"].items()}},
        "joint": joint_summary(f["psm_joint"]),
    }

"""Out-of-sample predictions judged by the criteria, and the curve statistic of ``base_vs_instruct``.

* :func:`contrast_prediction` -- every ICL contrast (shot trait, ordering,
  shot count, item: ``+`` minus ``-`` log-odds) predicted by each model
  without the item (:func:`psm_bayes.experiments.analysis.refits.loio_means`),
  scored against the observed contrasts: Pearson r, RMSE, and each model's
  RMSE minus the PSM's, with two-way bootstrap intervals (conditions = shot
  sequences, :mod:`psm_bayes.experiments.analysis.bootstrap`);
* :func:`cross_prediction` -- the fine-tuned model under opposite-pole shots
  (conditions that no fit saw) predicted by every model's joint fit; the
  same scores, conditions = LoRA runs;
* :func:`half_max_shots` -- the shots a model needs to reach half its
  maximal same-trait ICL contrast, with its two-way bootstrap replicates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.analysis.bootstrap import METHOD, N_BOOT, prediction_intervals, two_way_weights, weighted_mean
from psm_bayes.experiments.analysis.fitting import PSM

ICL_KEYS = ["shot_trait", "ordering", "n_shots"]
"""What identifies an ICL contrast besides its item (a shot sequence is ``shot_trait`` + ``ordering``)."""


def sequence_cluster(df: pd.DataFrame) -> np.ndarray:
    """The condition cluster of ICL rows: their shot sequence (trait / ordering; its prefixes are nested)."""
    return (df["shot_trait"].astype(str) + "/o" + df["ordering"].astype(str)).to_numpy()


def lora_cluster(df: pd.DataFrame) -> np.ndarray:
    """The condition cluster of SFT and cross rows: their LoRA run (SFT trait / pole / seed, as present;
    a ``+`` minus ``-`` contrast has no pole: its cluster is the pair of runs of one seed)."""
    cols = [c for c in ("sft_trait", "pole", "seed") if c in df]
    return df[cols].astype(str).agg("/".join, axis=1).to_numpy() if len(df) else np.zeros(0, str)


def contrast_prediction(rows: pd.DataFrame, loio: dict, models: tuple[str, ...], *, seed: int = 0) -> dict:
    """Leave-one-item-out predicted vs observed ICL contrasts of every model (see the module docstring).

    Parameters
    ----------
    rows : pandas.DataFrame
        The ICL data's measurement rows in the data's order (``pole``, ``item``, :data:`ICL_KEYS`, ``logodds``).
    loio : dict
        ``"icl/<model>"`` -> each row's leave-one-item-out prediction (:class:`~psm_bayes.experiments.analysis.fits.FitStage`).
    models : tuple of str
    seed : int

    Returns
    -------
    dict
        ``n`` (contrasts), ``method``, ``scores`` (:func:`~psm_bayes.experiments.analysis.bootstrap.prediction_intervals`,
        reference ``persona_selection``).
    """
    have = [m for m in models if f"icl/{m}" in loio]
    r = rows.reset_index(drop=True).assign(**{f"pred:{m}": loio[f"icl/{m}"] for m in have})
    r = r[r["pole"].isin(["+", "-"])]
    wide = r.pivot_table(index=ICL_KEYS + ["item"], columns="pole",
                         values=["logodds"] + [f"pred:{m}" for m in have]).dropna()
    obs = (wide["logodds"]["+"] - wide["logodds"]["-"]).to_numpy()
    preds = {m: (wide[f"pred:{m}"]["+"] - wide[f"pred:{m}"]["-"]).to_numpy() for m in have}
    keys = wide.index.to_frame(index=False)
    return {"n": int(obs.size), "method": "leave-one-item-out (PSIS, exact refits where k > 0.7); " + METHOD,
            "scores": prediction_intervals(obs, preds, sequence_cluster(keys), keys["item"].to_numpy(),
                                           reference=PSM, seed=seed)}


def cross_prediction(fits: dict, datasets: Any, models: tuple[str, ...], priors: Any, seed: int) -> dict | None:
    """Every model's joint-fit prediction of the cross conditions, scored (see the module docstring).

    Returns
    -------
    dict or None
        ``n``, ``method``, ``scores`` and ``by_pole_and_shots`` (observed and predicted mean with 90%
        posterior interval per fine-tuned pole and shot count, for the plot); None without cross data.
    """
    from psm_bayes.comparison import predict_sites
    from psm_bayes.models import catalogue

    if datasets.cross is None or f"joint/{PSM}" not in fits:     # no cross data, or no joint fits
        return None
    rows = datasets.rows["cross"].tail(datasets.n_cross).reset_index(drop=True)
    obs = rows["logodds"].to_numpy(float)
    preds = {m: predict_sites(catalogue.model(m), fits[f"joint/{m}"], datasets.cross, ["logodds_mean"], seed=seed,
                              priors=priors)["logodds_mean"][:, -datasets.n_cross:]
             for m in models if f"joint/{m}" in fits}
    out: dict[str, Any] = {
        "n": int(datasets.n_cross), "method": "joint fits (no cross measurement seen); " + METHOD,
        "scores": prediction_intervals(obs, {m: p.mean(0) for m, p in preds.items()}, lora_cluster(rows),
                                       rows["item"].to_numpy(), reference=PSM, seed=seed),
        "by_pole_and_shots": []}
    for (pole, n), g in rows.groupby(["pole", "n_shots"]):
        row = {"fine_tuned_pole": pole, "shots_of_other_pole": int(n), "observed": float(g["logodds"].mean())}
        for m, p in preds.items():
            d = p[:, g.index.to_numpy()].mean(1)
            row[m] = float(d.mean())
            row[f"{m}_lo"], row[f"{m}_hi"] = (float(x) for x in np.quantile(d, [0.05, 0.95]))
        out["by_pole_and_shots"].append(row)
    return out


def half_shots(counts: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Shots at which ``curve`` (replicate, count) first reaches half its maximum (NaN where the max <= 0).

    ``counts`` are increasing shot counts > 0; the curve is 0 at 0 shots and interpolated linearly between
    counts.
    """
    n = np.concatenate([[0.0], np.asarray(counts, float)])
    c = np.concatenate([np.zeros((curve.shape[0], 1)), np.asarray(curve, float)], axis=1)
    half = np.nanmax(c, axis=1) / 2
    j = np.argmax(c >= half[:, None], axis=1)            # first count at or above half (>= 1 when half > 0)
    j = np.maximum(j, 1)
    rows = np.arange(c.shape[0])
    c0, c1 = c[rows, j - 1], c[rows, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(c1 > c0, (half - c0) / (c1 - c0), 1.0)
    out = n[j - 1] + frac * (n[j] - n[j - 1])
    return np.where(half > 0, out, np.nan)


def half_max_shots(contrasts: pd.DataFrame, *, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """``n_half`` of the mean same-trait ICL contrast curve and its two-way bootstrap replicates.

    Parameters
    ----------
    contrasts : pandas.DataFrame
        :func:`psm_bayes.experiments.measure.icl.icl_contrasts` (``same_trait``, ``n_shots``, ``contrast``,
        ``shot_trait``, ``ordering``, ``item``).

    Returns
    -------
    dict
        ``n_half``, ``max_contrast``, ``curve`` (``{n: mean}``), ``log2_draws`` (``log2 n_half`` per
        replicate, NaN where undefined), ``n_conditions``, ``n_items``.
    """
    same = contrasts[contrasts["same_trait"] & (contrasts["n_shots"] > 0)].reset_index(drop=True)
    counts = np.sort(same["n_shots"].unique())
    if same.empty:
        return {"n_half": float("nan"), "max_contrast": float("nan"), "curve": {}, "log2_draws": [],
                "n_conditions": 0, "n_items": 0}
    cond, items = sequence_cluster(same), same["item"].to_numpy()
    w = two_way_weights(cond, items, n_boot=n_boot, seed=seed)
    x = same["contrast"].to_numpy(float)
    at = [same["n_shots"].to_numpy() == n for n in counts]
    curve = np.array([x[m].mean() for m in at])
    reps = np.stack([weighted_mean(x[m], w[:, m]) for m in at], axis=1)          # (replicate, count)
    est = float(half_shots(counts, curve[None])[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        log2 = np.log2(half_shots(counts, reps))
    return {"n_half": est, "max_contrast": float(curve.max()), "curve": dict(zip(map(int, counts), map(float, curve))),
            "log2_draws": [float(v) for v in log2], "n_conditions": int(len(np.unique(cond))),
            "n_items": int(len(np.unique(items)))}

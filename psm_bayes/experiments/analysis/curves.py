"""What the report shows of the ICL stage: curves per trait and pole, fitted curves, persona posteriors, table vs ICL.

* :func:`icl_curves` -- per (shot trait, pole, shot count), on the shot
  trait's own evaluation items: the observed mean log-odds of the matching
  answer (mean over items of the item's mean over orderings, with its se
  over items), each ordering's mean, and every fitted model's posterior mean
  of the same rows (``logodds_mean``, the fitted curve);
* :func:`persona_posteriors` -- the PSM's persona posterior
  ``q(k | context)`` of each (shot trait, pole, shot count), averaged over
  the posterior draws of ``beta_icl`` (and of ``prior_weights`` when latent)
  and over orderings: the model's own maths,
  :func:`psm_bayes.models.selection_model.persona_posterior`, in numpy;
* :func:`table_vs_icl` -- per trait, the persona table's separation beside the
  observed ICL contrast at the largest shot count, with the summary's two-way
  bootstrap se (PSM's predicted shift is bounded by the table's separation).

:func:`icl_views` gives all three for the summary (numbers only; the plots are
:mod:`psm_bayes.experiments.output.plots`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _by_trait_pole(rows: pd.DataFrame) -> list[tuple[str, str, int, pd.DataFrame]]:
    """Groups ``(trait, pole, n, rows)`` of the shot trait's own items; the base rows (n = 0) join both poles."""
    base = rows[rows["kind"] == "base"]
    icl = rows[(rows["kind"] == "icl") & (rows["shot_trait"] == rows["item_trait"])]
    out = []
    for (trait, pole), g in icl.groupby(["shot_trait", "pole"], sort=True):
        out.append((trait, pole, 0, base[base["item_trait"] == trait]))
        out += [(trait, pole, int(n), gn) for n, gn in g.groupby("n_shots", sort=True)]
    return out


def icl_curves(rows: pd.DataFrame, fits: dict, models: tuple[str, ...]) -> list[dict]:
    """Observed and fitted ICL curves (see the module docstring).

    Parameters
    ----------
    rows : pandas.DataFrame
        The ICL data's measurement rows in the data's order (``datasets.rows["icl"]``).
    fits : dict of str to xarray.DataTree
        ``"icl/<model>"`` fits of those rows.
    models : tuple of str

    Returns
    -------
    list of dict
        ``trait, pole, n_shots, mean, se, n_items, ordering_means, predicted`` (model -> mean).
    """
    rows = rows.reset_index(drop=True)
    pred = {}
    for m in models:
        mean = np.asarray(fits[f"icl/{m}"]["posterior"]["logodds_mean"].values)
        pred[m] = mean.reshape(-1, mean.shape[-1]).mean(0)
    out = []
    for trait, pole, n, g in _by_trait_pole(rows):
        per_item = g.groupby("item")["logodds"].mean().to_numpy()
        by_order = g.groupby("ordering")["logodds"].mean() if n else pd.Series(dtype=float)
        out.append({"trait": trait, "pole": pole, "n_shots": n, "mean": float(per_item.mean()),
                    "se": _se(per_item), "n_items": int(per_item.size),
                    "ordering_means": [float(v) for v in by_order.to_numpy()],
                    "predicted": {m: float(p[g.index.to_numpy()].mean()) for m, p in pred.items()}})
    return out


def _draws(dt: Any, name: str, max_draws: int) -> np.ndarray | None:
    post = dt["posterior"]
    if name not in post:
        return None
    v = np.asarray(post[name].values)
    v = v.reshape((-1,) + v.shape[2:])
    return v[np.unique(np.linspace(0, len(v) - 1, min(max_draws, len(v))).astype(int))]


def persona_posteriors(data: Any, rows: pd.DataFrame, fit: Any, *, max_draws: int = 400) -> list[dict]:
    """Posterior mean of the PSM's ``q(k | context)`` per (shot trait, pole, shot count).

    Parameters
    ----------
    data : SelectionData
        The ICL data the PSM was fitted to (persona table ``L``, prior ``pi``,
        evidence counts ``icl_evidence``).
    rows : pandas.DataFrame
        Its measurement rows (``condition``, ``kind``, ``shot_trait``, ``pole``, ``n_shots``).
    fit : xarray.DataTree
        The PSM fit (``beta_icl``; ``prior_weights`` when the prior is latent).
    max_draws : int
        Posterior draws used (evenly thinned).

    Returns
    -------
    list of dict
        ``trait, pole, n_shots, q`` (persona id -> probability); ``n_shots = 0``
        is the no-evidence posterior, the prior ``pi``.
    """
    from psm_bayes.models.selection_model import persona_posterior
    from psm_bayes.models.selection_simulate import numpy_ppl

    P, _ = numpy_ppl(np.random.default_rng(0))
    beta = _draws(fit, "beta_icl", max_draws)
    pis = _draws(fit, "prior_weights", max_draws)
    if beta is None:
        raise ValueError("fit: expected a persona_selection fit with a beta_icl site")
    L = np.asarray(data.loglik, dtype=float)
    E = np.asarray(data.icl_evidence, dtype=float)
    q = np.zeros((E.shape[0], L.shape[0]))
    for d, b in enumerate(beta):
        pi = np.asarray(data.prior_weights, dtype=float) if pis is None else pis[d]
        q += np.exp(persona_posterior(P, np.log(pi), L, None, E, None, float(b)))
    q /= len(beta)
    index = {c: j for j, c in enumerate(data.conditions)}
    conds = rows.drop_duplicates("condition").set_index("condition")
    icl = conds[conds["kind"] == "icl"]
    base = q[index["base"]] if "base" in index else None
    out = []
    for (trait, pole), g in icl.groupby(["shot_trait", "pole"], sort=True):
        if base is not None:
            out.append({"trait": trait, "pole": pole, "n_shots": 0, "q": dict(zip(data.personas, map(float, base)))})
        for n, gn in g.groupby("n_shots", sort=True):
            mean = q[[index[c] for c in gn.index]].mean(0)
            out.append({"trait": trait, "pole": pole, "n_shots": int(n),
                        "q": dict(zip(data.personas, map(float, mean)))})
    return out


def table_vs_icl(separation: pd.DataFrame, contrasts: pd.DataFrame, n_shots: int, persona_examples: int, *,
                 seed: int = 0) -> list[dict]:
    """Per trait: the persona table's separation (evaluation items) beside the observed same-trait ICL contrast.

    Parameters
    ----------
    separation : pandas.DataFrame
        :func:`psm_bayes.experiments.measure.persona_table.persona_separation` (index ``trait``).
    contrasts : pandas.DataFrame
        :func:`psm_bayes.experiments.measure.icl.icl_contrasts`.
    n_shots : int
        The shot count compared (the largest).
    persona_examples : int
        Examples per persona in the table (recorded with each row).
    seed : int
        Bootstrap seed.

    Returns
    -------
    list of dict
        ``trait, table_separation, persona_examples, icl_contrast`` with its two-way (shot sequence x
        item) bootstrap ``icl_se`` (as the summary's contrasts), ``icl_se_items`` (items alone),
        ``n_shots, n_items, icl_over_table``.
    """
    from psm_bayes.experiments.analysis.bootstrap import mean_interval
    from psm_bayes.experiments.analysis.predictive import sequence_cluster

    at = contrasts[(contrasts["n_shots"] == n_shots) & contrasts["same_trait"]]
    out = []
    for trait, row in separation.iterrows():
        g = at[at["shot_trait"] == trait]
        iv = mean_interval(g["contrast"].to_numpy(float), sequence_cluster(g), g["item"].to_numpy(), seed=seed)
        per_item = g.groupby("item")["contrast"].mean().to_numpy()
        sep = float(row["separation"])
        out.append({"trait": str(trait), "table_separation": sep, "persona_examples": int(persona_examples),
                    "icl_contrast": iv["mean"], "icl_se": iv["se"], "icl_se_items": _se(per_item),
                    "n_shots": int(n_shots), "n_items": int(per_item.size),
                    "icl_over_table": iv["mean"] / sep if sep else float("nan")})
    return out


def icl_views(cfg: Any, design: Any, personas: Any, icl: Any, datasets: Any, fitted: Any) -> dict:
    """``{"curves", "persona_posterior", "table_vs_icl"}`` of one language model (for its summary block)."""
    from psm_bayes.experiments.analysis.fitting import PSM

    rows = datasets.rows["icl"]
    post = (persona_posteriors(datasets.icl, rows, fitted.fits[f"icl/{PSM}"]) if f"icl/{PSM}" in fitted.fits
            else [])
    return {"curves": icl_curves(rows, fitted.fits, fitted.models), "persona_posterior": post,
            "table_vs_icl": table_vs_icl(personas.separation[personas.context], icl.contrasts,
                                         max(design.n_values), cfg.persona_examples, seed=cfg.seed)}

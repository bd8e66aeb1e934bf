"""Markdown report, PNG plots, NetCDF fits and ``results.json`` of a PSM experiment.

:func:`write_report` takes the :class:`~psm_bayes.experiments.pipeline.ExperimentResult`
of :func:`~psm_bayes.experiments.pipeline.run_experiment` and writes, under
its ``out_dir`` (every file atomically: temporary name + ``os.replace``):

* ``report.md`` -- setup, prior, ICL curves and model comparison (PSIS-LOO,
  extrapolation NRMSE), SFT shifts (LOO, predicted-vs-observed correlation),
  joint posteriors, a diagnostics table (max R-hat, min bulk ESS,
  divergences per fit) and timings;
* ``plots/*.png`` -- prior weights, ICL curves with posterior bands,
  predicted vs observed SFT shifts, joint posteriors, SFT losses;
* ``fits/<model>.nc`` -- every DataTree;
* ``data/*.csv`` -- the raw LLM measurements and the persona table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from psm_bayes.io import atomic_path


# ---------------------------------------------------------------- small writers
def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """Replace non-finite floats by None (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN -> null), atomically."""
    return write_text(path, json.dumps(_clean(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _thin(ds: Any, n_keep: int) -> Any:
    """Keep about ``n_keep`` draws in total (all chains), evenly spaced within each chain."""
    if "draw" not in ds.dims:
        return ds
    n_chain = int(ds.sizes.get("chain", 1))
    per = max(1, int(np.ceil(n_keep / n_chain)))
    n_draw = int(ds.sizes["draw"])
    if per >= n_draw:
        return ds
    return ds.isel(draw=np.unique(np.linspace(0, n_draw - 1, per).round().astype(int)))


def compact_fit(dt: Any, *, loglik_draws: int = 500, predictive_draws: int = 100,
                max_posterior_size: int = 1_000_000) -> Any:
    """A smaller copy of a fit for disk.

    * ``posterior``: every latent site with all draws, unchanged; deterministic
      per-row variables larger than ``max_posterior_size`` elements (e.g. the
      ICL models' ``nll_mean``, draws x 1800 rows) are dropped -- they are
      recomputable from the latents and the data;
    * ``log_likelihood``: thinned evenly to about ``loglik_draws`` draws (all
      chains together), float32 -- enough for PSIS-LOO on reload;
    * ``posterior_predictive``: thinned to about ``predictive_draws`` draws,
      float32 (dropped when 0);
    * every other group unchanged.  The attrs record what was changed.
    """
    import xarray as xr

    groups = {}
    notes = []
    for name, node in dt.children.items():
        ds = node.to_dataset()
        if name == "posterior":
            big = [v for v in ds.data_vars if ds[v].size > max_posterior_size]
            if big:
                ds = ds.drop_vars(big)
                notes.append(f"posterior: dropped {big}")
        elif name in ("log_likelihood", "posterior_predictive"):
            keep = loglik_draws if name == "log_likelihood" else predictive_draws
            if keep == 0:
                notes.append(f"{name}: dropped")
                continue
            before = int(ds.sizes.get("draw", 0))
            ds = _thin(ds, keep)
            ds = ds.map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v, keep_attrs=True)
            notes.append(f"{name}: float32, draws {before} -> {int(ds.sizes.get('draw', 0))} per chain")
        groups["/" + name] = ds
    out = xr.DataTree.from_dict(groups)
    out.attrs = dict(dt.attrs)
    out.attrs["compacted"] = "; ".join(notes)
    return out


def save_fit(dt: Any, path: str | Path, **compact: Any) -> Path:
    """A DataTree as NetCDF (h5netcdf), atomically; ``compact`` options -> :func:`compact_fit` first."""
    from psm_bayes.io import save_datatree

    if compact:
        dt = compact_fit(dt, **compact)
    return save_datatree(dt, path)


def md_table(df: pd.DataFrame, floatfmt: str = ".3g", index: bool = True) -> str:
    """A pandas DataFrame as a GitHub-flavoured markdown table (no extra dependency)."""
    d = df.reset_index() if index else df
    cols = [str(c) for c in d.columns]

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in d.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def _savefig(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _plt():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- plots
def plot_prior(personas: Sequence[str], weights: np.ndarray, path: Path) -> Path:
    """Bar chart of the EM pre-training prior."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(personas) + 1), 3))
    ax.bar(range(len(personas)), weights, color=["tab:blue" if p.endswith("+") else "tab:orange" for p in personas])
    ax.set_xticks(range(len(personas)), personas, rotation=60, ha="right")
    ax.set_ylabel("prior weight $\\pi_k$")
    ax.set_title("Pre-training prior (EM on neutral answers)")
    return _savefig(fig, path)


def _icl_groups(data: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Group rows by (shot trait, same/other trait, n): table of groups and a row -> group index."""
    shot = [c.split("->")[0] for c in data.curve]
    tgt = [c.split("->")[1] for c in data.curve]
    kind = np.where(np.array(shot) == np.array(tgt), "same trait", "other traits")
    df = pd.DataFrame({"shot_trait": shot, "target": kind, "n": data.n_shots})
    keys = list(dict.fromkeys(zip(df["shot_trait"], df["target"], df["n"])))
    lookup = {k: j for j, k in enumerate(keys)}
    gidx = np.array([lookup[k] for k in zip(df["shot_trait"], df["target"], df["n"])])
    groups = pd.DataFrame(keys, columns=["shot_trait", "target", "n"])
    return groups, gidx


def icl_group_bands(dt: Any, data: Any, groups: pd.DataFrame, gidx: np.ndarray, prob: float = 0.9,
                    max_draws: int = 400) -> pd.DataFrame:
    """Posterior mean and central interval of the group-averaged ``nll_mean``."""
    v = dt["posterior"]["nll_mean"]
    draws = np.asarray(v.values).reshape(-1, v.shape[-1])
    if draws.shape[0] > max_draws:
        draws = draws[np.linspace(0, draws.shape[0] - 1, max_draws).astype(int)]
    G = len(groups)
    M = np.zeros((draws.shape[1], G))
    M[np.arange(draws.shape[1]), gidx] = 1.0
    gm = draws @ M / M.sum(0, keepdims=True)
    lo, hi = np.quantile(gm, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return groups.assign(mean=gm.mean(0), lo=lo, hi=hi)


def plot_icl_curves(fits: dict, data: Any, path: Path, models: Sequence[str] = ("psm_icl", "bounded_power_law"),
                    split_n: float | None = None) -> Path:
    """Observed mean ``nll`` per (shot trait, same/other trait, n) with posterior bands of ``models``."""
    plt = _plt()
    groups, gidx = _icl_groups(data)
    obs = groups.copy()
    obs["mean"] = [data.nll[gidx == g].mean() for g in range(len(groups))]
    obs["sem"] = [data.nll[gidx == g].std() / max(1, np.sqrt((gidx == g).sum())) for g in range(len(groups))]
    traits = list(dict.fromkeys(groups["shot_trait"]))
    ncol = min(3, len(traits))
    nrow = int(np.ceil(len(traits) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False, sharey=True)
    colors = {"same trait": "tab:blue", "other traits": "tab:gray"}
    styles = {m: s for m, s in zip(models, ("-", "--", ":", "-."))}
    bands = {m: icl_group_bands(fits[m], data, groups, gidx) for m in models if m in fits}
    for ax, t in zip(axes.ravel(), traits):
        for kind, col in colors.items():
            o = obs[(obs.shot_trait == t) & (obs.target == kind)].sort_values("n")
            x = o["n"].to_numpy() + 0.5
            ax.errorbar(x, o["mean"], yerr=o["sem"], fmt="o", color=col, ms=4, capsize=2,
                        label=f"observed ({kind})")
            for m, b in bands.items():
                bb = b[(b.shot_trait == t) & (b.target == kind)].sort_values("n")
                xb = bb["n"].to_numpy() + 0.5
                ax.plot(xb, bb["mean"], styles[m], color=col, lw=1.2, label=f"{m} ({kind})")
                ax.fill_between(xb, bb["lo"], bb["hi"], color=col, alpha=0.15 if m == models[0] else 0.07)
        if split_n is not None:
            ax.axvline(split_n + 0.5, color="k", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"shots: {t}")
        ax.set_xlabel("n shots (+0.5, log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel("nll of matching answer")
    for ax in axes.ravel()[len(traits):]:
        ax.axis("off")
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("ICL curves: observed means (±SEM) and 90% posterior bands of the group mean")
    fig.tight_layout()
    fig.legend(h, lab, loc="center left", fontsize=7, bbox_to_anchor=(1.0, 0.5))
    return _savefig(fig, path)


def plot_sft_shifts(fits: dict, data: Any, path: Path, models: Sequence[str] = ("psm_sft", "null_sft")) -> Path:
    """Predicted (posterior mean, 90% interval of ``shift_mean``) vs observed shift per item."""
    from psm_bayes.models.sft_shift import predicted_vs_observed

    plt = _plt()
    ms = [m for m in models if m in fits]
    fig, axes = plt.subplots(1, len(ms), figsize=(4.4 * len(ms), 4), squeeze=False)
    traits = list(dict.fromkeys(data.trait))
    cmap = plt.get_cmap("tab10")
    for ax, m in zip(axes[0], ms):
        pv = predicted_vs_observed(fits[m], data)
        for j, t in enumerate(traits):
            for trained, marker in ((False, "o"), (True, "*")):
                sel = (pv["trait"] == t) & (pv["trained"] == trained)
                if not sel.any():
                    continue
                p = pv[sel]
                ax.errorbar(p["observed"], p["predicted"],
                            yerr=[p["predicted"] - p["mean_lo"], p["mean_hi"] - p["predicted"]],
                            fmt=marker, color=cmap(j % 10), ms=6 if trained else 4, alpha=0.8, capsize=1,
                            label=f"{t}{' (trained)' if trained else ''}")
        lim = [min(pv["observed"].min(), pv["mean_lo"].min()), max(pv["observed"].max(), pv["mean_hi"].max())]
        pad = 0.05 * (lim[1] - lim[0] + 1e-9)
        ax.plot([lim[0] - pad, lim[1] + pad], [lim[0] - pad, lim[1] + pad], "k:", lw=0.8)
        ax.set_xlabel("observed shift (log-odds of matching answer)")
        ax.set_ylabel("predicted shift")
        ax.set_title(m)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("SFT: predicted vs observed log-odds shifts (90% intervals of the mean)")
    fig.tight_layout()
    return _savefig(fig, path)


def plot_joint(dt: Any, path: Path) -> Path:
    """Posterior histograms of ``beta_icl``, ``beta_sft`` and ``authorial_bias`` (joint model)."""
    plt = _plt()
    post = dt["posterior"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, col in (("beta_icl", "tab:blue"), ("beta_sft", "tab:red")):
        x = np.asarray(post[name].values).ravel()
        axes[0].hist(x, bins=40, alpha=0.5, color=col, density=True, label=name)
    axes[0].set_xscale("log")
    axes[0].set_title("evidence strengths")
    axes[0].legend()
    axes[1].hist(np.asarray(post["authorial_bias"].values).ravel(), bins=40, color="tab:green", alpha=0.7,
                 density=True)
    axes[1].axvline(0, color="k", lw=0.6)
    axes[1].set_title("authorial_bias (toward Yes)")
    fig.suptitle("psm_joint posteriors")
    return _savefig(fig, path)


def plot_losses(losses: dict, path: Path) -> Path:
    """LoRA training loss per step and seed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for seed, ls in losses.items():
        ax.plot(np.arange(1, len(ls) + 1), ls, marker=".", label=f"seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("LoRA SFT loss")
    return _savefig(fig, path)


# ---------------------------------------------------------------- report
_CONTEXT_TEXT = {"description": "its description as a preamble",
                 "fewshot": "{k} in-context example answers by the persona -- the positive pole gives each "
                            "statement's matching answer, the negative pole the other one",
                 "both": "its description, then {k} in-context example answers by the persona"}


def _separation_table(sep: dict) -> str:
    """Markdown: per trait, plus / minus / separation for each persona form measured."""
    if not sep:
        return "(not measured)"
    modes = list(sep)
    traits = list(next(iter(sep.values()))["by_trait"])
    cols = ["trait"] + [f"{m} {c}" for m in modes for c in ("plus", "minus", "sep")] + ["neutral", "items"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    first = sep[modes[0]]["by_trait"]
    for t in traits:
        vals = [f"{sep[m]['by_trait'][t][c]:+.3f}" for m in modes for c in ("plus", "minus", "separation")]
        lines.append(f"| {t} | " + " | ".join(vals) + f" | {first[t]['neutral']:+.3f} | {int(first[t]['n_items'])} |")
    vals = [f"**{sep[m][c]:+.3f}**" for m in modes for c in ("mean_plus", "mean_minus", "mean_separation")]
    lines.append("| mean | " + " | ".join(vals) + " | | |")
    vals = [f"{sep[m]['prior_max_over_min']:.2f}" if c == "plus" else "" for m in modes for c in ("plus", "minus", "sep")]
    lines.append("| prior max/min | " + " | ".join(vals) + " | | |")
    return "\n".join(lines)


def _fmt_post(p: dict) -> str:
    return f"{p['mean']:.3g} (sd {p['sd']:.2g}; {int(100 * p['prob'])}% [{p['lo']:.3g}, {p['hi']:.3g}])"


def write_report(res: Any) -> Path:
    """Write ``report.md``, plots, fits and data tables for an ``ExperimentResult``."""
    out = Path(res.out_dir)
    r = res.results
    cfg = res.extra["config"]
    personas = res.extra["personas"]
    plots = out / "plots"
    # fits and data
    for name, dt in res.fits.items():
        save_fit(dt, out / "fits" / f"{name}.nc", loglik_draws=cfg.saved_loglik_draws,
                 predictive_draws=cfg.saved_predictive_draws)
    for name, df in (("icl_measurements", res.icl_measurements), ("sft_measurements", res.sft_measurements)):
        with atomic_path(out / "data" / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    tab = res.table["loglik"].to_dataframe().reset_index()
    with atomic_path(out / "data" / "persona_table.csv") as tmp:
        tab.to_csv(tmp, index=False)
    # plots
    split = r["icl"]["extrapolation_split"]["train_max_shots"]
    plot_prior(list(personas.ids), res.prior_weights, plots / "prior.png")
    plot_icl_curves(res.fits, res.icl_data, plots / "icl_curves.png", split_n=split)
    plot_icl_curves(res.fits, res.icl_data, plots / "icl_curves_laws.png",
                    models=("bayesian_icl_law", "power_law"), split_n=split)
    plot_sft_shifts(res.fits, res.sft_data, plots / "sft_shifts.png")
    plot_joint(res.fits["psm_joint"], plots / "joint_posteriors.png")
    plot_losses(r["sft"]["losses"], plots / "sft_loss.png")

    diag = pd.DataFrame(r["diagnostics"]).T[["max_rhat", "min_ess_bulk", "divergences", "ok", "chains", "draws",
                                              "refit", "first_fit"]]
    diag.index.name = "fit"
    diag["max_rhat"] = [f"{float(v):.4f}" for v in diag["max_rhat"]]
    diag["min_ess_bulk"] = [f"{float(v):.0f}" for v in diag["min_ess_bulk"]]
    icl_cmp = res.extra["icl_compare"].copy()
    icl_cmp.index.name = "model"
    icl_cmp["extrap_rmse"] = [r["icl"]["extrapolation"][n]["rmse"] for n in icl_cmp.index]
    icl_cmp["extrap_nrmse"] = [r["icl"]["extrapolation"][n]["nrmse"] for n in icl_cmp.index]
    icl_cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "extrap_rmse", "extrap_nrmse")
                if c in icl_cmp.columns]
    sft_cmp = res.extra["sft_compare"].copy()
    sft_cmp.index.name = "model"
    sft_cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight") if c in sft_cmp.columns]
    corr = r["sft"]["correlation"]
    shifts = pd.DataFrame(r["sft"]["mean_shift"]).T
    shifts.index.name = "items"
    j = r["joint"]
    prior_df = pd.DataFrame({"persona": list(personas.ids), "name": list(personas.names),
                             "prior": res.prior_weights}).set_index("persona")
    timings = pd.DataFrame({"seconds": r["timings"]})
    timings.index.name = "stage"
    sep_md = _separation_table(r.get("persona_separation", {}))
    cfg_lines = "\n".join(f"- `{k}`: {v}" for k, v in r["config"].items())
    text = f"""# PSM on a real language model: {r['model']['model_id']}

Model key `{r['model']['key']}`. Sizes: {r['sizes']['personas']} personas, {r['sizes']['table_items']} probe
items in the persona table, {r['sizes']['icl_rows']} ICL measurements in {r['sizes']['icl_curves']} curves,
{r['sizes']['sft_items']} SFT probe items ({r['sizes']['sft_train_examples']} training episodes of
`{cfg.trained_trait}`+).

<details><summary>Configuration</summary>

{cfg_lines}

</details>

## 1. Persona table and pre-training prior

Every persona (both poles of each trait; context: {_CONTEXT_TEXT[cfg.persona_context].format(k=cfg.persona_examples)})
and the neutral context (no persona text) score every probe; the prior `pi` is the persona mixture that best
explains the neutral answers (EM, {r['prior']['em_iterations']} iterations, converged: {r['prior']['em_converged']},
pseudo-count {cfg.prior_pseudo_count}).  The few-shot examples are {cfg.persona_examples} statements per trait
reserved from the training pool: never held out, never ICL shots or SFT episodes, never scored in the table.

![prior](plots/prior.png)

{md_table(prior_df)}

**Persona separation**: mean log-odds of the matching answer on each trait's table items under its `+` and
`-` persona (`separation` = plus - minus; `neutral` = no persona text), for each persona form measured
(the report uses `{cfg.persona_context}`); last rows: mean over traits and the EM prior's max/min weight ratio.

{sep_md}

## 2. In-context learning curves

Shots: statements of one trait answered with its positive pole's matching answer; measured on held-out
statements of the same trait and of every other trait (`nll` = -log p(matching answer), Yes/No renormalised).
Curves are (shot trait -> item trait); NUTS {cfg.num_chains} chains x {cfg.num_samples} draws.

![ICL curves](plots/icl_curves.png)

![ICL curves, laws](plots/icl_curves_laws.png)

PSIS-LOO (higher `elpd` is better) and extrapolation (fit on n <= {split},
predict n in {r['icl']['extrapolation_split']['test_shots']}; NRMSE = RMSE / sd of the observed test nll):

{md_table(icl_cmp[icl_cols])}

`psm_icl`: beta_icl = {_fmt_post(r['icl']['beta_icl'])}; authorial_bias = {_fmt_post(r['icl']['authorial_bias'])}.

## 3. Fine-tuning (LoRA SFT) shifts

LoRA r={cfg.lora_rank} on `{cfg.trained_trait}`+ ({cfg.sft_examples} episodes, {cfg.sft_steps} steps x
{cfg.sft_batch_size}, lr {cfg.sft_lr}, {cfg.sft_seeds} seed(s)); shift = change in log-odds of the matching
answer (mean over seeds).

{md_table(shifts)}

![SFT shifts](plots/sft_shifts.png)

![SFT loss](plots/sft_loss.png)

{md_table(sft_cmp[sft_cols])}

Predicted-vs-observed correlation (posterior mean, 90% interval):
{'; '.join(f"`{n}` r = {c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]" for n, c in corr.items())}.
`psm_sft`: beta_sft = {_fmt_post(r['sft']['beta_sft'])}.

## 4. Joint model

`psm_joint` (shared prior and authorial bias; separate evidence strengths):

- beta_icl = {_fmt_post(j['beta_icl'])}
- beta_sft = {_fmt_post(j['beta_sft'])}
- authorial_bias = {_fmt_post(j['authorial_bias'])}
- beta_sft / beta_icl: median {j['beta_sft_over_beta_icl']['median']:.3g}
  (90% [{j['beta_sft_over_beta_icl']['lo']:.3g}, {j['beta_sft_over_beta_icl']['hi']:.3g}]);
  P(beta_sft > beta_icl) = {j['p_beta_sft_gt_beta_icl']:.3f}

![joint](plots/joint_posteriors.png)

## 5. Diagnostics

Latent sites only; `ok` = max R-hat < 1.01, min bulk ESS >= 400, no divergences.  NUTS: {cfg.num_warmup}
warm-up + {cfg.num_samples} draws per chain, target_accept {cfg.target_accept}; a fit that missed R-hat/ESS is
refitted once with twice the warm-up and draws and target_accept 0.95 (`refit`; `first_fit` = its first
diagnostics).  Saved fits keep every posterior draw of the latent sites; the pointwise log-likelihood and the
posterior predictive are thinned to {cfg.saved_loglik_draws} / {cfg.saved_predictive_draws} draws (float32) and
the per-row deterministic means are not saved (the report's numbers use every draw).

{md_table(diag)}

## 6. Files and timings

Fits: `fits/<model>.nc` (ArviZ DataTrees). Raw measurements: `data/*.csv`. Headline numbers: `results.json`.
LLM measurements are cached in `cache/` (a rerun resumes).

{md_table(timings, floatfmt='.1f')}
"""
    return write_text(out / "report.md", text)

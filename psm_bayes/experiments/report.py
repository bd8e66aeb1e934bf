"""The experiment's ``report.md`` (markdown), and the one call that writes every file of a run.

:func:`write_report` takes the :class:`~psm_bayes.experiments.pipeline.ExperimentResult`
of :func:`~psm_bayes.experiments.pipeline.run_experiment` and writes, under
its ``out_dir`` (every file atomically):

* ``report.md`` -- setup, prior, ICL curves and model comparison (PSIS-LOO,
  extrapolation NRMSE), SFT shifts (LOO, predicted-vs-observed correlation),
  joint posteriors, a diagnostics table (max R-hat, min bulk ESS,
  divergences per fit) and timings (:func:`render_report`);
* ``plots/*.png`` (:mod:`psm_bayes.experiments.plots`);
* ``fits/<model>.nc`` and ``data/*.csv`` (:mod:`psm_bayes.experiments.outputs`).

The numbers come from :mod:`psm_bayes.experiments.summary`; nothing here computes statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.outputs import save_fit, write_csv, write_text
from psm_bayes.experiments.plots import plot_icl_curves, plot_joint, plot_losses, plot_prior, plot_sft_shifts


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


def write_files(res: Any) -> None:
    """Every fit as ``fits/<name>.nc`` (compacted), the measurements and the persona table as ``data/*.csv``."""
    out = Path(res.out_dir)
    cfg = res.config
    for name, dt in res.fits.items():
        save_fit(dt, out / "fits" / f"{name}.nc", loglik_draws=cfg.fit.saved_loglik_draws,
                 predictive_draws=cfg.fit.saved_predictive_draws)
    write_csv(out / "data" / "icl_measurements.csv", res.icl.measurements)
    write_csv(out / "data" / "sft_measurements.csv", res.sft.measurements)
    write_csv(out / "data" / "persona_table.csv", res.personas.table["loglik"].to_dataframe().reset_index())


def write_plots(res: Any) -> None:
    """The report's PNG plots under ``plots/``."""
    plots = Path(res.out_dir) / "plots"
    split = res.results["icl"]["extrapolation_split"]["train_max_shots"]
    plot_prior(list(res.personas.personas.ids), res.personas.prior_weights, plots / "prior.png")
    plot_icl_curves(res.fits, res.icl.data, plots / "icl_curves.png", split_n=split)
    plot_icl_curves(res.fits, res.icl.data, plots / "icl_curves_laws.png",
                    models=("bayesian_icl_law", "power_law"), split_n=split)
    plot_sft_shifts(res.fits, res.sft.data, plots / "sft_shifts.png")
    plot_joint(res.fits["psm_joint"], plots / "joint_posteriors.png")
    plot_losses(res.results["sft"]["losses"], plots / "sft_loss.png")


def write_report(res: Any) -> Path:
    """Write the fits, data tables, plots and ``report.md`` of an ``ExperimentResult``."""
    write_files(res)
    write_plots(res)
    return write_text(Path(res.out_dir) / "report.md", render_report(res))


def render_report(res: Any) -> str:
    """The text of ``report.md`` (markdown; plots referenced under ``plots/``)."""
    r = res.results
    cfg = res.config
    personas = res.personas.personas
    split = r["icl"]["extrapolation_split"]["train_max_shots"]
    diag = pd.DataFrame(r["diagnostics"]).T[["max_rhat", "min_ess_bulk", "divergences", "ok", "chains", "draws",
                                              "refit", "first_fit"]]
    diag.index.name = "fit"
    diag["max_rhat"] = [f"{float(v):.4f}" for v in diag["max_rhat"]]
    diag["min_ess_bulk"] = [f"{float(v):.0f}" for v in diag["min_ess_bulk"]]
    icl_cmp = res.compare["icl"].copy()
    icl_cmp.index.name = "model"
    icl_cmp["extrap_rmse"] = [r["icl"]["extrapolation"][n]["rmse"] for n in icl_cmp.index]
    icl_cmp["extrap_nrmse"] = [r["icl"]["extrapolation"][n]["nrmse"] for n in icl_cmp.index]
    icl_cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "extrap_rmse", "extrap_nrmse")
                if c in icl_cmp.columns]
    sft_cmp = res.compare["sft"].copy()
    sft_cmp.index.name = "model"
    sft_cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight") if c in sft_cmp.columns]
    corr = r["sft"]["correlation"]
    shifts = pd.DataFrame(r["sft"]["mean_shift"]).T
    shifts.index.name = "items"
    j = r["joint"]
    prior_df = pd.DataFrame({"persona": list(personas.ids), "name": list(personas.names),
                             "prior": res.personas.prior_weights}).set_index("persona")
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
Curves are (shot trait -> item trait); NUTS {cfg.fit.num_chains} chains x {cfg.fit.num_samples} draws.

![ICL curves](plots/icl_curves.png)

![ICL curves, laws](plots/icl_curves_laws.png)

PSIS-LOO (higher `elpd` is better) and extrapolation (fit on n <= {split},
predict n in {r['icl']['extrapolation_split']['test_shots']}; NRMSE = RMSE / sd of the observed test nll):

{md_table(icl_cmp[icl_cols])}

`psm_icl`: beta_icl = {_fmt_post(r['icl']['beta_icl'])}; authorial_bias = {_fmt_post(r['icl']['authorial_bias'])}.

## 3. Fine-tuning (LoRA SFT) shifts

LoRA r={cfg.sft.rank} on `{cfg.trained_trait}`+ ({cfg.sft_examples} episodes, {cfg.sft.steps} steps x
{cfg.sft.batch_size}, lr {cfg.sft.lr}, {len(cfg.sft.seeds)} seed(s)); shift = change in log-odds of the matching
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

Latent sites only; `ok` = max R-hat < 1.01, min bulk ESS >= 400, no divergences.  NUTS: {cfg.fit.num_warmup}
warm-up + {cfg.fit.num_samples} draws per chain, target_accept {cfg.fit.target_accept}; a fit that missed R-hat/ESS is
refitted once with twice the warm-up and draws and target_accept 0.95 (`refit`; `first_fit` = its first
diagnostics).  Saved fits keep every posterior draw of the latent sites; the pointwise log-likelihood and the
posterior predictive are thinned to {cfg.fit.saved_loglik_draws} / {cfg.fit.saved_predictive_draws} draws (float32) and
the per-row deterministic means are not saved (the report's numbers use every draw).

{md_table(diag)}

## 6. Files and timings

Fits: `fits/<model>.nc` (ArviZ DataTrees). Raw measurements: `data/*.csv`. Headline numbers: `results.json`.
LLM measurements are cached in `cache/` (a rerun resumes).

{md_table(timings, floatfmt='.1f')}
"""
    return text

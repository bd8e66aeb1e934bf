"""The experiment's ``report.md`` (markdown), and the one call that writes every file of a run.

:func:`write_report` takes the :class:`~psm_bayes.experiments.pipeline.ExperimentResult`
and writes, under its ``out_dir`` (every file atomically):

* ``report.md`` (:func:`render_report`): the pre-stated criteria and their
  verdicts per model, the design and its label balance, the screening, per
  model the persona separation, the ICL and SFT contrasts, the grouped-CV
  comparisons, posteriors, predictive checks, prior-data conflicts and the
  cross-prediction, a summary table per model (side by side when several), diagnostics, timings;
* ``plots/*.png`` (:mod:`psm_bayes.experiments.output.plots`);
* ``fits/<model>/<dataset>-<fit>.nc`` and ``data/<model>/*.csv`` (:mod:`psm_bayes.experiments.output.outputs`).

The numbers come from :mod:`psm_bayes.experiments.analysis.summary`; nothing here computes statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.analysis.criteria import criteria_markdown, stated_criteria
from psm_bayes.experiments.output.outputs import save_fit, write_csv, write_text
from psm_bayes.io import save_data
from psm_bayes.experiments.output.plots import (plot_contrasts, plot_cross, plot_icl_curves, plot_losses,
                                         plot_persona_posterior, plot_sft_pairs)


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


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"


def write_files(res: Any) -> None:
    """Every fit (compacted NetCDF) and every measurement table (CSV), per model."""
    out = Path(res.out_dir)
    fit = res.config.fit
    for name, run in res.runs.items():
        for fit_name, dt in run.fitted.fits.items():
            save_fit(dt, out / "fits" / _safe(name) / (fit_name.replace("/", "-") + ".nc"),
                     loglik_draws=fit.saved_loglik_draws, predictive_draws=fit.saved_predictive_draws)
        data = out / "data" / _safe(name)
        write_csv(data / "icl_measurements.csv", run.icl.measurements)
        write_csv(data / "icl_contrasts.csv", run.icl.contrasts)
        write_csv(data / "sft_measurements.csv", run.sft.measurements)
        write_csv(data / "sft_trained_items.csv", run.sft.trained_measurements)
        write_csv(data / "persona_table.csv", run.personas.table["loglik"].to_dataframe().reset_index())
        for key in ("icl", "sft", "joint"):  # the models' data: a pilot for `psm-bayes study --power`
            save_data(getattr(run.datasets, key), data / f"{key}.nc", overwrite=True)


def write_plots(res: Any) -> None:
    """The report's PNG plots under ``plots/``."""
    plots = Path(res.out_dir) / "plots"
    blocks = res.results["models"]
    plot_contrasts(blocks, plots / "contrasts.png")
    plot_icl_curves(blocks, plots / "icl_curves.png")
    plot_persona_posterior(blocks, plots / "persona_posterior.png")
    plot_cross(blocks, plots / "cross_prediction.png")
    plot_losses(blocks, plots / "sft_loss.png")
    plot_sft_pairs(blocks, plots / "sft_pairs.png")


def write_report(res: Any) -> Path:
    """Write the fits, data tables, plots and ``report.md`` of an ``ExperimentResult``."""
    write_files(res)
    write_plots(res)
    return write_text(Path(res.out_dir) / "report.md", render_report(res))


def _df(rows: list[dict], index: str | None = None) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df.set_index(index) if index and len(df) else df


def _verdicts(blocks: dict) -> str:
    names = list(next(iter(blocks.values()))["criteria"])
    cols = ["criterion"] + list(blocks)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for j, c in enumerate(names):
        cells = []
        for b in blocks.values():
            v = b["criteria"][j]
            word = {True: "**pass**", False: "**FAIL**", None: "n/a"}[v["passed"]]
            cells.append(f"{word} ({v['evidence']})")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _compare_md(cmp: dict) -> str:
    df = pd.DataFrame(cmp["rows"]).T
    df.index.name = "model"
    cols = [c for c in ("elpd", "se", "elpd_diff", "dse", "psm_minus", "psm_minus_se", "stacking_weight",
                        "pareto_k_bad", "exact_refits", "max_pareto_k") if c in df.columns]
    return md_table(df[cols].astype(float), floatfmt=".2f") + f"\n\nMethod: {cmp['method']} ({cmp['n_groups']} items)."


def side_by_side(blocks: dict) -> pd.DataFrame:
    """One column per model: separation, contrasts, evidence strengths, comparisons, verdicts."""
    rows = {}
    for name, b in blocks.items():
        col = {"prompt format": b["model"]["prompt_format"].split(":")[0],
               "persona separation (eval items)": np.mean([v["mean_separation"]
                                                           for v in b["persona_separation"].values()][:1]),
               "ICL contrast at max shots": b["icl"]["contrast_at_max_shots"]["mean"],
               "SFT contrast (same trait, last step)": (b["sft"]["dose_response"] or [{"mean": np.nan}])[-1]["mean"]}
        for fit, post in b["posteriors"].items():
            for k, v in post.items():
                col[f"{k} ({fit.split('/')[0]})"] = v["mean"]
        for which in ("icl", "sft"):
            rows_ = b[which]["compare"]["rows"]
            col[f"{which}: best by grouped CV"] = b[which]["compare"]["best"]
            for n, r in rows_.items():
                if n != "persona_selection":
                    col[f"{which}: PSM minus {n} (se)"] = f"{r['psm_minus']:+.1f} ({r['psm_minus_se']:.1f})"
        for c in b["criteria"]:
            col[f"criterion {c['name']}"] = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
        rows[name] = col
    return pd.DataFrame(rows)


def _paragraph(blocks: dict) -> str:
    parts = []
    for name, b in blocks.items():
        c = b["icl"]["contrast_at_max_shots"]
        dose = b["sft"]["dose_response"]
        verdict = {c_["name"]: c_["passed"] for c_ in b["criteria"]}
        s = (f"On **{name}**, {c['n_shots']} label-balanced shots of a trait's positive pole raise the log-odds of "
             f"the matching answer on held-out statements of that trait by {c['mean']:+.2f} nats (se {c['se']:.2f}) "
             f"relative to the same statements answered by the negative pole")
        if dose:
            s += (f"; fine-tuning on the positive instead of the negative pole moves the same-trait held-out items "
                  f"by {dose[-1]['mean']:+.2f} nats (se {dose[-1]['se']:.2f}) after {dose[-1]['step']} steps")
        support = [k for k, v in verdict.items() if v]
        against = [k for k, v in verdict.items() if v is False]
        s += (f". Criteria met: {', '.join(support) or 'none'}; failed: {', '.join(against) or 'none'}. "
              "A failed comparison criterion means the data do not single out persona selection over that null "
              "at this size; it does not show the null is true.")
        sens = [f"{r['parameter']} ({fit.split('/')[0]})" for fit, rows in b.get("power_scaling", {}).items()
                for r in rows if r["diagnosis"] != "ok"]
        if sens:
            s += (" Power-scaling flags " + ", ".join(sens) + ": their posteriors still depend on the prior (or "
                  "conflict with it), so their values are not measured by these data alone.")
        parts.append(s)
    parts.append("How often this comparison can decide right at these effect sizes: `psm-bayes study --power "
                 "<this folder> --out power/` simulates this design from each fitted model and reruns the comparison "
                 "(benchmarks/power_results.md).")
    return "\n\n".join(parts)


def _model_section(name: str, b: dict) -> str:
    sep = b["persona_separation"]
    sep_tables = "\n\n".join(f"Persona form `{mode}` (prior max/min {v['prior_max_over_min']:.2f}):\n\n"
                             + md_table(pd.DataFrame(v["by_trait"]).T, floatfmt="+.3f") for mode, v in sep.items())
    ppc = b["icl"]["predictive_check"]
    ppc_md = "\n\n".join(f"`{m}`:\n\n" + md_table(_df(rows), floatfmt=".2f", index=False) for m, rows in ppc.items()
                         if m in ("persona_selection", "response_bias"))
    cp = b.get("cross_prediction")
    cp_md = ("(not measured)" if not cp else
             _scores_md(cp) + "\n\n" + md_table(_df(cp["by_pole_and_shots"]), floatfmt=".2f", index=False))
    conflicts = b["prior_data_conflict"]
    conf_md = md_table(_df(conflicts), floatfmt=".3g", index=False) if conflicts else "None."
    prior_md = _outside_md(b["icl"].get("prior_predictive_check", {}))
    psense_md = "\n\n".join(f"`{fit}`:\n\n" + md_table(_df(rows), floatfmt=".3f", index=False)
                             for fit, rows in b.get("power_scaling", {}).items() if rows) or "(not computed)"
    post = "\n".join(f"- `{fit}`: " + "; ".join(f"{k} = {v['mean']:.3g} (90% [{v['lo']:.3g}, {v['hi']:.3g}])"
                                                 for k, v in p.items()) for fit, p in b["posteriors"].items())
    cpred = _scores_md(b["icl"]["contrast_prediction"])
    half = b["icl"].get("half_max_shots") or {}
    half_md = (f"Shots to half the maximal same-trait contrast (`base_vs_instruct`): n_half = "
               f"{half.get('n_half', float('nan')):.2f} (maximal contrast {half.get('max_contrast', float('nan')):+.2f} "
               f"nats; curve {half.get('curve', {})}).")
    enc = "; ".join(f"{w} `persona_weight` = {v['mean']:.2f} (90% [{v['lo']:.2f}, {v['hi']:.2f}])"
                    for w, v in b.get("encompassing", {}).items()) or "(encompassing not fitted)"
    diag = pd.DataFrame(b["diagnostics"]).T
    dcols = [c for c in ("max_rhat", "min_ess_bulk", "divergences", "pareto_k_bad", "exact_refits", "ok", "refits")
             if c in diag]
    return f"""## Model `{name}`

Prompt format: {b['model']['prompt_format']}. Model key `{b['model']['model_key']}`.

### Persona separation (evaluation items; bias-cancelled: same statements, opposite example answers)

{sep_tables}

### ICL: contrast (t+ minus t- log-odds of the matching answer), mean over items

{md_table(_df(b['icl']['contrast']), floatfmt='+.3f', index=False)}

Same-trait contrast per shot trait:

{md_table(_df(b['icl']['contrast_by_trait']), floatfmt='+.3f', index=False)}

Persona table separation (t+ minus t- persona, evaluation items) beside the observed same-trait ICL contrast at
the largest shot count; the PSM cannot predict a shift beyond the table's separation:

{md_table(_df(b['icl'].get('table_vs_icl', [])), floatfmt='+.3f', index=False)}

Grouped cross-validation on the ICL data (every model sees the same `SelectionData`):

{_compare_md(b['icl']['compare'])}

Leave-one-item-out predicted vs observed ICL contrasts (criterion `icl_contrast_prediction`; every model's
prediction of an item comes from its fit without that item):

{cpred}

{half_md}

Posterior predictive check (mean log-odds by shots, pole and matching option; 90% interval of the group mean):

{ppc_md}

Prior predictive check (the same groups, data simulated from each model's priors on this design; an
observed mean outside the 90% interval means the priors did not anticipate the data):

{prior_md}

### SFT: dose-response of the contrast (+ minus - fine-tune; evaluation items only, trained items apart)

{md_table(_df(b['sft']['contrast']), floatfmt='+.3f', index=False)}

Trained statements (never in a comparison), shift after - before per pole:

{md_table(_df(b['sft']['trained_items_shift']), floatfmt='+.3f', index=False)}

{_compare_md(b['sft']['compare'])}

### Evidence strengths (persona_selection)

{post}

Encompassing model (pre-stated secondary estimate): {enc}.

### Cross-prediction: fine-tuned model under opposite-pole shots (out of sample)

{cp_md}

### Prior-data conflicts (posterior median outside the prior's central 99%)

{conf_md}

Power-scaling sensitivity (arviz_stats `psense_summary`; > 0.05 flags a parameter whose posterior moves
when the prior or the likelihood is raised to a power near 1):

{psense_md}

### Diagnostics

{md_table(diag[dcols], floatfmt='.3g')}
"""


def _scores_md(pred: dict) -> str:
    """Out-of-sample scores per model (r, RMSE, RMSE minus the PSM's; 90% two-way bootstrap intervals)."""
    def iv(v: dict | None) -> str:
        if not v:
            return ""
        return f"{v['estimate']:+.3f}" + ("" if v["lo"] is None else f" [{v['lo']:+.3f}, {v['hi']:+.3f}]")
    rows = [{"model": m, "r": iv(v["r"]), "RMSE": iv(v["rmse"]), "RMSE minus PSM": iv(v.get("rmse_minus_reference"))}
            for m, v in pred.get("scores", {}).items()]
    return (md_table(pd.DataFrame(rows), index=False) if rows else "(not measured)") + \
        f"\n\n{pred.get('n', 0)} rows; {pred.get('method', '')}."


def _outside_md(checks: dict) -> str:
    """One line per model: groups whose observed mean lies outside the prior predictive 90% interval."""
    lines = []
    for m, rows in checks.items():
        out = [r for r in rows if r["outside_90"]]
        named = "; ".join(f"n={r.get('n_shots')}, pole {r.get('pole')}, matching {r.get('matching')}: observed "
                          f"{r['observed']:+.2f} vs [{r['lo']:+.2f}, {r['hi']:+.2f}]" for r in out[:6])
        lines.append(f"- `{m}`: {len(out)} of {len(rows)} groups outside" + (f" ({named})" if named else ""))
    return "\n".join(lines) or "(not computed)"


def render_report(res: Any) -> str:
    """The text of ``report.md`` (markdown; plots referenced under ``plots/``)."""
    r = res.results
    cfg = res.config
    blocks = r["models"]
    design = res.design
    scr = r["screening"]
    scr_md = ("Traits given in the configuration (no screening)." if scr is None else
              f"Rule: {scr['rule']} (threshold {scr['threshold']} nats).\n\n"
              + md_table(pd.DataFrame(scr["table"]).T, floatfmt="+.3f"))
    cfg_lines = "\n".join(f"- `{k}`: {v}" for k, v in r["config"].items())
    timings = pd.DataFrame({"seconds": r["timings"]})
    timings.index.name = "stage"
    return f"""# The persona selection model on real language models

Models: {', '.join(f'`{m}`' for m in blocks)}. Probes: {r['probe_source']}; traits: {', '.join(r['traits'])};
SFT traits: {', '.join(f'`{t}`' for t in design.sft_traits)}.

## 1. Pre-stated criteria

Written from the configuration before any measurement (also in `criteria.md`):

{criteria_markdown(stated_criteria(cfg))}

Verdicts:

{_verdicts(blocks)}

## 2. What the data support

{_paragraph(blocks)}

## 3. Design

Roles (statements; disjoint, asserted in code): {r['design']['roles']}. Label balance (fraction of Yes among
matching answers): {r['design']['label_balance']}. Shot counts {r['design']['n_values']} (every prefix balanced);
`t+` and `t-` contexts use identical statements with opposite answers, so a Yes/No response bias cancels in
the contrast. The pre-training prior is fitted on the neutral answers to the prior items only.

### Screening

{scr_md}

## 4. Summary by model

{md_table(side_by_side(blocks), floatfmt='.3g')}

![contrasts](plots/contrasts.png)

![ICL curves](plots/icl_curves.png)

![persona posterior](plots/persona_posterior.png)

![cross-prediction](plots/cross_prediction.png)

![SFT dose-response per trait pair](plots/sft_pairs.png)

![SFT loss](plots/sft_loss.png)

{chr(10).join(_model_section(n, b) for n, b in blocks.items())}

## Configuration and timings

<details><summary>Configuration</summary>

{cfg_lines}

</details>

{md_table(timings, floatfmt='.1f')}
"""

"""Falsification criteria, stated from the configuration before any measurement, then judged.

:func:`stated_criteria` depends on the configuration only; the pipeline
writes it to ``criteria.md`` before the first model call, and the report
repeats it with a verdict per language model (:func:`judge_runs`).  Each
criterion is a claim PSM makes that the data could refute; a failed
criterion is reported as such, never re-stated afterwards.  Every
predictive criterion is judged out of sample (leave-one-item-out, or on
conditions no fit saw) with an interval, against every null; every
interval respects the design (:mod:`psm_bayes.experiments.analysis.bootstrap`).
``tests/test_criteria.py`` builds, for each criterion, data that fail it
and data that pass it.

Design assertions (label balance, disjoint roles) are not criteria: a
design that breaks them stops the run (:class:`psm_bayes.experiments.design.Design`).
"""

from __future__ import annotations

from typing import Any

from psm_bayes.experiments.analysis.bootstrap import METHOD, interval
from psm_bayes.experiments.analysis.fitting import ENCOMPASSING, PSM

BASE_MODEL = "gemma3-270m"
INSTRUCT_MODEL = "smollm2-135m-instruct"
"""The embedded base and post-trained models compared by ``base_vs_instruct``."""


def stated_criteria(cfg: Any) -> list[dict]:
    """``[{name, statement}]`` from the configuration alone."""
    k = cfg.criteria_se
    nulls = ", ".join(f"`{n}`" for n in cfg.null_models) or "(none configured)"
    n = cfg.max_shots
    both = BASE_MODEL in cfg.models and INSTRUCT_MODEL in cfg.models
    return [
        {"name": "icl_contrast",
         "statement": f"In context, personas separate: the same-trait ICL contrast (log-odds of the matching "
                      f"answer after {n} t+ shots minus after {n} t- shots on the same statements, mean over "
                      f"shot sequences and evaluation items) exceeds {k} standard errors of a two-way bootstrap "
                      f"that resamples shot sequences (the conditions) and items independently."},
        {"name": "psm_beats_nulls_icl",
         "statement": f"On the ICL data, persona_selection's leave-one-item-out elpd exceeds that of every null "
                      f"({nulls}) by more than {k} standard errors of the paired difference over items (each "
                      f"item's term spans all its conditions; the models' per-condition drift absorbs the "
                      f"shared condition offsets). Stacking weights of the same terms are reported beside it."},
        {"name": "psm_beats_nulls_sft",
         "statement": f"On the SFT data, persona_selection's leave-one-item-out elpd exceeds that of every null "
                      f"({nulls}) by more than {k} standard errors of the paired difference over items."},
        {"name": "icl_contrast_prediction",
         "statement": f"Out of sample, persona_selection predicts the ICL contrasts: with every contrast (shot "
                      f"trait, ordering, shot count, item) predicted by the fit without that item (PSIS "
                      f"leave-one-item-out, exact refits where Pareto k > 0.7), the 90% two-way bootstrap "
                      f"interval of Pearson r (predicted vs observed) lies above 0, and for every null "
                      f"({nulls}) the 90% interval of (the null's RMSE minus persona_selection's) lies above 0."},
        {"name": "cross_prediction",
         "statement": f"Fitted on ICL and SFT data only, persona_selection predicts the fine-tuned model's "
                      f"answers under opposite-pole shots (conditions no fit saw) better than every null "
                      f"({nulls}) fitted to the same data: for each null the 90% two-way bootstrap interval "
                      f"(LoRA runs and items resampled) of (the null's RMSE minus persona_selection's) lies "
                      f"above 0."},
        {"name": "no_prior_data_conflict",
         "statement": "No parameter of any fit (persona_selection and every null, on every dataset) has its "
                      "posterior median outside the central 99% of its prior (a conflict would make the "
                      "fitted model not the validated one)."},
        {"name": "fits_converged",
         "statement": "Every fit ends, after at most two automatic refits (higher target_accept, more warm-up "
                      "and draws), with max R-hat < 1.01 and no divergent transitions."},
        {"name": "base_vs_instruct",
         "statement": f"Post-training makes the prior over personas stronger and narrower: the post-trained "
                      f"`{INSTRUCT_MODEL}` needs more in-context shots than the base `{BASE_MODEL}` to reach half "
                      f"of its maximal same-trait ICL contrast. n_half: the shot count, interpolated linearly "
                      f"between the design's counts (with contrast 0 at 0 shots), at which the mean same-trait "
                      f"contrast first reaches half its maximum over the counts. Passes when the 90% interval "
                      f"of log2 n_half(instruct) - log2 n_half(base) lies above 0 (two-way bootstrap of each "
                      f"model's contrasts, independent between models); fails otherwise (not judged where a "
                      f"model's same-trait contrast is never positive)"
                      + ("." if both else f"; not judged in this run (it needs both `{BASE_MODEL}` and "
                                          f"`{INSTRUCT_MODEL}`).")},
    ]


SECONDARY = ("Secondary estimate (pre-stated, no verdict): the `encompassing` model (PSM + surface similarity "
             "+ drift) fitted to the ICL and SFT data reports `persona_weight`, the persona term's share of the "
             "evidence-driven shift of the matching log-odds, as its posterior mean and 90% interval.")


def judge_runs(stated: list[dict], blocks: dict) -> None:
    """Set ``blocks[model]["criteria"]`` (verdicts, :func:`judge`) for every language model of a run."""
    for name, b in blocks.items():
        b["criteria"] = judge(stated, b, name, blocks)


def judge(stated: list[dict], stats: dict, model: str, blocks: dict | None = None) -> list[dict]:
    """Verdicts: ``[{name, statement, passed, evidence, model}]`` (``passed`` None when not judged).

    Parameters
    ----------
    stated : list of dict
        :func:`stated_criteria`.
    stats : dict
        One language model's ``results["models"][model]`` block (see :mod:`psm_bayes.experiments.analysis.summary`).
    model : str
    blocks : dict, optional
        Every language model's block (the ``base_vs_instruct`` criterion compares two).
    """
    out = []
    for c in stated:
        passed, evidence = verdict(c["name"], stats, blocks or {model: stats})
        out.append({"name": c["name"], "statement": c["statement"], "passed": passed, "evidence": evidence,
                    "model": model})
    return out


def verdict(name: str, stats: dict, blocks: dict | None = None) -> tuple[bool | None, str]:
    """``(passed, evidence)`` of criterion ``name`` on one model's block (``blocks``: every model's)."""
    fn = _VERDICTS[name]
    return fn(blocks or {}) if name == "base_vs_instruct" else fn(stats)


def _iv(v: dict, fmt: str = "+.3f") -> str:
    if v.get("lo") is None:
        return f"{v['estimate']:{fmt}} [no interval]"
    return f"{v['estimate']:{fmt}} [{v['lo']:{fmt}}, {v['hi']:{fmt}}]"


def _icl_contrast(s: dict) -> tuple[bool | None, str]:
    c = s["icl"]["contrast_at_max_shots"]
    if c["n_items"] < 2 or c["n_conditions"] < 2:
        return None, f"{c['n_items']} items, {c['n_conditions']} shot sequences: too few for a two-way se"
    k = s["criteria_se"]
    return (bool(c["mean"] > k * c["se"]),
            f"mean {c['mean']:+.3f} nats, two-way se {c['se']:.3f} (item-only se {c['se_items']:.3f}), "
            f"{c['n_items']} items x {c['n_conditions']} shot sequences")


def null_rows(compare: dict) -> list[str]:
    """The nulls of a comparison: every row but the PSM and the encompassing model."""
    return [n for n in compare["rows"] if n not in (PSM, ENCOMPASSING)]


def psm_beats_nulls(compare: dict, k: float) -> bool | None:
    """The comparison criterion: PSM's grouped-CV elpd exceeds every null's by more than ``k`` paired se.

    ``compare`` is :func:`psm_bayes.experiments.analysis.fits.grouped_compare`'s output; None when no null was fitted.
    The run's verdict and the power analysis (:mod:`psm_bayes.experiments.analysis.power`) both decide with it.
    """
    rows = compare["rows"]
    nulls = null_rows(compare)
    if not nulls:
        return None
    return all(rows[n]["psm_minus"] > k * rows[n]["psm_minus_se"] for n in nulls)


def _beats(which: str):
    def verdict(s: dict) -> tuple[bool | None, str]:
        cmp = s[which]["compare"]
        passed = psm_beats_nulls(cmp, s["criteria_se"])
        if passed is None:
            return None, "no nulls fitted"
        rows = cmp["rows"]
        parts = [f"{n}: {rows[n]['psm_minus']:+.1f} (se {rows[n]['psm_minus_se']:.1f})" for n in null_rows(cmp)]
        w = rows[PSM].get("stacking_weight")
        return passed, "; ".join(parts) + ("" if w is None else f"; PSM stacking weight {w:.2f}")
    return verdict


def _beats_every_null(scores: dict) -> tuple[bool | None, list[str]]:
    """(every null's RMSE-minus-PSM interval above 0, evidence parts); None without a null or an interval."""
    nulls = [m for m in scores if m not in (PSM, ENCOMPASSING)]
    if PSM not in scores or not nulls:
        return None, ["no null or no persona_selection prediction"]
    diffs = {m: scores[m]["rmse_minus_reference"] for m in nulls}
    if any(d["lo"] is None for d in diffs.values()):
        return None, ["too few conditions or items for an interval"]
    return all(d["lo"] > 0 for d in diffs.values()), [f"{m} RMSE - PSM {_iv(d)}" for m, d in diffs.items()]


def _contrast_prediction(s: dict) -> tuple[bool | None, str]:
    cp = s["icl"].get("contrast_prediction") or {}
    scores = cp.get("scores", {})
    if PSM not in scores:
        return None, "not measured"
    r = scores[PSM]["r"]
    beats, parts = _beats_every_null(scores)
    if r["lo"] is None or beats is None:
        return None, "; ".join([f"r {_iv(r, '.2f')}"] + parts)
    return bool(r["lo"] > 0 and beats), "; ".join([f"PSM r {_iv(r, '.2f')}, RMSE {_iv(scores[PSM]['rmse'], '.3f')}"]
                                                  + parts)


def _cross(s: dict) -> tuple[bool | None, str]:
    cp = s.get("cross_prediction") or {}
    scores = cp.get("scores", {})
    if PSM not in scores:
        return None, "not measured"
    beats, parts = _beats_every_null(scores)
    return beats, "; ".join([f"PSM RMSE {_iv(scores[PSM]['rmse'], '.3f')}"] + parts)


def _conflict(s: dict) -> tuple[bool | None, str]:
    rows = s["prior_data_conflict"]
    bad = [c for c in rows if c["prior_quantile"] is not None]
    unchecked = [c for c in rows if c["prior_quantile"] is None]
    text = "; ".join(f"{c['fit']} {c['parameter']} at prior quantile {c['prior_quantile']:.2g}" for c in bad)
    if bad:
        return False, text
    if unchecked:
        return None, "no prior CDF for " + ", ".join(f"{c['fit']} {c['parameter']}" for c in unchecked)
    return True, f"none in {len(s['diagnostics'])} fits"


def _converged(s: dict) -> tuple[bool | None, str]:
    d = s["diagnostics"]
    one = [n for n, v in d.items() if v.get("chains", 2) < 2]          # R-hat undefined: not judged
    bad = [n for n, v in d.items() if n not in one and not (v["max_rhat"] < 1.01 and v["divergences"] == 0)]
    bad += [n for n in one if d[n]["divergences"] > 0]
    refits = sum(v.get("refits", 0) for v in d.values())
    if bad:
        return False, "not converged: " + ", ".join(
            f"{n} (R-hat {d[n]['max_rhat']:.3f}, {d[n]['divergences']} divergences)" for n in bad)
    if one:
        return None, f"R-hat undefined for {len(one)} one-chain fits (no divergences)"
    return True, f"{len(d)} fits, {refits} refits"


def _base_vs_instruct(blocks: dict) -> tuple[bool | None, str]:
    import numpy as np

    if BASE_MODEL not in blocks or INSTRUCT_MODEL not in blocks:
        return None, f"not judged: needs both {BASE_MODEL} and {INSTRUCT_MODEL} in the run"
    h = {m: blocks[m]["icl"].get("half_max_shots") for m in (BASE_MODEL, INSTRUCT_MODEL)}
    if any(v is None or not np.isfinite(v["n_half"]) for v in h.values()):
        return None, "not judged: a model has no positive same-trait contrast (n_half undefined)"
    a, b = (np.asarray(h[m]["log2_draws"], float) for m in (INSTRUCT_MODEL, BASE_MODEL))
    n = min(a.size, b.size)
    diff = a[:n] - b[:n]                                        # independent replicates of the two models
    est = float(np.log2(h[INSTRUCT_MODEL]["n_half"]) - np.log2(h[BASE_MODEL]["n_half"]))
    iv = interval(est, diff, min(v["n_conditions"] for v in h.values()), min(v["n_items"] for v in h.values()))
    if iv["lo"] is None:
        return None, "not judged: too few bootstrap replicates with a defined n_half"
    return (bool(iv["lo"] > 0), f"n_half {INSTRUCT_MODEL} {h[INSTRUCT_MODEL]['n_half']:.2f}, {BASE_MODEL} "
            f"{h[BASE_MODEL]['n_half']:.2f} shots; log2 ratio {_iv(iv, '+.2f')}")


_VERDICTS = {"icl_contrast": _icl_contrast,
             "psm_beats_nulls_icl": _beats("icl"), "psm_beats_nulls_sft": _beats("sft"),
             "icl_contrast_prediction": _contrast_prediction, "cross_prediction": _cross,
             "no_prior_data_conflict": _conflict, "fits_converged": _converged,
             "base_vs_instruct": _base_vs_instruct}


def criteria_markdown(stated: list[dict]) -> str:
    """The stated criteria as a numbered markdown list, then the secondary estimate and the interval method."""
    items = "\n".join(f"{j + 1}. **{c['name']}**: {c['statement']}" for j, c in enumerate(stated))
    return f"{items}\n\n{SECONDARY}\n\nIntervals: {METHOD}."

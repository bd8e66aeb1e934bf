"""Falsification criteria, stated from the configuration before any measurement, then judged.

:func:`stated_criteria` depends on the configuration only; the pipeline
writes it to ``criteria.md`` before the first model call, and the report
repeats it with a verdict per language model (:func:`judge`).  Each
criterion is a claim PSM makes that the data could refute; a failed
criterion is reported as such, never re-stated afterwards.
"""

from __future__ import annotations

from typing import Any


def stated_criteria(cfg: Any) -> list[dict]:
    """``[{name, statement}]`` from the configuration alone."""
    k = cfg.criteria_se
    nulls = ", ".join(cfg.null_models) or "(none configured)"
    n = cfg.max_shots
    return [
        {"name": "label_balance",
         "statement": "Persona examples, shots and SFT episodes are label-balanced: the fraction of Yes among "
                      "their matching answers is 0.5 +/- 0.05 in each role."},
        {"name": "icl_contrast",
         "statement": f"In context, personas separate: the same-trait ICL contrast (log-odds of the matching "
                      f"answer after {n} t+ shots minus after {n} t- shots on the same statements) is positive "
                      f"by more than {k} standard errors over evaluation items."},
        {"name": "psm_beats_nulls_icl",
         "statement": f"On the ICL data, persona_selection's leave-one-item-out elpd exceeds that of every null "
                      f"({nulls}) by more than {k} standard errors of the paired difference."},
        {"name": "psm_beats_nulls_sft",
         "statement": f"On the SFT data, persona_selection's leave-one-item-out elpd exceeds that of every null "
                      f"({nulls}) by more than {k} standard errors of the paired difference."},
        {"name": "icl_contrast_prediction",
         "statement": "persona_selection's predicted ICL contrasts correlate positively with the observed "
                      "ones: the 90% item-bootstrap interval of Pearson r lies above 0."},
        {"name": "cross_prediction",
         "statement": "Fitted on base-model ICL and SFT data only, persona_selection predicts the fine-tuned "
                      "model's answers under opposite-pole shots with a lower RMSE than the response_bias null "
                      "fitted to the same data."},
        {"name": "no_prior_data_conflict",
         "statement": "No persona_selection parameter has its posterior median outside the central 99% of its "
                      "prior (a prior-data conflict would make the fitted model not the validated one)."},
        {"name": "fits_converged",
         "statement": "Every fit has max R-hat < 1.01 and no divergent transitions."},
    ]


def judge(stated: list[dict], stats: dict, model: str) -> list[dict]:
    """Verdicts: ``[{name, statement, passed, evidence, model}]`` (``passed`` None when not measurable).

    Parameters
    ----------
    stated : list of dict
        :func:`stated_criteria`.
    stats : dict
        One language model's ``results["models"][model]`` block (see :mod:`psm_bayes.experiments.summary`).
    model : str
    """
    out = []
    for c in stated:
        passed, evidence = _VERDICTS[c["name"]](stats)
        out.append({"name": c["name"], "statement": c["statement"], "passed": passed, "evidence": evidence,
                    "model": model})
    return out


def _label_balance(s: dict) -> tuple[bool, str]:
    lb = s["design"]["label_balance"]
    return all(abs(v - 0.5) <= 0.05 for v in lb.values()), ", ".join(f"{k} {v:.2f}" for k, v in lb.items())


def _icl_contrast(s: dict) -> tuple[bool | None, str]:
    c = s["icl"]["contrast_at_max_shots"]
    if c["n_items"] < 2:
        return None, "fewer than 2 items"
    k = s["criteria_se"]
    return bool(c["mean"] > k * c["se"]), f"mean {c['mean']:+.3f} nats, se {c['se']:.3f}, {c['n_items']} items"


def psm_beats_nulls(compare: dict, k: float) -> bool | None:
    """The comparison criterion: PSM's grouped-CV elpd exceeds every null's by more than ``k`` paired se.

    ``compare`` is :func:`psm_bayes.experiments.fits.grouped_compare`'s output; None when no null was fitted.
    The run's verdict and the power analysis (:mod:`psm_bayes.experiments.power`) both decide with it.
    """
    rows = compare["rows"]
    nulls = [n for n in rows if n != "persona_selection"]
    if not nulls:
        return None
    return all(rows[n]["psm_minus"] > k * rows[n]["psm_minus_se"] for n in nulls)


def _beats(which: str):
    def verdict(s: dict) -> tuple[bool | None, str]:
        rows = s[which]["compare"]["rows"]
        passed = psm_beats_nulls(s[which]["compare"], s["criteria_se"])
        if passed is None:
            return None, "no nulls fitted"
        parts = [f"{n}: {rows[n]['psm_minus']:+.1f} (se {rows[n]['psm_minus_se']:.1f})"
                 for n in rows if n != "persona_selection"]
        return passed, "; ".join(parts)
    return verdict


def _contrast_prediction(s: dict) -> tuple[bool | None, str]:
    r = s["icl"]["contrast_prediction"].get("persona_selection")
    if r is None or r["lo"] is None:
        return None, "not measurable"
    return bool(r["lo"] > 0), f"r = {r['r']:.2f}, 90% [{r['lo']:.2f}, {r['hi']:.2f}]"


def _cross(s: dict) -> tuple[bool | None, str]:
    cp = s.get("cross_prediction") or {}
    rm = cp.get("rmse", {})
    if "persona_selection" not in rm or "response_bias" not in rm:
        return None, "not measured"
    return (bool(rm["persona_selection"] < rm["response_bias"]),
            f"RMSE persona_selection {rm['persona_selection']:.3f}, response_bias {rm['response_bias']:.3f}")


def _conflict(s: dict) -> tuple[bool, str]:
    bad = [c for c in s["prior_data_conflict"] if c["fit"].endswith("persona_selection")]
    return not bad, "; ".join(f"{c['fit']} {c['parameter']} at prior quantile {c['prior_quantile']:.2g}"
                              for c in bad) or "none"


def _converged(s: dict) -> tuple[bool, str]:
    d = s["diagnostics"]
    bad = [n for n, v in d.items() if not (v["max_rhat"] < 1.01 and v["divergences"] == 0)]
    return not bad, ("not converged: " + ", ".join(bad)) if bad else f"{len(d)} fits"


_VERDICTS = {"label_balance": _label_balance, "icl_contrast": _icl_contrast,
             "psm_beats_nulls_icl": _beats("icl"), "psm_beats_nulls_sft": _beats("sft"),
             "icl_contrast_prediction": _contrast_prediction, "cross_prediction": _cross,
             "no_prior_data_conflict": _conflict, "fits_converged": _converged}


def criteria_markdown(stated: list[dict]) -> str:
    """The stated criteria as a numbered markdown list."""
    return "\n".join(f"{j + 1}. **{c['name']}**: {c['statement']}" for j, c in enumerate(stated))

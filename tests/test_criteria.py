"""The pre-stated criteria can fail: for each one, data that fail it and data that pass it.

Uncertainty first: on contrasts with a shared per-condition offset the
item-level standard error is too small (its interval covers the true mean
too rarely) while the two-way (condition x item) bootstrap covers near the
nominal 90%.  Then one counterexample and one passing case per criterion,
each through the functions the run uses (``icl_contrasts``,
``contrast_table``, ``grouped_compare``, ``contrast_prediction``,
``prediction_intervals``, ``prior_data_conflict``, ``half_max_shots``,
``fit_with_refit`` and :func:`psm_bayes.experiments.analysis.criteria.verdict`):

* ``icl_contrast`` -- no persona effect but a shared offset per shot
  sequence: the item-level se would pass it, the two-way se does not;
* ``psm_beats_nulls_*`` -- exact (conjugate) posteriors of a persona model
  and a null on data where the null is true, and where the persona effect is;
* ``icl_contrast_prediction`` / ``cross_prediction`` -- leave-one-item-out
  predictions: no persona effect, or a true ``generic_shift`` null (which
  the old criterion, judged against the weakest null, would have let pass);
* ``no_prior_data_conflict`` -- a null's shift 11.9 under a Normal(0, 2)
  prior (the case of issue 18);
* ``fits_converged`` -- a real NUTS fit with no warm-up, refitted by the policy;
* ``base_vs_instruct`` -- curves whose half-maximal shot count is larger,
  or smaller, for the instruct model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from psm_bayes.experiments.analysis import criteria
from psm_bayes.experiments.analysis.bootstrap import mean_interval, prediction_intervals
from psm_bayes.experiments.measure.icl import icl_contrasts
from psm_bayes.experiments.analysis.predictive import (contrast_prediction, half_max_shots, half_shots, lora_cluster,
                                              sequence_cluster)
from psm_bayes.experiments.analysis.summary import contrast_table

COUNTS = (1, 2, 4, 8, 16, 32, 64)


# ---------------------------------------------------------------- uncertainty
def test_two_way_bootstrap_covers_where_the_item_se_does_not():
    """Contrasts ``a_c + b_i + e_ci`` (true mean 0, sd 1 / 0.5 / 0.3), 300 simulated data sets per design.

    Crossed (6 conditions x 16 items, every item in every condition) and nested (4 conditions of 4
    items, as one ordering per trait): the item-level 90% t interval covers 0.39 and 0.63 of the time
    (measured), the two-way bootstrap interval 0.89 and 0.93.  Tolerances: 300 replicates give a
    binomial sd of 0.017 on a coverage near 0.9; the bounds are 3-4 sd from the measured values.
    """
    def coverage(n_cond: int, n_item: int, nested: bool) -> tuple[float, float]:
        rng = np.random.default_rng(1)
        naive = boot = 0
        for rep in range(300):
            if nested:
                cond, item = np.repeat(np.arange(n_cond), n_item // n_cond), np.arange(n_item)
            else:
                cond, item = np.repeat(np.arange(n_cond), n_item), np.tile(np.arange(n_item), n_cond)
            x = rng.normal(0, 1, n_cond)[cond] + rng.normal(0, 0.5, n_item)[item] + rng.normal(0, 0.3, cond.size)
            per_item = np.array([x[item == i].mean() for i in range(n_item)])
            se = per_item.std(ddof=1) / np.sqrt(n_item)
            naive += abs(per_item.mean()) < stats.t.ppf(0.95, n_item - 1) * se
            iv = mean_interval(x, cond, item, seed=rep, n_boot=400)
            boot += iv["lo"] < 0 < iv["hi"]
        return naive / 300, boot / 300

    for design, (n_cond, n_item, nested), naive_max in (("crossed", (6, 16, False), 0.5),
                                                        ("nested", (4, 16, True), 0.75)):
        naive, boot = coverage(n_cond, n_item, nested)
        assert naive < naive_max, (design, naive)            # the item-level interval covers too rarely
        assert 0.83 <= boot <= 0.97, (design, boot)          # the two-way interval near the nominal 0.9


# ---------------------------------------------------------------- synthetic ICL data
def _icl_meas(effect: float, *, seed: int, half: float = 4.0, seq_sd: float = 0.3, generic: float = 0.0,
              traits=("a", "b"), orderings: int = 2, items: int = 6) -> pd.DataFrame:
    """ICL measurement rows: item base + per-condition Yes drift + pole * (persona dose-response + sequence offset).

    The persona effect on a same-trait item is ``effect * n / (n + half)`` (t+ minus t-); ``seq_sd`` is the
    sd of a shared offset of each shot sequence's contrast (all its items and counts); ``generic`` a
    constant same-trait shift whatever the dose (a true ``generic_shift`` null).
    """
    rng = np.random.default_rng(seed)
    item_trait = np.repeat(traits, items)
    yes = np.tile([1.0, -1.0], item_trait.size // 2)              # label-balanced: half match with Yes
    base = rng.normal(0, 1, item_trait.size)
    rows = []
    for t in traits:
        for o in range(orderings):
            seq = rng.normal(0, seq_sd)
            for n in COUNTS:
                for pole, sign in (("+", 0.5), ("-", -0.5)):
                    drift = rng.normal(0, 0.5)
                    for i, it in enumerate(item_trait):
                        same = float(it == t)
                        mu = base[i] + drift * yes[i] + sign * same * (effect * n / (n + half) + seq + generic)
                        rows.append({"condition": f"icl:{t}{pole}:o{o}:n{n}", "kind": "icl", "shot_trait": t,
                                     "pole": pole, "ordering": o, "n_shots": n, "item": i, "item_id": f"i{i}",
                                     "item_trait": it, "matching": int(yes[i] < 0),
                                     "logodds": mu + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def _at_max(meas: pd.DataFrame, seed: int = 0) -> dict:
    ic = icl_contrasts(meas)
    at = ic[(ic["n_shots"] == max(COUNTS)) & ic["same_trait"]].assign(at="max")
    return contrast_table(at, ["at"], sequence_cluster, seed)[0]


def test_icl_contrast_fails_without_a_persona_effect_even_where_the_item_se_would_pass():
    """No persona effect, a shared offset per shot sequence (sd 1): seed 2 is a data set where the item-level
    se would pass the criterion (0.42 > 2 x 0.19); the two-way se (0.63) does not.  Over seeds 0-49
    the item-level rule passes 24% of such no-effect data sets, the two-way rule none (measured)."""
    fail = _at_max(_icl_meas(0.0, seed=2, seq_sd=1.0))
    assert fail["mean"] > 2 * fail["se_items"]                       # what an item-level se would claim
    passed, evidence = criteria.verdict("icl_contrast", {"icl": {"contrast_at_max_shots": fail}, "criteria_se": 2})
    assert passed is False, evidence
    rate = np.mean([(lambda c: c["mean"] > 2 * c["se"])(_at_max(_icl_meas(0.0, seed=s, seq_sd=1.0), s))
                    for s in range(20)])
    assert rate <= 0.1
    ok = _at_max(_icl_meas(3.0, seed=0))                             # a persona effect of 3 nats
    passed, evidence = criteria.verdict("icl_contrast", {"icl": {"contrast_at_max_shots": ok}, "criteria_se": 2})
    assert passed is True, evidence


# ---------------------------------------------------------------- comparison (exact posteriors)
def _conjugate(y: np.ndarray, f: np.ndarray, n_draws: int, rng: np.random.Generator, prior_sd: float = 10.0,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Exact posterior draws of ``b`` in ``y ~ Normal(b f, 1)``, ``b ~ Normal(0, prior_sd)`` (rows ``mask``)."""
    m = np.ones(y.size, bool) if mask is None else mask
    prec = (f[m] ** 2).sum() + prior_sd ** -2
    return rng.normal((f[m] * y[m]).sum() / prec, prec ** -0.5, n_draws)


def _item_terms(y: np.ndarray, mean: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``sum_{r in item} log Normal(y_r | mean[draw, r], 1)``: (chain 2, draw, item)."""
    ll = stats.norm.logpdf(y, mean, 1.0)
    out = np.stack([ll[:, items == i].sum(1) for i in np.unique(items)], axis=-1)
    return out.reshape(2, -1, out.shape[-1])


def _compare(effect: float, seed: int) -> dict:
    """grouped_compare of a persona model (``y ~ b f``, f a known persona feature) and a null (``y ~ c``)."""
    import arviz as az

    from psm_bayes.experiments.analysis.fits import grouped_compare

    rng = np.random.default_rng(seed)
    items = np.repeat(np.arange(16), 8)
    f = rng.normal(0, 1, items.size)
    y = effect * f + rng.normal(0, 1, items.size)
    b, c = _conjugate(y, f, 2000, rng), _conjugate(y, np.ones(y.size), 2000, rng)
    ll = {"persona_selection": _item_terms(y, b[:, None] * f, items),
          "response_bias": _item_terms(y, c[:, None] * np.ones(y.size), items)}
    fits = {m: az.from_dict({"posterior": {"logodds_sd": np.ones((2, 1000))}}) for m in ll}
    return grouped_compare(fits, items, None, ll)


def test_psm_beats_nulls_fails_when_the_null_is_true_and_passes_when_the_persona_effect_is():
    true_null, true_psm = _compare(0.0, seed=0), _compare(1.0, seed=0)
    for name in ("psm_beats_nulls_icl", "psm_beats_nulls_sft"):
        which = name.rsplit("_", 1)[1]
        passed, evidence = criteria.verdict(name, {which: {"compare": true_null}, "criteria_se": 2})
        assert passed is False, evidence
        passed, evidence = criteria.verdict(name, {which: {"compare": true_psm}, "criteria_se": 2})
        assert passed is True, evidence
    assert true_psm["rows"]["persona_selection"]["stacking_weight"] > 0.9
    assert true_null["rows"]["response_bias"]["stacking_weight"] > 0.5       # the true null gets the weight
    with_enc = {"rows": {**true_psm["rows"], "encompassing": dict(true_null["rows"]["response_bias"])}}
    assert criteria.psm_beats_nulls(with_enc, 2) is True                     # encompassing is not a null


def test_loio_means_match_exact_leave_one_item_out():
    """PSIS leave-one-item-out predictions against the exact conjugate ones (posterior refitted without the item).

    4000 exact posterior draws; PSIS error here is < 2% of the largest prediction, while the in-sample
    posterior mean (no item left out) misses the exact held-out prediction by more: the test can fail.
    """
    import arviz as az

    from psm_bayes.experiments.analysis.refits import loio_means
    from psm_bayes.models.selection_simulate import design

    data = design(seed=0, n_personas=3, n_traits=2, n_eval=4, n_shot_items=4, shots=(2, 4),
                  observation="measurements")
    rng = np.random.default_rng(0)
    items = data.measurement_item
    f = rng.normal(0, 1, items.size)
    y = 0.8 * f + rng.normal(0, 1, items.size)
    b = _conjugate(y, f, 4000, rng, prior_sd=1.0)
    n_items = data.measured_items[0].size
    dt = az.from_dict({"posterior": {"logodds_mean": (b[:, None] * f).reshape(2, 2000, -1),
                                     "item_sd": np.zeros((2, 2000)), "item_effect": np.zeros((2, 2000, n_items)),
                                     "logodds_sd": np.ones((2, 2000))}})
    pred, k = loio_means(dt, data, _item_terms(y, b[:, None] * f, items))
    exact = np.zeros_like(y)
    for i in np.unique(items):
        m = items != i
        prec = (f[m] ** 2).sum() + 1.0
        exact[~m] = (f[m] * y[m]).sum() / prec * f[~m]
    tol = 0.02 * np.abs(exact).max()
    assert np.abs(pred - exact).max() < tol and k.max() < 0.7
    assert np.abs(b.mean() * f - exact).max() > tol


# ---------------------------------------------------------------- out-of-sample prediction criteria
def _loio_ls(y: np.ndarray, f: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Exact leave-one-item-out posterior-mean predictions of ``y ~ b f`` (conjugate, prior sd 10)."""
    pred = np.zeros_like(y)
    for i in np.unique(items):
        m = items != i
        pred[~m] = (f[m] * y[m]).sum() / ((f[m] ** 2).sum() + 0.01) * f[~m]
    return pred


def _contrast_verdict(meas: pd.DataFrame, seed: int = 0) -> tuple[bool | None, str]:
    """Held-out predictions of three models: PSM (dose n / (n + 4)), generic_shift (constant), response_bias (0)."""
    sign = np.where(meas["pole"] == "+", 0.5, -0.5)
    same = (meas["shot_trait"] == meas["item_trait"]).to_numpy(float)
    n = meas["n_shots"].to_numpy(float)
    y = (meas["logodds"] - meas.groupby(["item", "shot_trait", "ordering", "n_shots"])["logodds"]
         .transform("mean")).to_numpy()                # each item's own level: it cancels in a contrast
    items = meas["item"].to_numpy()
    loio = {"icl/persona_selection": _loio_ls(y, sign * same * n / (n + 4), items),
            "icl/generic_shift": _loio_ls(y, sign * same, items), "icl/response_bias": np.zeros(y.size)}
    cp = contrast_prediction(meas, loio, ("persona_selection", "response_bias", "generic_shift"), seed=seed)
    assert cp["n"] == len(icl_contrasts(meas))
    return criteria.verdict("icl_contrast_prediction", {"icl": {"contrast_prediction": cp}})


def test_icl_contrast_prediction_needs_a_persona_effect_and_must_beat_every_null():
    passed, evidence = _contrast_verdict(_icl_meas(3.0, seed=0))
    assert passed is True, evidence
    passed, evidence = _contrast_verdict(_icl_meas(0.0, seed=0))              # no persona effect
    assert passed is False, evidence
    passed, evidence = _contrast_verdict(_icl_meas(0.0, seed=0, seq_sd=0.0, generic=1.8))   # generic_shift true
    assert passed is False, evidence
    assert "response_bias RMSE - PSM +" in evidence     # beating only the weakest null would have passed


def _cross_rows(effect: float, generic: float, seed: int) -> pd.DataFrame:
    """Cross conditions: 2 SFT traits x 2 poles x 3 seeds x shots (0..16) of the opposite pole, 4 items each."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in ("a", "b"):
        for pole, sign in (("+", 1.0), ("-", -1.0)):
            for s in range(3):
                run = rng.normal(0, 0.3)
                for n in (1, 2, 4, 8, 16):
                    for i in range(4):
                        mu = sign * (effect * 4 / (n + 4) + generic) + run
                        rows.append({"sft_trait": t, "pole": pole, "seed": s, "n_shots": n, "item": f"{t}{i}",
                                     "logodds": mu + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def test_cross_prediction_must_beat_every_null_out_of_sample():
    def judge(rows: pd.DataFrame) -> tuple[bool | None, str]:
        sign = np.where(rows["pole"] == "+", 1.0, -1.0)
        n, y, items = rows["n_shots"].to_numpy(float), rows["logodds"].to_numpy(), rows["item"].to_numpy()
        preds = {"persona_selection": _loio_ls(y, sign * 4 / (n + 4), items),
                 "generic_shift": _loio_ls(y, sign, items), "response_bias": np.zeros(y.size)}
        scores = prediction_intervals(y, preds, lora_cluster(rows), items, reference="persona_selection")
        return criteria.verdict("cross_prediction", {"cross_prediction": {"scores": scores}})

    passed, evidence = judge(_cross_rows(3.0, 0.0, seed=0))
    assert passed is True, evidence
    passed, evidence = judge(_cross_rows(0.0, 1.5, seed=0))                 # a constant shift: generic_shift true
    assert passed is False, evidence
    assert criteria.verdict("cross_prediction", {"cross_prediction": None})[0] is None


# ---------------------------------------------------------------- prior-data conflict, every fit
def test_no_prior_data_conflict_covers_every_fit_and_names_unchecked_parameters():
    import arviz as az

    from psm_bayes.experiments.analysis.checks import prior_data_conflict
    from psm_bayes.models.selection import Priors

    rng = np.random.default_rng(0)
    fine = az.from_dict({"posterior": {"beta_icl": rng.lognormal(0, 0.2, (2, 100)),
                                       "drift_sd": rng.gamma(5, 0.1, (2, 100, 2))}},
                        dims={"drift_sd": ["condition_type"]}, coords={"condition_type": ["icl-n1", "icl-n2"]})
    # issue 18: the persona-profile null's shift at 11.9 under its Normal(0, 2) prior, in a NULL's fit
    null = az.from_dict({"posterior": {"profile_shift": rng.normal(11.9, 0.5, (2, 100)),
                                       "logodds_sd": rng.gamma(5, 0.1, (2, 100))}})
    diag = {"icl/persona_selection": {}, "icl/profile_similarity": {}}
    bad = prior_data_conflict({"icl/persona_selection": fine, "icl/profile_similarity": null}, Priors())
    assert [(c["fit"], c["parameter"]) for c in bad] == [("icl/profile_similarity", "profile_shift")]
    passed, evidence = criteria.verdict("no_prior_data_conflict", {"prior_data_conflict": bad, "diagnostics": diag})
    assert passed is False and "profile_similarity" in evidence
    ok = prior_data_conflict({"icl/persona_selection": fine}, Priors())
    assert criteria.verdict("no_prior_data_conflict", {"prior_data_conflict": ok, "diagnostics": diag})[0] is True
    odd = az.from_dict({"posterior": {"new_site": rng.normal(size=(2, 100))}})
    unchecked = prior_data_conflict({"icl/x": odd}, Priors())
    assert criteria.verdict("no_prior_data_conflict",
                            {"prior_data_conflict": unchecked, "diagnostics": diag})[0] is None


# ---------------------------------------------------------------- convergence as a policy (real NUTS)
def test_convergence_policy_refits_a_fit_that_fails_and_records_it():
    """A real NUTS fit (the ``power_law`` ICL model, its small simulated design) with no warm-up fails the
    policy (divergences, chains that never move); the policy refits it (warm-up 200, target_accept 0.95) and
    the refit passes.  Both attempts are recorded; ``fits_converged`` fails on the first, passes on the last.
    Measured: 37 s CPU (2 fits with JIT compilation); 132-158 s wall on the shared 2-core machine at load 8-13."""
    from psm_bayes.experiments.analysis.fitting import FitSettings, fit_diagnostics, fit_with_refit, policy_problems
    from psm_bayes.models import catalogue

    entry = catalogue.get("power_law")
    data, _ = catalogue.load(entry.simulate)(seed=0, **dict(entry.sizes))
    # init="median": the schedule as written (REFIT_SCHEDULE); a failing Laplace-started fit is refitted
    # with the adapted mass matrix and >= 1000 warm-up instead (tests/test_laplace_start.py)
    settings = FitSettings(num_warmup=0, num_samples=1000, num_chains=2, max_refits=1, init="median")
    notes: list[str] = []
    dt = fit_with_refit(catalogue.model("power_law"), data, settings, seed=0, on_refit=notes.append)
    d = fit_diagnostics(dt)
    first, last = d["attempts"]
    assert first["problems"] and first["num_warmup"] == 0 and first["divergences"] > 0
    assert last["num_warmup"] == 200 and last["target_accept"] == 0.95 and last["seed"] == 1000
    assert not last["problems"] and not policy_problems(d, 2) and d["refits"] == 1
    assert len(notes) == 1 and notes[0].startswith("refit 1")
    assert criteria.verdict("fits_converged", {"diagnostics": {"x": d}})[0] is True
    assert criteria.verdict("fits_converged", {"diagnostics": {"x": first}})[0] is False
    with pytest.raises(ValueError, match="max_refits"):
        FitSettings(max_refits=3)


# ---------------------------------------------------------------- base vs instruct
def test_half_shots_interpolates_the_first_crossing_of_half_the_maximum():
    counts = np.array([1, 2, 4, 8])
    curve = np.array([[0.5, 1.0, 3.0, 2.0],      # max 3, half 1.5: between 2 (1.0) and 4 (3.0) -> 2.5
                      [2.0, 2.0, 2.0, 2.0],      # half 1 reached at 1 shot: from 0 at 0 shots -> 0.5
                      [-1.0, -0.5, 0.0, -0.2]])  # never positive: undefined
    got = half_shots(counts, curve)
    np.testing.assert_allclose(got[:2], [2.5, 0.5])
    assert np.isnan(got[2])


def test_base_vs_instruct_passes_when_the_instruct_model_needs_more_shots_and_fails_otherwise():
    base = "gemma3-270m"
    inst = "smollm2-135m-instruct"

    def block(half: float, seed: int) -> dict:
        return {"icl": {"half_max_shots": half_max_shots(icl_contrasts(_icl_meas(3.0, seed=seed, half=half)),
                                                         seed=seed)}}

    h = block(2.0, 0)["icl"]["half_max_shots"]
    assert 1.0 < h["n_half"] < 3.0 and h["n_conditions"] == 4 and h["n_items"] == 12
    narrow = {base: block(2.0, 0), inst: block(16.0, 1)}       # the instruct model needs ~8x the shots
    passed, evidence = criteria.verdict("base_vs_instruct", {}, narrow)
    assert passed is True, evidence
    wide = {base: block(16.0, 0), inst: block(2.0, 1)}          # the opposite: PSM's prediction refuted
    assert criteria.verdict("base_vs_instruct", {}, wide)[0] is False
    same = {base: block(4.0, 0), inst: block(4.0, 1)}           # no difference: not supported
    assert criteria.verdict("base_vs_instruct", {}, same)[0] is False
    assert criteria.verdict("base_vs_instruct", {}, {base: narrow[base]})[0] is None
    flat = {base: narrow[base],
            inst: {"icl": {"half_max_shots": half_max_shots(icl_contrasts(_icl_meas(-3.0, seed=2, seq_sd=0.0)))}}}
    assert criteria.verdict("base_vs_instruct", {}, flat)[0] is None       # instruct contrast never positive


def test_stated_criteria_follow_the_configuration_only():
    from psm_bayes.experiments.config import ExperimentConfig

    one = criteria.stated_criteria(ExperimentConfig())
    two = criteria.stated_criteria(ExperimentConfig(models=("gemma3-270m", "smollm2-135m-instruct")))
    names = [c["name"] for c in one]
    assert "label_balance" not in names and names == [c["name"] for c in two]
    text = {c["name"]: c["statement"] for c in one}
    for null in ExperimentConfig().null_models:                 # every null is named, not the weakest
        assert f"`{null}`" in text["icl_contrast_prediction"] and f"`{null}`" in text["cross_prediction"]
    assert "not judged in this run" in text["base_vs_instruct"]
    assert "not judged in this run" not in {c["name"]: c["statement"] for c in two}["base_vs_instruct"]
    assert "persona_weight" in criteria.criteria_markdown(one)


def test_label_balance_is_a_design_assertion_that_stops_the_run():
    """Not a criterion any more: a design whose persona examples or SFT episodes are not label-balanced raises."""
    from dataclasses import replace

    from psm_bayes.data import DataError
    from psm_bayes.experiments.config import ExperimentConfig
    from psm_bayes.experiments.design import make_design
    from psm_bayes.probes import load_probes

    cfg = ExperimentConfig.quick()                    # few examples per role: unused statements remain
    probes = load_probes(cfg.traits)
    d = make_design(cfg, probes, cfg.traits)
    m, trait = probes.matching_option, probes.trait
    for field, idx in (("persona_idx", d.persona_idx), ("sft_train", d.sft_train)):
        t = trait[idx[0]]
        used = set(np.concatenate(list(d.roles().values())).tolist())
        spare = [i for i in np.flatnonzero((trait == t) & (m == m[idx[0]])) if i not in used]
        other = [j for j, i in enumerate(idx) if trait[i] == t and m[i] != m[idx[0]]][0]
        bad = idx.copy()
        bad[other] = spare[0]                          # one matching-No example swapped for a matching-Yes one
        with pytest.raises(DataError, match="not label-balanced"):
            replace(d, **{field: bad})


@pytest.mark.slow
def test_real_fits_psm_beats_nulls_decides_right_and_loio_predictions_are_out_of_sample():
    """Slow (4+ NUTS fits of the selection family; 12.7 min measured on the shared 2-core machine at
    load ~12): on
    log-odds simulated from ``persona_selection`` the run's comparison claims PSM over ``response_bias``;
    on log-odds simulated from ``response_bias`` (the null true) it does not.  The PSM's leave-one-item-out
    predictions of a held-out item differ from its in-sample posterior means (they do not see the item)."""
    from psm_bayes.experiments.analysis.fitting import FitSettings, PSM, fit_with_refit
    from psm_bayes.experiments.analysis.fits import grouped_compare
    from psm_bayes.experiments.analysis.refits import fit_item_loglik, loio_means, row_means
    from psm_bayes.models import catalogue
    from psm_bayes.models.selection_simulate import simulate

    settings = FitSettings(num_warmup=300, num_samples=300, num_chains=2, logodds_df=None, max_refits=1)
    pr = settings.priors()
    for truth, claims in ((PSM, True), ("response_bias", False)):
        data, _ = simulate(truth, seed=11, n_personas=3, n_traits=2, n_eval=6, n_shot_items=4, shots=(1, 2, 4, 8),
                           sft_episodes=4, observation="measurements", priors=pr)
        fits = {m: fit_with_refit(catalogue.model(m), data, settings, seed=0, priors=pr)
                for m in (PSM, "response_bias")}
        ll = {m: fit_item_loglik(dt, data, pr) for m, dt in fits.items()}
        cmp = grouped_compare(fits, data.measurement_item, None, ll)
        assert criteria.psm_beats_nulls(cmp, 2.0) is claims, (truth, cmp["rows"])
        pred, k = loio_means(fits[PSM], data, ll[PSM])
        assert np.isfinite(pred).all() and pred.shape == data.logodds.shape
        if truth == PSM:
            assert np.abs(pred - row_means(fits[PSM], data).mean(0)).max() > 1e-3

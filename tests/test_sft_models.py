"""SFT-shift models and the joint ICL + SFT model: validation, maths, summaries, recovery, LOO."""

from __future__ import annotations

import numpy as np
import pytest

from psm_bayes.data import DataError
from psm_bayes.diagnostics import draws
from psm_bayes.posterior import predicted_vs_observed, shift_correlation
from psm_bayes.models import icl_curves as icl
from psm_bayes.models import sft_shift as sft
from psm_bayes.models.maths import NUMPY
from psm_bayes.models.psm_joint import JointData
from psm_bayes.models.sft_shift import SFTPriors, SFTShiftData

FIT = dict(num_warmup=300, num_samples=300, num_chains=2)


def _tiny(**changes) -> SFTShiftData:
    kw = dict(item=("i0", "i1", "i2"), trait=("t", "t", "u"),
              target_loglik=np.log(np.array([[[0.9, 0.1], [0.2, 0.8]]] * 3)), target_option=np.array([0, 1, 0]),
              train_loglik=np.array([-1.0, -3.0]), trained=np.array([True, False, False]),
              prior_weights=np.array([0.5, 0.5]), shift=np.array([0.5, -0.2, 0.4]))
    kw.update(changes)
    return SFTShiftData(**kw)


def within_3sd(x: np.ndarray, truth) -> bool:
    """``|posterior mean - truth| < 3 posterior sd``: a calibrated posterior fails this w.p. ~0.003."""
    return bool(abs(x.mean() - truth) < 3 * x.std())


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("changes, field", [
    (dict(item=("i0", "i0", "i2")), "item"),
    (dict(item="i0"), "item"),
    (dict(trait=("t", "t")), "trait"),
    (dict(target_loglik=np.zeros((2, 2, 2))), "target_loglik"),
    (dict(target_loglik=np.full((3, 2, 2), 0.1)), "target_loglik"),
    (dict(target_option=np.array([0, 1, 2])), "target_option"),
    (dict(train_loglik=np.array([-1.0, np.inf])), "train_loglik"),
    (dict(train_loglik=np.array([-1.0, -2.0, -3.0])), "train_loglik"),
    (dict(trained=np.array([0.5, 0.0, 1.0])), "trained"),
    (dict(trained=np.array([True, False])), "trained"),
    (dict(prior_weights=np.array([0.2, 0.2])), "prior_weights"),
    (dict(shift=np.array([0.1, np.nan, 0.0])), "shift"),
    (dict(shift=np.array([0.1, 0.2])), "shift"),
    (dict(personas=("a",)), "personas"),
])
def test_sft_data_validation_names_field(changes, field):
    with pytest.raises(DataError, match=f"^{field}"):
        _tiny(**changes)


def test_sft_data_defaults_and_helpers():
    d = _tiny(trained=np.array([1, 0, 0]))
    assert d.trained.dtype == bool and d.personas == ("p0", "p1") and d.n_options == 2
    from psm_bayes.models.sft_shift_numpyro import psm_sft

    spec = psm_sft.spec  # observed fields are declared once, in the spec
    assert spec.unobserve(d).shift is None and set(d.coords()) == {"item", "persona", "option"}
    assert spec.with_observed(d, {"shift": [1, 2, 3]}).shift.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="priors.sigma_scale"):
        SFTPriors(sigma_scale=-1.0)


def test_joint_data_validation():
    s = _tiny()
    i = icl.make_icl_design(n_personas=2, n_items=10, n_curves=2, n_values=(0, 1), seed=0,
                            prior_weights=np.array([0.5, 0.5]))[0]
    j = JointData(i, s)
    assert set(j.coords()) >= {"measurement", "curve", "item", "persona", "option"}
    with pytest.raises(DataError, match="^sft.prior_weights"):
        JointData(i, _tiny(prior_weights=np.array([0.3, 0.7])))
    with pytest.raises(DataError, match="^sft.personas"):
        JointData(i, _tiny(personas=("a", "b")))
    with pytest.raises(DataError, match="^target_loglik"):
        JointData(icl.ICLData(curve=["a"], n_shots=[0]), s)
    with pytest.raises(DataError, match="^icl"):
        JointData(s, s)


# ---------------------------------------------------------------- maths, hand-checked
def test_psm_sft_shift_by_hand():
    d = _tiny()
    log_pi = np.log(d.prior_weights)
    # one persona: SFT cannot re-weight anything, shift 0
    one = sft.psm_sft_shift(NUMPY, np.zeros(1), np.array([-4.0]), d.target_loglik[:, :1], d.target_option, 2.0, 0.3)
    assert np.allclose(one, 0.0)
    # beta = 0: w = pi, shift 0
    assert np.allclose(sft.psm_sft_shift(NUMPY, log_pi, d.train_loglik, d.target_loglik, d.target_option, 0.0, 0.3), 0)
    # two personas, beta = 1, no bias: w = softmax(log 0.5 + (-1, -3))
    w = np.exp([-1.0, -3.0]) / np.exp([-1.0, -3.0]).sum()
    p_after, p_before = w @ [0.9, 0.2], 0.5 * 0.9 + 0.5 * 0.2  # P(Yes); items 0 and 2 target Yes, item 1 No
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    want = np.array([logit(p_after) - logit(p_before), logit(1 - p_after) - logit(1 - p_before),
                     logit(p_after) - logit(p_before)])
    got = sft.psm_sft_shift(NUMPY, log_pi, d.train_loglik, d.target_loglik, d.target_option, 1.0, 0.0)
    assert np.allclose(got, want)
    # three options: logit = log p(target) - log(1 - p(target))
    L3 = np.log(np.array([[[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]]))
    lo = sft.target_logodds(NUMPY, np.log([0.25, 0.75]), L3, np.array([2]), 0.0)
    p = 0.25 * 0.1 + 0.75 * 0.8
    assert np.isclose(lo[0], np.log(p / (1 - p)))


def test_summaries_by_hand():
    import arviz as az

    d = _tiny(shift=np.array([1.0, 2.0, 3.0]))
    mean = np.array([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]])  # (chain, draw, item): r = +1 and -1
    dt = az.from_dict({"posterior": {"shift_mean": mean}, "posterior_predictive": {"shift": mean + 1.0}})
    table = predicted_vs_observed(dt, d)
    assert table.index.tolist() == ["i0", "i1", "i2"]
    assert np.allclose(table["predicted"], [2.0, 2.0, 2.0]) and np.allclose(table["observed"], [1, 2, 3])
    assert np.allclose(table["mean_lo"], [1.1, 2.0, 1.1]) and np.allclose(table["pred_hi"], [3.9, 3.0, 3.9])
    r, (lo, hi) = shift_correlation(dt, d)
    assert np.isclose(r, 0.0) and np.isclose(lo, -0.9) and np.isclose(hi, 0.9)
    with pytest.raises(DataError, match="^shift"):
        shift_correlation(dt, d.replace(shift=None))


def test_prior_predictive_shapes():
    from numpyro import handlers

    from psm_bayes.models.psm_joint_numpyro import psm_joint
    from psm_bayes.models.sft_shift_numpyro import SFT_MODELS

    design, _ = sft.make_sft_design(seed=0)
    for name, model in SFT_MODELS.items():
        tr = handlers.trace(handlers.seed(model, 0)).get_trace(design)
        assert tr["shift"]["value"].shape == (len(design),) and not tr["shift"]["is_observed"], name
    w = handlers.trace(handlers.seed(SFT_MODELS["psm_sft"], 0)).get_trace(design)["w"]["value"]
    assert np.isclose(float(w.sum()), 1.0)
    jd = JointData(icl.make_icl_design(seed=0, prior_weights=design.prior_weights)[0], design)
    tr = handlers.trace(handlers.seed(psm_joint, 0)).get_trace(jd)
    assert tr["nll"]["value"].shape == (len(jd.icl),) and tr["shift"]["value"].shape == (len(design),)


# ---------------------------------------------------------------- recovery (NUTS, fixed seeds)
PSM_TRUTH = {"beta_sft": 0.3, "authorial_bias": 0.5, "sigma": 0.1}
NULL_TRUTH = {"delta": 1.5, "c": 0.2, "response_bias": -0.3, "sigma": 0.1}
# Recovery criteria (fixed before the seed scan below), applied to the fit AND to a prior-only "fit" (prior
# draws), which must fail them:
# (1) contraction: posterior sd of every scalar at most half its prior sd;
# (2) |posterior mean - truth| < 4.5 posterior sd. Seed scan (seeds 0-15, this design and FIT): the z-scores
#     had sd ~1.4 for beta_sft and authorial_bias (NUTS with 2 x 300 draws and posteriors 500x narrower
#     than the prior: Monte Carlo error of the mean adds to the spread), max |z| 3.4 (beta_sft, seed 0).
#     With sd 1.4, 4.5 is 3.2 sd: P(miss) ~ 0.001 per scalar. null_sft (seeds 0-6): z sd ~1.2, max |z| 3.4
#     (c, seed 0: the untrained items' noise averages +2.9 standard errors). A 3-sd rule failed seed 0 for
#     both models, which is why the previous version moved to seed 1; seed 0 is restored here.
# (3) the posterior mean of shift_mean is closer to the noise-free truth than the prior mean (RMSE at
#     most half): scan 0.01-0.06 for the fit vs 1.0 (psm_sft) and 0.67 (null_sft) for the prior.
# Measured contraction: 0.002-0.09 (psm_sft), 0.014-0.03 (null_sft).
Z_MAX, CONTRACTION = 4.5, 0.5


def recovered(post: dict, prior: dict, truth: dict, true_mean: np.ndarray) -> bool:
    ok = True
    for name, value in truth.items():
        x = np.asarray(post[name])
        ok &= bool(x.std() <= CONTRACTION * prior[name].std() and abs(x.mean() - value) < Z_MAX * x.std())
    rmse = np.sqrt(np.mean((post["shift_mean"].mean(0) - true_mean) ** 2))
    rmse_prior = np.sqrt(np.mean((prior["shift_mean"].mean(0) - true_mean) ** 2))
    return ok and bool(rmse <= 0.5 * rmse_prior)


@pytest.fixture(scope="module")
def design():
    return sft.make_sft_design(n_personas=6, n_items=40, n_train=12, seed=2)[0]


@pytest.fixture(scope="module")
def psm_sim(design):
    from psm_bayes.models.numpyro_predict import simulate
    from psm_bayes.models.sft_shift_numpyro import psm_sft

    return simulate(psm_sft, design, PSM_TRUTH, seed=0)


@pytest.fixture(scope="module")
def null_sim(design):
    from psm_bayes.models.numpyro_predict import simulate
    from psm_bayes.models.sft_shift_numpyro import null_sft

    return simulate(null_sft, design, NULL_TRUTH, seed=0)


def _check_recovery(model, sim, truth):
    from psm_bayes.inference import fit_nuts
    from psm_bayes.inference.numpyro_backend import prior_predictive

    data, sites = sim
    dt = fit_nuts(model, data, seed=0, **FIT)
    assert int(dt["sample_stats"]["diverging"].sum()) == 0
    prior = prior_predictive(model, data, seed=1, num_samples=400)
    post = {n: draws(dt, n) for n in (*truth, "shift_mean")}
    assert recovered(post, prior, truth, sites["shift_mean"]), {
        n: ((post[n].mean() - v) / post[n].std(), post[n].std() / prior[n].std()) for n, v in truth.items()}
    assert not recovered({n: prior[n][:200] for n in post}, prior, truth, sites["shift_mean"])  # prior-only fails
    return data, dt


def test_psm_sft_recovers_parameters(psm_sim):
    from psm_bayes.models.sft_shift_numpyro import psm_sft

    data, dt = _check_recovery(psm_sft, psm_sim, PSM_TRUTH)
    table = predicted_vs_observed(dt, data)
    assert ((table.observed >= table.pred_lo) & (table.observed <= table.pred_hi)).mean() >= 0.75
    r, _ = shift_correlation(dt, data)
    assert r > 0.9  # sigma (0.1) is small next to the spread of the true shifts (sd ~1)


def test_null_sft_recovers_parameters(null_sim):
    from psm_bayes.models.sft_shift_numpyro import null_sft

    _check_recovery(null_sft, null_sim, NULL_TRUTH)


@pytest.mark.slow
def test_loo_prefers_generating_sft_model(psm_sim, null_sim):
    import arviz as az

    from psm_bayes.inference import fit_nuts
    from psm_bayes.models.sft_shift_numpyro import null_sft, psm_sft

    for (data, _), winner in ((psm_sim, "psm_sft"), (null_sim, "null_sft")):
        cmp = az.compare({m.spec.name: fit_nuts(m, data, seed=0, **FIT) for m in (psm_sft, null_sft)})
        assert cmp.index[0] == winner, cmp
        assert abs(cmp["elpd_diff"].iloc[1]) > 2 * cmp["dse"].iloc[1], cmp  # elpd_diff <= 0 in arviz 1.x


@pytest.mark.slow
def test_psm_joint_recovers_parameters(design):
    from psm_bayes.inference import fit_nuts
    from psm_bayes.models.numpyro_predict import simulate
    from psm_bayes.models.psm_joint_numpyro import psm_joint

    truth = {"beta_sft": 0.3, "beta_icl": 0.7, "authorial_bias": 0.5, "sigma_nll": 0.05, "sigma_shift": 0.1}
    icl_design = icl.make_icl_design(n_personas=6, n_items=40, n_curves=8, seed=1,
                                     prior_weights=design.prior_weights)[0]
    data, _ = simulate(psm_joint, JointData(icl_design, design), truth, seed=3)
    dt = fit_nuts(psm_joint, data, seed=0, **FIT)
    assert int(dt["sample_stats"]["diverging"].sum()) == 0
    for name, value in truth.items():
        assert within_3sd(draws(dt, name), value), (name, draws(dt, name).mean(), draws(dt, name).std())
    from psm_bayes.posterior import beta_contrast

    assert beta_contrast(dt).attrs["p_sft_stronger"] < 0.05  # truth: beta_sft 0.3 < beta_icl 0.7
    # both observed sites have a pointwise log-likelihood (LOO per part)
    import arviz as az

    assert np.isfinite(az.loo(dt, var_name="nll").elpd) and np.isfinite(az.loo(dt, var_name="shift").elpd)


def test_beta_contrast_by_hand():
    import arviz as az

    from psm_bayes.posterior import beta_contrast

    post = {"beta_icl": np.array([[1.0, 2.0, 4.0, 1.0]]), "beta_sft": np.array([[2.0, 2.0, 2.0, 2.0]]),
            "authorial_bias": np.array([[0.0, 1.0, 0.0, 1.0]])}
    t = beta_contrast(az.from_dict({"posterior": post}))
    assert np.isclose(t.loc["beta_icl", "mean"], 2.0) and np.isclose(t.loc["authorial_bias", "mean"], 0.5)
    assert np.isclose(t.loc["log_beta_ratio", "mean"], np.mean(np.log([2.0, 1.0, 0.5, 2.0])))
    assert t.attrs["p_sft_stronger"] == 0.5  # 2 > 1 twice, 2 = 2 and 2 < 4 not

"""Every catalogued model of the ICL / SFT / joint / persona-space families against a likelihood written by hand.

For each model the log joint (``log_density`` of its backend(s), float64) is
compared with an independent evaluation written here with plain Python loops
and scipy densities, on a toy with 3 personas, at several parameter values.
No shared maths (models/maths.py, the family modules' functions) is used on
the reference side. A check that the comparison is not vacuous (a perturbed
parameter changes the hand value) closes each test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from psm_bayes.inference import get_backend
from psm_bayes.models import catalogue
from psm_bayes.models.icl_curves import ICLPriors, make_icl_design
from psm_bayes.models.persona_space import PersonaSpacePriors
from psm_bayes.models.psm_joint import JointData, JointPriors
from psm_bayes.models.sft_shift import SFTPriors, make_sft_design

ICLP = ICLPriors(beta_loc=0.1, beta_scale=0.7, bias_scale=0.8, sigma_scale=0.6)
SFTP = SFTPriors(beta_loc=-0.1, beta_scale=0.9, bias_scale=1.2, sigma_scale=0.7)
YES = 0


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _lognormal(x, mu, s):
    return stats.lognorm.logpdf(x, s=s, scale=math.exp(mu))


def _halfnormal(x, s):
    return stats.halfnorm.logpdf(x, scale=s)


def icl_toy(seed: int = 0):
    data, _ = make_icl_design(n_personas=3, n_items=10, n_curves=3, n_values=(0, 1, 3), seed=seed)
    nll = np.random.default_rng(seed).uniform(0.05, 2.0, len(data))
    return data.replace(nll=nll)


def sft_toy(seed: int = 0, pi=None):
    data, _ = make_sft_design(n_personas=3, n_items=8, n_train=4, seed=seed, n_probe_trained=2, prior_weights=pi)
    return data.replace(shift=np.random.default_rng(seed + 1).normal(0.0, 1.0, len(data)))


# ---------------------------------------------------------------- hand-written means
def hand_persona_answer(L_row, bias):
    """Persona answer probabilities ``softmax(L + bias * [o is Yes])`` for one persona and item."""
    return _softmax([L_row[o] + (bias if o == YES else 0.0) for o in range(len(L_row))])


def hand_psm_icl_nll(d, beta, bias):
    out = []
    for r in range(len(d)):
        K = d.target_loglik.shape[1]
        w = _softmax([math.log(d.prior_weights[k]) + beta * d.shot_loglik[r, k] for k in range(K)])
        p = sum(w[k] * hand_persona_answer(d.target_loglik[r, k], bias)[d.target_option[r]] for k in range(K))
        out.append(-math.log(p))
    return out


def hand_biased(nll, bias, target):
    """The law's nll after a Yes log-odds offset: p -> sigmoid(logit p +- bias)."""
    p = math.exp(-nll)
    logodds = math.log(p) - math.log(1 - p) + (bias if target == YES else -bias)
    return math.log(1 + math.exp(-logodds))


def hand_law_nll(d, name, v):
    out = []
    for r in range(len(d)):
        c, n = d.curve_index[r], float(d.n_shots[r])
        if name == "power_law":
            nll = v["C"][c] * (n + 1) ** (-v["alpha"][c])
        elif name == "bounded_power_law":
            nll = v["C"][c] * (1 + n / v["n_inf"][c]) ** (-v["alpha"][c]) + v["K_floor"][c]
        else:  # Arora et al.: p(n) = [rho P^(Kn) P + (1-rho) Q^(Kn) Q] / [rho P^(Kn) + (1-rho) Q^(Kn)]
            rho, P, Q, K = v["rho"][c], v["P"][c], v["P"][c] * v["u"][c], v["K"]
            num = rho * P ** (K * n) * P + (1 - rho) * Q ** (K * n) * Q
            den = rho * P ** (K * n) + (1 - rho) * Q ** (K * n)
            nll = -math.log(num / den)
        out.append(hand_biased(nll, v["response_bias"], d.target_option[r]))
    return out


def hand_logodds(d, x, bias, i):
    """``logit p_x(target | i)`` with persona weights ``x``."""
    K, O = d.target_loglik.shape[1:]
    p = [sum(x[k] * hand_persona_answer(d.target_loglik[i, k], bias)[o] for k in range(K)) for o in range(O)]
    t = d.target_option[i]
    return math.log(p[t]) - math.log(sum(p[o] for o in range(O) if o != t))


def hand_psm_sft_shift(d, beta, bias):
    K = d.n_personas
    w = _softmax([math.log(d.prior_weights[k]) + beta * d.train_loglik[k] for k in range(K)])
    return [hand_logodds(d, w, bias, i) - hand_logodds(d, d.prior_weights, bias, i) for i in range(len(d))]


# ---------------------------------------------------------------- hand-written log joints
def hand_icl_log_joint(name, d, v, pr=ICLP):
    lp = _halfnormal(v["sigma"], pr.sigma_scale)
    if name == "psm_icl":
        lp += _lognormal(v["beta_icl"], pr.beta_loc, pr.beta_scale) + stats.norm.logpdf(v["authorial_bias"], 0,
                                                                                       pr.bias_scale)
        mean = hand_psm_icl_nll(d, v["beta_icl"], v["authorial_bias"])
    else:
        lp += stats.norm.logpdf(v["response_bias"], 0, pr.bias_scale)
        for c in range(d.n_curves):
            if name in ("power_law", "bounded_power_law"):
                lp += _lognormal(v["C"][c], pr.C_loc, pr.C_scale) + _lognormal(v["alpha"][c], pr.alpha_loc,
                                                                               pr.alpha_scale)
            if name == "bounded_power_law":
                lp += _lognormal(v["n_inf"][c], pr.n_inf_loc, pr.n_inf_scale) + _halfnormal(v["K_floor"][c],
                                                                                           pr.floor_scale)
            if name == "bayesian_icl_law":
                lp += (stats.beta.logpdf(v["rho"][c], pr.rho_a, pr.rho_b) + stats.beta.logpdf(v["P"][c], pr.P_a, pr.P_b)
                       + stats.beta.logpdf(v["u"][c], pr.u_a, pr.u_b))
        if name == "bayesian_icl_law":
            lp += _lognormal(v["K"], pr.efficiency_loc, pr.efficiency_scale)
        mean = hand_law_nll(d, name, v)
    # nll ~ LogNormal(log mean, sigma)
    return lp + sum(_lognormal(d.nll[r], math.log(mean[r]), v["sigma"]) for r in range(len(d)))


def hand_sft_log_joint(name, d, v, pr=SFTP):
    lp = _halfnormal(v["sigma"], pr.sigma_scale)
    if name == "psm_sft":
        lp += _lognormal(v["beta_sft"], pr.beta_loc, pr.beta_scale) + stats.norm.logpdf(v["authorial_bias"], 0,
                                                                                       pr.bias_scale)
        mean = hand_psm_sft_shift(d, v["beta_sft"], v["authorial_bias"])
    else:
        lp += (stats.norm.logpdf(v["delta"], 0, pr.delta_scale) + stats.norm.logpdf(v["c"], 0, pr.offset_scale)
               + stats.norm.logpdf(v["response_bias"], 0, pr.bias_scale))
        mean = [v["delta"] * float(d.trained[i]) + v["c"] + v["response_bias"] * (1 if d.target_option[i] == YES else -1)
                for i in range(len(d))]
    return lp + sum(stats.norm.logpdf(d.shift[i], mean[i], v["sigma"]) for i in range(len(d)))


def hand_joint_log_joint(d: JointData, v, pr: JointPriors):
    bias = v["authorial_bias"]
    lp = (stats.norm.logpdf(bias, 0, pr.icl.bias_scale) + _lognormal(v["beta_icl"], pr.icl.beta_loc, pr.icl.beta_scale)
          + _lognormal(v["beta_sft"], pr.sft.beta_loc, pr.sft.beta_scale)
          + _halfnormal(v["sigma_nll"], pr.icl.sigma_scale) + _halfnormal(v["sigma_shift"], pr.sft.sigma_scale))
    nll_mean = hand_psm_icl_nll(d.icl, v["beta_icl"], bias)
    shift_mean = hand_psm_sft_shift(d.sft, v["beta_sft"], bias)
    lp += sum(_lognormal(d.icl.nll[r], math.log(nll_mean[r]), v["sigma_nll"]) for r in range(len(d.icl)))
    return lp + sum(stats.norm.logpdf(d.sft.shift[i], shift_mean[i], v["sigma_shift"]) for i in range(len(d.sft)))


def hand_persona_space_log_joint(d, v, pr: PersonaSpacePriors):
    z = v["z"]
    lp = stats.multivariate_normal.logpdf(z, d.prior_mean, pr.prior_scale ** 2 * d.prior_cov)
    lp += sum(_lognormal(v[n], pr.beta_loc, pr.beta_scale) for n in ("beta_sft", "beta_icl"))
    lp += stats.norm.logpdf(v["response_bias"], 0, pr.bias_scale)
    ep = d.episodes
    for e in range(len(ep)):
        i = d.item_index[e]
        beta = v["beta_sft"] if ep.source[e] == "sft" else v["beta_icl"]
        eta = beta * (d.intercepts[i] + sum(d.loadings[i, j] * z[j] for j in range(len(z)))) + v["response_bias"]
        p_yes = 1 / (1 + math.exp(-eta))
        lp += ep.count[e] * math.log(p_yes if ep.option[e] == 1 else 1 - p_yes)
    return lp


# ---------------------------------------------------------------- the tests
def _latent_draws(name, data, priors, n=3, backend="numpyro"):
    """``n`` latent values from the model's prior (where the values come from does not matter)."""
    entry = catalogue.get(name)
    model = entry.model(backend)
    draws = get_backend(backend).prior_predictive(model, data, seed=3, priors=priors, num_samples=n)
    skip = set(model.spec.observed) | set(model.spec.deterministic) | {"nll_mean", "shift_mean", "Q", "w", "p_item"}
    return model, [{k: np.asarray(v[s], dtype=float) for k, v in draws.items() if k not in skip} for s in range(n)]


def _agree(model, backend, data, priors, values, hand):
    got = get_backend(backend).log_density(model, data, priors, values)
    assert np.isfinite(hand)
    # float64 on both sides: only summation order separates them
    assert got == pytest.approx(hand, rel=1e-9, abs=1e-7)


@pytest.mark.parametrize("name", ["psm_icl", "power_law", "bounded_power_law", "bayesian_icl_law"])
def test_icl_models_match_hand_likelihood(name):
    data = icl_toy(0)
    model, values = _latent_draws(name, data, ICLP)
    for v in values:
        _agree(model, "numpyro", data, ICLP, v, hand_icl_log_joint(name, data, v))
    v = values[0]
    moved = dict(v, sigma=v["sigma"] * 1.3)
    assert hand_icl_log_joint(name, data, moved) != pytest.approx(hand_icl_log_joint(name, data, v), rel=1e-6)


@pytest.mark.parametrize("name", ["psm_sft", "null_sft"])
def test_sft_models_match_hand_likelihood(name):
    data = sft_toy(0)
    model, values = _latent_draws(name, data, SFTP)
    for v in values:
        _agree(model, "numpyro", data, SFTP, v, hand_sft_log_joint(name, data, v))
    key = "beta_sft" if name == "psm_sft" else "response_bias"
    v = values[0]
    assert hand_sft_log_joint(name, data, dict(v, **{key: v[key] + 0.5})) != pytest.approx(
        hand_sft_log_joint(name, data, v), rel=1e-6)


def test_joint_model_matches_hand_likelihood():
    icl = icl_toy(1)
    sft = sft_toy(1, pi=icl.prior_weights)
    data = JointData(icl, sft)
    priors = JointPriors(ICLP, SFTP)
    model, values = _latent_draws("psm_joint", data, priors)
    for v in values:
        _agree(model, "numpyro", data, priors, v, hand_joint_log_joint(data, v, priors))


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_persona_space_matches_hand_likelihood(backend):
    from psm_bayes.models.persona_space import simulate

    priors = PersonaSpacePriors(prior_scale=0.8, beta_loc=0.1, beta_scale=0.6, bias_scale=0.9)
    data = simulate(n_items=5, n_dims=2, n_episodes=30, seed=2).data
    ep = data.episodes
    data = data.replace(episodes=type(ep)(ep.item, ep.option, ep.source, np.arange(len(ep)) % 3 + 1))  # counts 1..3
    model, values = _latent_draws("persona_space", data, priors, backend=backend)
    for v in values:
        _agree(model, backend, data, priors, v, hand_persona_space_log_joint(data, v, priors))

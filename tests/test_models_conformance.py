"""The NumPyro and Pyro backends implement the same models: the persona mixture, and the persona-selection family.

* log joint densities agree in float64 (NumPyro ``log_density`` vs Pyro
  ``log_density``) and with an independent likelihood written by hand here
  (plain loops, not models/maths.py) plus scipy prior densities, on random
  data with integer ``count > 1``, mixed sources, with/without latent
  ``prior_weights`` and ``bias_direction``;
* the prior predictive of ``y`` has the right shape, support and
  distribution in both backends;
* both backends have the same site names;
* every model of the persona-selection family has the same sites and shapes
  in both backends, the per-condition drift among them (its log joint is
  checked against a hand-written likelihood in ``test_selection_likelihood.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import jax
import jax.numpy as jnp
import pyro
import torch
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import log_density, log_likelihood
from pyro import poutine

import psm_bayes.models.persona_mixture_numpyro as npm
import psm_bayes.models.persona_mixture_pyro as ppm

from psm_bayes.data import Episodes, PSMData, SOURCES
from psm_bayes.inference.numpyro_backend import pointwise_log_likelihood, prior_predictive as sample_prior
from psm_bayes.inference.pyro_backend import log_density as log_joint
from psm_bayes.models.persona_mixture import Priors
from psm_bayes.models.selection import MODELS as SELECTION_MODELS
from psm_bayes.simulate import random_loglik

NUMPYRO_MODEL = npm.persona_mixture
PYRO_MODEL = ppm.persona_mixture
PRIORS = Priors(concentration=7.0, prior_weights_concentration=1.5, beta_loc=0.1, beta_scale=0.6, bias_scale=0.8)


def random_data(seed: int, latent_prior: bool, bias: bool, K: int = 5, n_items: int = 7, n_options: int = 3,
                N: int = 40, observed: bool = True) -> PSMData:
    """Random PSMData with non-unit counts and both sources."""
    rng = np.random.default_rng(seed)
    table = random_loglik(K, n_items, n_options, rng)
    items = np.array(table.items, dtype=object)
    source = np.array(SOURCES, dtype=object)[rng.integers(0, 2, N)]
    source[:2] = ["sft", "icl"]  # both sources present
    episodes = Episodes(items[rng.integers(0, n_items, N)],
                        rng.integers(0, n_options, N) if observed else None,
                        source, rng.integers(1, 5, N))
    bd = rng.normal(size=(n_items, n_options)) if bias else None
    pw = None if latent_prior else rng.dirichlet(np.full(K, 2.0))
    return PSMData(table, episodes, prior_weights=pw, bias_direction=bd)


def prior_draw(data: PSMData, priors: Priors, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Latent values drawn from the prior with numpy (same generative story, independent code)."""
    K = data.n_personas
    out: dict[str, np.ndarray] = {}
    if data.prior_weights is None:
        pi = rng.dirichlet(np.full(K, priors.prior_weights_concentration))
        out["prior_weights"] = pi
    else:
        pi = data.prior_weights
    out["w"] = rng.dirichlet(priors.concentration * pi)
    out["beta_sft"] = np.float64(rng.lognormal(priors.beta_loc, priors.beta_scale))
    out["beta_icl"] = np.float64(rng.lognormal(priors.beta_loc, priors.beta_scale))
    if data.bias_direction is not None:
        out["authorial_bias"] = np.float64(rng.normal(0.0, priors.bias_scale))
    return out


def numpy_episode_loglik(data: PSMData, p: dict) -> np.ndarray:
    """Unscaled ``log p(y_e | params)`` per row, written by hand (plain loops, not models/maths.py).

    For row ``e`` (item ``i``, source ``s``, option ``o``): persona ``k``
    answers with ``exp(z_ko) / sum_o' exp(z_ko')``, ``z_ko = beta_s L[k, i, o]
    + bias d[i, o]``, and the assistant with ``sum_k w_k`` of that.
    """
    L, ep = data.loglik.array, data.episodes
    K, _, O = L.shape
    bias = p.get("authorial_bias", 0.0)
    d = data.bias_direction
    out = np.empty(len(ep))
    for e in range(len(ep)):
        i, o = data.item_index[e], ep.option[e]
        beta = p["beta_sft"] if ep.source[e] == "sft" else p["beta_icl"]
        prob = 0.0
        for k in range(K):
            z = [beta * L[k, i, j] + (bias * d[i, j] if d is not None else 0.0) for j in range(O)]
            prob += p["w"][k] * np.exp(z[o]) / sum(np.exp(zj) for zj in z)
        out[e] = np.log(prob)
    return out


def numpy_log_joint(data: PSMData, priors: Priors, p: dict) -> float:
    """Log joint from scipy densities and the hand-written likelihood (episodes weighted by count)."""
    K = data.n_personas
    lp = 0.0
    pi = data.prior_weights
    if pi is None:
        pi = p["prior_weights"]
        lp += stats.dirichlet.logpdf(pi, np.full(K, priors.prior_weights_concentration))
    lp += stats.dirichlet.logpdf(p["w"], priors.concentration * pi)
    for name in ("beta_sft", "beta_icl"):
        lp += stats.lognorm.logpdf(p[name], s=priors.beta_scale, scale=np.exp(priors.beta_loc))
    if data.bias_direction is not None:
        lp += stats.norm.logpdf(p["authorial_bias"], 0.0, priors.bias_scale)
    return float(lp + np.sum(data.episodes.count * numpy_episode_loglik(data, p)))


CASES = [(seed, latent, bias) for seed in (0, 1, 2) for latent in (False, True) for bias in (False, True)]


@pytest.mark.parametrize("seed, latent_prior, bias", CASES)
def test_log_joint_agrees(seed, latent_prior, bias):
    data = random_data(seed, latent_prior, bias)
    rng = np.random.default_rng(100 + seed)
    for _ in range(3):  # several parameter values per data set
        p = prior_draw(data, PRIORS, rng)
        lj_numpyro, _ = log_density(NUMPYRO_MODEL, (data, PRIORS), {}, {k: jnp.asarray(v) for k, v in p.items()})
        lj_numpyro = float(lj_numpyro)
        lj_pyro = log_joint(PYRO_MODEL, data, PRIORS, p)
        lj_numpy = numpy_log_joint(data, PRIORS, p)
        assert np.isfinite(lj_numpyro)
        # float64 everywhere: only summation-order rounding separates the three
        assert lj_pyro == pytest.approx(lj_numpyro, rel=1e-9, abs=1e-6)
        assert lj_numpy == pytest.approx(lj_numpyro, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("seed, latent_prior, bias", CASES[::3])
def test_pointwise_loglik_agrees(seed, latent_prior, bias):
    """Unscaled per-episode log-likelihood: NumPyro ``log_likelihood`` == the hand-written one."""
    data = random_data(seed, latent_prior, bias)
    p = prior_draw(data, PRIORS, np.random.default_rng(seed))
    ll = log_likelihood(NUMPYRO_MODEL, {k: jnp.asarray(v)[None] for k, v in p.items()}, data, PRIORS)["y"][0]
    np.testing.assert_allclose(np.asarray(ll), numpy_episode_loglik(data, p), rtol=1e-10, atol=1e-10)
    # the fit's pointwise log-likelihood is one value per episode: rows repeated by their count
    per_episode = pointwise_log_likelihood(NUMPYRO_MODEL, data, PRIORS, {k: jnp.asarray(v)[None] for k, v in p.items()})
    np.testing.assert_allclose(per_episode["y"][0], np.repeat(numpy_episode_loglik(data, p), data.episodes.count),
                               rtol=1e-10)
    # the log-likelihood depends on the parameters (the comparison above is not vacuous)
    q = dict(p, beta_sft=p["beta_sft"] * 2.0)
    assert not np.allclose(numpy_episode_loglik(data, q), numpy_episode_loglik(data, p))


def test_log_joint_sensitive_to_counts():
    """Counts weight the episodes: doubling every count doubles the likelihood part."""
    data = random_data(5, False, True)
    p = prior_draw(data, PRIORS, np.random.default_rng(5))
    doubled = data.replace(episodes=Episodes(data.episodes.item, data.episodes.option, data.episodes.source,
                                             2 * data.episodes.count))
    ll = np.sum(data.episodes.count * numpy_episode_loglik(data, p))
    for lj in (lambda d: float(log_density(NUMPYRO_MODEL, (d, PRIORS), {}, p)[0]),
               lambda d: log_joint(PYRO_MODEL, d, PRIORS, p)):
        assert lj(doubled) - lj(data) == pytest.approx(ll, rel=1e-9)


def _numpyro_trace(data, seed=0, cond=None):
    m = NUMPYRO_MODEL if cond is None else handlers.condition(NUMPYRO_MODEL, cond)
    return handlers.trace(handlers.seed(m, jax.random.PRNGKey(seed))).get_trace(data, PRIORS)


def _pyro_trace(data, seed=0, cond=None):
    pyro.set_rng_seed(seed)
    m = PYRO_MODEL if cond is None else poutine.condition(PYRO_MODEL, cond)
    return poutine.trace(m).get_trace(data, PRIORS)


def _sites(kind: str, tr) -> dict[str, tuple]:
    """``{site: shape}`` of sample and deterministic sites (plates excluded)."""
    if kind == "numpyro":
        return {k: tuple(np.shape(v["value"])) for k, v in tr.items() if v["type"] in ("sample", "deterministic")}
    plates = {f.name for node in tr.nodes.values() for f in node.get("cond_indep_stack", ())}
    return {k: tuple(v["value"].shape) for k, v in tr.nodes.items() if v["type"] == "sample" and k not in plates}


@pytest.mark.parametrize("latent_prior, bias", [(False, False), (True, True)])
@pytest.mark.parametrize("observed", [True, False])
def test_site_names_identical(latent_prior, bias, observed):
    data = random_data(3, latent_prior, bias, observed=observed)
    s_np = _sites("numpyro", _numpyro_trace(data))
    s_py = _sites("pyro", _pyro_trace(data))
    assert s_np == s_py
    expected = {"w", "beta_sft", "beta_icl", "y", "p_item"}
    expected |= {"prior_weights"} if latent_prior else set()
    expected |= {"authorial_bias"} if bias else set()
    assert set(s_np) == expected
    assert s_np["y"] == (len(data.episodes),) and s_np["p_item"] == (data.n_items, data.n_options)


@pytest.mark.parametrize("latent_prior, bias", [(False, True), (True, False)])
def test_prior_predictive_shape_and_support(latent_prior, bias):
    data = random_data(4, latent_prior, bias, observed=False)
    N, O = len(data.episodes), data.n_options
    y_np = np.asarray(_numpyro_trace(data, seed=1)["y"]["value"])
    y_py = _pyro_trace(data, seed=1).nodes["y"]["value"].numpy()
    for y in (y_np, y_py):
        assert y.shape == (N,)
        assert np.issubdtype(y.dtype, np.integer)
        assert y.min() >= 0 and y.max() < O
    draws = sample_prior(NUMPYRO_MODEL, data, seed=2, priors=PRIORS, num_samples=200)
    n_episodes = int(data.episodes.count.sum())  # predictive draws are one per episode (rows expanded by count)
    assert draws["y"].shape == (200, n_episodes) and draws["w"].shape == (200, data.n_personas)
    assert set(np.unique(draws["y"])) == set(range(O))  # every option drawn, none outside
    # the draws vary over the prior (not a constant)
    assert draws["beta_sft"].std() > 0.1


def test_prior_predictive_distribution():
    """With parameters fixed, both backends draw ``y`` from ``softmax(episode_logits)``.

    N = 3000 episodes; for each option the empirical frequency is compared with
    the mean model probability. Episodes are independent, so the frequency has
    sd sqrt(sum_e p(1-p))/N (about 0.009 here); 4.5 sd makes a false failure
    rarer than 1e-5 per comparison while a wrong distribution (e.g. ignoring
    beta or the bias) shifts frequencies by several times that.
    """
    data = random_data(6, False, True, K=4, n_items=5, n_options=3, N=3000, observed=False)
    p = prior_draw(data, PRIORS, np.random.default_rng(6))
    p["beta_sft"], p["beta_icl"], p["authorial_bias"] = np.float64(2.0), np.float64(0.5), np.float64(1.0)
    probs = np.stack([np.exp(numpy_episode_loglik(
        data.replace(episodes=Episodes(data.episodes.item, np.full(len(data.episodes), o), data.episodes.source)), p))
        for o in range(data.n_options)], axis=1)  # hand-written p(option | episode), (N, O)
    N = len(data.episodes)
    sd = np.sqrt((probs * (1 - probs)).sum(0)) / N
    y_np = np.asarray(_numpyro_trace(data, seed=7, cond={k: jnp.asarray(v) for k, v in p.items()})["y"]["value"])
    y_py = _pyro_trace(data, seed=7, cond={k: torch.as_tensor(v) for k, v in p.items()}).nodes["y"]["value"].numpy()
    for y in (y_np, y_py):
        freq = np.bincount(y, minlength=data.n_options) / N
        assert np.all(np.abs(freq - probs.mean(0)) < 4.5 * sd), (freq, probs.mean(0), sd)
        # per source too (sft and icl use different betas)
        for s in (0, 1):
            m = data.episodes.source_index == s
            f = np.bincount(y[m], minlength=data.n_options) / m.sum()
            sd_s = np.sqrt((probs[m] * (1 - probs[m])).sum(0)) / m.sum()
            assert np.all(np.abs(f - probs[m].mean(0)) < 4.5 * sd_s)


def test_numpyro_predictive_matches_p_item():
    """The deterministic ``p_item`` site equals a hand computation at beta = 1 (loops, not models/maths.py)."""
    data = random_data(8, True, True)
    p = prior_draw(data, PRIORS, np.random.default_rng(8))
    out = Predictive(NUMPYRO_MODEL, posterior_samples={k: jnp.asarray(v)[None] for k, v in p.items()},
                     return_sites=["p_item"])(jax.random.PRNGKey(0), data, PRIORS)
    L, d = data.loglik.array, data.bias_direction
    expected = np.zeros((data.n_items, data.n_options))
    for i in range(data.n_items):
        for k in range(data.n_personas):
            z = np.exp(L[k, i] + p["authorial_bias"] * d[i])
            expected[i] += p["w"][k] * z / z.sum()
    np.testing.assert_allclose(np.asarray(out["p_item"][0]), expected, rtol=1e-10)
    tr = _pyro_trace(data, cond={k: torch.as_tensor(v) for k, v in p.items()})
    np.testing.assert_allclose(tr.nodes["p_item"]["value"].numpy(), expected, rtol=1e-10)


def test_predictive_draws_counts_multinomially():
    """A row standing for 400 episodes is replicated as 400 independent answers (a multinomial count).

    Parameters fixed; per replicate the number of option-0 answers among the
    row's 400 episodes is Binomial(400, p): its variance over 300 replicates
    is 400 p (1 - p). The old behaviour (one answer per row, weighted by the
    count) gives only 0 or 400, variance 400^2 p (1 - p): 400 times larger.
    The sample variance of 300 binomial counts is within a factor 1.5 of the
    truth with probability > 0.999 (chi-square, 299 df), so the threshold
    separates the two by a wide margin; the broken variant is computed below.
    """
    table = random_loglik(3, 1, 2, np.random.default_rng(0))
    data = PSMData(table, Episodes(np.array(["i0"], dtype=object), np.array([0]), np.array(["sft"], dtype=object),
                                   np.array([400])), prior_weights=np.array([0.2, 0.3, 0.5]))
    p = {"w": jnp.asarray([0.5, 0.3, 0.2])[None].repeat(300, 0), "beta_sft": jnp.full(300, 1.3),
         "beta_icl": jnp.full(300, 0.7)}
    spec = NUMPYRO_MODEL.spec
    y = np.asarray(Predictive(NUMPYRO_MODEL, posterior_samples=p, return_sites=["y"])(
        jax.random.PRNGKey(0), spec.unobserve(data), PRIORS)["y"])
    assert y.shape == (300, 400)
    prob0 = float(np.exp(numpy_episode_loglik(data, {k: np.asarray(v[0]) for k, v in p.items()}))[0])
    n0 = (y == 0).sum(1)
    expected_var = 400 * prob0 * (1 - prob0)
    assert 1 / 1.5 < n0.var(ddof=1) / expected_var < 1.5
    broken = np.where(np.random.default_rng(1).random(300) < prob0, 400, 0)  # one answer per row, times count
    assert not 1 / 1.5 < broken.var(ddof=1) / expected_var < 1.5


# ---------------------------------------------------------------- the persona-selection family
SELECTION_SIZES = dict(n_personas=3, n_traits=2, n_eval=4, n_shot_items=4, shots=(2,), orderings=2, sft_episodes=4,
                       sft_seeds=2, observation="both", n_episodes=2)


@pytest.mark.parametrize("name", SELECTION_MODELS)
def test_selection_family_sites_identical(name):
    """Every model of the family traces the same sites with the same shapes in NumPyro and Pyro, and every
    one has the per-condition drift: ``drift_sd`` per condition type, ``drift`` per non-base condition."""
    import psm_bayes.models.selection_numpyro as snp
    import psm_bayes.models.selection_pyro as spy
    from psm_bayes.models.selection_simulate import design

    data = design(seed=0, **SELECTION_SIZES)
    tr_np = handlers.trace(handlers.seed(getattr(snp, name), jax.random.PRNGKey(0))).get_trace(data, None)
    pyro.set_rng_seed(0)
    tr_py = poutine.trace(getattr(spy, name)).get_trace(data, None)
    s_np, s_py = _sites("numpyro", tr_np), _sites("pyro", tr_py)   # Pyro's deterministic sites are sample nodes
    assert s_np == s_py
    # base + 2 traits x 2 poles x 2 orderings (ICL) + 2 poles x 2 seeds (SFT) + 2 poles x 2 seeds x 2 orderings (cross)
    assert data.bias_types == ("icl-n2", "sft-k4", "cross") and data.n_conditions == 1 + 8 + 4 + 8
    assert s_np["response_bias"] == s_np["drift_sd"] == (3,) and s_np["drift"] == (20,)
    assert (s_np.get("persona_weight") == ()) == (name == "encompassing")

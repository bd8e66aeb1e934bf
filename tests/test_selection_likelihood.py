"""The persona-selection family's log densities, checked against likelihoods written by hand.

* For every catalogued model of the family, the NumPyro log joint equals an
  independent evaluation written here with plain Python loops over
  conditions, personas, items and options and ``scipy.stats`` densities (no
  shared maths), on 2- and 3-persona toys with 3 options, both observation
  types, repeated items, given and latent ``prior_weights``, Normal and
  Student-t noise, the per-condition Yes drift (and the per-type-only variant);
  the Pyro log joint equals it too (backend conformance). The
  ``encompassing`` model's ``persona_weight`` equals a share computed by hand.
* A broken likelihood (the count weighting off, a persona table not
  permuted, the per-condition drift left out) gives a different number, so
  the comparison can fail.
* Counts: integer counts are required; aggregated rows and one row per
  episode give the same log joint and the same per-episode pointwise
  log-likelihood (LOO leaves out one episode however rows are aggregated).
* Prior-predictive draws are valid data in both backends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from psm_bayes.data import DataError
from psm_bayes.inference import configure_jax
from psm_bayes.models import catalogue
from psm_bayes.models.selection import BASE_TYPE, MODELS, Priors, SelectionData
from psm_bayes.models.selection_simulate import forward

configure_jax()

PRIORS = {None: Priors(beta_scale=0.7, response_bias_scale=1.3, drift_sd_scale=1.4, shift_scale=1.7,
                       item_sd_scale=0.8, logodds_sd_scale=1.2, permutation_seed=5),
          4.0: Priors(beta_loc=-0.3, half_dose_loc=0.5, logodds_df=4.0, permutation_seed=3)}
PER_TYPE = Priors(logodds_df=4.0, condition_drift=False)
"""One Yes offset per condition type (no drift_sd / drift)."""


def toy(K: int, seed: int, latent_prior: bool, authorial: bool = True) -> SelectionData:
    """A 3-option toy with every feature: 4 conditions of 3 types plus base, 2 traits, both observations."""
    rng = np.random.default_rng(seed)
    I, O, C = 5, 3, 5
    raw = rng.normal(0.0, 1.5, (K, I, O))
    L = raw - np.log(np.exp(raw).sum(-1, keepdims=True))
    sim, text = rng.uniform(0, 1, (I, I)), rng.uniform(-1, 1, (I, I))
    R, M = 7, 9
    return SelectionData(
        L, yes_option=rng.integers(0, O, I), matching_option=rng.integers(0, O, I),
        conditions=tuple(f"c{c}" for c in range(C)), condition_type=(BASE_TYPE, "icl", "sft", "sft_icl", "icl"),
        sft_evidence=rng.integers(0, 3, (C, I, O)) * np.array([0, 0, 1, 1, 0])[:, None, None],
        icl_evidence=rng.integers(0, 2, (C, I, O)) * np.array([0, 1, 0, 1, 1])[:, None, None],
        prior_weights=None if latent_prior else rng.dirichlet(np.ones(K) * 2),
        bias_direction=rng.normal(size=(I, O)) if authorial else None,
        item_trait=("a", "b", "a", "b", "b"), profile_similarity=(sim + sim.T) / 2,
        surface_similarity=(text + text.T) / 2,
        episode_condition=rng.integers(0, C, R), episode_item=rng.integers(0, I, R),
        episode_option=rng.integers(0, O, R), episode_count=rng.integers(1, 4, R),
        measurement_condition=rng.integers(0, C, M), measurement_item=rng.choice([0, 2, 3], M),
        logodds=rng.normal(0.0, 2.0, M))


def params(name: str, data: SelectionData, priors: Priors, seed: int) -> dict[str, np.ndarray]:
    """Latent values drawn from the prior (the observed sites are dropped)."""
    draw = forward(name, data, priors, seed=seed)
    return {k: v for k, v in draw.items() if k not in ("y", "logodds", "logodds_mean", "persona_weight")}


def hand_eta(name: str, data: SelectionData, p: dict, c: int, pi, L, persona: bool, surface: bool,
             bias: bool = True) -> np.ndarray:
    """Logits ``eta[i, o]`` of condition ``c`` before the Yes drift: the persona mixture (with the authorial
    bias unless ``bias`` is off) or the zero-shot answers, plus the null's (or, with ``surface``, the
    surface) shift of the matching answer."""
    K, I, O = L.shape
    S, E = data.sft_evidence[c], data.icl_evidence[c]
    eta = np.zeros((I, O))
    if persona:
        logq = np.zeros(K)
        for k in range(K):
            logq[k] = math.log(pi[k])
            for i in range(I):
                for o in range(O):
                    logq[k] += p.get("beta_sft", 0.0) * S[i, o] * L[k, i, o]
                    logq[k] += p.get("beta_icl", 0.0) * E[i, o] * L[k, i, o]
        q = np.exp(logq - logq.max())
        q /= q.sum()
    else:
        q = pi
    for i in range(I):
        for o in range(O):
            eta[i, o] = math.log(sum(q[k] * math.exp(L[k, i, o]) for k in range(K)))
            if persona and bias and data.bias_direction is not None:
                eta[i, o] += p["authorial_bias"] * data.bias_direction[i, o]
    net = [sum((S[i, o] + E[i, o]) * (1 if o == data.matching_option[i] else -1) for o in range(O)) for i in range(I)]
    total = S.sum() + E.sum()
    for j in range(I):
        if name == "trait_indicator":
            same = sum(net[i] for i in range(I) if data.item_trait[i] == data.item_trait[j])
            other = sum(net[i] for i in range(I) if data.item_trait[i] != data.item_trait[j])
            shift = p["same_trait_shift"] * same + p["other_trait_shift"] * other
        elif name == "profile_similarity":
            shift = p["profile_shift"] * sum(data.profile_similarity[j, i] * net[i] for i in range(I))
        elif name == "surface_similarity" or surface:
            shift = p["surface_shift"] * sum(data.surface_similarity[j, i] * net[i] for i in range(I))
        elif name == "generic_shift":
            shift = p["generic_shift"] * sum(net)
        else:
            continue
        eta[j, data.matching_option[j]] += shift / (total + p["half_dose"])
    return eta


def hand_drift(data: SelectionData, p: dict, c: int, per_condition: bool = True) -> float:
    """The Yes offset of condition ``c``: its own ``drift`` (the k-th non-base condition's), or with
    ``per_condition`` off its type's mean (0 on base)."""
    types = [t for t in dict.fromkeys(data.condition_type) if t != BASE_TYPE]
    if data.condition_type[c] == BASE_TYPE:
        return 0.0
    g = types.index(data.condition_type[c])
    if per_condition and "drift" in p:
        k = sum(t != BASE_TYPE for t in data.condition_type[:c])
        return float(p["drift"][k])
    return float(p["response_bias"][g])


def hand_matching_logodds(eta: np.ndarray, i: int, match: int) -> float:
    return eta[i, match] - math.log(sum(math.exp(eta[i, o]) for o in range(eta.shape[1]) if o != match))


def hand_persona_weight(data: SelectionData, p: dict) -> float:
    """sum (persona change)^2 / (sum (persona change)^2 + sum (surface change)^2) over observed pairs."""
    L, pi = data.loglik, data.prior_weights if data.prior_weights is not None else p["prior_weights"]
    pairs = sorted(set(zip(data.episode_condition.tolist(), data.episode_item.tolist()))
                   | set(zip(data.measurement_condition.tolist(), data.measurement_item.tolist())))
    ss_p = ss_s = 0.0
    for c, i in pairs:
        m = data.matching_option[i]
        # the changes the evidence makes (the authorial bias and the drift act without evidence: left out)
        zero = hand_matching_logodds(hand_eta("response_bias", data, p, c, pi, L, False, False), i, m)
        with_p = hand_matching_logodds(hand_eta("persona_selection", data, p, c, pi, L, True, False, False), i, m)
        both = hand_matching_logodds(hand_eta("encompassing", data, p, c, pi, L, True, True, False), i, m)
        ss_p += (with_p - zero) ** 2
        ss_s += (both - with_p) ** 2
    return ss_p / (ss_p + ss_s + 1e-12)


def hand_log_joint(name: str, data: SelectionData, pr: Priors, p: dict, count_weight: bool = True,
                   permute: bool = True, drift: bool = True) -> float:
    """Log joint of model ``name``, written with loops and scipy.stats only."""
    L, (K, I, O) = data.loglik, data.loglik.shape
    C = len(data.conditions)
    if name == "permuted_personas" and permute:  # persona labels permuted within each trait, traits in order
        rng = np.random.default_rng(pr.permutation_seed)
        Lp = np.empty_like(L)
        for trait in dict.fromkeys(data.item_trait):
            perm = rng.permutation(K)
            for i in range(I):
                if data.item_trait[i] == trait:
                    for k in range(K):
                        Lp[k, i, :] = L[perm[k], i, :]
        L = Lp
    lp = 0.0
    if data.prior_weights is None:
        pi = p["prior_weights"]
        lp += stats.dirichlet.logpdf(pi, [pr.prior_weights_concentration] * K)
    else:
        pi = data.prior_weights
    persona = name in ("persona_selection", "permuted_personas", "encompassing")
    for b in ("beta_sft", "beta_icl"):
        if b in p:
            lp += stats.lognorm.logpdf(p[b], s=pr.beta_scale, scale=math.exp(pr.beta_loc))
    if "authorial_bias" in p:
        lp += stats.norm.logpdf(p["authorial_bias"], 0, pr.bias_scale)
    if "half_dose" in p:
        lp += stats.lognorm.logpdf(p["half_dose"], s=pr.half_dose_scale, scale=math.exp(pr.half_dose_loc))
    for s in ("same_trait_shift", "other_trait_shift", "profile_shift", "surface_shift", "generic_shift"):
        if s in p:
            lp += stats.norm.logpdf(p[s], 0, pr.shift_scale)
    types = [t for t in dict.fromkeys(data.condition_type) if t != BASE_TYPE]
    for g in range(len(types)):
        lp += stats.norm.logpdf(p["response_bias"][g], 0, pr.response_bias_scale)
        if pr.condition_drift:
            lp += stats.halfnorm.logpdf(p["drift_sd"][g], scale=pr.drift_sd_scale)
    if pr.condition_drift:                                              # one offset per non-base condition
        k = 0
        for c in range(C):
            if data.condition_type[c] != BASE_TYPE:
                g = types.index(data.condition_type[c])
                lp += stats.norm.logpdf(p["drift"][k], p["response_bias"][g], p["drift_sd"][g])
                k += 1
    logp = np.zeros((C, I, O))
    for c in range(C):
        eta = hand_eta(name, data, p, c, pi, L, persona, name == "encompassing")
        for i in range(I):
            eta[i, data.yes_option[i]] += hand_drift(data, p, c, drift)
            logp[c, i] = eta[i] - math.log(sum(math.exp(e) for e in eta[i]))
    for r in range(0 if data.episode_condition is None else len(data.episode_condition)):
        n = data.episode_count[r] if count_weight else 1
        lp += n * logp[data.episode_condition[r], data.episode_item[r], data.episode_option[r]]
    measured = sorted(set(data.measurement_item.tolist()))
    lp += stats.halfnorm.logpdf(p["item_sd"], scale=pr.item_sd_scale)
    lp += stats.halfnorm.logpdf(p["logodds_sd"], scale=pr.logodds_sd_scale)
    for j in range(len(measured)):
        lp += stats.norm.logpdf(p["item_effect"][j], 0, p["item_sd"])
    for m in range(len(data.measurement_condition)):
        c, i = data.measurement_condition[m], data.measurement_item[m]
        mo = data.matching_option[i]
        lo = logp[c, i, mo] - math.log(sum(math.exp(logp[c, i, o]) for o in range(O) if o != mo))
        mean = lo + p["item_effect"][measured.index(i)]
        if pr.logodds_df is None:
            lp += stats.norm.logpdf(data.logodds[m], mean, p["logodds_sd"])
        else:
            lp += stats.t.logpdf(data.logodds[m], pr.logodds_df, mean, p["logodds_sd"])
    return float(lp)


def backend_log_joint(name: str, backend: str, data: SelectionData, pr: Priors, p: dict) -> float:
    from psm_bayes.inference.backends import get_backend

    return get_backend(backend).log_density(catalogue.model(name, backend), data, pr, p)


SAME_SHAPE = ("profile_similarity", "surface_similarity", "generic_shift")
"""Nulls that differ from ``trait_indicator`` only in their kernel: two cases each (the default budget)."""
CASES = [(name, K, latent, df) for name in MODELS for K in (2, 3) for latent in (False, True)
         for df in (None, 4.0) if ((K == 3) == (df is None) or latent) and (name not in SAME_SHAPE or K != latent + 2)]
CASES += [(name, 3, False, "per-type") for name in ("persona_selection", "response_bias")]


@pytest.mark.parametrize("name, K, latent_prior, df", CASES)
def test_log_joint_equals_hand_written_likelihood(name, K, latent_prior, df):
    data, pr = toy(K, seed=K + 10 * latent_prior, latent_prior=latent_prior), PRIORS.get(df, PER_TYPE)
    for s in range(2):  # two parameter values per toy
        p = params(name, data, pr, seed=s)
        assert ("drift" in p) == pr.condition_drift and p["response_bias"].shape == (3,)
        assert not pr.condition_drift or p["drift"].shape == (4,)          # the 4 non-base conditions
        p = params(name, data, pr, seed=s)
        hand = hand_log_joint(name, data, pr, p)
        numpyro_lj = backend_log_joint(name, "numpyro", data, pr, p)
        pyro_lj = backend_log_joint(name, "pyro", data, pr, p)
        # float64 in all three: only summation order separates them
        assert numpyro_lj == pytest.approx(hand, rel=1e-10, abs=1e-8)
        assert pyro_lj == pytest.approx(numpyro_lj, rel=1e-10, abs=1e-8)


@pytest.mark.parametrize("name", MODELS)
def test_measurements_only_on_some_items_equal_the_hand_likelihood(name):
    """As a real run's data: log-odds measured on 3 of the 5 items, the other 2 only evidence (shots,
    SFT episodes). The fitted model computes the answer mixture on the 3 measured items only
    (``SelectionData.observed_items``); the hand likelihood computes it on all 5 and reads the 3."""
    from dataclasses import replace

    data = replace(toy(3, seed=4, latent_prior=False), episode_condition=None, episode_item=None,
                   episode_option=None, episode_count=None)
    assert data.observed_items.tolist() == [0, 2, 3] and data.icl_evidence[:, [1, 4]].any()
    pr = PRIORS[4.0]
    for s in range(2):
        p = params(name, data, pr, seed=s)
        hand = hand_log_joint(name, data, pr, p)
        assert backend_log_joint(name, "numpyro", data, pr, p) == pytest.approx(hand, rel=1e-10, abs=1e-8)
        assert backend_log_joint(name, "pyro", data, pr, p) == pytest.approx(hand, rel=1e-10, abs=1e-8)
    if name == "encompassing":                     # the share over observed pairs, on the column subset
        draw = forward(name, data, pr, seed=0)
        assert 0 <= float(draw["persona_weight"]) <= 1


def test_hand_comparison_can_fail():
    """Counting each row once instead of ``count`` times, not permuting the table, or leaving out the
    per-condition part of the drift (per-type offsets only) is detected."""
    data, pr = toy(3, seed=0, latent_prior=False), PRIORS[None]
    for name in ("persona_selection", "response_bias"):
        p = params(name, data, pr, seed=0)                # non-base conditions of types icl, sft, sft_icl, icl:
        p = dict(p, drift_sd=np.ones(3), drift=p["response_bias"][[0, 1, 2, 0]] + np.array([1.0, -1.0, 1.0, -1.0]))
        lj = backend_log_joint(name, "numpyro", data, pr, p)
        assert lj == pytest.approx(hand_log_joint(name, data, pr, p), rel=1e-10)
        assert abs(hand_log_joint(name, data, pr, p, drift=False) - lj) > 1.0
    p = params("persona_selection", data, pr, seed=0)
    lj = backend_log_joint("persona_selection", "numpyro", data, pr, p)
    assert abs(hand_log_joint("persona_selection", data, pr, p, count_weight=False) - lj) > 1.0
    p = params("permuted_personas", data, pr, seed=0)
    lj = backend_log_joint("permuted_personas", "numpyro", data, pr, p)
    assert abs(hand_log_joint("permuted_personas", data, pr, p, permute=False) - lj) > 1e-3


def _deterministic(name: str, backend: str, data: SelectionData, pr: Priors, p: dict, site: str) -> np.ndarray:
    """A deterministic site of the model traced at the latent values ``p``."""
    if backend == "numpyro":
        import jax
        from numpyro import handlers

        m = handlers.substitute(handlers.seed(catalogue.model(name, "numpyro"), jax.random.PRNGKey(0)), data=p)
        return np.asarray(handlers.trace(m).get_trace(data, pr)[site]["value"])
    import torch
    from pyro import poutine

    m = poutine.condition(catalogue.model(name, "pyro"), data={k: torch.as_tensor(v) for k, v in p.items()})
    return poutine.trace(m).get_trace(data, pr).nodes[site]["value"].detach().numpy()


@pytest.mark.parametrize("latent_prior", [False, True])
def test_persona_weight_equals_hand_value(latent_prior):
    """``encompassing``'s ``persona_weight`` in both backends equals the hand value (the per-condition
    ``drift`` is a sampled site, checked by the log-joint test above).

    The weight is in (0, 1), moves with the surface coefficient (0 at a surface shift that swamps the
    persona term, 1 without one), so the comparison can fail.
    """
    data, pr = toy(3, seed=4, latent_prior=latent_prior), PRIORS[None]
    for s in range(2):
        p = params("encompassing", data, pr, seed=s)
        hand_w = hand_persona_weight(data, p)
        assert 0 < hand_w < 1
        for backend in ("numpyro", "pyro"):
            assert float(_deterministic("encompassing", backend, data, pr, p, "persona_weight")) == pytest.approx(
                hand_w, rel=1e-9)
        assert hand_persona_weight(data, dict(p, surface_shift=0.0)) == pytest.approx(1.0)
        assert hand_persona_weight(data, dict(p, surface_shift=1e4 * np.sign(p["surface_shift"]))) < 1e-3


def test_aggregated_rows_equal_one_row_per_episode():
    from psm_bayes.inference.backends import get_backend

    data = toy(3, seed=1, latent_prior=False)
    cond, item, opt = data.episodes
    flat = data.replace(episode_condition=cond, episode_item=item, episode_option=opt, episode_count=None)
    assert len(flat.episode_condition) == data.episode_count.sum() > len(data.episode_condition)
    p = params("persona_selection", data, PRIORS[None], seed=0)
    m = catalogue.model("persona_selection")
    assert backend_log_joint("persona_selection", "numpyro", flat, PRIORS[None], p) == pytest.approx(
        backend_log_joint("persona_selection", "numpyro", data, PRIORS[None], p), rel=1e-12)
    draws = {k: np.asarray(v)[None] for k, v in p.items()}
    ll_rows = get_backend("numpyro").pointwise_log_likelihood(m, data, PRIORS[None], draws)["y"]
    ll_flat = get_backend("numpyro").pointwise_log_likelihood(m, flat, PRIORS[None], draws)["y"]
    assert ll_rows.shape == ll_flat.shape == (1, data.episode_count.sum())  # one entry per episode
    np.testing.assert_allclose(ll_rows, ll_flat, rtol=1e-12)


@pytest.mark.parametrize("field, value, message", [
    ("episode_count", [1.5] * 7, "episode_count: expected integer counts"),
    ("episode_count", [0] * 7, "episode_count: expected integer counts >= 1"),
    ("icl_evidence", np.full((5, 5, 3), 0.5), "icl_evidence: expected integer counts"),
    ("sft_evidence", np.zeros((5, 5, 2), int), "sft_evidence: expected shape (5, 5, 3)"),
    ("episode_option", [3] * 7, "episode_option: expected option indices < 3"),
    ("measurement_item", ["nope"] * 9, "measurement_item: unknown id"),
    ("condition_type", ("base",), "condition_type: expected 5 labels"),
    ("prior_weights", [0.5, 0.6, -0.1], "prior_weights: expected positive weights"),
    ("loglik", np.zeros((3, 5, 3)), "loglik: expected log-probabilities normalised"),
])
def test_bad_input_names_the_field(field, value, message):
    data = toy(3, seed=2, latent_prior=False)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.replace(**{field: value})


def _valid_prior_predictive(backend: str, name: str):
    from psm_bayes.inference.backends import get_backend

    data = toy(3, seed=3, latent_prior=True)
    if backend == "numpy":  # the simulator: the same model body run forward with numpy draws
        runs = [forward(name, data, PRIORS[4.0], seed=s) for s in range(200)]
        draws = {k: np.stack([r[k] for r in runs]) for k in ("y", "logodds")}
    else:
        draws = get_backend(backend).prior_predictive(catalogue.model(name, backend), data, seed=0,
                                                      priors=PRIORS[4.0], num_samples=200)
    return data, draws


# NumPyro's prior predictive compiles the model (~20 s on a busy 2-core machine): one model there, all in Pyro/numpy
@pytest.mark.parametrize("backend, name", [("numpyro", "persona_selection")]
                         + [(b, n) for b in ("pyro", "numpy") for n in MODELS])
def test_prior_predictive_is_valid_data(backend, name):
    data, draws = _valid_prior_predictive(backend, name)
    y, lo = np.asarray(draws["y"]), np.asarray(draws["logodds"])
    assert y.shape == (200, data.episode_count.sum()) and lo.shape == (200, 9)
    assert set(np.unique(y)) <= {0, 1, 2} and len(np.unique(y)) == 3  # every option drawn, no other value
    assert np.isfinite(lo).all() and lo.std() > 0
    replicate = data.with_observed({"y": y[0], "logodds": lo[0]})  # a draw is accepted as data, one row per episode
    assert replicate.episode_count.sum() == data.episode_count.sum() == len(replicate.episode_condition)

"""The continuous persona-space model: data validation, shared maths, PCA prior, recovery."""

from __future__ import annotations

import numpy as np
import pytest

from psm_bayes import DataError
from psm_bayes.data import Episodes
from psm_bayes.diagnostics import draws
from psm_bayes.models import maths
from psm_bayes.models import persona_space as ps


def _data(**over):
    kw = dict(loadings=np.ones((3, 2)), intercepts=np.zeros(3), prior_mean=np.zeros(2), prior_cov=np.eye(2),
              item_index=np.array([0, 1, 2, 2]), option=np.array([1, 0, 1, 1]))
    kw.update(over)
    return ps.PersonaSpaceData.from_arrays(**kw)


# ---------------------------------------------------------------- data
def test_data_defaults_and_coords():
    d = _data()
    assert d.items == ("i0", "i1", "i2") and d.latent_names == ("pc1", "pc2")
    assert d.item_index.tolist() == [0, 1, 2, 2]
    assert d.coords()["latent_dim"] == ["pc1", "pc2"] and len(d.coords()["episode"]) == 4
    np.testing.assert_allclose(d.prior_chol @ d.prior_chol.T, d.prior_cov)


@pytest.mark.parametrize("over, field", [
    (dict(intercepts=np.zeros(2)), "intercepts"),
    (dict(prior_mean=np.zeros(3)), "prior_mean"),
    (dict(prior_cov=np.array([[1.0, 2.0], [2.0, 1.0]])), "prior_cov"),  # symmetric, not PD
    (dict(prior_cov=np.array([[1.0, 0.5], [0.0, 1.0]])), "prior_cov"),  # not symmetric
    (dict(loadings=np.full((3, 2), np.nan)), "loadings"),
    (dict(option=np.array([1, 0, 2, 1])), "episodes.option"),
    (dict(item_index=np.array([0, 5, 1, 1])), "item_index"),
])
def test_data_errors_name_the_field(over, field):
    with pytest.raises(DataError, match=rf"^{field}:"):
        _data(**over)


def test_unknown_item_id():
    with pytest.raises(DataError, match="^episodes.item:"):
        ps.PersonaSpaceData(np.ones((2, 1)), np.zeros(2), np.zeros(1), np.eye(1), Episodes(np.array(["zz"])))


def test_unobserve_with_observed_roundtrip():
    d = _data()
    from psm_bayes.models.persona_space_numpyro import persona_space

    spec = persona_space.spec  # observed fields are declared once, in the spec
    free = spec.unobserve(d)
    assert free.episodes.option is None and spec.observed_values(free) == {}
    back = spec.with_observed(free, {"y": np.array([0, 0, 1, 0])})
    assert back.episodes.option.tolist() == [0, 0, 1, 0]
    assert back.episodes.source.tolist() == d.episodes.source.tolist()


# ---------------------------------------------------------------- maths
def test_maths_same_in_numpy_jax_torch():
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    B, a, z = rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=3)
    it, src = rng.integers(0, 5, 12), rng.integers(0, 2, 12)
    ref = ps.episode_logits(maths.NUMPY, B, a, z, it, src, 0.7, 1.3)
    np.testing.assert_allclose(ref, (0.7 * (1 - src) + 1.3 * src) * (a + B @ z)[it])
    j = ps.episode_logits(maths.jax_ops(), jnp.asarray(B), jnp.asarray(a), jnp.asarray(z), jnp.asarray(it),
                          jnp.asarray(src), jnp.asarray(0.7), jnp.asarray(1.3))
    t = ps.episode_logits(maths.torch_ops(), *(torch.as_tensor(x, dtype=torch.float64) for x in (B, a, z)),
                          torch.as_tensor(it), torch.as_tensor(src), torch.tensor(0.7, dtype=torch.float64),
                          torch.tensor(1.3, dtype=torch.float64))
    np.testing.assert_allclose(np.asarray(j), ref, rtol=1e-12)
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-12)


def test_numpyro_and_pyro_log_joint_agree():
    """Same sites, same density: the two backends' log joints match in float64 (to 1e-9)."""
    import torch
    from numpyro.infer.util import log_density
    from pyro import poutine

    from psm_bayes.models.persona_space_numpyro import persona_space as m_np
    from psm_bayes.models.persona_space_pyro import persona_space as m_py

    sim = ps.simulate(n_items=6, n_dims=3, n_episodes=40, seed=1)
    params = {"z": np.array([0.3, -0.2, 1.1]), "beta_sft": 0.8, "beta_icl": 1.7, "response_bias": -0.4}
    lj_np, _ = log_density(m_np, (sim.data,), {}, {k: np.asarray(v) for k, v in params.items()})
    tr = poutine.trace(poutine.condition(m_py, {k: torch.as_tensor(v, dtype=torch.float64)
                                               for k, v in params.items()})).get_trace(sim.data)
    assert float(lj_np) == pytest.approx(float(tr.log_prob_sum()), abs=1e-9)
    assert m_np.spec.name == m_py.spec.name == "persona_space"


# ---------------------------------------------------------------- PCA prior
def test_pca_prior_recovers_known_axis():
    """Embeddings spread mostly along a known unit axis u: PC1 is u (|cos| > 0.99)."""
    rng = np.random.default_rng(0)
    n, h = 200, 32
    u = rng.normal(size=h)
    u /= np.linalg.norm(u)
    v = rng.normal(size=h)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    center = rng.normal(size=h)
    s1, s2 = rng.normal(0, 5.0, n), rng.normal(0, 2.0, n)
    X = center + s1[:, None] * u + s2[:, None] * v + rng.normal(0, 0.1, (n, h))
    X[0] = center + 12.0 * u  # the assistant sits far out on +u
    prior = ps.persona_space_prior_from_embeddings(X, n_components=2, assistant=0)
    # sampling error of the top eigenvector with variance ratio 25/4 and n=200 is ~1e-2 rad: 0.99 is loose
    assert prior.assistant_axis @ u > 0.99  # sign oriented by the assistant row
    assert abs(prior.components[1] @ v) > 0.99
    np.testing.assert_allclose(prior.components @ prior.components.T, np.eye(2), atol=1e-10)
    scores = X @ prior.components.T
    np.testing.assert_allclose(prior.mean, scores.mean(0), atol=1e-10)
    np.testing.assert_allclose(prior.cov, np.cov(scores, rowvar=False), atol=1e-5)
    np.testing.assert_allclose(np.diag(prior.cov), prior.explained_variance, rtol=1e-4)
    assert prior.explained_variance_ratio[0] > prior.explained_variance_ratio[1] > 0.05
    np.testing.assert_allclose(prior.project(X[:3]), scores[:3])
    # flipping the assistant to the other side flips the axis
    X2 = X.copy()
    X2[0] = center - 12.0 * u
    assert ps.persona_space_prior_from_embeddings(X2, 2, assistant=0).assistant_axis @ u < -0.99


def test_pca_readout_maps_probes_to_loadings():
    """A probe on hidden states equals intercepts + loadings . z on the PC-space reconstruction."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 10)) @ rng.normal(size=(10, 10))
    prior = ps.persona_space_prior_from_embeddings(X, 3)
    W, b = rng.normal(size=(4, 10)), rng.normal(size=4)
    loadings, intercepts = prior.readout(W, b)
    z = rng.normal(size=3)
    h = prior.center + prior.components.T @ (z - prior.components @ prior.center)
    np.testing.assert_allclose(W @ h + b, intercepts + loadings @ z, atol=1e-10)
    data = ps.PersonaSpaceData.from_arrays(loadings, intercepts, prior.mean, prior.cov, np.array([0, 3]))
    assert data.n_dims == 3


@pytest.mark.parametrize("kw, match", [(dict(n_components=0), "n_components"), (dict(n_components=30), "n_components"),
                                       (dict(assistant=99), "assistant")])
def test_pca_prior_errors(kw, match):
    X = np.random.default_rng(0).normal(size=(10, 5))
    with pytest.raises(DataError, match=match):
        ps.persona_space_prior_from_embeddings(X, **{"n_components": 2, **kw})


# ---------------------------------------------------------------- fitting
@pytest.fixture(scope="module")
def recovery():
    from psm_bayes.inference import fit_nuts
    from psm_bayes.models.persona_space_numpyro import persona_space

    sim = ps.simulate(n_items=20, n_dims=2, n_episodes=600, seed=3)
    dt = fit_nuts(persona_space, sim.data, seed=0, num_warmup=400, num_samples=600, num_chains=2)
    return sim, dt


def test_nuts_recovers_z_and_converges(recovery):
    import arviz as az

    sim, dt = recovery
    z = draws(dt, "z")
    lo, hi = np.quantile(z, [0.005, 0.995], axis=0)
    # 99% intervals: with a fixed seed this is deterministic; 99% keeps the chance that a correct
    # sampler misses one of the 2 coordinates at ~2% over seeds
    assert np.all((lo <= sim.truth["z"]) & (sim.truth["z"] <= hi)), (lo, hi, sim.truth["z"])
    # 600 episodes on 16 items pin z down to well inside its prior (prior sd >= 0.7 per coordinate)
    assert np.all(z.std(0) < 0.5 * np.sqrt(np.diag(sim.data.prior_cov)))
    rhat = az.rhat(dt, var_names=["z", "beta_sft", "beta_icl"])
    assert max(float(rhat[v].max()) for v in ("z", "beta_sft", "beta_icl")) < 1.01
    assert int(dt["sample_stats"]["diverging"].values.sum()) == 0
    assert set(dt["posterior"]["z"].dims) == {"chain", "draw", "latent_dim"}
    assert dt["posterior"]["p_item"].sizes["item"] == 20
    assert "y" in dt["log_likelihood"] and "y" in dt["posterior_predictive"]


def test_svi_agrees_with_nuts(recovery):
    from psm_bayes.inference import fit_svi
    from psm_bayes.models.persona_space_numpyro import persona_space

    sim, dt = recovery
    vi = fit_svi(persona_space, sim.data, seed=0, guide="mvn", num_steps=1500, num_draws=500, predictive=False)
    z_nuts, z_vi = draws(dt, "z"), draws(vi, "z")
    # a near-Gaussian posterior: the full-rank guide's mean lies within 0.5 NUTS posterior sd of NUTS's
    assert np.all(np.abs(z_vi.mean(0) - z_nuts.mean(0)) < 0.5 * z_nuts.std(0))


def test_pyro_backend_fits():
    from psm_bayes.inference import fit_svi
    from psm_bayes.models.persona_space_pyro import persona_space

    sim = ps.simulate(n_items=8, n_dims=2, n_episodes=100, seed=4)
    dt = fit_svi(persona_space, sim.data, seed=0, num_steps=300, num_draws=100, predictive=False)
    assert dt["posterior"]["z"].shape == (1, 100, 2)
    assert np.isfinite(dt["svi"]["loss"].values).all()

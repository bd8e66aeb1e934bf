"""Simulation-based calibration: every model passes at the documented sizes, and broken inference fails.

Documented sizes (fast suite): data templates of ``psm-bayes sbc``'s defaults
(``ModelEntry.sbc_sizes``; persona_mixture: 3 personas, 4 binary items, 20
episodes; persona_space: 6 items, 2 dims, 20 episodes; ICL models: 4
personas, 4 curves x 5 shot counts; SFT models: 4 personas, 20 items), 100
replicates, L = 99 draws thinned by 2, 300 warm-up iterations, one chain
(NUTS ``vmap``-ed over replicates for persona_mixture, the compiled loop
otherwise). The slow suite runs 500 replicates with 2 chains.

The uniformity test is a chi-square test on 10 bins per parameter at
alpha = 0.01 after Bonferroni across parameters, so a correct sampler is
wrongly rejected with probability <= 1% per model; seeds are fixed, so the
outcome is deterministic on a given machine. The mis-specified runs reject
with p-values below 1e-10 (far from the threshold), so they are not fragile.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from psm_bayes import sbc
from psm_bayes.sbc import SBCConfig, run_sbc
from psm_bayes.study.registry import get_model, model_names

ALPHA = 0.01
REPLICATES = 100


def _template(name: str, seed: int = 0):
    entry = get_model(name)
    return entry, entry.simulator()(seed=seed, **entry.sbc_sizes).data


# ---------------------------------------------------------------- the test itself
def test_uniformity_test_accepts_uniform_and_rejects_skewed():
    rng = np.random.default_rng(0)
    L = 99
    uniform = rng.integers(0, L + 1, size=(200, 3))
    _, p = sbc.rank_uniformity(uniform, L)
    assert p.min() > ALPHA / 3
    # an over-dispersed posterior piles ranks in the middle; an under-dispersed one at the ends
    middle = np.clip(rng.normal(L / 2, 10, size=(200, 1)).round(), 0, L).astype(int)
    ends = np.where(rng.random((200, 1)) < 0.5, rng.integers(0, 10, (200, 1)), rng.integers(90, L + 1, (200, 1)))
    _, p = sbc.rank_uniformity(np.hstack([middle, ends]), L)
    assert p.max() < 1e-10
    # unequal bin widths: 7 bins over 100 rank values keep the expected counts right
    _, p = sbc.rank_uniformity(rng.integers(0, L + 1, size=(5000, 2)), L, bins=7)
    assert p.min() > ALPHA / 2


def test_config_validation():
    with pytest.raises(ValueError, match="num_chains"):
        SBCConfig(num_draws=99, num_chains=2)
    assert SBCConfig(num_draws=100, num_chains=4).draws_per_chain == 25


def test_latent_sites_and_prior_draws_match_the_model():
    entry, data = _template("persona_mixture")
    model = entry.model("numpyro")
    sites = sbc.latent_sites(model, data)
    assert sites == {"w": (3,), "beta_sft": (), "beta_icl": (), "authorial_bias": ()}
    latents, obs = sbc.draw_prior(model, data, 7, seed=0)
    assert latents["w"].shape == (7, 3) and obs["y"].shape == (7, len(data.episodes))
    np.testing.assert_allclose(latents["w"].sum(1), 1.0)
    # same sites in the Pyro backend
    assert sbc.latent_sites(entry.model("pyro"), data) == sites


# ---------------------------------------------------------------- calibration per model
@pytest.fixture(scope="module")
def psm_sbc():
    entry, data = _template("persona_mixture")
    return run_sbc(entry.model("numpyro"), data, replicates=REPLICATES, seed=11, config=SBCConfig(),
                   method="vmap")


def test_persona_mixture_is_calibrated(psm_sbc, tmp_path):
    u = psm_sbc.uniformity(ALPHA)
    assert psm_sbc.passed(ALPHA), u
    assert list(u.index) == ["w[0]", "w[1]", "w[2]", "beta_sft", "beta_icl", "authorial_bias"]
    assert psm_sbc.ranks.min() >= 0 and psm_sbc.ranks.max() <= 99
    # thinning by 2 leaves nearly independent draws: mean bulk ESS of the 99 draws well above half
    assert np.nanmean(psm_sbc.ess_bulk) > 60
    assert psm_sbc.divergences.sum() <= REPLICATES // 20  # a few divergences at most on prior draws
    paths = psm_sbc.save(tmp_path)
    for key in ("rank_hist", "ecdf_diff"):
        with open(paths[key], "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.load(open(paths["summary"]))
    assert summary["passed"] and summary["replicates"] == REPLICATES
    assert len(psm_sbc.to_frame()) == REPLICATES * 6


def test_persona_mixture_wrong_prior_is_detected():
    """Fitting with priors 3x too narrow (data drawn from the default priors) must fail SBC."""
    from psm_bayes.models.persona_mixture import Priors

    entry, data = _template("persona_mixture")
    res = run_sbc(entry.model("numpyro"), data, replicates=REPLICATES, seed=11, config=SBCConfig(),
                  fit_priors=Priors(beta_scale=0.5 / 3, bias_scale=1.0 / 3))
    u = res.uniformity(ALPHA)
    assert not res.passed(ALPHA)
    assert u.loc["beta_sft", "reject"] and u.loc["authorial_bias", "reject"]


def test_persona_space_is_calibrated_via_cli(tmp_path):
    from psm_bayes.cli import main

    out = tmp_path / "sbc"
    rc = main(["sbc", "--model", "persona_space", "--replicates", str(REPLICATES), "--out", str(out),
               "--seed", "5", "--fail-on-reject"])
    assert rc == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["passed"] and summary["min_p_bonferroni"] > ALPHA
    assert sorted(os.listdir(out)) == ["ecdf_diff.png", "rank_hist.png", "ranks.parquet", "summary.json",
                                       "uniformity.csv"]


OTHER_MODELS = [m for m in model_names() if m not in ("persona_mixture", "persona_space")]


@pytest.mark.parametrize("name", OTHER_MODELS)
def test_registered_model_is_calibrated(name):
    """Every other registered model (ICL-curve laws, SFT shifts, joint) on its design's small sizes.

    Their truth and data come from the model's own prior predictive on the design
    (``registry.prior_simulation``), so no model-specific simulator is needed.
    """
    entry, data = _template(name)
    res = run_sbc(entry.model("numpyro"), data, replicates=REPLICATES, seed=1)
    assert res.passed(ALPHA), res.uniformity(ALPHA)


def test_persona_space_broken_sampler_is_detected():
    """NUTS with no warm-up, no adaptation and a tiny fixed step barely leaves its start: SBC must fail."""
    entry, data = _template("persona_space")
    bad = SBCConfig(num_warmup=0, adapt_step_size=False, adapt_mass_matrix=False, step_size=1e-3, max_tree_depth=3)
    res = run_sbc(entry.model("numpyro"), data, replicates=60, seed=5, config=bad)
    assert not res.passed(ALPHA)
    assert res.uniformity(ALPHA)["reject"].all()


def test_vmap_equals_python_loop():
    """The vectorised run is the same computation as the per-replicate loop.

    Batched XLA kernels round differently in the last bits (measured ~1e-7 on
    posterior means here); over long chains such differences can grow in a
    few replicates (200 replicates x 500 iterations: most, not all, ranks
    equal), so on these short chains we require >= 90% equal ranks and a
    median posterior-mean difference below 1e-6 (measured: all ranks equal).
    """
    entry, data = _template("persona_space")
    cfg = SBCConfig(num_warmup=100, num_draws=20, thin=1, num_chains=2)
    a = run_sbc(entry.model("numpyro"), data, replicates=4, seed=3, config=cfg, method="vmap", chunk_size=3)
    b = run_sbc(entry.model("numpyro"), data, replicates=4, seed=3, config=cfg, method="loop")
    assert (a.ranks == b.ranks).mean() >= 0.9
    assert np.median(np.abs(a.post_mean - b.post_mean)) < 1e-6
    assert a.meta["chunk_size"] == 3 and a.method == "vmap" and b.method == "loop"


def test_generic_fit_method_runs_pyro_models():
    """Pyro models go through fit_nuts on ``spec.with_observed`` data (the generic path)."""
    entry, data = _template("persona_space")
    cfg = SBCConfig(num_warmup=30, num_draws=10, thin=1)
    res = run_sbc(entry.model("pyro"), data, replicates=2, seed=0, config=cfg, method="fit")
    assert res.ranks.shape == (2, 4) and res.ranks.max() <= 10
    with pytest.raises(ValueError, match="NumPyro"):
        run_sbc(entry.model("pyro"), data, replicates=2, config=cfg, method="vmap")


# ---------------------------------------------------------------- slow: full size
@pytest.mark.slow
@pytest.mark.parametrize("name", ["persona_mixture", "persona_space"])
def test_full_sbc(name, tmp_path):
    """500 replicates, 2 chains x 50 draws (L = 100), thinned by 2."""
    entry, data = _template(name, seed=1)
    res = run_sbc(entry.model("numpyro"), data, replicates=500, seed=1,
                  config=SBCConfig(num_draws=100, num_chains=2, num_warmup=500), chunk_size=250)
    assert res.passed(ALPHA), res.uniformity(ALPHA)
    res.save(tmp_path)


@pytest.mark.slow
def test_sbc_on_ray_matches_serial():
    entry, data = _template("persona_space")
    cfg = SBCConfig(num_warmup=150)
    kw = dict(replicates=40, seed=2, config=cfg, chunk_size=20)
    serial = run_sbc(entry.model("numpyro"), data, **kw)
    ray = run_sbc(entry.model("numpyro"), data, ray_address="local", workers=2, **kw)
    np.testing.assert_array_equal(serial.ranks, ray.ranks)

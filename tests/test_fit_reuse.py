"""Compiled NUTS shared across fits (:mod:`psm_bayes.inference.compiled`, :mod:`psm_bayes.inference.nuts`).

A fit of new data with the model structure of an earlier fit must run the
earlier fit's compiled program (no XLA compilation at all, counted from JAX's
monitoring events) and give, bit for bit, the draws a fresh compilation gives
(``compiled.reuse(False)``), for a persona-selection model (measured log-odds
and sampled episodes: float and integer observations) and for the persona
mixture (episodes). Each test also shows what a broken cache would fail: the
reused program's draws differ from the first data's (a program that kept its
first constants would reproduce them), and changed Python scalars or shapes
are new structures.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from psm_bayes.inference import compiled, fit_nuts
from psm_bayes.models import catalogue
from psm_bayes.models.base import spec_of

KW = dict(num_warmup=30, num_samples=20, num_chains=2)
GROUPS = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "observed_data")


def _refill(model, data, seed: int):
    """``data`` with each observed array permuted (new observed values, same shapes and value sets)."""
    spec = spec_of(model)
    rng = np.random.default_rng(seed)
    return spec.with_observed(data, {k: rng.permutation(v) for k, v in spec.observed_values(data).items()})


def _identical(a, b) -> bool:
    groups = [g for g in GROUPS if g in a.children]
    assert groups == [g for g in GROUPS if g in b.children]
    return all(np.array_equal(a[g][v].values, b[g][v].values) for g in groups for v in a[g].data_vars)


def test_call_takes_constants_as_arguments():
    compiled.clear_cache()
    x = np.linspace(0.0, 1.0, 3)

    def fn(c, s):  # closes over the array c and the Python scalar s, as a model closes over its data
        return lambda v: jnp.sin(jnp.asarray(c)) @ v * s

    a, b = np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3) ** 2
    ra = compiled.call("test", fn(a, 2.0), x)
    before = compiled.cache_info()
    rb = compiled.call("test", fn(b, 2.0), x)
    after = compiled.cache_info()
    assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"])
    assert after["xla_compiles"] == before["xla_compiles"]
    np.testing.assert_allclose(rb, np.sin(b) @ x * 2.0, rtol=1e-12)  # b's values, not the first call's
    assert not np.allclose(rb, ra)
    # a different Python scalar (a literal of the computation) or shape is another program
    np.testing.assert_allclose(compiled.call("test", fn(b, 3.0), x), np.sin(b) @ x * 3.0, rtol=1e-12)
    np.testing.assert_allclose(compiled.call("test", fn(np.ones((4, 3)), 2.0), x), np.sin(1.0) * x.sum() * 2.0)
    assert compiled.cache_info()["misses"] == after["misses"] + 2


@pytest.mark.parametrize("name, predictive", [
    ("persona_selection", False),  # the run's family; its predictive programs are compiled.call's (tested above)
    pytest.param("persona_mixture", True, marks=pytest.mark.slow),  # ~70 s: NUTS, log-lik and predictive
])
def test_refit_reuses_program_bit_identical(name, predictive):
    entry = catalogue.get(name)
    model = entry.model("numpyro")
    data = entry.simulator()(seed=0, **entry.sizes)[0]
    first, second = _refill(model, data, 1), _refill(model, data, 2)
    kw = dict(KW, predictive=predictive)
    compiled.clear_cache()
    a = fit_nuts(model, first, seed=3, **kw)
    before = compiled.cache_info()
    b = fit_nuts(model, second, seed=3, **kw)
    after = compiled.cache_info()
    assert after["xla_compiles"] == before["xla_compiles"], "a fit of new observed values compiled again"
    programs = 3 if predictive else 1  # NUTS (and the log-likelihood and posterior predictive)
    assert after["hits"] - before["hits"] == programs and after["misses"] == before["misses"]
    with compiled.reuse(False):
        fresh = fit_nuts(model, second, seed=3, **kw)
    assert compiled.cache_info()["xla_compiles"] > after["xla_compiles"]  # the non-reused path compiled
    assert _identical(b, fresh)
    assert not np.array_equal(a["posterior"][entry.latents[0]].values, b["posterior"][entry.latents[0]].values)


@pytest.mark.slow  # ~3 compilations of NUTS (one per chain method)
def test_chain_methods_agree():
    from psm_bayes.inference import numpyro_backend

    entry = catalogue.get("persona_mixture")
    model, data = entry.model("numpyro"), entry.simulator()(seed=0, **entry.sizes)[0]
    fits = {m: numpyro_backend.fit_nuts(model, data, seed=5, priors=None, num_warmup=200, num_samples=400,
                                        num_chains=2, target_accept=0.8, max_tree_depth=10, predictive=False,
                                        progress=False, chain_method=m)
            for m in ("vectorized", "sequential", "parallel")}
    # the default (parallel) and sequential run one one-chain program: the same draws, whatever the cores
    assert np.array_equal(fits["parallel"]["posterior"]["w"].values, fits["sequential"]["posterior"]["w"].values)
    # vectorized chains are another program: the same posterior within Monte Carlo error
    w = {m: dt["posterior"]["w"].values.reshape(-1, dt["posterior"]["w"].shape[-1]) for m, dt in fits.items()}
    se = w["sequential"].std(0) / np.sqrt(200)  # generous: ESS >= 200 of 800 draws
    assert np.all(np.abs(w["vectorized"].mean(0) - w["sequential"].mean(0)) < 5 * se * np.sqrt(2))
    with pytest.raises(ValueError, match="chain_method"):
        numpyro_backend.fit_nuts(model, data, seed=5, priors=None, num_warmup=1, num_samples=1, num_chains=2,
                                 target_accept=0.8, max_tree_depth=10, predictive=False, progress=False,
                                 chain_method="threads")


_CHILD = """
from psm_bayes.inference import compiled, configure_jax
configure_jax()  # no cache_dir: the folder comes from the environment the parent exported
import jax, jax.numpy as jnp
def probe(x):
    return jnp.sin(x) @ x.T + 1.25
jax.jit(probe)(jnp.ones((3, 3))).block_until_ready()
print(compiled.cache_info()["persistent_cache_hits"])
"""


def test_persistent_cache_serves_a_spawned_process(tmp_path):
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from psm_bayes.inference import configure_jax
    from psm_bayes.inference.jax_config import CACHE_ENV

    old = os.environ.pop(CACHE_ENV, None), jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        configure_jax(cache_dir=tmp_path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # keep even this tiny program

        def probe(x):
            return jnp.sin(x) @ x.T + 1.25

        jax.jit(probe)(jnp.ones((3, 3))).block_until_ready()
        assert os.environ[CACHE_ENV] == str(tmp_path.resolve()) and any(tmp_path.iterdir())
        out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True,
                             timeout=300).stdout.split()
        assert int(out[-1]) >= 1, out  # the spawned process loaded the program from the folder
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
        os.environ.pop(CACHE_ENV, None)
        if old[0] is not None:
            os.environ[CACHE_ENV] = old[0]

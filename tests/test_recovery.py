"""Parameter recovery: the truth lies in the posterior's 90% central intervals about 90% of the time.

Each replicate draws the truth from the same priors the fit uses
(``simulate(..., priors=PRIORS)``, NumPyro NUTS with ``priors=PRIORS``), so a
correct model and sampler give 90% intervals that cover the truth with
probability exactly 0.9 per scalar parameter, averaged over the prior
(Bayesian calibration, the principle behind simulation-based calibration).

Scalars checked per replicate: ``w`` (K of them), ``beta_sft``, ``beta_icl``,
``authorial_bias`` -> K + 3. Coverage is pooled over all scalars of all
replicates:

* fast (4 replicates, K=6): 36 scalars. Were they independent, the number
  covered would be Binomial(36, 0.9) (mean 32.4, sd 1.8) and "pooled coverage
  >= 0.8" (>= 29 covered) fails with probability ~2% for a correct model; the
  ``w`` components of one replicate are positively correlated (they sum to
  one), which fattens the tails a little. A model that ignores or mis-scales
  a parameter misses it in most replicates and drops below 0.8. The seeds are
  fixed, so the outcome is deterministic.
* slow (20 replicates): 180 scalars; 0.8 is ~4.5 binomial sd below 0.9, and
  each of ``beta_sft``, ``beta_icl``, ``authorial_bias`` must be covered in
  >= 14 of 20 replicates (Binomial(20, 0.9) gives fewer than 14 with
  probability ~0.2%).

Coverage alone is satisfied by uselessly wide intervals, so the posterior
intervals must also be much narrower than the prior's.
"""

from __future__ import annotations

import numpy as np
import pytest

import psm_bayes.models.persona_mixture_numpyro as npm  # noqa: F401  (configures float64 JAX first)
from psm_bayes.inference import fit_nuts  # noqa: E402
from psm_bayes.models.persona_mixture import Priors  # noqa: E402
from psm_bayes.simulate import simulate  # noqa: E402

PRIORS = Priors(prior_weights_concentration=5.0)
K, N_ITEMS, N_EPISODES = 6, 40, 1000
SCALARS = ("beta_sft", "beta_icl", "authorial_bias")


def _prior_widths(pi: np.ndarray, rng: np.random.Generator, n: int = 20000) -> dict[str, np.ndarray]:
    """Widths of the prior's 90% central intervals (Monte Carlo), per parameter."""
    draws = {"w": rng.dirichlet(PRIORS.concentration * pi, size=n),
             "beta_sft": rng.lognormal(PRIORS.beta_loc, PRIORS.beta_scale, n),
             "beta_icl": rng.lognormal(PRIORS.beta_loc, PRIORS.beta_scale, n),
             "authorial_bias": rng.normal(0.0, PRIORS.bias_scale, n)}
    return {k: np.diff(np.quantile(v, [0.05, 0.95], axis=0), axis=0)[0] for k, v in draws.items()}


def replicate(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{param: (covered, posterior width / prior width)}`` for one simulated data set."""
    sim = simulate(n_personas=K, n_items=N_ITEMS, n_episodes=N_EPISODES, seed=seed, priors=PRIORS)
    dt = fit_nuts(npm.persona_mixture, sim.data, seed=seed, priors=PRIORS, num_warmup=300, num_samples=500,
                  num_chains=2, predictive=False)
    prior_w = _prior_widths(sim.truth["prior_weights"], np.random.default_rng(seed))
    out = {}
    for name in ("w",) + SCALARS:
        v = dt["posterior"][name].values
        v = v.reshape((-1,) + v.shape[2:])
        lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
        true = np.asarray(sim.truth[name])
        out[name] = (np.atleast_1d((lo <= true) & (true <= hi)), np.atleast_1d((hi - lo) / prior_w[name]))
    return out


def check_recovery(seeds, per_param_min: int | None = None) -> None:
    results = [replicate(s) for s in seeds]
    covered = np.concatenate([r[name][0] for r in results for name in r])
    assert covered.size == len(seeds) * (K + len(SCALARS))
    coverage = covered.mean()
    assert coverage >= 0.8, f"pooled 90%-interval coverage {coverage:.2f} over {covered.size} scalars"
    # informative: on average the posterior interval is under 60% of the prior's width
    # (here it is ~30-45%; a fit that returned the prior would give ~100%)
    ratio = np.concatenate([r[name][1] for r in results for name in r])
    assert ratio.mean() < 0.6, ratio.mean()
    if per_param_min is not None:
        for name in SCALARS:
            hits = sum(int(r[name][0][0]) for r in results)
            assert hits >= per_param_min, f"{name} covered in {hits}/{len(seeds)} replicates"


def test_recovery_fast():
    check_recovery(seeds=range(100, 104))


@pytest.mark.slow
def test_recovery_slow():
    check_recovery(seeds=range(200, 220), per_param_min=14)

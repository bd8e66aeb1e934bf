"""NUTS geometry of the per-condition drift and item effects: centred (as shipped) vs non-centred.

Run::

    .venv/bin/python benchmarks/bench_drift_parametrisation.py            # ~5 min on 2 cores

Data: the persona-selection simulator at the size of the default run's ICL data
(10 personas, 4 traits x 16 evaluation items = 64 measured items, 64 shot items
per trait, shots 1-64 in 2 orderings and both poles: 113 conditions, 7232
log-odds, Student-t(5) noise), simulated at effect sizes like the measured ones
(``beta_icl`` 0.5, ``drift_sd`` 0.6, ``item_sd`` 0.3, ``logodds_sd`` 0.24).

Rows: the shipped model (``drift`` and ``item_effect`` sampled centred) and the
same model with both sites rewritten non-centred by NumPyro's
``LocScaleReparam(centered=0)`` (what the model was before 2026-12-03: ``drift_z``,
``item_z``), and with only the drift non-centred. Same data, seed and settings:
1 chain, 300 warm-up + 300 draws, ``target_accept`` 0.9, run twice on one ``MCMC`` object.
Columns (of the second run): leapfrog steps per iteration, mean tree depth, divergences, the first run's
wall s (JIT compilation and sampling) and the second's (the compiled program again: sampling only), the
posterior mean of ``beta_icl`` and ``logodds_sd`` (the parametrisation must not
change the posterior) and the minimum bulk ESS of the main parameters.
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

from bench_fit_reuse import cpu_features  # benchmarks/ is the script's folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import arviz as az
    import jax
    from numpyro import handlers
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.reparam import LocScaleReparam

    from psm_bayes.inference.jax_config import configure_jax
    from psm_bayes.models import catalogue
    from psm_bayes.models.selection import Priors
    from psm_bayes.models.selection_simulate import design, forward

    configure_jax()
    pr = Priors(logodds_df=5.0)
    data = design(seed=1, n_personas=10, n_traits=4, n_eval=16, n_shot_items=64, shots=(1, 2, 4, 8, 16, 32, 64),
                  orderings=2, observation="measurements")
    G = len(data.bias_types)
    truth = {"beta_icl": 0.5, "drift_sd": np.full(G, 0.6), "logodds_sd": 0.24, "item_sd": 0.3,
             "response_bias": np.linspace(-0.5, 0.5, G)}
    data = data.with_observed({"logodds": forward("persona_selection", data, pr, seed=2, fixed=truth)["logodds"]})
    model = catalogue.model("persona_selection", "numpyro")
    variants = {"centred (shipped)": (), "drift non-centred": ("drift",),
                "drift and item effects non-centred": ("drift", "item_effect")}
    print(f"# {datetime.date.today()}  {cpu_features()}  {data.n_conditions} conditions, {len(data.logodds)} "
          f"log-odds; 1 chain, {args.warmup} + {args.draws}, target_accept 0.9")
    print("| parametrisation | steps / iteration | tree depth | divergences | first run s | sampling s | beta_icl "
          "| logodds_sd | min bulk ESS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, sites in variants.items():
        m = handlers.reparam(model, config={s: LocScaleReparam(0) for s in sites}) if sites else model
        mcmc = MCMC(NUTS(m, target_accept_prob=0.9), num_warmup=args.warmup, num_samples=args.draws,
                    progress_bar=False)
        t0 = time.time()
        mcmc.run(jax.random.PRNGKey(args.seed + 1), data, pr, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(mcmc.get_samples())             # JAX dispatches asynchronously
        first = time.time() - t0                              # compiles, then samples
        t0 = time.time()
        mcmc.run(jax.random.PRNGKey(args.seed), data, pr, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(mcmc.get_samples())
        wall = time.time() - t0                               # the same program again: sampling only
        ex = mcmc.get_extra_fields()
        steps = np.asarray(ex["num_steps"])
        s = mcmc.get_samples()
        ess = min(float(np.min(az.ess(np.asarray(s[k])[None].reshape(1, len(steps), -1)[..., j])))
                  for k in ("beta_icl", "logodds_sd", "drift_sd", "item_sd")
                  for j in range(int(np.prod(np.shape(s[k])[1:]) or 1)))
        print(f"| {label} | {steps.mean():.1f} | {np.log2(steps + 1).mean():.2f} | {int(np.sum(ex['diverging']))} "
              f"| {first:.1f} | {wall:.1f} | {float(np.mean(s['beta_icl'])):.3f} | {float(np.mean(s['logodds_sd'])):.3f} "
              f"| {ess:.0f} |", flush=True)


if __name__ == "__main__":
    main()

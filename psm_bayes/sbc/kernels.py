"""SBC kernels: one fit of one replicate, kept apart from the driver that loops over replicates.

As in NumPyro, where ``MCMC`` drives any ``MCMCKernel``, a kernel here only
says how to fit ONE replicated data set: ``kernel.build()`` returns
``run_one(key, obs) -> (samples, stats)`` with ``samples`` of shape
``{latent: (chain, draw, ...)}`` (the ``num_draws`` thinned draws) and
``stats`` of shape ``{stat: (chain,)}``. The driver
(:mod:`psm_bayes.sbc.driver`) decides how replicates are run: a Python loop,
``jax.vmap`` over chunks (only for kernels whose ``run_one`` is a pure JAX
function, ``kernel.pure_jax``), or Ray tasks.

* :class:`NUTSKernel` (NumPyro models): NUTS written with
  :func:`numpyro.infer.hmc.hmc`, warm-up and thinned sampling in one
  ``lax.fori_loop``; the replicate's data enter through
  :func:`numpyro.handlers.condition` on the observed sites, so one
  compilation serves every replicate.
* :class:`FitKernel` (any backend): :func:`psm_bayes.inference.fit_nuts` on
  ``spec.with_observed(data, obs)``; generic, but it recompiles per data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from psm_bayes.models.base import spec_of
from psm_bayes.sbc.config import SBCConfig

STATS = ("divergences", "accept_prob", "num_steps", "step_size")
"""Per-chain sampler statistics every kernel reports (NaN where a backend does not)."""


@dataclass(frozen=True)
class NUTSKernel:
    """NUTS for one replicate as a pure JAX function (NumPyro models; jit- and vmap-able).

    Parameters
    ----------
    model : callable
        A NumPyro psm-bayes model.
    data
        Data template (observed fields are replaced per replicate).
    priors
        Priors of the fitted model.
    config : SBCConfig
    names : tuple of str
        Latent sites whose draws are returned.
    example_obs : mapping
        One replicate's observed values (shapes and dtypes for tracing).
    """

    model: Callable
    data: Any
    priors: Any
    config: SBCConfig
    names: tuple[str, ...]
    example_obs: Mapping[str, np.ndarray]
    pure_jax = True

    def build(self) -> Callable:
        """``run_one(key, obs) -> (samples {name: (chain, draw, ...)}, stats {stat: (chain,)})``."""
        import jax
        from numpyro import handlers
        from numpyro.infer import init_to_median
        from numpyro.infer.util import initialize_model

        model, priors = self.model, self.priors
        free = spec_of(model).unobserve(self.data)

        def conditioned(obs):
            handlers.condition(model, data=obs)(free, priors)

        info = initialize_model(jax.random.PRNGKey(0), conditioned, model_args=(dict(self.example_obs),),
                                dynamic_args=True, init_strategy=init_to_median)
        blocks = spec_of(model).mass_blocks(info.param_info.z)      # the fits' dense mass-matrix blocks
        run_chain = _nuts_chain(info.param_info.z, info.potential_fn, info.postprocess_fn, self.config, self.names,
                                blocks)
        n_chains = self.config.num_chains

        def run_one(key, obs):
            if n_chains == 1:  # no chain batching to compile
                samples, stats = run_chain(key, obs)
                return jax.tree_util.tree_map(lambda x: x[None], (samples, stats))
            return jax.vmap(run_chain, in_axes=(0, None))(jax.random.split(key, n_chains), obs)

        return run_one


def _nuts_chain(z_init, pe_gen: Callable, post_gen: Callable, c: SBCConfig, names: tuple[str, ...],
                dense_mass: tuple[tuple[str, ...], ...] = ()) -> Callable:
    """One NUTS chain: jittered start, warm-up and thinned sampling in a single ``lax.fori_loop``."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro.infer.hmc import hmc

    def run_chain(key, obs):
        init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")
        k_jit, k_run = jax.random.split(key)
        if c.init == "laplace":     # the run's fits' start (psm_bayes.inference.nuts.laplace)
            from jax.flatten_util import ravel_pytree

            from psm_bayes.inference.nuts import gaussian_at_mode

            flat, unravel = ravel_pytree(z_init)
            mode, cov, root, _ = gaussian_at_mode(lambda x: pe_gen(obs)(unravel(x)), flat)
            z0 = unravel(mode + root @ jax.random.normal(k_jit, mode.shape))
            mass = {"inverse_mass_matrix": cov, "dense_mass": True, "adapt_mass_matrix": False}
        else:
            leaves, tree = jax.tree_util.tree_flatten(z_init)
            jkeys = jax.random.split(k_jit, len(leaves))
            z0 = jax.tree_util.tree_unflatten(tree, [
                x + jax.random.uniform(k, jnp.shape(x), minval=-c.init_jitter, maxval=c.init_jitter)
                for x, k in zip(leaves, jkeys)])
            mass = {"adapt_mass_matrix": c.adapt_mass_matrix, "dense_mass": list(dense_mass) or False}
        state = init_kernel(z0, c.num_warmup, step_size=c.step_size, adapt_step_size=c.adapt_step_size,
                            target_accept_prob=c.target_accept, **mass,
                            max_tree_depth=c.max_tree_depth, model_args=(obs,), rng_key=k_run)
        # one loop over warm-up and sampling (one copy of the NUTS kernel to compile): iteration i >= warm-up
        # with (i - warm-up) % thin == thin - 1 is kept in row (i - warm-up) // thin of the buffer
        n = c.draws_per_chain * c.thin
        buf = jax.tree_util.tree_map(lambda x: jnp.zeros((c.draws_per_chain,) + jnp.shape(x), jnp.result_type(x)),
                                     state.z)
        zero = jnp.zeros((), jnp.result_type(float))

        def step(i, carry):
            s, buf, div, acc, steps = carry
            s = sample_kernel(s, model_args=(obs,))
            j = i - c.num_warmup
            sampling = j >= 0
            keep = sampling & (j % c.thin == c.thin - 1)
            row = jnp.clip(j // c.thin, 0, c.draws_per_chain - 1)
            buf = jax.tree_util.tree_map(lambda b, x: jnp.where(keep, b.at[row].set(x), b), buf, s.z)
            return (s, buf, div + (sampling & s.diverging), acc + jnp.where(sampling, s.accept_prob, 0.0),
                    steps + jnp.where(sampling, s.num_steps, 0))

        init = (state, buf, jnp.zeros((), jnp.int32), zero, zero)
        state, zs, div, acc, steps = lax.fori_loop(0, c.num_warmup + n, step, init)
        draws = jax.vmap(post_gen(obs))(zs)
        stats = {"divergences": div, "accept_prob": acc / n, "num_steps": steps / n,
                 "step_size": state.adapt_state.step_size}
        return {k: draws[k] for k in names}, stats

    return run_chain


@dataclass(frozen=True)
class FitKernel:
    """:func:`psm_bayes.inference.fit_nuts` on one replicate (any backend; recompiles per data set).

    Parameters are those of :class:`NUTSKernel` less ``example_obs``; the
    model's :class:`~psm_bayes.models.base.ModelSpec` needs ``with_observed``.
    """

    model: Callable
    data: Any
    priors: Any
    config: SBCConfig
    names: tuple[str, ...]
    pure_jax = False

    def build(self) -> Callable:
        """``run_one(seed, obs) -> (samples, stats)`` (a Python function)."""
        from psm_bayes.inference import fit_nuts

        spec = spec_of(self.model)
        if spec.with_observed is None:
            raise TypeError(f"model: {spec.name!r} ({spec.backend}) has no ModelSpec.with_observed; "
                            "the SBC method 'fit' needs it")
        c = self.config

        def run_one(seed, obs):
            d = spec.with_observed(self.data, dict(obs))
            dt = fit_nuts(self.model, d, seed=int(seed), priors=self.priors, num_warmup=c.num_warmup,
                          num_samples=c.draws_per_chain * c.thin, num_chains=c.num_chains,
                          target_accept=c.target_accept, max_tree_depth=c.max_tree_depth, predictive=False,
                          init=c.init)
            samples = {k: dt["posterior"][k].values[:, c.thin - 1::c.thin] for k in self.names}
            ss = dt["sample_stats"] if "sample_stats" in dt.children else {}
            stats = {}
            for k, src in (("divergences", "diverging"), ("accept_prob", "acceptance_rate"),
                           ("num_steps", "n_steps"), ("step_size", "step_size")):
                v = ss[src].values if src in ss else np.full((c.num_chains, 1), np.nan)
                stats[k] = v.sum(1) if k == "divergences" else v.mean(1)
            return samples, stats

        return run_one

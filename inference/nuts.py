"""NumPyro NUTS as one compiled program per model structure (see :mod:`psm_bayes.inference.compiled`).

:func:`sample` traces the model's initial point, potential energy and
constraining map to jaxprs and runs NUTS (:class:`numpyro.infer.NUTS` with a
``potential_fn``, driven by :class:`numpyro.infer.MCMC` inside ``jax.jit``)
on their constants passed as arguments; fits of data with the same structure
and the same settings share the compiled program.

Chains (``chain_method``), measured in ``benchmarks/bench_fit_reuse.py``
(``benchmarks/README.md``):

* ``"parallel"`` (default): one chain per host device (``pmap`` of the
  one-chain program; :func:`~psm_bayes.inference.configure_jax` makes one
  device per core), falling back to ``"sequential"`` with fewer devices than
  chains. The two run the same one-chain program and give the same draws bit
  for bit, so the default's draws do not depend on the number of cores;
* ``"sequential"``: the one-chain program called once per chain;
* ``"vectorized"``: the chains ``vmap``-ed in one program; measured slower
  (25-70% more CPU time per fit than one chain at a time: the chains' trees are
  built in lockstep, each step as long as the longer tree) and slower to
  compile, so never the default.

Each chain ``c`` uses the keys ``split(split(split(PRNGKey(seed))[0], C)[c])``
(initial point, sampling), whatever the chain method: same seed, same draws
on the same machine ("parallel" and "sequential" alike).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from psm_bayes.inference.compiled import Lifted, lift, program
from psm_bayes.models.base import spec_of

EXTRA_FIELDS = ("diverging", "energy", "num_steps", "accept_prob")
CHAIN_METHODS = ("vectorized", "sequential", "parallel")
DEFAULT_CHAIN_METHOD = "parallel"


@dataclass(frozen=True)
class Settings:
    """Everything a NUTS program bakes in besides the model's structure."""

    num_warmup: int
    num_samples: int
    num_chains: int
    target_accept: float
    max_tree_depth: int
    chain_method: str
    dense_mass: tuple[tuple[str, ...], ...] = ()


def _initial_point(model: Callable, args: tuple, key) -> tuple[dict, Any]:
    """``(z, potential energy)`` at NumPyro's ``init_to_median`` start (unconstrained latents)."""
    info = initialize_model(key, model, init_strategy=init_to_median, model_args=args)
    return info.param_info.z, info.param_info.potential_energy


def _chains(parts: tuple[Lifted, Lifted, Lifted], s: Settings, n: int) -> Callable:
    """``run(consts, init_keys, sample_keys)`` for ``n`` chains vectorized -> (samples, extra, initial energies)."""
    init, pe, post = parts

    def run(consts, init_keys, sample_keys):
        ci, cp, cq = consts
        z0, pe0 = jax.vmap(lambda k: init(ci, k))(init_keys)
        kernel = NUTS(potential_fn=lambda z: pe(cp, z), target_accept_prob=s.target_accept,
                      max_tree_depth=s.max_tree_depth, dense_mass=list(s.dense_mass) or False)
        mcmc = MCMC(kernel, num_warmup=s.num_warmup, num_samples=s.num_samples, num_chains=n,
                    chain_method="vectorized", postprocess_fn=lambda z: post(cq, z), progress_bar=False)
        if n == 1:
            mcmc.run(sample_keys[0], init_params=jax.tree.map(lambda x: x[0], z0), extra_fields=EXTRA_FIELDS)
        else:
            mcmc.run(sample_keys, init_params=z0, extra_fields=EXTRA_FIELDS)
        return mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields(group_by_chain=True), pe0

    return run


def _build(parts: tuple[Lifted, Lifted, Lifted], s: Settings) -> Callable:
    """The compiled program ``(consts, init_keys, sample_keys) -> (samples, extra, pe0)``, all ``(chain, ...)``."""
    if s.chain_method == "vectorized":
        return jax.jit(_chains(parts, s, s.num_chains))
    one = _chains(parts, s, 1)

    def per_chain(consts, ki, ks):  # one chain -> outputs without the leading chain axis
        return jax.tree.map(lambda x: x[0], one(consts, ki[None], ks[None]))

    if s.chain_method == "parallel":
        return jax.pmap(per_chain, in_axes=(None, 0, 0))
    chain = jax.jit(per_chain)

    def sequential(consts, ki, ks):  # one compiled chain, called once per chain (as NumPyro's "sequential")
        outs = [chain(consts, ki[c], ks[c]) for c in range(s.num_chains)]
        return jax.tree.map(lambda *x: jnp.stack(x), *outs)

    return sequential


def resolve_chain_method(chain_method: str | None, num_chains: int) -> str:
    """``chain_method`` (default :data:`DEFAULT_CHAIN_METHOD`); ``"parallel"`` without enough devices -> sequential."""
    method = DEFAULT_CHAIN_METHOD if chain_method is None else chain_method
    if method not in CHAIN_METHODS:
        raise ValueError(f"chain_method: expected one of {CHAIN_METHODS}, got {method!r}")
    if method == "parallel" and jax.local_device_count() < num_chains:
        return "sequential"
    return method


def sample(model: Callable, data: Any, priors: Any, key, s: Settings) -> tuple[dict, dict]:
    """NUTS draws ``{site: (chain, draw, ...)}`` (latent and deterministic sites) and extra fields, as numpy.

    Raises
    ------
    RuntimeError
        When a chain's initial point has a non-finite potential energy.
    """
    args = (data, priors)
    chain_keys = jax.random.split(key, s.num_chains)
    init_keys, sample_keys = (jnp.stack(k) for k in zip(*(jax.random.split(k) for k in chain_keys)))
    init = lift(partial(_initial_point, model, args), init_keys[0])
    z = init.out_shape[0]
    pe = lift(partial(potential_energy, model, args, {}), z)
    post = lift(partial(constrain_fn, model, args, {}, return_deterministic=True), z)
    parts = (init, pe, post)
    s = replace(s, dense_mass=spec_of(model).mass_blocks(z))    # part of the program's key
    run = program(("nuts", s), parts, lambda bare: _build(bare, s))
    samples, extra, pe0 = run([p.consts for p in parts], init_keys, sample_keys)
    pe0 = np.asarray(pe0)
    if not np.isfinite(pe0).all():
        raise RuntimeError(f"Cannot find valid initial parameters for model {getattr(model, '__name__', model)!r}: "
                           f"potential energy {pe0.tolist()} at the start of the chains; check the data and priors")
    return ({k: np.asarray(v) for k, v in samples.items()}, {k: np.asarray(v) for k, v in extra.items()})

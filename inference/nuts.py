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

Starts (``init``):

* ``"median"``: every chain starts at NumPyro's ``init_to_median`` point and
  warm-up adapts the step size and the mass matrix (diagonal, with the
  model's dense blocks, :meth:`~psm_bayes.models.base.ModelSpec.mass_blocks`);
* ``"laplace"``: the posterior mode is found by Newton steps from that point (one
  per fit, the same for every chain), the Hessian of the potential there
  gives a Gaussian (Laplace) approximation, each chain starts at its own
  draw from it, and its covariance is a fixed dense mass matrix: warm-up
  adapts only the step size. Any mass matrix leaves the posterior
  invariant, so the draws target the same distribution; the convergence
  checks are unchanged. On the default run's real ICL data
  (``benchmarks/README.md``) warm-up fell from 73 to 20 leapfrog steps per
  iteration and sampling from 28 to 15, so 300 warm-up iterations replace
  1000. Where the search ends at no mode (a gradient norm above
  :data:`LAPLACE_MAX_GRADIENT` or a Hessian that is not positive definite: a
  hierarchical scale collapsing to 0, as on the run's joint data), the fit
  starts at the prior median and adapts the mass matrix instead, and the
  DataTree's ``init`` attribute says ``"median"``.

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
from jax.flatten_util import ravel_pytree
from numpyro.infer import MCMC, NUTS, init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from psm_bayes.inference import NUTS_INITS
from psm_bayes.inference.compiled import Lifted, lift, program
from psm_bayes.models.base import spec_of

EXTRA_FIELDS = ("diverging", "energy", "num_steps", "accept_prob")
CHAIN_METHODS = ("vectorized", "sequential", "parallel")
LAPLACE_MAXITER = 100
"""Most Newton steps of the Laplace start's mode search (12-16 reach a gradient norm < 1e-6 on the run's data)."""
NEWTON_MIN_CURVATURE = 1e-3
"""Smallest absolute curvature a Newton step divides by."""
NEWTON_MAX_STEP = 20.0
"""Longest Newton step (unconstrained units)."""
LAPLACE_MIN_CURVATURE = 1e-2
"""Smallest eigenvalue kept in the Laplace precision (a posterior sd of at most 10 unconstrained units)."""
LAPLACE_MAX_GRADIENT = 1e-2
"""A Laplace start is used only where the mode search ended with a gradient norm below this (and a positive
definite Hessian); otherwise the fit starts at the prior median and adapts its mass matrix (``init`` is then
recorded as ``"median"``). Measured: 1e-7 to 1e-6 on the default run's ICL and SFT fits; 4e5 with negative
curvature on its joint data (ICL + SFT + cross, 329 conditions), where the fixed mass matrix would be wrong."""
LAPLACE_MAX_CURVATURE = 1e6
"""Largest eigenvalue kept (a posterior sd of at least 1e-3): a hierarchical scale whose mode collapses to 0
(a funnel's neck) would otherwise give a mass matrix no step size suits. The default run's fits reach
about 1e4 (a condition's Yes offset, sd 0.01-0.03), so the bound does not bind there."""
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
    init: str = "median"


def _initial_point(model: Callable, args: tuple, key) -> tuple[dict, Any]:
    """``(z, potential energy)`` at NumPyro's ``init_to_median`` start (unconstrained latents)."""
    info = initialize_model(key, model, init_strategy=init_to_median, model_args=args)
    return info.param_info.z, info.param_info.potential_energy


def _newton_mode(f: Callable, x0: Any) -> Any:
    """The minimum of ``f`` by damped saddle-free Newton steps from ``x0``.

    Each step goes along ``-|H|^-1 g`` (eigenvalues by absolute value, at least
    :data:`NEWTON_MIN_CURVATURE`; the step at most :data:`NEWTON_MAX_STEP` long) and takes the best of
    the lengths ``2^-j`` (``j < 12``) that lowers ``f``; it stops when no length does, at a decrease below
    1e-9, or after :data:`LAPLACE_MAXITER` steps. (JAX's BFGS stopped on a failed line search 9 steps in,
    far from the mode, on the default run's data: gradient norm 1.5e3 against 1e-7 here in 15 steps.)
    """
    lengths = 2.0 ** -jnp.arange(12)

    def step(c):
        x, fx, i, _ = c
        g, h = jax.grad(f)(x), jax.hessian(f)(x)
        w, v = jnp.linalg.eigh(0.5 * (h + h.T))
        d = -(v / jnp.maximum(jnp.abs(w), NEWTON_MIN_CURVATURE)) @ (v.T @ g)
        d = d * jnp.minimum(1.0, NEWTON_MAX_STEP / jnp.linalg.norm(d))
        fs = jax.vmap(lambda a: f(x + a * d))(lengths)
        fs = jnp.where(jnp.isfinite(fs), fs, jnp.inf)
        j = jnp.argmin(fs)
        better = fs[j] < fx
        xn, fn = jnp.where(better, x + lengths[j] * d, x), jnp.where(better, fs[j], fx)
        return xn, fn, i + 1, fx - fn

    x, *_ = jax.lax.while_loop(lambda c: (c[2] < LAPLACE_MAXITER) & (c[3] > 1e-9), step,
                               (x0, f(x0), 0, jnp.inf))
    return x


def laplace(init: Lifted, pe: Lifted, ci: Any, cp: Any) -> tuple[Any, Any, Any, Any]:
    """``(mode, covariance, root, found)`` of the Laplace approximation (flat unconstrained latents).

    The mode search (:func:`_newton_mode`) starts at the ``init_to_median`` point of a fixed key (so every
    chain of a fit finds the same mode); ``root @ root.T`` is the covariance, the inverse of the Hessian of
    the potential energy at the mode, its eigenvalues clipped to [:data:`LAPLACE_MIN_CURVATURE`,
    :data:`LAPLACE_MAX_CURVATURE`]. ``found``: the search ended at a mode (every Hessian eigenvalue > 0,
    gradient norm < :data:`LAPLACE_MAX_GRADIENT`, all finite); a non-finite mode or Hessian falls back to
    the start point and the identity.
    """
    z, _ = init(ci, jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree(z)
    return gaussian_at_mode(lambda x: pe(cp, unravel(x)), flat)


def gaussian_at_mode(f: Callable, flat: Any) -> tuple[Any, Any, Any, Any]:
    """``(mode, covariance, root, found)`` of the Laplace approximation of ``exp(-f)`` from the start ``flat``
    (see :func:`laplace`; also used by the SBC kernel, :mod:`psm_bayes.sbc.kernels`)."""
    x = _newton_mode(f, flat)
    x = jnp.where(jnp.all(jnp.isfinite(x)) & jnp.isfinite(f(x)), x, flat)
    h = jax.hessian(f)(x)
    w, v = jnp.linalg.eigh(0.5 * (h + h.T))
    ok = jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(v))
    found = ok & (jnp.min(w) > 0) & (jnp.linalg.norm(jax.grad(f)(x)) < LAPLACE_MAX_GRADIENT)
    w = jnp.clip(jnp.where(ok, w, 1.0), LAPLACE_MIN_CURVATURE, LAPLACE_MAX_CURVATURE)
    root = jnp.where(ok, v, jnp.eye(x.shape[0])) / jnp.sqrt(w)
    return x, root @ root.T, root, found


def _laplace_program(parts: tuple[Lifted, Lifted]) -> Callable:
    """``(consts) -> (mode, covariance, root, found)``, compiled (the start of a Laplace fit)."""
    init, pe = parts
    return jax.jit(lambda consts: laplace(init, pe, *consts))


def _chains(parts: tuple[Lifted, Lifted, Lifted], s: Settings, n: int) -> Callable:
    """``run(consts, init_keys, sample_keys, lap)`` for ``n`` chains vectorized -> (samples, extra, initial
    energies); ``lap`` is ``(mode, covariance, root)`` of the Laplace start (:func:`_laplace_program`) or ``None``."""
    init, pe, post = parts
    _, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), init.out_shape[0]))

    def run(consts, init_keys, sample_keys, lap):
        ci, cp, cq = consts
        if s.init == "laplace":
            mode, cov, root = lap
            z0 = jax.vmap(lambda k: unravel(mode + root @ jax.random.normal(k, mode.shape)))(init_keys)
            pe0 = jax.vmap(lambda z: pe(cp, z))(z0)
            mass = {"inverse_mass_matrix": cov, "dense_mass": True, "adapt_mass_matrix": False}
        else:
            z0, pe0 = jax.vmap(lambda k: init(ci, k))(init_keys)
            mass = {"dense_mass": list(s.dense_mass) or False}
        kernel = NUTS(potential_fn=lambda z: pe(cp, z), target_accept_prob=s.target_accept,
                      max_tree_depth=s.max_tree_depth, **mass)
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

    def per_chain(consts, ki, ks, lap):  # one chain -> outputs without the leading chain axis
        return jax.tree.map(lambda x: x[0], one(consts, ki[None], ks[None], lap))

    if s.chain_method == "parallel":
        return jax.pmap(per_chain, in_axes=(None, 0, 0, None))
    chain = jax.jit(per_chain)

    def sequential(consts, ki, ks, lap):  # one compiled chain, called once per chain (as NumPyro's "sequential")
        outs = [chain(consts, ki[c], ks[c], lap) for c in range(s.num_chains)]
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
    if s.init not in NUTS_INITS:
        raise ValueError(f"init: expected one of {NUTS_INITS}, got {s.init!r}")
    s = replace(s, dense_mass=spec_of(model).mass_blocks(z))    # part of the program's key
    lap = None
    if s.init == "laplace":
        mode, cov, root, found = program(("laplace",), (init, pe), _laplace_program)([init.consts, pe.consts])
        if bool(found):
            lap = (mode, cov, root)
        else:
            s = replace(s, init="median")
    run = program(("nuts", s), parts, lambda bare: _build(bare, s))
    samples, extra, pe0 = run([p.consts for p in parts], init_keys, sample_keys, lap)
    pe0 = np.asarray(pe0)
    if not np.isfinite(pe0).all():
        raise RuntimeError(f"Cannot find valid initial parameters for model {getattr(model, '__name__', model)!r}: "
                           f"potential energy {pe0.tolist()} at the start of the chains; check the data and priors")
    extra = {k: np.asarray(v) for k, v in extra.items()} | {"init": s.init}
    return {k: np.asarray(v) for k, v in samples.items()}, extra

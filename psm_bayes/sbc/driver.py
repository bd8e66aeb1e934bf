"""The SBC driver: prior draws, then one kernel fit per replicate (loop, vmap chunks or Ray), then ranks.

For each replicate ``r``: draw ``theta_r`` and data ``y_r`` from the model's
own prior predictive, fit the model to ``y_r`` with a kernel
(:mod:`psm_bayes.sbc.kernels`), and record the rank of ``theta_r`` among the
``L`` thinned posterior draws, for every scalar latent. Methods:

* ``"loop"`` (NumPyro): :class:`~psm_bayes.sbc.kernels.NUTSKernel` compiled
  once and called in a Python loop;
* ``"vmap"`` (NumPyro): the same kernel under ``jax.jit(jax.vmap(...))`` over
  chunks of :data:`~psm_bayes.sbc.config.VMAP_CHUNK` replicates;
* ``"fit"`` (any backend): :class:`~psm_bayes.sbc.kernels.FitKernel`
  (:func:`psm_bayes.inference.fit_nuts` per replicate; recompiles per data set);
* ``"simuk"`` (NumPyro): the ArviZ project's SBC library drives NumPyro's
  ``MCMC`` (:mod:`psm_bayes.sbc.simuk_driver`); used to cross-check;
* ``"auto"``: :func:`~psm_bayes.sbc.config.default_method`.

Chunks of replicates can run as Ray tasks (``ray_address``). Replicate ``r``
always uses the key ``fold_in(key, r)``, so results do not depend on how
replicates are chunked (up to floating-point effects of batching).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from psm_bayes.models.base import spec_of
from psm_bayes.sbc.config import METHODS, VMAP_CHUNK, SBCConfig, default_method
from psm_bayes.sbc.kernels import FitKernel, NUTSKernel
from psm_bayes.sbc.prior import draw_prior, latent_shapes
from psm_bayes.sbc.ranks import contraction_scale, flat_names, flatten, ranks_of
from psm_bayes.sbc.result import SBCResult

_COMPILED: dict[str, Callable] = {}
"""Compiled chunk functions of the current run (one entry, keyed by a per-run token), so chunks of one run
reuse one compilation, in this process or in a Ray worker."""


def _compiled(token: str, kernel, method: str) -> Callable:
    if token not in _COMPILED:
        _COMPILED.clear()
        run_one = kernel.build()
        if kernel.pure_jax:
            import jax

            run_one = jax.jit(jax.vmap(run_one)) if method == "vmap" else jax.jit(run_one)
        _COMPILED[token] = run_one
    return _COMPILED[token]


def run_chunk(kernel, keys: np.ndarray, obs: Mapping[str, np.ndarray], method: str, token: str = "",
              pad_to: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fit a chunk of replicates with ``kernel``.

    Returns posterior draws ``{name: (replicate, chain, draw, ...)}`` and
    stats ``{stat: (replicate, chain)}``. ``vmap`` chunks shorter than
    ``pad_to`` are padded (repeating the last replicate, results dropped) so
    that every chunk reuses one compilation.
    """
    n = len(keys)
    fn = _compiled(token or uuid.uuid4().hex, kernel, method)
    if method == "vmap":
        if pad_to > n:
            take = np.minimum(np.arange(pad_to), n - 1)
            keys, obs = keys[take], {k: v[take] for k, v in obs.items()}
        samples, stats = fn(keys, obs)
        return ({k: np.asarray(v)[:n] for k, v in samples.items()}, {k: np.asarray(v)[:n] for k, v in stats.items()})
    outs = [fn(keys[r], {k: v[r] for k, v in obs.items()}) for r in range(n)]
    return ({k: np.stack([np.asarray(o[0][k]) for o in outs]) for k in outs[0][0]},
            {k: np.stack([np.asarray(o[1][k]) for o in outs]) for k in outs[0][1]})


def run_sbc(model: Callable, data: Any, *, replicates: int, seed: int = 0, priors: Any = None,
            fit_priors: Any = None, config: SBCConfig | None = None, method: str = "auto",
            latents: Sequence[str] | None = None, chunk_size: int | None = None, ray_address: str | None = None,
            workers: int | None = None, progress: bool = False,
            data_scale: Mapping[str, float] | None = None, data_redraw: Sequence[str] = ()) -> SBCResult:
    """Simulation-based calibration of ``model`` on data shaped like ``data``.

    Parameters
    ----------
    model : callable
        A psm-bayes model (``vmap``/``loop``/``simuk`` need the NumPyro backend).
    data
        Data template: its design is kept and its observed values are
        replaced by prior-predictive draws.
    replicates : int
        Number of prior draws ``N`` (ranks per parameter).
    seed : int
        Seed of the prior draws and of every fit.
    priors : optional
        Priors the truth is drawn from (model default if None).
    fit_priors : optional
        Priors used when fitting (default: ``priors``). A different value
        makes a deliberately mis-specified posterior, which SBC should flag.
    config : SBCConfig, optional
        Sampler settings.
    method : {"auto", "vmap", "loop", "fit", "simuk"}
        See the module docstring.
    latents : sequence of str, optional
        Latent sites to rank (default: all; the catalogue's main parameters
        are ``catalogue.get(name).latents``).
    chunk_size : int, optional
        Replicates per vectorised call / per Ray task. Default:
        :data:`VMAP_CHUNK` for ``vmap``; otherwise all replicates in one
        chunk (serial) or one chunk per worker (Ray).
    ray_address : str, optional
        Run chunks as Ray tasks (:func:`psm_bayes.parallel.ray_session`).
    workers : int, optional
        Ray CPUs for ``ray_address="local"`` (default 2).
    progress : bool
        Show a progress bar over chunks.
    data_scale : mapping, optional
        A deliberate simulator fault: the data are drawn with these latent
        sites scaled (the truth unscaled; :func:`~psm_bayes.sbc.prior.draw_prior`).
    data_redraw : sequence of str
        With ``data_scale``: the latent sites drawn again given the scaled ones (``draw_prior``'s ``redraw``).

    Returns
    -------
    SBCResult
    """
    if method not in METHODS + ("auto",):
        raise ValueError(f"method: expected 'auto' or one of {METHODS}, got {method!r}")
    if replicates < 2:
        raise ValueError(f"replicates: expected >= 2, got {replicates}")
    spec = spec_of(model)
    from psm_bayes.inference import setup

    setup(spec.backend)
    if method == "auto":
        method = default_method(spec.backend)
    if method != "fit" and spec.backend != "numpyro":
        raise ValueError(f"method={method!r} needs a NumPyro model; use method='fit' for {spec.backend}")
    config = config or SBCConfig()
    fit_priors = priors if fit_priors is None else fit_priors
    t0 = time.perf_counter()
    if method == "simuk":
        from psm_bayes.sbc.simuk_driver import run_simuk

        if fit_priors is not priors or data_scale:
            raise ValueError("fit_priors: method 'simuk' draws the truth and the data from the fitted model itself")
        truth, samples, stats = run_simuk(model, data, replicates, seed=seed, priors=priors, config=config,
                                          latents=latents, progress=progress)
        meta = {"divergences": "not reported by simuk (counted as 0)"}
    else:
        truth, obs = draw_prior(model, data, replicates, seed=seed, priors=priors, latents=latents, scale=data_scale,
                               redraw=tuple(data_redraw))
        samples, stats, meta = _fit_replicates(model, data, fit_priors, config, tuple(truth), obs, seed, method,
                                               chunk_size, ray_address, workers, progress)
    return build_result(spec.name, truth, samples, stats, config, method, time.perf_counter() - t0, seed,
                        {"backend": spec.backend, **meta})


def _fit_replicates(model, data, priors, config, names, obs, seed, method, chunk_size, ray_address, workers,
                    progress) -> tuple[dict, dict, dict]:
    replicates = len(next(iter(obs.values())))
    if method == "fit":
        kernel = FitKernel(model, data, priors, config, names)
        keys = np.random.SeedSequence([seed, 1]).generate_state(replicates, dtype=np.uint32).astype(np.int64)
    else:
        kernel = NUTSKernel(model, data, priors, config, names, {k: v[0] for k, v in obs.items()})
        keys = replicate_keys(seed, replicates)
    if chunk_size is None:
        per_worker = replicates if ray_address is None else math.ceil(replicates / (workers or 2))
        chunk_size = min(VMAP_CHUNK, per_worker) if method == "vmap" else per_worker
    chunks = [np.arange(i, min(i + chunk_size, replicates)) for i in range(0, replicates, chunk_size)]
    token = uuid.uuid4().hex
    args = [(keys[c], {k: v[c] for k, v in obs.items()}) for c in chunks]
    if ray_address is None:
        from tqdm import tqdm

        outs = [run_chunk(kernel, k, o, method, token, chunk_size)
                for k, o in tqdm(args, disable=not progress or len(args) < 2, desc="sbc")]
        _COMPILED.clear()
    else:
        from psm_bayes.parallel import ray_session

        with ray_session(ray_address, workers) as ray:
            task = ray.remote(num_cpus=1)(run_chunk)
            outs = ray.get([task.remote(kernel, k, o, method, token, chunk_size) for k, o in args])
    samples = {k: np.concatenate([o[0][k] for o in outs]) for k in names}
    stats = {k: np.concatenate([o[1][k] for o in outs]) for k in outs[0][1]}
    return samples, stats, {"chunk_size": chunk_size, "ray": ray_address is not None}


def replicate_keys(seed: int, replicates: int) -> np.ndarray:
    """PRNG keys of the fits: replicate ``r`` gets ``fold_in(fold_in(PRNGKey(seed), 1), r)``."""
    import jax

    base = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return np.asarray(jax.vmap(lambda r: jax.random.fold_in(base, r))(np.arange(replicates)))


def build_result(name: str, truth: Mapping[str, np.ndarray], samples: Mapping[str, np.ndarray],
                 stats: Mapping[str, np.ndarray], config: SBCConfig, method: str, wall: float, seed: int,
                 meta: dict) -> SBCResult:
    """An :class:`SBCResult` from true values ``{name: (R, ...)}`` and draws ``{name: (R, chain, draw, ...)}``."""
    import arviz as az

    shapes = latent_shapes(dict(truth))
    R = next(iter(truth.values())).shape[0]
    th = flatten(truth, shapes, 1)  # (R, P)
    draws = flatten(samples, shapes, 3)  # (R, C, D, P)
    flat = draws.reshape(R, -1, draws.shape[-1])  # (R, L, P)
    ess = np.asarray(az.ess(np.moveaxis(draws, 0, 2), method="bulk"))  # (chain, draw, R, P) -> (R, P)
    div = np.nan_to_num(np.asarray(stats.get("divergences", np.zeros((R, 1))), dtype=float)).sum(-1).astype(int)
    acc = np.asarray(stats.get("accept_prob", np.full((R, 1), np.nan)), dtype=float).mean(-1)
    log_scale, sd_scale = contraction_scale(th, flat)
    return SBCResult(model=name, params=flat_names(shapes), ranks=ranks_of(th, flat), truth=th,
                     post_mean=flat.mean(1), post_sd=flat.std(1, ddof=1), ess_bulk=ess, divergences=div,
                     accept_prob=acc, config=config, method=method, wall_time=wall, seed=seed, meta=meta,
                     log_scale=log_scale, post_sd_scale=sd_scale)

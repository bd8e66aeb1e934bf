"""Simulation-based calibration (Talts et al. 2018) for any psm-bayes model.

For each replicate ``r``: draw ``theta_r`` and data ``y_r`` from the model's
own prior predictive (the model run with its observed sites unobserved),
fit the model to ``y_r``, and record the rank of ``theta_r`` among ``L``
thinned posterior draws, for every scalar latent. If the sampler is
correct, each rank is uniform on ``{0, ..., L}``; :meth:`SBCResult.uniformity`
tests that with a chi-square test on binned ranks (Bonferroni across
parameters), and :meth:`SBCResult.plot_ranks` / :meth:`SBCResult.plot_ecdf`
draw rank histograms and ECDF-difference plots.

The model only needs a :class:`~psm_bayes.models.base.ModelSpec` with
``unobserve`` and (for the generic ``"fit"`` method) ``with_observed``.
Methods:

* ``"vmap"`` (NumPyro models): a jitted ``jax.vmap`` over a chunk of
  replicates (:data:`VMAP_CHUNK` per call) of a NUTS run written with
  :func:`numpyro.infer.hmc.hmc` (warm-up and thinned sampling in one
  ``lax.fori_loop``); the replicate's data enters through
  :func:`numpyro.handlers.condition` on the observed sites;
* ``"loop"`` (NumPyro): the same single-replicate function, compiled once
  and called in a Python loop;
* ``"fit"`` (any backend, e.g. Pyro): :func:`psm_bayes.inference.fit_nuts`
  per replicate on ``spec.with_observed(data, y_r)``; slow (it recompiles
  per data set), but generic;
* ``"auto"`` (default): :func:`default_method`. Measured on 2 shared CPU
  cores (``benchmarks/bench_sbc.py``): ``vmap`` samples ~1.5-2x faster
  than ``loop`` but compiles ~3x slower, so ``loop`` wins on CPU below
  roughly a thousand replicates; ``vmap`` is the choice on accelerators.

Chunks of replicates can run as Ray tasks (``ray_address``). Replicate
``r`` always uses the keys ``fold_in(key, r)``, so results do not depend on
how replicates are chunked (up to floating-point effects of batching).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from psm_bayes.models.base import spec_of

METHODS = ("vmap", "loop", "fit")
VMAP_CHUNK = 50
"""Default replicates per vectorised call: a batched NUTS step lasts as long as the longest tree in the
batch, so very large batches waste work (measured: 50 per call ran 200 replicates 2.3x faster than 200)."""


def default_method(backend: str) -> str:
    """``"fit"`` for Pyro; for NumPyro ``"vmap"`` on an accelerator and ``"loop"`` on CPU.

    On CPU (2 cores, tiny models, a few hundred replicates) compiling the
    vectorised kernel cost ~3x the single-replicate one (~13 vs ~5 CPU s)
    while sampling was only ~1.5-2x faster, so the loop finished first;
    see ``benchmarks/bench_sbc.py``.
    """
    if backend != "numpyro":
        return "fit"
    import jax

    return "loop" if jax.default_backend() == "cpu" else "vmap"


@dataclass(frozen=True)
class SBCConfig:
    """Sampler settings of an SBC run.

    Parameters
    ----------
    num_draws : int
        ``L``, posterior draws kept per replicate (ranks take ``L + 1`` values).
    thin : int
        Keep every ``thin``-th NUTS draw (reduces autocorrelation, so that the
        ``L`` draws are close to independent as SBC assumes).
    num_warmup : int
        NUTS warm-up (adaptation) iterations per chain.
    num_chains : int
        Chains per replicate; must divide ``num_draws``.
    target_accept : float
        Target acceptance probability of step-size adaptation.
    max_tree_depth : int
        NUTS maximum tree depth.
    step_size : float
        Initial (or, with ``adapt_step_size=False``, fixed) step size.
    adapt_step_size, adapt_mass_matrix : bool
        Turn adaptation off to build deliberately broken samplers.
    init_jitter : float
        Chains start at the prior median plus ``Uniform(-init_jitter,
        init_jitter)`` in unconstrained space (``"vmap"``/``"loop"``).
    """

    num_draws: int = 99
    thin: int = 2
    num_warmup: int = 300
    num_chains: int = 1
    target_accept: float = 0.8
    max_tree_depth: int = 8
    step_size: float = 1.0
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    init_jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.num_draws < 1 or self.thin < 1 or self.num_warmup < 0 or self.num_chains < 1:
            raise ValueError("num_draws >= 1, thin >= 1, num_warmup >= 0 and num_chains >= 1 expected, got "
                             f"{self.num_draws}, {self.thin}, {self.num_warmup}, {self.num_chains}")
        if self.num_draws % self.num_chains:
            raise ValueError(f"num_chains: expected a divisor of num_draws={self.num_draws}, got {self.num_chains}")
        if not 0 < self.target_accept < 1 or self.step_size <= 0 or self.max_tree_depth < 1:
            raise ValueError("target_accept in (0, 1), step_size > 0 and max_tree_depth >= 1 expected")

    @property
    def draws_per_chain(self) -> int:
        return self.num_draws // self.num_chains


# ---------------------------------------------------------------- prior draws
def latent_sites(model: Callable, data: Any, priors: Any = None) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the model's latent sample sites (not observed, not deterministic), in order."""
    spec = spec_of(model)
    free = spec.unobserve(data)
    if spec.backend == "numpyro":
        from numpyro import handlers

        tr = handlers.trace(handlers.seed(model, 0)).get_trace(free, priors)
        return {k: tuple(np.shape(s["value"])) for k, s in tr.items()
                if s["type"] == "sample" and not s["is_observed"] and k not in spec.observed}
    from pyro import poutine

    from pyro.poutine.util import site_is_subsample

    tr = poutine.trace(model).get_trace(free, priors)
    return {k: tuple(s["value"].shape) for k, s in tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
            and k not in spec.observed}


def draw_prior(model: Callable, data: Any, replicates: int, *, seed: int, priors: Any = None
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw ``replicates`` (latents, observed) pairs from the model's prior predictive.

    Returns
    -------
    latents, observed : dict of arrays
        ``{site: (replicates, ...)}`` for the latent and the observed sites.
    """
    spec = spec_of(model)
    names = latent_sites(model, data, priors)
    free = spec.unobserve(data)
    if spec.backend == "numpyro":
        import jax
        from numpyro.infer import Predictive

        key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
        out = Predictive(model, num_samples=replicates)(key, free, priors)
        out = {k: np.asarray(v) for k, v in out.items()}
    else:
        import pyro
        import torch
        from pyro import poutine

        pyro.set_rng_seed(seed)
        acc: dict[str, list] = {}
        with torch.no_grad():
            for _ in range(replicates):
                tr = poutine.trace(model).get_trace(free, priors)
                for k in list(names) + list(spec.observed):
                    acc.setdefault(k, []).append(tr.nodes[k]["value"].detach().cpu().numpy())
        out = {k: np.stack(v) for k, v in acc.items()}
    return {k: out[k] for k in names}, {k: out[k] for k in spec.observed}


# ---------------------------------------------------------------- NumPyro kernels
def _numpyro_runner(model: Callable, data: Any, priors: Any, config: SBCConfig, example_obs: dict,
                    names: list[str]) -> Callable:
    """``run_one(key, obs) -> (samples {name: (chain, draw, ...)}, stats)`` as a pure JAX function."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from numpyro import handlers
    from numpyro.infer import init_to_median
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    spec = spec_of(model)
    free = spec.unobserve(data)

    def conditioned(obs):
        handlers.condition(model, data=obs)(free, priors)

    info = initialize_model(jax.random.PRNGKey(0), conditioned, model_args=(example_obs,), dynamic_args=True,
                            init_strategy=init_to_median)
    z_init, pe_gen, post_gen = info.param_info.z, info.potential_fn, info.postprocess_fn
    c = config

    def run_chain(key, obs):
        init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")
        k_jit, k_run = jax.random.split(key)
        leaves, tree = jax.tree_util.tree_flatten(z_init)
        jkeys = jax.random.split(k_jit, len(leaves))
        z0 = jax.tree_util.tree_unflatten(tree, [
            x + jax.random.uniform(k, jnp.shape(x), minval=-c.init_jitter, maxval=c.init_jitter)
            for x, k in zip(leaves, jkeys)])
        state = init_kernel(z0, c.num_warmup, step_size=c.step_size, adapt_step_size=c.adapt_step_size,
                            adapt_mass_matrix=c.adapt_mass_matrix, target_accept_prob=c.target_accept,
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
            buf = jax.tree_util.tree_map(
                lambda b, x: jnp.where(keep, b.at[row].set(x), b), buf, s.z)
            return (s, buf, div + (sampling & s.diverging), acc + jnp.where(sampling, s.accept_prob, 0.0),
                    steps + jnp.where(sampling, s.num_steps, 0))

        init = (state, buf, jnp.zeros((), jnp.int32), zero, zero)
        state, zs, div, acc, steps = lax.fori_loop(0, c.num_warmup + n, step, init)
        draws = jax.vmap(post_gen(obs))(zs)
        stats = {"divergences": div, "accept_prob": acc / n, "num_steps": steps / n,
                 "step_size": state.adapt_state.step_size}
        return {k: draws[k] for k in names}, stats

    def run_one(key, obs):
        if c.num_chains == 1:  # no chain batching to compile
            samples, stats = run_chain(key, obs)
            return jax.tree_util.tree_map(lambda x: x[None], (samples, stats))
        keys = jax.random.split(key, c.num_chains)
        return jax.vmap(run_chain, in_axes=(0, None))(keys, obs)

    return run_one


_RUNNERS: dict[str, Callable] = {}
"""Compiled chunk functions of the current run (one entry, keyed by a per-run token), so chunks of one run
reuse one compilation, in this process or in a Ray worker."""


def _chunk_function(token: str, model: Callable, data: Any, priors: Any, config: SBCConfig, example: dict,
                    names: list[str], method: str) -> Callable:
    if token not in _RUNNERS:
        import jax

        _RUNNERS.clear()
        run_one = _numpyro_runner(model, data, priors, config, example, names)
        _RUNNERS[token] = jax.jit(jax.vmap(run_one)) if method == "vmap" else jax.jit(run_one)
    return _RUNNERS[token]


def _run_chunk(model: Callable, data: Any, priors: Any, config: SBCConfig, keys: np.ndarray,
               obs: Mapping[str, np.ndarray], names: list[str], method: str, fit_seeds: np.ndarray | None = None,
               token: str = "", pad_to: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Posterior draws ``{name: (replicate, chain, draw, ...)}`` and stats ``{stat: (replicate, chain)}``.

    ``vmap`` chunks shorter than ``pad_to`` are padded (repeating the last
    replicate, results dropped) so that every chunk reuses one compilation.
    """
    if method == "fit":
        return _run_chunk_fit(model, data, priors, config, obs, names, fit_seeds)
    n = len(keys)
    example = {k: v[0] for k, v in obs.items()}
    fn = _chunk_function(token or uuid.uuid4().hex, model, data, priors, config, example, names, method)
    if method == "vmap":
        if pad_to > n:
            take = np.minimum(np.arange(pad_to), n - 1)
            keys, obs = keys[take], {k: v[take] for k, v in obs.items()}
        samples, stats = fn(keys, obs)
        return ({k: np.asarray(v)[:n] for k, v in samples.items()}, {k: np.asarray(v)[:n] for k, v in stats.items()})
    outs = [fn(keys[r], {k: v[r] for k, v in obs.items()}) for r in range(n)]
    return ({k: np.stack([np.asarray(o[0][k]) for o in outs]) for k in names},
            {k: np.stack([np.asarray(o[1][k]) for o in outs]) for k in outs[0][1]})


def _run_chunk_fit(model, data, priors, config, obs, names, fit_seeds):
    from psm_bayes.inference import fit_nuts

    spec = spec_of(model)
    if spec.with_observed is None:
        raise TypeError(f"model: {spec.name!r} ({spec.backend}) has no ModelSpec.with_observed; "
                        "SBC method 'fit' needs it")
    c = config
    samples: dict[str, list] = {k: [] for k in names}
    stats: dict[str, list] = {"divergences": [], "accept_prob": [], "num_steps": [], "step_size": []}
    for r, s in enumerate(fit_seeds):
        d = spec.with_observed(data, {k: v[r] for k, v in obs.items()})
        dt = fit_nuts(model, d, seed=int(s), priors=priors, num_warmup=c.num_warmup,
                      num_samples=c.draws_per_chain * c.thin, num_chains=c.num_chains, target_accept=c.target_accept,
                      max_tree_depth=c.max_tree_depth, predictive=False)
        for k in names:
            samples[k].append(dt["posterior"][k].values[:, c.thin - 1::c.thin])
        ss = dt["sample_stats"] if "sample_stats" in dt.children else None
        for k, src in (("divergences", "diverging"), ("accept_prob", "acceptance_rate"), ("num_steps", "n_steps")):
            v = ss[src].values if ss is not None and src in ss else np.full((c.num_chains, 1), np.nan)
            stats[k].append(v.sum(1) if k == "divergences" else v.mean(1))
        stats["step_size"].append(np.full(c.num_chains, np.nan))
    return {k: np.stack(v) for k, v in samples.items()}, {k: np.stack(v) for k, v in stats.items()}


# ---------------------------------------------------------------- result
def _flat_names(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    out = []
    for k, shp in shapes.items():
        out += [k] if not shp else [f"{k}[{','.join(map(str, i))}]" for i in np.ndindex(*shp)]
    return out


def _flatten(d: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], lead: int) -> np.ndarray:
    """Concatenate sites along a last axis of scalar parameters (``lead`` leading dims kept)."""
    return np.concatenate([np.asarray(d[k]).reshape(np.shape(d[k])[:lead] + (-1,)) for k in shapes], axis=-1)


def default_bins(n_replicates: int, num_draws: int) -> int:
    """Bins for the chi-square test: about ``N / 10`` expected ranks per bin, between 2 and 20."""
    return int(max(2, min(20, n_replicates // 10, num_draws + 1)))


def rank_uniformity(ranks: np.ndarray, num_draws: int, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square test that ranks are uniform on ``{0, ..., num_draws}``.

    Ranks are grouped into ``bins`` contiguous groups of (nearly) equal width;
    expected counts are proportional to each group's width.

    Parameters
    ----------
    ranks : array (replicate, param)

    Returns
    -------
    stat, p : arrays (param,)
    """
    from scipy.stats import chi2

    ranks = np.asarray(ranks)
    n = ranks.shape[0]
    bins = bins or default_bins(n, num_draws)
    groups = np.array_split(np.arange(num_draws + 1), bins)
    edges = np.array([g[0] for g in groups] + [num_draws + 1])
    counts = np.stack([np.histogram(ranks[:, j], bins=edges)[0] for j in range(ranks.shape[1])])  # (param, bin)
    expected = n * np.diff(edges) / (num_draws + 1)
    stat = ((counts - expected) ** 2 / expected).sum(1)
    return stat, chi2.sf(stat, bins - 1)


@dataclass
class SBCResult:
    """Ranks and diagnostics of an SBC run.

    Attributes
    ----------
    model : str
    params : list of str
        Scalar parameters (``w[0]``, ``beta_sft``, ...).
    ranks : array (replicate, param)
        Rank of the true value among ``num_draws`` posterior draws.
    truth, post_mean, post_sd, ess_bulk : arrays (replicate, param)
    divergences : array (replicate,)
        Post-warm-up divergent transitions (all chains, thinned-out draws included).
    accept_prob : array (replicate,)
        Mean post-warm-up acceptance probability (NaN where the backend does not report it).
    config : SBCConfig
    method : str
    wall_time : float
        Seconds spent sampling (prior draws and compilation included).
    """

    model: str
    params: list[str]
    ranks: np.ndarray
    truth: np.ndarray
    post_mean: np.ndarray
    post_sd: np.ndarray
    ess_bulk: np.ndarray
    divergences: np.ndarray
    accept_prob: np.ndarray
    config: SBCConfig
    method: str
    wall_time: float
    seed: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def num_draws(self) -> int:
        return self.config.num_draws

    @property
    def n_replicates(self) -> int:
        return int(self.ranks.shape[0])

    def uniformity(self, alpha: float = 0.01, bins: int | None = None):
        """Per-parameter chi-square uniformity test of the ranks.

        Returns
        -------
        pandas.DataFrame
            Index ``param``; columns ``chi2``, ``df``, ``p_value``,
            ``p_bonferroni`` (``p * n_params``, capped at 1) and ``reject``
            (``p_bonferroni < alpha``), plus mean ESS and rank mean.
        """
        import pandas as pd

        bins = bins or default_bins(self.n_replicates, self.num_draws)
        stat, p = rank_uniformity(self.ranks, self.num_draws, bins)
        padj = np.minimum(1.0, p * len(self.params))
        return pd.DataFrame({"chi2": stat, "df": bins - 1, "p_value": p, "p_bonferroni": padj,
                             "reject": padj < alpha, "rank_mean": self.ranks.mean(0) / self.num_draws,
                             "ess_bulk_mean": np.nanmean(self.ess_bulk, 0)},
                            index=pd.Index(self.params, name="param"))

    def min_p(self, bins: int | None = None) -> float:
        """Smallest per-parameter p-value (not adjusted)."""
        return float(self.uniformity(bins=bins)["p_value"].min())

    def passed(self, alpha: float = 0.01, bins: int | None = None) -> bool:
        """True when no parameter's ranks reject uniformity at ``alpha`` (Bonferroni-adjusted)."""
        return not bool(self.uniformity(alpha, bins)["reject"].any())

    def to_frame(self):
        """Long table: one row per (replicate, param) with rank, truth, posterior mean/sd, ESS."""
        import pandas as pd

        R, P = self.ranks.shape
        return pd.DataFrame({
            "replicate": np.repeat(np.arange(R), P), "param": np.tile(self.params, R),
            "rank": self.ranks.ravel(), "truth": self.truth.ravel(), "post_mean": self.post_mean.ravel(),
            "post_sd": self.post_sd.ravel(), "ess_bulk": self.ess_bulk.ravel(),
            "divergences": np.repeat(self.divergences, P)})

    def summary(self, alpha: float = 0.01) -> dict:
        """JSON-friendly summary: pass/fail, min p, per-parameter p-values, timing."""
        u = self.uniformity(alpha)
        return {"model": self.model, "method": self.method, "replicates": self.n_replicates,
                "num_draws": self.num_draws, "alpha": alpha, "passed": not bool(u["reject"].any()),
                "min_p": float(u["p_value"].min()), "min_p_bonferroni": float(u["p_bonferroni"].min()),
                "p_values": {k: float(v) for k, v in u["p_value"].items()},
                "divergences": int(self.divergences.sum()), "wall_time_s": self.wall_time, "seed": self.seed,
                "config": asdict(self.config), **self.meta}

    # ------------------------------------------------------------ plots
    def _grid(self, n: int):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        return fig, axes.ravel()

    def plot_ranks(self, path: str | os.PathLike, bins: int | None = None, band: float = 0.99) -> str:
        """Rank histograms with a pointwise ``band`` binomial interval per bin; saved as PNG."""
        from scipy.stats import binom

        bins = bins or default_bins(self.n_replicates, self.num_draws)
        groups = np.array_split(np.arange(self.num_draws + 1), bins)
        edges = np.array([g[0] for g in groups] + [self.num_draws + 1])
        width = np.diff(edges) / (self.num_draws + 1)
        lo = binom.ppf((1 - band) / 2, self.n_replicates, width)
        hi = binom.ppf(1 - (1 - band) / 2, self.n_replicates, width)
        fig, axes = self._grid(len(self.params))
        for j, (ax, name) in enumerate(zip(axes, self.params)):
            counts = np.histogram(self.ranks[:, j], bins=edges)[0]
            ax.fill_between(edges[:-1], lo, hi, step="post", color="0.85", lw=0)
            ax.stairs(counts, edges, color="C0", lw=1.5)
            ax.set_title(name, fontsize=9)
            ax.set_yticks([])
        fig.suptitle(f"SBC rank histograms: {self.model} ({self.n_replicates} replicates, L={self.num_draws})",
                     fontsize=10)
        return _save(fig, path)

    def plot_ecdf(self, path: str | os.PathLike, band: float = 0.99, n_sim: int = 2000) -> str:
        """ECDF minus uniform CDF of the fractional ranks, with a simultaneous ``band`` envelope; PNG.

        The envelope is simulated: the pointwise-quantile level is widened until
        ``band`` of uniform rank samples of the same size stay inside everywhere
        (Säilynoja, Bürkner & Vehtari 2022, by simulation).
        """
        grid = np.arange(self.num_draws + 1)
        u = (grid + 1) / (self.num_draws + 1)
        rng = np.random.default_rng(0)
        sims = rng.integers(0, self.num_draws + 1, size=(n_sim, self.n_replicates))
        ecdf_sims = (sims[:, :, None] <= grid).mean(1) - u  # (n_sim, L+1)
        lo_band = hi_band = None
        for gamma in np.linspace(1 - band, 1e-5, 60):
            lo_q = np.quantile(ecdf_sims, gamma / 2, axis=0)
            hi_q = np.quantile(ecdf_sims, 1 - gamma / 2, axis=0)
            inside = ((ecdf_sims >= lo_q) & (ecdf_sims <= hi_q)).all(1).mean()
            lo_band, hi_band = lo_q, hi_q
            if inside >= band:
                break
        fig, axes = self._grid(len(self.params))
        for j, (ax, name) in enumerate(zip(axes, self.params)):
            diff = (self.ranks[:, j][:, None] <= grid).mean(0) - u
            ax.fill_between(u, lo_band, hi_band, color="0.85", lw=0, step="post")
            ax.step(u, diff, where="post", color="C0", lw=1.2)
            ax.axhline(0, color="0.4", lw=0.5)
            ax.set_title(name, fontsize=9)
        fig.suptitle(f"SBC ECDF difference: {self.model} ({int(band * 100)}% simultaneous band)", fontsize=10)
        return _save(fig, path)

    def save(self, out_dir: str | os.PathLike, alpha: float = 0.01) -> dict[str, str]:
        """Write ``ranks.parquet``, ``uniformity.csv``, ``summary.json`` and the two PNGs to ``out_dir``."""
        os.makedirs(out_dir, exist_ok=True)
        paths = {"ranks": os.path.join(out_dir, "ranks.parquet"),
                 "uniformity": os.path.join(out_dir, "uniformity.csv"),
                 "summary": os.path.join(out_dir, "summary.json"),
                 "rank_hist": os.path.join(out_dir, "rank_hist.png"),
                 "ecdf_diff": os.path.join(out_dir, "ecdf_diff.png")}
        self.to_frame().to_parquet(paths["ranks"])
        self.uniformity(alpha).to_csv(paths["uniformity"])
        with open(paths["summary"], "w") as fh:
            json.dump(self.summary(alpha), fh, indent=2, default=str)
        self.plot_ranks(paths["rank_hist"])
        self.plot_ecdf(paths["ecdf_diff"])
        return paths


def _save(fig, path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------- driver
def run_sbc(model: Callable, data: Any, *, replicates: int, seed: int = 0, priors: Any = None,
            fit_priors: Any = None, config: SBCConfig | None = None, method: str = "auto",
            chunk_size: int | None = None, ray_address: str | None = None, workers: int | None = None,
            progress: bool = False) -> SBCResult:
    """Simulation-based calibration of ``model`` on data shaped like ``data``.

    Parameters
    ----------
    model : callable
        A psm-bayes model (``vmap``/``loop`` need the NumPyro backend).
    data
        Data template: its design (items, sources, counts...) is kept and its
        observed values are replaced by prior-predictive draws.
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
    method : {"auto", "vmap", "loop", "fit"}
        See the module docstring; ``"auto"`` is :func:`default_method`.
    chunk_size : int, optional
        Replicates per vectorised call / per Ray task. Default:
        :data:`VMAP_CHUNK` for ``vmap``; otherwise all replicates in one
        chunk (serial) or one chunk per worker (Ray).
    ray_address : str, optional
        Run chunks as Ray tasks: ``"local"`` starts a local Ray with
        ``workers`` CPUs; any other value is passed to ``ray.init(address=)``.
    workers : int, optional
        Number of Ray CPUs for ``ray_address="local"`` (default 2).
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    SBCResult
    """
    if method not in METHODS + ("auto",):
        raise ValueError(f"method: expected 'auto' or one of {METHODS}, got {method!r}")
    if replicates < 2:
        raise ValueError(f"replicates: expected >= 2, got {replicates}")
    spec = spec_of(model)
    if method == "auto":
        method = default_method(spec.backend)
    if method != "fit" and spec.backend != "numpyro":
        raise ValueError(f"method={method!r} needs a NumPyro model; use method='fit' for {spec.backend}")
    config = config or SBCConfig()
    fit_priors = priors if fit_priors is None else fit_priors
    t0 = time.perf_counter()
    shapes = latent_sites(model, data, priors)
    names = list(shapes)
    truth, obs = draw_prior(model, data, replicates, seed=seed, priors=priors)
    keys, fit_seeds = _replicate_keys(seed, replicates, spec.backend)
    if chunk_size is None:
        per_worker = replicates if ray_address is None else math.ceil(replicates / (workers or 2))
        chunk_size = min(VMAP_CHUNK, per_worker) if method == "vmap" else per_worker
    chunks = [np.arange(i, min(i + chunk_size, replicates)) for i in range(0, replicates, chunk_size)]
    token = uuid.uuid4().hex
    args = [(keys[c] if keys is not None else None, {k: v[c] for k, v in obs.items()}, fit_seeds[c]) for c in chunks]
    if ray_address is None:
        from tqdm import tqdm

        outs = [_run_chunk(model, data, fit_priors, config, k, o, names, method, s, token, chunk_size)
                for k, o, s in tqdm(args, disable=not progress or len(args) < 2, desc="sbc")]
        _RUNNERS.clear()
    else:
        outs = _run_ray(ray_address, workers, model, data, fit_priors, config, names, method, args, token,
                        chunk_size)
    samples = {k: np.concatenate([o[0][k] for o in outs]) for k in names}
    stats = {k: np.concatenate([o[1][k] for o in outs]) for k in outs[0][1]}
    wall = time.perf_counter() - t0
    return _result(spec.name, shapes, truth, samples, stats, config, method, wall, seed,
                   {"backend": spec.backend, "chunk_size": chunk_size, "ray": ray_address is not None})


def _replicate_keys(seed: int, replicates: int, backend: str) -> tuple[np.ndarray | None, np.ndarray]:
    seeds = np.random.SeedSequence([seed, 1]).generate_state(replicates, dtype=np.uint32).astype(np.int64)
    if backend != "numpyro":
        return None, seeds
    import jax

    base = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    keys = jax.vmap(lambda r: jax.random.fold_in(base, r))(np.arange(replicates))
    return np.asarray(keys), seeds


def _result(name, shapes, truth, samples, stats, config, method, wall, seed, meta) -> SBCResult:
    import arviz as az

    R = next(iter(truth.values())).shape[0]
    th = _flatten(truth, shapes, 1)  # (R, P)
    draws = _flatten(samples, shapes, 3)  # (R, C, D, P)
    flat = draws.reshape(R, -1, draws.shape[-1])  # (R, L, P)
    ranks = (flat < th[:, None, :]).sum(1)
    ess = np.asarray(az.ess(np.moveaxis(draws, 0, 2), method="bulk"))  # (chain, draw, R, P) -> (R, P)
    return SBCResult(model=name, params=_flat_names(shapes), ranks=ranks, truth=th, post_mean=flat.mean(1),
                     post_sd=flat.std(1), ess_bulk=ess, divergences=np.nan_to_num(stats["divergences"]).sum(-1).astype(int),
                     accept_prob=stats["accept_prob"].mean(-1), config=config, method=method, wall_time=wall,
                     seed=seed, meta=meta)


def _ray_chunk(model, data, priors, config, keys, obs, names, method, fit_seeds, token, pad_to):
    return _run_chunk(model, data, priors, config, keys, obs, names, method, fit_seeds, token, pad_to)


def _run_ray(address, workers, model, data, priors, config, names, method, args, token, pad_to) -> list:
    from psm_bayes.study.ray_utils import ray_session

    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1)(_ray_chunk)
        refs = [task.remote(model, data, priors, config, k, o, names, method, s, token, pad_to)
                for k, o, s in args]
        return ray.get(refs)

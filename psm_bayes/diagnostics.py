"""Posterior diagnostics that read only ArviZ DataTrees.

Draws: :func:`draws` (the one flattener of ``(chain, draw, ...)`` arrays).
Numbers: :func:`summary` (means, intervals, R-hat, bulk/tail ESS, MCSE),
:func:`divergences`, :func:`broken_fit` (missing groups, non-finite draws,
constant chains), :func:`check` (a pass/fail verdict), :func:`loo` and
:func:`compare`. Plots (saved as PNG, headless): :func:`plot_trace`,
:func:`plot_rank`, :func:`plot_forest`, :func:`plot_ppc`, and
:func:`save_plots` for all of them at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from psm_bayes.io import atomic_path


def _az():
    from psm_bayes.integrity import use_cache_root

    os.environ.setdefault("MPLBACKEND", "Agg")
    use_cache_root()
    import arviz as az

    return az


def draws(dt, name: str, group: str = "posterior") -> np.ndarray:
    """Draws of variable ``name`` in ``group`` with chains flattened: shape ``(chain * draw, ...)``.

    Raises
    ------
    KeyError
        Naming the variable and group when absent (e.g. a fit without
        ``predictive=True`` has no ``posterior_predictive``).
    """
    if group not in dt.children or name not in dt[group].data_vars:
        have = list(dt[group].data_vars) if group in dt.children else []
        raise KeyError(f"dt: no {name!r} in group {group!r} (has {have}); fit with predictive=True for "
                       "log_likelihood / posterior_predictive")
    v = dt[group][name]
    if tuple(v.dims[:2]) != ("chain", "draw"):
        raise ValueError(f"dt[{group!r}][{name!r}]: expected leading dims ('chain', 'draw'), got {v.dims}")
    return np.asarray(v.values).reshape((-1,) + v.shape[2:])


def _var_names(dt, var_names: Sequence[str] | None) -> list[str]:
    post = dt["posterior"]
    if var_names is None:
        # latent sites only: skip the deterministic ones the model declared, and very large ones
        derived = set(str(post.attrs.get("deterministic", "")).split(","))
        per_draw = post.sizes["chain"] * post.sizes["draw"]
        return [v for v in post.data_vars if v not in derived and post[v].size / per_draw <= 64]
    missing = [v for v in var_names if v not in post.data_vars]
    if missing:
        raise KeyError(f"var_names: {missing} not in the posterior (has {list(post.data_vars)})")
    return list(var_names)


def summary(dt, var_names: Sequence[str] | None = None, ci_prob: float = 0.9) -> pd.DataFrame:
    """Posterior summary: mean, sd, central ``ci_prob`` interval, ESS, R-hat, MCSE.

    Parameters
    ----------
    dt : xarray.DataTree
        A fit with a ``posterior`` group.
    var_names : sequence of str, optional
        Variables to summarise (default: every variable with <= 64 values per draw).
    ci_prob : float
        Probability mass of the equal-tailed interval.
    """
    return _az().summary(dt, var_names=_var_names(dt, var_names), ci_prob=ci_prob)


def divergences(dt) -> int:
    """Number of divergent transitions (0 for fits without ``sample_stats.diverging``)."""
    if "sample_stats" not in dt.children or "diverging" not in dt["sample_stats"]:
        return 0
    return int(np.asarray(dt["sample_stats"]["diverging"].values).sum())


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check`.

    ``broken`` lists the problems that make the fit unusable (:func:`broken_fit`: non-finite draws, constant
    chains, missing groups); they are also in ``problems``.
    """

    ok: bool
    max_rhat: float
    min_ess_bulk: float
    divergences: int
    problems: tuple[str, ...]
    broken: tuple[str, ...] = ()


def broken_fit(dt, var_names: Sequence[str] | None = None) -> list[str]:
    """What makes a fit unusable, one named problem each: missing groups, non-finite draws, constant chains.

    Groups a fit of ``psm-bayes fit`` has: ``posterior``, ``observed_data``,
    ``log_likelihood`` and ``posterior_predictive``, and ``sample_stats`` unless
    it is an SVI fit (group ``svi``). Every posterior and log-likelihood value
    must be finite, and no chain of a summarised variable may stay at one value.
    """
    need = ["posterior", "observed_data", "log_likelihood", "posterior_predictive"]
    need += [] if "svi" in dt.children else ["sample_stats"]
    out = [f"missing group {g!r} (a fit written by `psm-bayes fit` has it"
           + ("; fit with predictive=True)" if g in ("log_likelihood", "posterior_predictive") else ")")
           for g in need if g not in dt.children]
    for group in ("posterior", "log_likelihood"):
        for name, v in (dt[group].data_vars.items() if group in dt.children else ()):
            x = np.asarray(v.values, dtype=float)
            bad = x.size - int(np.isfinite(x).sum())
            if bad:
                out.append(f"{group} {name!r}: {bad} of {x.size} values are not finite (NaN or infinite)")
    if "posterior" in dt.children:
        post = dt["posterior"]
        for name in _var_names(dt, var_names):
            x = np.asarray(post[name].values, dtype=float).reshape(post.sizes["chain"], post.sizes["draw"], -1)
            stuck = [c for c in range(x.shape[0]) if x.shape[1] > 1 and np.all(np.ptp(x[c], axis=0) == 0)]
            if stuck:
                out.append(f"posterior {name!r}: chain(s) {stuck} never move (every draw the same)")
    return out


def check(dt, var_names: Sequence[str] | None = None, max_rhat: float = 1.01, min_ess: float = 400.0) -> Verdict:
    """Pass/fail check: a usable fit (:func:`broken_fit`), then R-hat, bulk ESS and divergences.

    R-hat is undefined for a single chain (SVI draws): it is then reported as
    NaN and not held against the fit. A broken fit gets NaN R-hat and ESS.
    """
    broken = broken_fit(dt, var_names)
    if broken:
        return Verdict(False, float("nan"), float("nan"), divergences(dt), tuple(broken), tuple(broken))
    s = summary(dt, var_names)
    rhat = float(np.nanmax(s["r_hat"].astype(float))) if s["r_hat"].notna().any() else float("nan")
    ess = float(np.nanmin(s["ess_bulk"].astype(float)))
    div = divergences(dt)
    problems = []
    if np.isfinite(rhat) and rhat >= max_rhat:
        problems.append(f"max R-hat {rhat:.3f} >= {max_rhat}")
    if ess < min_ess:
        problems.append(f"min bulk ESS {ess:.0f} < {min_ess:.0f}")
    if div:
        problems.append(f"{div} divergent transitions")
    return Verdict(not problems, rhat, ess, div, tuple(problems))


def loo(dt, pointwise: bool = True, var_name: str | None = None):
    """PSIS-LOO (``arviz.loo``); needs a ``log_likelihood`` group.

    Observations whose log-likelihood is the same at every draw (no
    parameter touches them, e.g. base-condition episodes under a given
    prior) have the exact leave-one-out density ``log p(y_i)`` and Pareto
    ``k = 0``; PSIS cannot fit a tail to identical values, so those rows
    are taken exactly and PSIS runs on the others.
    """
    import dataclasses

    import xarray as xr

    if "log_likelihood" not in dt.children:
        raise ValueError("dt: no log_likelihood group; fit with predictive=True")
    az = _az()
    group = dt["log_likelihood"]
    names = list(group.data_vars)
    var = var_name or (names[0] if len(names) == 1 else None)
    if var is None:
        return az.loo(dt, pointwise=pointwise, var_name=var_name)
    ll = group[var]
    obs_dims = [d for d in ll.dims if d not in ("chain", "draw")]
    flat = np.asarray(ll.transpose("chain", "draw", *obs_dims).values, dtype=float).reshape(
        ll.sizes["chain"], ll.sizes["draw"], -1)
    const = np.ptp(flat, axis=(0, 1)) <= 1e-12 * (1.0 + np.abs(flat[0, 0]))
    if not const.any():
        return az.loo(dt, pointwise=pointwise, var_name=var_name)
    if const.all():
        raise ValueError(f"log_likelihood: no parameter affects {var!r} (the same value at every draw)")
    full_elpd = flat[0, 0].copy()
    full_k = np.zeros(flat.shape[-1])
    sub = az.from_dict({"posterior": {"draw_index": np.zeros(flat.shape[:2])},
                        "log_likelihood": {var: flat[:, :, ~const]}}, dims={var: ["obs"]})
    res = az.loo(sub, pointwise=True)
    full_elpd[~const] = np.asarray(res.elpd_i).ravel()
    full_k[~const] = np.asarray(res.pareto_k).ravel()
    n = full_elpd.size
    shape = [ll.sizes[d] for d in obs_dims]
    coords = {d: ll.coords[d] for d in obs_dims if d in ll.coords}
    elpd_i = xr.DataArray(full_elpd.reshape(shape), dims=obs_dims, coords=coords)
    pareto_k = xr.DataArray(full_k.reshape(shape), dims=obs_dims, coords=coords)
    fields = dict(elpd=float(full_elpd.sum()), se=float(np.sqrt(n) * full_elpd.std()), n_data_points=n,
                  elpd_i=elpd_i if pointwise else None, pareto_k=pareto_k if pointwise else None)
    return dataclasses.replace(res, **fields)


def compare(fits: Mapping[str, object]) -> pd.DataFrame:
    """Rank fits of the same observations by PSIS-LOO (``arviz.compare`` on :func:`loo` of each fit)."""
    if len(fits) < 2:
        raise ValueError(f"fits: expected at least 2 fits to compare, got {len(fits)}")
    return _az().compare({name: loo(dt) for name, dt in fits.items()})


def _save(pc, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = pc.viz["figure"].item() if hasattr(pc, "viz") else pc
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_trace(dt, path: str | Path, var_names: Sequence[str] | None = None) -> Path:
    """Trace and marginal densities (``arviz.plot_trace_dist``) saved as PNG."""
    return _save(_az().plot_trace_dist(dt, var_names=_var_names(dt, var_names)), path)


def plot_rank(dt, path: str | Path, var_names: Sequence[str] | None = None) -> Path:
    """Rank-ECDF plot per chain (``arviz.plot_rank``) saved as PNG."""
    return _save(_az().plot_rank(dt, var_names=_var_names(dt, var_names)), path)


def plot_forest(dt, path: str | Path, var_names: Sequence[str] | None = None) -> Path:
    """Forest plot of posterior intervals saved as PNG."""
    return _save(_az().plot_forest(dt, var_names=_var_names(dt, var_names)), path)


def plot_ppc(dt, path: str | Path) -> Path:
    """Posterior predictive check of the mean of each observed variable, saved as PNG.

    Uses ``arviz.plot_ppc_tstat`` (a KDE of discrete answers is meaningless).
    """
    if "posterior_predictive" not in dt.children:
        raise ValueError("dt: no posterior_predictive group; fit with predictive=True")
    return _save(_az().plot_ppc_tstat(dt, t_stat="mean"), path)


def save_plots(dt, out_dir: str | Path, var_names: Sequence[str] | None = None) -> dict[str, Path]:
    """All diagnostic plots into ``out_dir`` (``trace.png``, ``rank.png``, ``forest.png``, ``ppc.png``)."""
    out = Path(out_dir)
    paths = {"trace": plot_trace(dt, out / "trace.png", var_names),
             "forest": plot_forest(dt, out / "forest.png", var_names)}
    if dt["posterior"].sizes["chain"] > 1:
        paths["rank"] = plot_rank(dt, out / "rank.png", var_names)
    if "posterior_predictive" in dt.children:
        paths["ppc"] = plot_ppc(dt, out / "ppc.png")
    return paths

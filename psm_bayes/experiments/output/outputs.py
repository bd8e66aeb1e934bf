"""Files of the experiment: strict JSON, text, compact NetCDF fits and CSV measurements (all atomic).

Every file goes through :func:`psm_bayes.io.atomic_path` (temporary name +
``os.replace``), so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (replacing a file the library wrote)."""
    from psm_bayes.io import save_text

    return save_text(text, path, overwrite=True)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN -> null), atomically."""
    from psm_bayes.io import save_json

    return save_json(obj, path, overwrite=True)


def _thin(ds: Any, n_keep: int) -> Any:
    """Keep about ``n_keep`` draws in total (all chains), evenly spaced within each chain."""
    if "draw" not in ds.dims:
        return ds
    n_chain = int(ds.sizes.get("chain", 1))
    per = max(1, int(np.ceil(n_keep / n_chain)))
    n_draw = int(ds.sizes["draw"])
    if per >= n_draw:
        return ds
    return ds.isel(draw=np.unique(np.linspace(0, n_draw - 1, per).round().astype(int)))


def compact_fit(dt: Any, *, loglik_draws: int = 500, predictive_draws: int = 100,
                max_posterior_size: int = 1_000_000) -> Any:
    """A smaller copy of a fit for disk.

    * ``posterior``: every latent site with all draws, unchanged; deterministic
      per-row variables larger than ``max_posterior_size`` elements (e.g. the
      ICL models' ``nll_mean``, draws x 1800 rows) are dropped -- they are
      recomputable from the latents and the data;
    * ``log_likelihood``: thinned evenly to about ``loglik_draws`` draws (all
      chains together), float32 -- enough for PSIS-LOO on reload;
    * ``posterior_predictive``: thinned to about ``predictive_draws`` draws,
      float32 (dropped when 0);
    * every other group unchanged.  The attrs record what was changed.
    """
    import xarray as xr

    groups = {}
    notes = []
    for name, node in dt.children.items():
        ds = node.to_dataset()
        if name == "posterior":
            big = [v for v in ds.data_vars if ds[v].size > max_posterior_size]
            if big:
                ds = ds.drop_vars(big)
                notes.append(f"posterior: dropped {big}")
        elif name in ("log_likelihood", "posterior_predictive"):
            keep = loglik_draws if name == "log_likelihood" else predictive_draws
            if keep == 0:
                notes.append(f"{name}: dropped")
                continue
            before = int(ds.sizes.get("draw", 0))
            ds = _thin(ds, keep)
            ds = ds.map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v, keep_attrs=True)
            notes.append(f"{name}: float32, draws {before} -> {int(ds.sizes.get('draw', 0))} per chain")
        groups["/" + name] = ds
    out = xr.DataTree.from_dict(groups)
    out.attrs = dict(dt.attrs)
    out.attrs["compacted"] = "; ".join(notes)
    return out


def save_fit(dt: Any, path: str | Path, **compact: Any) -> Path:
    """A DataTree as NetCDF (h5netcdf), atomically; ``compact`` options -> :func:`compact_fit` first."""
    from psm_bayes.io import save_datatree

    if compact:
        dt = compact_fit(dt, **compact)
    return save_datatree(dt, path, overwrite=True)


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    """A DataFrame as CSV (no index), atomically."""
    from psm_bayes.io import save_table

    return save_table(df, path, overwrite=True, index=False)

"""Assemble ArviZ DataTrees from sample dictionaries, the same way for every backend."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from psm_bayes.models.base import ModelSpec


def _np(d: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in (d or {}).items()}


def build_datatree(spec: ModelSpec, data: Any, *, posterior: Mapping[str, Any],
                   sample_stats: Mapping[str, Any] | None = None,
                   log_likelihood: Mapping[str, Any] | None = None,
                   posterior_predictive: Mapping[str, Any] | None = None,
                   prior: Mapping[str, Any] | None = None,
                   prior_predictive: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Mapping[str, Any]] | None = None,
                   attrs: Mapping[str, Any] | None = None):
    """A DataTree with the standard groups.

    Every sample array is ``(chain, draw, ...)``; dims and coords come from
    ``spec``. ``extra`` groups (e.g. an SVI loss trace) are stored as given.
    """
    import arviz as az
    import xarray as xr

    groups: dict[str, dict[str, np.ndarray]] = {"posterior": _np(posterior)}
    for name, value in (("sample_stats", sample_stats), ("log_likelihood", log_likelihood),
                        ("posterior_predictive", posterior_predictive), ("prior", prior),
                        ("prior_predictive", prior_predictive)):
        if value:
            groups[name] = _np(value)
    data = spec.per_unit(data)  # observed sites, log-likelihood and predictive draws are one row per unit
    observed = spec.observed_values(data)
    if observed:
        groups["observed_data"] = _np(observed)
    coords = spec.coords(data)
    dims = {k: v for k, v in spec.dims.items()}
    used = {d for names in dims.values() for d in names}
    coords = {k: v for k, v in coords.items() if k in used}
    meta = {"model": spec.name, "backend": spec.backend, "deterministic": ",".join(spec.deterministic),
            **(attrs or {})}
    dt = az.from_dict(groups, coords=coords, dims=dims, attrs={g: dict(meta) for g in groups})
    for name, group in (extra or {}).items():
        dt[name] = xr.Dataset({k: (tuple(v.dims) if hasattr(v, "dims") else (f"{k}_dim",), np.asarray(v))
                               for k, v in group.items()})
    return dt

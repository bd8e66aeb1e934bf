"""Model metadata shared by all backends, read by ``psm_bayes.inference``.

A model is a plain function ``model(data, priors=None)`` with named sample
sites. :func:`psm_model` attaches a :class:`ModelSpec` saying which backend
runs it, which sites are observed, and the ArviZ dims of each site, so that
inference never needs to import a specific model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

@dataclass(frozen=True)
class ModelSpec:
    """What inference needs to know about a model function.

    Attributes
    ----------
    name : str
        Model name (same in every backend).
    backend : str
        Backend name, one of :data:`psm_bayes.inference.backends.BACKENDS`
        (checked there, when the model is fitted).
    observed : tuple of str
        Observed sites (their pointwise log-likelihood goes to ``log_likelihood``).
    dims : mapping
        ArviZ dims per site name.
    coords : callable
        ``coords(data) -> dict`` of coordinate values.
    unobserve : callable
        ``unobserve(data) -> data`` with the observed fields set to ``None``
        (prior and posterior predictive).
    observed_values : callable
        ``observed_values(data) -> dict`` of observed arrays per site.
    deterministic : tuple of str
        Deterministic (derived) sites; diagnostics skip them by default.
    with_observed : callable, optional
        ``with_observed(data, values) -> data``: inverse of
        ``observed_values``, a copy of ``data`` whose observed sites take
        ``values`` (a dict per observed site, e.g. a prior-predictive draw).
        Simulation-based calibration needs it to fit replicated data sets;
        ``None`` (the default) for models that do not support it.
    """

    name: str
    backend: str
    observed: tuple[str, ...]
    dims: Mapping[str, list[str]] = field(default_factory=dict)
    coords: Callable[[Any], dict] = lambda data: data.coords()
    unobserve: Callable[[Any], Any] = lambda data: data
    observed_values: Callable[[Any], dict] = lambda data: {}
    deterministic: tuple[str, ...] = ()
    with_observed: Callable[[Any, Mapping[str, Any]], Any] | None = None


def psm_model(spec: ModelSpec) -> Callable:
    """Decorator attaching ``spec`` to a model function as ``fn.spec``."""

    def wrap(fn: Callable) -> Callable:
        fn.spec = spec
        return fn

    return wrap


def spec_of(model: Callable) -> ModelSpec:
    """The :class:`ModelSpec` of ``model`` (clear error if it has none)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"model: {getattr(model, '__name__', model)!r} has no psm_bayes ModelSpec; "
                        "decorate it with psm_bayes.models.base.psm_model")
    return spec

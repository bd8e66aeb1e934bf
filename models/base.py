"""Model metadata shared by all backends, read by ``psm_bayes.inference``.

A model is a plain function ``model(data, priors=None)`` with named sample
sites. :func:`psm_model` attaches a :class:`ModelSpec` saying which backend
runs it, which sites are observed, and the ArviZ dims of each site, so that
inference never needs to import a specific model.

Observed data is declared once per model: ``ModelSpec.observed`` maps each
observed site to the data field holding it (a dotted path such as
``"episodes.option"``), and ``units`` names the rows that carry integer
``count`` s. The generic :func:`unobserve`, :func:`observed_values`,
:func:`with_observed` and :func:`per_unit` below do the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np


# ---------------------------------------------------------------- generic observed-field handling
def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> Any:
    """A copy of the frozen dataclass ``obj`` with the field at dotted ``path`` set (re-validated)."""
    head, _, rest = path.partition(".")
    new = _set(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


def per_unit(data: Any, units: str | None) -> Any:
    """``data`` with the aggregated rows at ``units`` (an object with ``expand()``) one per unit (count 1).

    The pointwise log-likelihood, the posterior predictive and the
    prior-predictive replicates are computed on this form, so LOO leaves out
    one episode however rows were aggregated, and a replicate of a row with
    count ``c`` is ``c`` independent draws (a multinomial count over options).
    """
    if units is None:
        return data
    rows = _get(data, units)
    return data if rows.is_expanded else _set(data, units, rows.expand())


def unobserve(data: Any, fields: Mapping[str, str], units: str | None = None) -> Any:
    """``data`` (one row per unit) with every observed field set to ``None`` (prior / posterior predictive)."""
    data = per_unit(data, units)
    for path in fields.values():
        data = _set(data, path, None)
    return data


def observed_values(data: Any, fields: Mapping[str, str], units: str | None = None) -> dict[str, np.ndarray]:
    """``{site: observed array}`` (one row per unit) for the observed fields that are not ``None``."""
    data = per_unit(data, units)
    out = {site: _get(data, path) for site, path in fields.items()}
    return {site: np.asarray(v) for site, v in out.items() if v is not None}


def with_observed(data: Any, values: Mapping[str, Any], fields: Mapping[str, str], units: str | None = None) -> Any:
    """Inverse of :func:`observed_values`: ``data`` (one row per unit) whose observed fields take ``values``."""
    data = per_unit(data, units)
    for site, path in fields.items():
        data = _set(data, path, np.asarray(values[site]))
    return data


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
    observed : mapping or tuple of str
        ``{site: "dotted.field.path"}``: each observed site and the data field
        holding it; the observed-data helpers are then derived. (A tuple of
        site names needs explicit ``unobserve`` / ``observed_values`` /
        ``with_observed``.) Stored as the tuple of site names.
    dims : mapping
        ArviZ dims per site name.
    coords : callable
        ``coords(data) -> dict`` of coordinate values.
    unobserve, observed_values, with_observed : callable, optional
        Derived from ``observed`` when it is a mapping: ``unobserve(data)``
        (observed fields ``None``), ``observed_values(data) -> dict``,
        ``with_observed(data, values) -> data`` (e.g. a prior-predictive draw).
    deterministic : tuple of str
        Deterministic (derived) sites; diagnostics skip them by default.
    units : str, optional
        Dotted path of the aggregated rows (with integer ``count`` and
        ``expand()``), e.g. ``"episodes"``.
    per_unit : callable
        ``per_unit(data)``: one row per unit (derived from ``units``); the
        log-likelihood, observed data and predictive draws use this form.
    dense_mass : tuple of tuple of str
        Blocks of latent sites whose posterior is strongly correlated, given a
        dense NUTS mass matrix (each block its own; every other site diagonal).
        Sites a model does not sample on some data are left out of the block.
    """

    name: str
    backend: str
    observed: Any
    dims: Mapping[str, list[str]] = field(default_factory=dict)
    coords: Callable[[Any], dict] = lambda data: data.coords()
    unobserve: Callable[[Any], Any] | None = None
    observed_values: Callable[[Any], dict] | None = None
    deterministic: tuple[str, ...] = ()
    with_observed: Callable[[Any, Mapping[str, Any]], Any] | None = None
    units: str | None = None
    per_unit: Callable[[Any], Any] | None = None
    dense_mass: tuple[tuple[str, ...], ...] = ()

    def mass_blocks(self, sites) -> tuple[tuple[str, ...], ...]:
        """The :attr:`dense_mass` blocks restricted to ``sites`` (the latents a fit samples), empty ones dropped."""
        sites = set(sites)
        blocks = (tuple(s for s in block if s in sites) for block in self.dense_mass)
        return tuple(b for b in blocks if b)

    def __post_init__(self) -> None:
        if isinstance(self.observed, Mapping):
            fields_ = dict(self.observed)
            derived = {"unobserve": partial(unobserve, fields=fields_, units=self.units),
                       "observed_values": partial(observed_values, fields=fields_, units=self.units),
                       "with_observed": partial(with_observed, fields=fields_, units=self.units)}
            for name, fn in derived.items():
                if getattr(self, name) is None:
                    object.__setattr__(self, name, fn)
            object.__setattr__(self, "observed", tuple(fields_))
        else:
            object.__setattr__(self, "observed", tuple(self.observed))
            if self.unobserve is None or self.observed_values is None:
                raise ValueError(f"spec {self.name!r}: observed as site names needs unobserve and observed_values; "
                                 "give observed as {site: 'field.path'} instead")
        if self.per_unit is None:
            object.__setattr__(self, "per_unit", partial(per_unit, units=self.units))


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

"""The inference backends, by name: the one place that lists them.

Each backend module implements the same functions:

* ``fit_nuts(model, data, *, seed, priors, ...)`` and ``fit_svi(...)`` ->
  ``xarray.DataTree`` (see :func:`psm_bayes.inference.fit_nuts`);
* ``log_density(model, data, priors, values) -> float``: the log joint at the
  latent ``values``, in float64;
* ``prior_predictive(model, data, *, seed, priors, num_samples) -> dict``:
  prior and prior-predictive draws ``{site: (num_samples, ...)}``;
* ``pointwise_log_likelihood(model, data, priors, draws) -> dict``:
  ``{observed site: (S, N)}`` per unit of the model's ``loo_dim``.

Adding a backend is one module with these functions and one line in
:data:`_MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES: dict[str, str] = {
    "numpyro": "psm_bayes.inference.numpyro_backend",
    "pyro": "psm_bayes.inference.pyro_backend",
}

BACKENDS: tuple[str, ...] = tuple(_MODULES)
"""Names of the known backends."""


def check_backend(name: str) -> str:
    """``name`` if it is a known backend, else ``ValueError`` naming it and the known ones."""
    if name not in _MODULES:
        raise ValueError(f"backend: unknown backend {name!r}; known backends: {list(BACKENDS)}")
    return name


def get_backend(name: str) -> ModuleType:
    """The backend module ``name`` (imported lazily; heavy libraries load only here)."""
    return importlib.import_module(_MODULES[check_backend(name)])

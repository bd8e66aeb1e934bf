"""Explicit JAX configuration for psm-bayes: call :func:`configure_jax` at program start.

Nothing here runs at import time. :func:`configure_jax` is called by the CLI
entry point and by every NumPyro fit / prior-predictive function, as NumPyro
itself asks (``numpyro.enable_x64``, ``numpyro.set_host_device_count``):

* float64 everywhere (float32 NUTS on these mixtures diverges);
* one host CPU device per core (up to 4) so chains run in parallel. The
  device count only takes effect before JAX's first computation; after it,
  chains run sequentially, which is correct, only slower.
"""

from __future__ import annotations

import importlib.util
import os

_DONE = False


def configure_jax(host_devices: int | None = None) -> bool:
    """Enable float64 and request host devices for parallel chains (idempotent).

    Parameters
    ----------
    host_devices : int, optional
        Number of host CPU devices (default: the number of cores, at most 4).

    Returns
    -------
    bool
        False when NumPyro is not installed (nothing to configure), else True.
    """
    global _DONE
    if _DONE:
        return True
    if importlib.util.find_spec("numpyro") is None:
        return False
    import numpyro

    n = host_devices if host_devices is not None else max(1, min(4, os.cpu_count() or 1))
    numpyro.set_host_device_count(int(n))
    numpyro.enable_x64()
    _DONE = True
    return True

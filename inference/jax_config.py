"""Explicit JAX configuration for psm-bayes: call :func:`configure_jax` at program start.

Nothing here runs at import time. :func:`configure_jax` is called by the CLI
entry point and by every NumPyro fit / prior-predictive function, as NumPyro
itself asks (``numpyro.enable_x64``, ``numpyro.set_host_device_count``):

* float64 everywhere (float32 NUTS on these mixtures diverges);
* one host CPU device per core (up to 4) so chains can run in parallel
  (``chain_method="parallel"``, :mod:`psm_bayes.inference.nuts`). The
  device count only takes effect before JAX's first computation;
* optionally (``cache_dir``, :func:`enable_compilation_cache`) JAX's
  persistent compilation cache in a folder the caller names (a run's cache
  folder), so other processes -- power-analysis workers, a rerun -- load the
  compiled programs instead of compiling them again.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_DONE = False
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
"""JAX's own environment variable for the cache folder; set so that spawned worker processes inherit it."""


def configure_jax(host_devices: int | None = None, *, cache_dir: str | os.PathLike | None = None) -> bool:
    """Enable float64, request host devices (once per process) and, with ``cache_dir``, the persistent cache.

    Parameters
    ----------
    host_devices : int, optional
        Number of host CPU devices (default: the number of cores, at most 4).
    cache_dir : path, optional
        Folder of JAX's persistent compilation cache
        (:func:`enable_compilation_cache`); applied on every call that gives it.

    Returns
    -------
    bool
        False when NumPyro is not installed (nothing to configure), else True.
    """
    global _DONE
    if not _DONE:
        if importlib.util.find_spec("numpyro") is None:
            return False
        import numpyro

        n = host_devices if host_devices is not None else max(1, min(4, os.cpu_count() or 1))
        numpyro.set_host_device_count(int(n))
        numpyro.enable_x64()
        _DONE = True
    if cache_dir is not None:
        enable_compilation_cache(cache_dir)
    return True


def enable_compilation_cache(cache_dir: str | os.PathLike) -> Path:
    """Store and look up compiled XLA programs in ``cache_dir`` (created if missing).

    Programs taking more than JAX's default 1 s to compile are written (the
    NUTS programs of :mod:`psm_bayes.inference.nuts` take ~10 s); a later
    process compiling the same program (same jaxpr, shapes, JAX version and
    CPU) loads it instead. The folder is also exported as
    ``$JAX_COMPILATION_CACHE_DIR``, so processes spawned afterwards (the power
    analysis's workers) use it too. Entries are only read by JAX: keep the
    folder private (JAX treats its content as trusted code).

    Returns
    -------
    pathlib.Path
        The folder (absolute).
    """
    import jax

    path = Path(cache_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir not in (None, str(path)):
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()  # a cache already opened elsewhere: reopen at the new folder
    jax.config.update("jax_compilation_cache_dir", str(path))
    os.environ[CACHE_ENV] = str(path)
    return path

"""Ray for parallel runs: start (or join) it for one run and shut it down afterwards.

Used by SBC (chunks of replicates) and simulation studies (cells); it sits
below both so that neither imports the other.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator


@contextlib.contextmanager
def ray_session(address: str, workers: int | None = None) -> Iterator:
    """Yield the ``ray`` module with a connected runtime.

    Parameters
    ----------
    address : str
        ``"local"`` starts a private local Ray with ``workers`` CPUs (default
        2); anything else is passed to ``ray.init(address=...)`` (e.g.
        ``"auto"`` or ``"ray://host:10001"``).
    workers : int, optional
        CPUs of a local Ray (ignored when joining a cluster).

    Ray is shut down on exit only if this call started it.
    """
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("Ray is not installed: pip install 'psm-bayes[ray]'") from err
    started = False
    if not ray.is_initialized():
        # Ray spawns its processes with fork+exec, which Python flags as unsafe under JAX's threads; the
        # exec follows at once, so the warning does not apply
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if address == "local":
                ray.init(num_cpus=workers or 2, include_dashboard=False, log_to_driver=False,
                         object_store_memory=int(os.environ.get("PSM_BAYES_RAY_OBJECT_STORE", 150 * 1024 ** 2)))
            else:
                ray.init(address=address, log_to_driver=False)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()

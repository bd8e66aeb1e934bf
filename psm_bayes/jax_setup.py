"""One place that configures JAX for psm-bayes (import before any JAX computation).

* float64 everywhere (float32 NUTS on these mixtures diverges);
* one host CPU device per core (up to 4) so chains run in parallel; this only
  takes effect if no JAX computation ran before, otherwise chains run
  sequentially, which is correct, only slower.
"""

from __future__ import annotations

import os

_DONE = False


def setup() -> None:
    """Idempotent: enable x64 and request host devices for parallel chains."""
    global _DONE
    if _DONE:
        return
    import numpyro

    numpyro.set_host_device_count(max(1, min(4, os.cpu_count() or 1)))
    numpyro.enable_x64()
    _DONE = True

"""Compiled programs reused across fits: one XLA program per model structure, the data passed as arguments.

A NumPyro fit that closes over its data makes JAX compile NUTS afresh for
every fit (~10 s of a 9-25 s fit), although refits, power replicates and SBC
replicates run the same model on data of the same shapes. Here each
data-dependent function a fit needs -- the initial point (``initialize_model``
with ``init_to_median``), the potential energy, the constraining map (latent
and deterministic sites), the pointwise log-likelihood, the posterior
predictive -- is first *traced* to a jaxpr (:func:`lift`, about 0.1-0.5 s; no
compilation). A jaxpr's constants are the arrays the model built from its
data (persona table, evidence, indices, observed values, ...); the jaxpr
itself (every operation, every shape, every Python scalar such as the priors)
is the model's structure. :func:`program` keeps one jitted program per
structure and settings in a bounded LRU cache; the constants are its
*arguments*. So a fit of new data with the same structure -- new observed
values (SBC), a resampled design of the same sizes (power), the same model on
another data set of the same sizes -- runs the program already compiled.

Exactness: a program is shared only by fits whose printed jaxprs (operations,
literals, shapes, dtypes, output structure) are identical, so the shared
program computes exactly what a fresh compilation of the same fit would: the
draws are the same bit for bit (``tests/test_fit_reuse.py``). Jaxprs with
side effects or host callbacks are never shared (compiled per fit).
Data of other shapes (an exact leave-one-item-out refit drops an item's
measurements and its ``item_effect``) get their own program; padding them to the
full shapes would keep the posterior but not the draws, and needs model
knowledge, so it is not done.

:func:`cache_info` counts program hits and misses and every XLA compilation
of the process (from JAX's monitoring events); :func:`reuse` turns sharing
off (the non-reused path); :func:`clear_cache` empties the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jax
import numpy as np

CACHE_SIZE = 32
"""Programs kept (least recently used dropped first); a NUTS program is a few MB."""

_PROGRAMS: OrderedDict[tuple, Callable] = OrderedDict()
_STATS = {"hits": 0, "misses": 0, "xla_compiles": 0, "persistent_cache_hits": 0}
_STATE = {"reuse": True}
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_PERSISTENT_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _on_duration(event: str, duration: float, **_: Any) -> None:
    if event == _COMPILE_EVENT:
        _STATS["xla_compiles"] += 1


def _on_event(event: str, **_: Any) -> None:
    if event == _PERSISTENT_HIT_EVENT:
        _STATS["persistent_cache_hits"] += 1


# counting starts when this module is imported (by the NumPyro backend, i.e. before its first fit)
jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


def cache_info() -> dict[str, int]:
    """Counts since this module was imported (or :func:`clear_cache`).

    Returns
    -------
    dict
        ``hits`` / ``misses``: program lookups that found / built a program;
        ``size`` / ``maxsize``: programs held; ``xla_compiles``: XLA
        compilations of the whole process (every JAX computation, ours or not;
        loads from the persistent compilation cache included);
        ``persistent_cache_hits``: compilations served from the persistent
        cache (:func:`psm_bayes.inference.jax_config.enable_compilation_cache`).
    """
    return {**_STATS, "size": len(_PROGRAMS), "maxsize": CACHE_SIZE}


def clear_cache() -> None:
    """Drop every program and reset the counts."""
    _PROGRAMS.clear()
    for k in _STATS:
        _STATS[k] = 0


@contextlib.contextmanager
def reuse(enabled: bool = True) -> Iterator[None]:
    """Within the block programs are shared (``True``) or built afresh and not kept (``False``)."""
    old = _STATE["reuse"]
    _STATE["reuse"] = bool(enabled)
    try:
        yield
    finally:
        _STATE["reuse"] = old


@dataclass(frozen=True)
class Lifted:
    """A function traced to a jaxpr whose constants become arguments.

    Attributes
    ----------
    jaxpr : jax.extend.core.Jaxpr
        The computation (constants as its leading inputs).
    consts : list
        The constants of this trace (the data-derived arrays).
    out_shape : pytree of jax.ShapeDtypeStruct
        Shapes and dtypes of the function's output.
    key : str
        sha256 of the printed jaxpr, output structure and constants' shapes and dtypes.
    shareable : bool
        False when the jaxpr has effects or host callbacks (never shared).
    """

    jaxpr: Any
    consts: list
    out_shape: Any
    key: str
    shareable: bool

    def __call__(self, consts: list, *args: Any) -> Any:
        """The function's output at ``args``, with ``consts`` (this or an equal structure's) as its constants."""
        out = jax.core.eval_jaxpr(self.jaxpr, consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(self.out_shape), out)


def _aval(c: Any) -> str:
    return f"{np.shape(c)}:{getattr(c, 'dtype', type(c).__name__)}"


def lift(fn: Callable, *args: Any) -> Lifted:
    """Trace ``fn(*args)`` (arrays or ``jax.ShapeDtypeStruct`` s) to a :class:`Lifted`; nothing is compiled."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(shape)
    text = str(closed.jaxpr)
    digest = hashlib.sha256("\n".join([text, str(out_tree), ";".join(map(_aval, closed.consts))]).encode())
    shareable = not closed.jaxpr.effects and "callback" not in text
    return Lifted(closed.jaxpr, list(closed.consts), shape, digest.hexdigest(), shareable)


def program(key: tuple, parts: tuple[Lifted, ...], build: Callable[[tuple[Lifted, ...]], Callable]) -> Callable:
    """The program for ``key`` and the structures of ``parts``: cached, else ``build(parts)`` (then cached).

    ``key`` holds everything ``build`` bakes in besides the parts' jaxprs
    (settings such as warm-up and draws); the parts' keys are added here.
    ``build`` gets the parts without their constant lists: a program is
    always called with its caller's constants.
    """
    full = key + tuple(p.key for p in parts)
    share = _STATE["reuse"] and all(p.shareable for p in parts)
    if share and full in _PROGRAMS:
        _PROGRAMS.move_to_end(full)
        _STATS["hits"] += 1
        return _PROGRAMS[full]
    _STATS["misses"] += 1
    fn = build(tuple(dataclasses.replace(p, consts=[]) for p in parts))
    if share:
        _PROGRAMS[full] = fn
        while len(_PROGRAMS) > CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    return fn


def call(tag: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` run as a shared compiled program (``fn`` closes over data; ``args`` are arrays / pytrees)."""
    part = lift(fn, *args)
    run = program((tag,), (part,), lambda bare: jax.jit(bare[0].__call__))
    return run(part.consts, *args)

"""Public validators shared by every data class: each raises :class:`DataError` naming the field.

Data containers (:mod:`psm_bayes.data`, the model families' data classes)
validate their fields at construction with these functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np


class DataError(ValueError):
    """Invalid input data; the message names the field and what was expected."""


def fail(field_name: str, msg: str) -> None:
    """Raise :class:`DataError` ``"{field_name}: {msg}"``."""
    raise DataError(f"{field_name}: {msg}")


def as_str_tuple(values: Sequence[str], field_name: str) -> tuple[str, ...]:
    """``values`` as a tuple of str (error naming the first non-str entry)."""
    out = tuple(values)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            fail(f"{field_name}[{i}]", f"expected str, got {type(v).__name__}")
    return out


def check_unique(values: Sequence[str], field_name: str) -> None:
    """Error on the first duplicate id."""
    seen: set[str] = set()
    for v in values:
        if v in seen:
            fail(field_name, f"duplicate id {v!r}; ids must be unique")
        seen.add(v)


def check_finite(arr: np.ndarray, field_name: str) -> None:
    """Error naming the first non-finite value and its index."""
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        fail(field_name, f"expected finite values, found {arr[idx]!r} at index {idx} ({int(bad.sum())} non-finite)")


def check_int_array(values, field_name: str, n: int, what: str = "option indices",
                    match: str = "") -> np.ndarray:
    """Validate a shape ``(n,)`` array of non-negative integers (integral floats allowed) as int64.

    ``what`` names the values in messages; ``match`` the field whose length ``n`` is.
    """
    a = np.asarray(values)
    if a.shape != (n,):
        fail(field_name, f"expected shape ({n},){f' to match {match}' if match else ''}, got {a.shape}")
    if a.dtype.kind == "f":
        check_finite(a, field_name)
        if not np.all(a == np.round(a)):
            fail(field_name, f"expected integer {what}")
    elif a.dtype.kind not in "iu":
        fail(field_name, f"expected integer {what}, got dtype {a.dtype}")
    if n and a.min() < 0:
        fail(field_name, f"expected {what} >= 0, found {int(a.min())}")
    return a.astype(np.int64)


# ---------------------------------------------------------------- arrays of probabilities and options
def check_prior_weights(pw, n_personas: int, field_name: str = "prior_weights") -> np.ndarray:
    """Validate a prior over personas (non-negative, sums to 1); return it clipped and renormalised."""
    arr = np.asarray(pw, dtype=float)
    if arr.shape != (n_personas,):
        fail(field_name, f"expected shape ({n_personas},) (one per persona), got {arr.shape}")
    check_finite(arr, field_name)
    if (arr < 0).any() or abs(arr.sum() - 1.0) > 1e-6:
        fail(field_name, f"expected non-negative weights summing to 1, got sum {arr.sum():.6g}")
    arr = np.clip(arr, 1e-12, None)
    return arr / arr.sum()


def check_logprob(arr, shape: tuple[int, ...], field_name: str, what: str) -> np.ndarray:
    """Validate a finite array of log-probabilities (<= 0 up to 1e-6) of ``shape``; return it clipped at 0."""
    a = np.asarray(arr, dtype=float)
    if a.shape != shape:
        fail(field_name, f"expected shape {shape} ({what}), got {a.shape}")
    check_finite(a, field_name)
    if (a > 1e-6).any():
        idx = tuple(int(i) for i in np.argwhere(a > 1e-6)[0])
        fail(field_name, f"log-probabilities must be <= 0, found {a[idx]:.4g} at index {idx}")
    return np.minimum(a, 0.0)


def check_option(arr, n: int, n_options: int, field_name: str) -> np.ndarray:
    """Validate integer option indices in ``[0, n_options)`` of shape ``(n,)``."""
    a = check_int_array(arr, field_name, n)
    if n and a.max() >= n_options:
        fail(field_name, f"expected indices in [0, {n_options}), found range [{int(a.min())}, {int(a.max())}]")
    return a


def check_personas(personas: Sequence[str], n_personas: int, field_name: str = "personas") -> tuple[str, ...]:
    """Persona ids (default ``p0 .. p{K-1}``), unique, one per persona."""
    ids = as_str_tuple(personas, field_name) or tuple(f"p{k}" for k in range(n_personas))
    if len(ids) != n_personas:
        fail(field_name, f"expected {n_personas} ids (one per persona), got {len(ids)}")
    check_unique(ids, field_name)
    return ids


def check_priors(priors: Any, *, real: Sequence[str] = (), optional: Sequence[str] = (),
                 flags: Sequence[str] = ()) -> None:
    """Validate a priors dataclass: every field a positive finite number, except as named.

    Parameters
    ----------
    priors : dataclass instance
        The priors object; errors name ``priors.<field>``.
    real : sequence of str
        Fields that may be any finite number (locations, seeds).
    optional : sequence of str
        Fields that may also be ``None``.
    flags : sequence of str
        Fields that must be a bool.
    """
    for f in dataclasses.fields(priors):
        v = getattr(priors, f.name)
        if f.name in flags:
            if not isinstance(v, bool):
                raise ValueError(f"priors.{f.name}: expected a bool, got {v!r}")
        elif v is None and f.name in optional:
            continue
        elif f.name in real:
            if not np.isfinite(v):
                raise ValueError(f"priors.{f.name}: expected a finite number, got {v!r}")
        elif not (np.isfinite(v) and v > 0):
            raise ValueError(f"priors.{f.name}: expected a positive finite number, got {v!r}")

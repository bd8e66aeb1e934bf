"""Flag value types and shared flags of the command line (values checked while parsing).

Each type raises ``argparse.ArgumentTypeError``, so a bad value is reported
as ``argument --draws: expected an integer >= 1, got '-3'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any, Callable


def _number(kind: type, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool,
            what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if (lo is not None and (value < lo or (lo_open and value == lo))) or \
                (hi is not None and (value > hi or (hi_open and value == hi))):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, None, False, False, "an integer >= 1")
at_least_two = _number(int, 2, None, False, False, "an integer >= 2")
nonneg_int = _number(int, 0, None, False, False, "an integer >= 0")
positive_float = _number(float, 0, None, True, False, "a finite number > 0")
probability = _number(float, 0, 1, False, False, "a probability in [0, 1]")
open_unit = _number(float, 0, 1, True, True, "a number in (0, 1)")
fraction = _number(float, 0, 1, False, True, "a fraction in [0, 1)")


def key_value(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with a JSON value when it parses (``n_items=4``, ``icl_fraction=0.5``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        pass
    try:  # inf, nan, 1e999: numbers JSON lacks (checked by whoever takes them, naming the key)
        return key, float(value)
    except ValueError:
        return key, value


def name_list(text: str, flag: str) -> tuple[str, ...]:
    """The names of a comma-separated flag value (``"a, b"`` -> ``("a", "b")``); none is a one-line error."""
    from psm_bayes.cli.errors import UsageError

    names = tuple(t.strip() for t in str(text).split(",") if t.strip())
    if not names:
        raise UsageError(flag, f"expected a comma-separated list of names, got {text!r}")
    return names


def check_sizes(pairs: list[tuple[str, Any]], flag: str = "--size") -> list[tuple[str, Any]]:
    """``--size`` pairs, checked: a count ``n_*`` is an integer >= 1 (a list of them: integers >= 0), a
    ``*_fraction`` a number in [0, 1]; otherwise a one-line error naming ``--size KEY``."""
    from psm_bayes.cli.errors import UsageError

    def integer(v: Any, lo: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    for key, value in pairs:
        if key.startswith("n_") and not (integer(value, 1) or (isinstance(value, list) and value
                                                                and all(integer(v, 0) for v in value))):
            raise UsageError(f"{flag} {key}", f"expected an integer >= 1 (or a list of integers >= 0), "
                                              f"got {value!r}")
        if key.endswith("_fraction") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not math.isfinite(value) or not 0 <= value <= 1):
            raise UsageError(f"{flag} {key}", f"expected a number in [0, 1], got {value!r}")
    return pairs


def add_verify_cache(p: argparse.ArgumentParser) -> None:
    """``--verify-cache``: whole-file checks of the model caches (:func:`psm_bayes.integrity.verifying`)."""
    p.add_argument("--verify-cache", action="store_true",
                   help="verify the model caches in full (whole-file sha256, a few seconds) instead of by size, "
                        "header and sampled blocks; a damaged cache is rebuilt either way")


def make_priors(priors_type: type, pairs: list[tuple[str, Any]], flag: str = "--prior") -> Any:
    """``priors_type(**pairs)``; a key that is not a field is a one-line error naming ``flag`` and the fields."""
    from psm_bayes.cli.errors import UsageError

    defaults = {f.name: f.default for f in dataclasses.fields(priors_type)}
    fields = list(defaults)
    for key, value in pairs:
        if key not in fields:
            raise UsageError(flag, f"unknown prior {key!r} for {priors_type.__name__}; expected one of {fields}")
        if isinstance(defaults[key], (int, float)) and not isinstance(value, (int, float, list)):
            raise UsageError(flag, f"{key}: expected a number, got {value!r}")
    try:
        return priors_type(**dict(pairs))
    except (TypeError, ValueError) as err:
        raise UsageError(flag, str(err)) from err


def add_out(p: argparse.ArgumentParser, help_text: str, metavar: str = "PATH") -> None:
    """``--out`` (required) and ``--overwrite``."""
    p.add_argument("--out", required=True, metavar=metavar, help=help_text)
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs of an earlier psm-bayes run at --out (never files psm-bayes did not write)")


def add_model(p: argparse.ArgumentParser, default: str | None) -> None:
    """``--model`` (choices from the model catalogue) and ``--backend`` (from the backend registry)."""
    from psm_bayes.inference.backends import BACKENDS
    from psm_bayes.models import catalogue

    p.add_argument("--model", default=default, choices=catalogue.names(), metavar="NAME",
                   help=f"catalogued model: {', '.join(catalogue.names())} (default {default})")
    p.add_argument("--backend", default=BACKENDS[0], choices=BACKENDS, help=f"inference backend (default {BACKENDS[0]})")


def default_model() -> str:
    """The canonical model when catalogued (``persona_selection``), else the first PSMData model."""
    from psm_bayes.models import catalogue

    names = catalogue.names()
    return "persona_selection" if "persona_selection" in names else \
        next((n for n in names if catalogue.get(n).data.__name__ == "PSMData"), names[0])

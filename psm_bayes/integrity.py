"""Where psm-bayes keeps its caches, and the checksums that make every cache entry verifiable.

Every cache entry the library writes carries its own checksum, written
atomically with the data (in the same file, or in the same folder renamed
into place at once) and verified on every read:

* measurement caches (:class:`psm_bayes.experiments.measure.scoring.ArrayCache`, the
  persona tables, :class:`psm_bayes.llm.cache.ScoreCache`): the sha256 of the
  content (:func:`array_digest`) and the key of what produced it;
* model caches (:mod:`psm_bayes.llm.modelcache`): per file its size, the
  sha256 of its header plus :data:`SAMPLES` evenly spaced blocks (checked on
  every use) and the sha256 of the whole file (checked with
  ``--verify-cache``: :func:`verifying`).

A changed, truncated, non-finite or unreadable entry is reported in one log
line naming the file (:func:`reject`, logger ``psm_bayes.cache``) and
recomputed.

All caches live under :func:`cache_root` (``$PSM_BAYES_CACHE``, default
``~/.cache/psm_bayes``) except the per-run measurement caches, which live in
the run's own ``--out`` folder. :func:`use_cache_root` also points
matplotlib's cache there (``MPLCONFIGDIR``) when ``PSM_BAYES_CACHE`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

log = logging.getLogger("psm_bayes.cache")

CACHE_ENV = "PSM_BAYES_CACHE"
"""Environment variable moving every cache psm-bayes writes outside ``--out``."""

VERIFY_ENV = "PSM_BAYES_VERIFY_CACHE"
"""``1``: model caches are verified in full (whole-file sha256) instead of by size, header and samples."""

HEAD_BYTES = 1 << 20
"""Bytes at the start of a file always hashed by the quick check (headers, tensor index)."""

SAMPLES = 64
"""Evenly spaced blocks hashed by the quick check."""

BLOCK_BYTES = 1 << 16
"""Size of each sampled block."""


def cache_root() -> Path:
    """Root of psm-bayes caches: ``$PSM_BAYES_CACHE`` or ``~/.cache/psm_bayes``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "psm_bayes"


def use_cache_root() -> None:
    """Point matplotlib's cache at ``$PSM_BAYES_CACHE/matplotlib`` when that is set and ``MPLCONFIGDIR`` is not.

    Call before matplotlib is imported (the CLI and :func:`run_experiment` do).
    """
    if os.environ.get(CACHE_ENV) and not os.environ.get("MPLCONFIGDIR"):
        os.environ["MPLCONFIGDIR"] = str(cache_root() / "matplotlib")


def verify_requested() -> bool:
    """True when full verification of the model caches was asked for (``--verify-cache``)."""
    return os.environ.get(VERIFY_ENV, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def verifying(on: bool = True) -> Iterator[None]:
    """Within the block, model caches are verified in full (sets :data:`VERIFY_ENV`, restored after)."""
    old = os.environ.get(VERIFY_ENV)
    if on:
        os.environ[VERIFY_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(VERIFY_ENV, None)
        else:
            os.environ[VERIFY_ENV] = old


def reject(path: str | Path, why: str, action: str = "recomputing it") -> None:
    """Log, in one line naming ``path``, that a cache entry failed verification."""
    text = " ".join(f"cache entry {str(path)!r}: {why}; {action}".split())
    log.warning(text)


def array_digest(*arrays: Any) -> str:
    """sha256 of arrays: dtype, shape and bytes of each (C order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "OUS":
            a = np.ascontiguousarray(a.astype(str))
            h.update("\0".join(a.ravel().tolist()).encode("utf-8"))
        else:
            h.update(a.tobytes())
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
    return h.hexdigest()


def nonfinite(*arrays: Any) -> bool:
    """True when a float array among ``arrays`` holds NaN or infinity."""
    return any(np.asarray(a).dtype.kind in "fc" and not np.isfinite(a).all() for a in arrays)


def file_sha256(path: str | Path) -> str:
    """sha256 of the whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sample_sha256(path: str | Path) -> str:
    """sha256 of the first :data:`HEAD_BYTES`, :data:`SAMPLES` evenly spaced blocks and the last block."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(HEAD_BYTES))
        span = max(size - BLOCK_BYTES, 0)
        for j in range(SAMPLES + 1):
            fh.seek(span * j // SAMPLES)
            h.update(fh.read(BLOCK_BYTES))
    return h.hexdigest()


def fingerprint(path: str | Path) -> dict:
    """What is recorded of a cached file when it is written: size, sampled and full sha256."""
    return {"size": os.path.getsize(path), "sample_sha256": sample_sha256(path), "sha256": file_sha256(path)}


def manifest(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """:func:`fingerprint` of every file in ``folder`` (recursively) but ``skip``, by relative path."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): fingerprint(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() not in skip}


def check_file(path: str | Path, record: dict, full: bool) -> str | None:
    """Why ``path`` does not match ``record`` (``None`` when it does): size and samples, or the whole file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size != record["size"]:
            return f"size {size} bytes, {record['size']} when it was written (truncated or changed)"
        if sample_sha256(path) != record["sample_sha256"]:
            return "content differs from its checksum (header or sampled blocks)"
        if full and file_sha256(path) != record["sha256"]:
            return "content differs from its checksum (whole-file sha256)"
    except (OSError, KeyError, TypeError) as err:
        return f"unreadable ({type(err).__name__})"
    return None


def check_manifest(folder: str | Path, recorded: Any, full: bool) -> tuple[Path, str] | None:
    """The first file of ``folder`` that does not match the ``recorded`` :func:`manifest`, and why."""
    folder = Path(folder)
    if not isinstance(recorded, dict) or not recorded:
        return folder, "no recorded checksums (written by an older psm-bayes)"
    for name, record in recorded.items():
        why = check_file(folder / name, record, full) if (folder / name).is_file() else "missing"
        if why is not None:
            return folder / name, why
    return None

"""Prompt building and cached next-token scoring shared by every measuring stage.

All prompts go through the model's prompt format (``loaded.format``,
:mod:`psm_bayes.llm.formats`): plain ``Question:/Answer:`` text for base
models, the tokenizer's chat template for instruct models (the Assistant turn
answers).  Scores are ``log p(option)`` of the two single-token options
(Yes, No) from one forward pass (:class:`~psm_bayes.llm.nexttoken.NextTokenScorer`),
cached per group of prompts in an :class:`ArrayCache` (``.npz`` files keyed by
a hash of the model and the exact prompts, each carrying the checksum of its
content, verified on every read), so an interrupted run resumes and a damaged
entry is recomputed.  :func:`read_table_cache` / :func:`write_table_cache`
do the same for the persona tables (NetCDF).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from psm_bayes.integrity import array_digest, nonfinite, reject
from psm_bayes.probes import OPTIONS, ProbeSet


def own_folder(directory: str | Path) -> Path:
    """Create cache folder ``directory``; one it creates (or finds empty) is marked as psm-bayes's own.

    In a folder psm-bayes made, a damaged entry may be replaced (:func:`psm_bayes.io.written_by_library`).
    """
    from psm_bayes.io import mark_dir

    directory = Path(directory)
    fresh = not directory.is_dir() or not any(directory.iterdir())
    directory.mkdir(parents=True, exist_ok=True)
    return mark_dir(directory, "cache") if fresh else directory


class ArrayCache:
    """Directory of ``<key>.npz`` entries, each verified on every read; ``None`` directory = no caching.

    An entry holds the array and its record (``meta``: the key and producer it
    was made for, the sha256 of its content, shape and dtype), written
    together atomically.  :meth:`get` returns ``None`` -- after one log line
    naming the file (:func:`psm_bayes.integrity.reject`) -- for an entry that
    is unreadable (e.g. truncated), was made for another key, does not match
    its checksum or holds non-finite values, so the caller recomputes it.
    """

    SUFFIX = ".npz"

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else own_folder(directory)

    @staticmethod
    def key(*parts: Any) -> str:
        """A 32-hex-digit hash of ``parts`` (their ``repr``)."""
        h = hashlib.sha256()
        for p in parts:
            h.update(repr(p).encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:32]

    def path(self, key: str) -> Path:
        """The file of entry ``key``."""
        if self.directory is None:
            raise ValueError("cache: no directory (caching is off)")
        return self.directory / f"{key}{self.SUFFIX}"

    def get(self, key: str) -> np.ndarray | None:
        """The verified array of ``key``, or ``None`` (missing, or failed verification: logged)."""
        if self.directory is None or not self.path(key).is_file():
            return None
        value, why = _read_entry(self.path(key), key)
        if why is not None:
            reject(self.path(key), why)
        return value

    def put(self, key: str, value: np.ndarray, producer: str = "") -> None:
        """Store ``value`` under ``key`` with its checksum (atomic); non-finite values are not stored."""
        if self.directory is None:
            return
        from psm_bayes.io import MARKER, OutputError, atomic_path

        value = np.asarray(value)
        if nonfinite(value):
            reject(self.path(key), "the value to store holds non-finite numbers", "not storing it")
            return
        meta = {MARKER: "array-cache", "key": key, "producer": producer, "sha256": array_digest(value),
                "shape": list(value.shape), "dtype": value.dtype.str}
        try:
            with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, value=value, meta=np.array(json.dumps(meta)))
        except OutputError as err:  # a damaged entry in a folder psm-bayes did not make: leave it
            reject(self.path(key), f"cannot be replaced ({err})", "using the recomputed value without storing it")


def _read_entry(path: Path, key: str) -> tuple[np.ndarray | None, str | None]:
    """``(value, None)`` for a sound entry, else ``(None, why)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            value = z["value"]
    except Exception as err:  # noqa: BLE001 - truncated, not a zip, not ours: all mean "recompute"
        return None, f"unreadable ({type(err).__name__})"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None, "made for another key"
    if list(value.shape) != meta.get("shape") or value.dtype.str != meta.get("dtype"):
        return None, f"shape {value.shape} / dtype {value.dtype.str} differ from its record"
    if array_digest(value) != meta.get("sha256"):
        return None, "content does not match its checksum"
    if nonfinite(value):
        return None, "holds non-finite values"
    return value, None


TABLE_VARS: tuple[str, ...] = ("loglik", "neutral_loglik")
"""Variables of a persona table covered by its checksum."""


def read_table_cache(path: str | Path, fingerprint: str) -> Any:
    """The persona table cached at ``path`` for ``fingerprint``, or ``None`` (missing, or rejected: logged).

    The table must carry ``fingerprint`` (what produced it: model, contexts,
    items) and the ``content_sha256`` of its :data:`TABLE_VARS` written with it
    (:func:`write_table_cache`), and hold finite values.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        return None
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
        values = [ds[v].values for v in TABLE_VARS]
    except Exception as err:  # noqa: BLE001 - truncated or foreign file: recompute
        reject(path, f"unreadable ({type(err).__name__})")
        return None
    if ds.attrs.get("fingerprint") != fingerprint:
        reject(path, "made for another model, persona contexts or items")
    elif "content_sha256" not in ds.attrs:
        reject(path, "no checksum (written by an older psm-bayes)")
    elif array_digest(*values) != ds.attrs["content_sha256"]:
        reject(path, "content does not match its checksum")
    elif nonfinite(*values):
        reject(path, "holds non-finite values")
    else:
        return ds
    return None


def write_table_cache(ds: Any, path: str | Path) -> Any:
    """Add the checksum attributes to ``ds`` and write it to ``path`` (atomic); returns ``ds``."""
    from psm_bayes.io import MARKER, OutputError, atomic_path

    ds.attrs.update({MARKER: "persona-table",
                     "content_sha256": array_digest(*[ds[v].values for v in TABLE_VARS])})
    own_folder(Path(path).parent)
    try:
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")
    except OutputError as err:
        reject(path, f"cannot be replaced ({err})", "using the recomputed table without storing it")
    return ds


def option_scorer(loaded: Any, *, model: Any = None, autocast: bool = False, batch_size: int = 16) -> Any:
    """A :class:`~psm_bayes.llm.nexttoken.NextTokenScorer` of Yes/No in ``loaded``'s prompt format.

    ``model`` replaces ``loaded.model`` (e.g. a LoRA-adapted copy).
    """
    from psm_bayes.llm.nexttoken import NextTokenScorer

    fmt = loaded.format
    return NextTokenScorer(loaded.model if model is None else model, loaded.tokenizer,
                           tuple(fmt.option(o) for o in OPTIONS), batch_size=batch_size, autocast=autocast,
                           sample_prompt=fmt.item_text("Hello?"))


def fewshot(fmt: Any, probes: ProbeSet, items: Sequence[int], answers: Sequence[int]) -> str:
    """The few-shot context of ``items`` answered with option indices ``answers``."""
    return fmt.fewshot_context([(probes.items.prompts[i], OPTIONS[int(a)]) for i, a in zip(items, answers)])


def prompts_for(fmt: Any, context: str, probes: ProbeSet, items: Sequence[int]) -> list[str]:
    """``context + item_text(item)`` for every item."""
    return [context + fmt.item_text(probes.items.prompts[i]) for i in items]


def matching_logodds(logp: np.ndarray, matching: np.ndarray) -> np.ndarray:
    """Log-odds of the matching option from ``(row, 2)`` Yes/No log-probabilities."""
    rows = np.arange(logp.shape[0])
    m = np.asarray(matching, dtype=int)
    return logp[rows, m] - logp[rows, 1 - m]


def score_cached(scorer: Any, cache: ArrayCache, tag: str, model_key: str, texts: list[str]) -> np.ndarray:
    """``(len(texts), 2)`` Yes/No log-probabilities, from ``cache`` when the same prompts were scored."""
    key = cache.key(tag, model_key, texts)
    lp = cache.get(key)
    if lp is None or lp.shape != (len(texts), 2):
        lp = scorer.score(texts)
        cache.put(key, lp, producer=f"{tag} {model_key}")
    return lp

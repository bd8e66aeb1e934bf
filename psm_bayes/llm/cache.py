"""Crash-safe, resumable Parquet cache of continuation scores.

A cache is a directory of immutable part files ``part-<time>-<pid>-<n>.parquet``.
Each part is written to a hidden temporary name (``.tmp-...``), flushed to
disk and then moved into place with :func:`os.replace`, so a reader never sees
a partial part: an interrupted (even ``SIGKILL``-ed) run leaves only complete
parts plus, at worst, a stray temporary file that readers ignore and
:meth:`ScoreCache.clean` removes.  Each part carries, in its Parquet
metadata, the sha256 of its rows and the model keys that produced them; a
part that is unreadable, does not match its checksum or holds non-finite
scores is logged in one line naming it and skipped, so its rows are scored
again.  Reading concatenates all parts and keeps the
last row for each key, so re-scoring a row is harmless.

Rows are keyed by :data:`KEY_COLUMNS`:

* ``model`` -- :attr:`psm_bayes.llm.loading.LoadedModel.key`
  (``model_id@weights-hash/dtype``);
* ``persona`` -- persona id (``"<neutral>"`` for the neutral context);
* ``item`` -- item id;
* ``option`` -- the option text;
* ``context_hash`` -- hash of the full conditioning text (persona context +
  formatted item), so editing a prompt or a description never reuses stale
  scores.

and carry ``logp``, the per-token ``token_logps`` and ``token_ids`` (list
columns) and ``n_context_tokens``.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from psm_bayes.integrity import array_digest, nonfinite, reject
from psm_bayes.io import atomic_write, clean_stray, pid_alive

KEY_COLUMNS: tuple[str, ...] = ("model", "persona", "item", "option", "context_hash")
"""Columns that identify a cached score."""

VALUE_COLUMNS: tuple[str, ...] = ("logp", "token_logps", "token_ids", "n_context_tokens")
"""Columns holding the score."""

_SUM, _BY = b"psm_bayes_sha256", b"psm_bayes_producer"   # part metadata: checksum of the rows, model keys
_PART_GLOB = "part-*.parquet"
_TMP_PREFIX = ".tmp-"
_counter = itertools.count()


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("model", pa.string()), ("persona", pa.string()), ("item", pa.string()), ("option", pa.string()),
        ("context_hash", pa.string()), ("logp", pa.float64()), ("token_logps", pa.list_(pa.float64())),
        ("token_ids", pa.list_(pa.int64())), ("n_context_tokens", pa.int64()),
    ])


def _digest(df: Any) -> str:
    """sha256 of a part's rows: every key column's text, then every value column's numbers."""
    h = hashlib.sha256()
    for c in KEY_COLUMNS:
        h.update("\0".join(map(str, df[c])).encode("utf-8") + b"\1")
    numbers = np.asarray(df["logp"], dtype=np.float64), np.asarray(df["n_context_tokens"], dtype=np.int64)
    h.update(array_digest(*numbers).encode())
    for c, dtype in (("token_logps", np.float64), ("token_ids", np.int64)):
        lists = [np.asarray(x, dtype=dtype) for x in df[c]]
        h.update(array_digest(np.array([len(x) for x in lists]), *lists).encode())
    return h.hexdigest()


def _verified_part(part: Path) -> Any:
    """The rows of ``part`` when they match the checksum written with them, else ``None`` (logged: rescored)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(part, schema=_schema())
        recorded = (pq.read_schema(part).metadata or {}).get(_SUM, b"").decode()
        df = table.to_pandas()
    except Exception as err:  # noqa: BLE001 - truncated or foreign file: its rows are scored again
        reject(part, f"unreadable ({type(err).__name__})", "scoring its rows again")
        return None
    if not recorded:
        reject(part, "no checksum (written by an older psm-bayes)", "scoring its rows again")
    elif _digest(df) != recorded:
        reject(part, "content does not match its checksum", "scoring its rows again")
    elif nonfinite(np.asarray(df["logp"], dtype=float)):
        reject(part, "holds non-finite scores", "scoring its rows again")
    else:
        return df
    return None


def score_rows(model_key: str, keys: Sequence[tuple[str, str, str, str]], scores: Sequence[Any]) -> Any:
    """Build a cache table from ``(persona, item, option, context_hash)`` keys and PairScores.

    Parameters
    ----------
    model_key : str
        :attr:`LoadedModel.key`.
    keys : sequence of (str, str, str, str)
        ``(persona, item, option, context_hash)`` per score.
    scores : sequence of PairScore

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    if len(keys) != len(scores):
        raise ValueError(f"scores: expected {len(keys)} scores (one per key), got {len(scores)}")
    return pd.DataFrame({
        "model": [model_key] * len(keys),
        "persona": [k[0] for k in keys],
        "item": [k[1] for k in keys],
        "option": [k[2] for k in keys],
        "context_hash": [k[3] for k in keys],
        "logp": [float(s.logp) for s in scores],
        "token_logps": [list(map(float, s.token_logps)) for s in scores],
        "token_ids": [list(map(int, s.token_ids)) for s in scores],
        "n_context_tokens": [int(s.n_context_tokens) for s in scores],
    })


class ScoreCache:
    """A directory of Parquet part files holding continuation scores.

    Parameters
    ----------
    directory : str or path
        Created if missing.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser()
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"cache: {str(self.directory)!r} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ScoreCache({str(self.directory)!r}, parts={len(self.parts())})"

    def parts(self) -> list[Path]:
        """Complete part files, oldest first."""
        return sorted(self.directory.glob(_PART_GLOB))

    def append(self, rows: Any) -> Path | None:
        """Atomically add a part holding ``rows`` (a DataFrame with all columns).

        Returns
        -------
        pathlib.Path or None
            The new part, or ``None`` when ``rows`` is empty.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        missing = [c for c in KEY_COLUMNS + VALUE_COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"rows: missing column(s) {missing}")
        if len(rows) == 0:
            return None
        rows = rows[list(KEY_COLUMNS + VALUE_COLUMNS)].reset_index(drop=True)
        if nonfinite(np.asarray(rows["logp"], dtype=float)):
            raise ValueError("rows.logp: expected finite log-probabilities")
        table = pa.Table.from_pandas(rows, schema=_schema(), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _SUM: _digest(rows).encode(),
                                               _BY: ",".join(sorted(set(rows["model"]))).encode()})
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.parquet"
        final = self.directory / name
        return atomic_write(final, lambda tmp: pq.write_table(table, tmp))

    def read(self, model: str | None = None) -> Any:
        """All cached rows (optionally of one model key), de-duplicated by key.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`KEY_COLUMNS` + :data:`VALUE_COLUMNS`; for duplicate
            keys the row from the newest part wins.  Parts that fail verification
        are left out (logged), so their rows count as not yet scored.
        """
        import pandas as pd

        frames = []
        for part in self.parts():
            df = _verified_part(part)
            if df is not None and len(df):
                frames.append(df if model is None else df[df["model"] == model])
        if not frames:
            return _schema().empty_table().to_pandas()
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates(subset=list(KEY_COLUMNS), keep="last").reset_index(drop=True)

    def lookup(self, model: str) -> dict[tuple[str, str, str, str], tuple[float, int]]:
        """``(persona, item, option, context_hash) -> (logp, n_tokens)`` for one model key."""
        df = self.read(model)
        ntok = [len(x) for x in df["token_ids"]]
        return {(p, i, o, h): (float(lp), n) for p, i, o, h, lp, n in
                zip(df["persona"], df["item"], df["option"], df["context_hash"], df["logp"], ntok)}

    def clean(self) -> int:
        """Remove temporary files left by dead writers; returns how many were removed."""
        removed = len(clean_stray(self.directory, folder=True))
        for tmp in self.directory.glob(f"{_TMP_PREFIX}*.tmp"):
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                pid = -1
            if pid > 0 and pid_alive(pid):  # still being written
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def compact(self) -> Path | None:
        """Merge all parts into one (new part first, then old ones removed)."""
        old = self.parts()
        if len(old) <= 1:
            return old[0] if old else None
        new = self.append(self.read())
        for part in old:
            part.unlink(missing_ok=True)
        return new


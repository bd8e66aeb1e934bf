"""Crash-safe, resumable Parquet cache of continuation scores.

A cache is a directory of immutable part files ``part-<time>-<pid>-<n>.parquet``.
Each part is written to a hidden temporary name (``.tmp-...``), flushed to
disk and then moved into place with :func:`os.replace`, so a reader never sees
a partial part: an interrupted (even ``SIGKILL``-ed) run leaves only complete
parts plus, at worst, a stray temporary file that readers ignore and
:meth:`ScoreCache.clean` removes.  Reading concatenates all parts and keeps the
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

import itertools
import os
import time
from pathlib import Path
from typing import Any, Sequence

from psm_bayes.io import atomic_write, clean_stray, pid_alive

KEY_COLUMNS: tuple[str, ...] = ("model", "persona", "item", "option", "context_hash")
"""Columns that identify a cached score."""

VALUE_COLUMNS: tuple[str, ...] = ("logp", "token_logps", "token_ids", "n_context_tokens")
"""Columns holding the score."""

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
        table = pa.Table.from_pandas(rows[list(KEY_COLUMNS + VALUE_COLUMNS)], schema=_schema(),
                                     preserve_index=False)
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}.parquet"
        final = self.directory / name
        return atomic_write(final, lambda tmp: pq.write_table(table, tmp))

    def read(self, model: str | None = None) -> Any:
        """All cached rows (optionally of one model key), de-duplicated by key.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`KEY_COLUMNS` + :data:`VALUE_COLUMNS`; for duplicate
            keys the row from the newest part wins.
        """
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for part in self.parts():
            filters = [("model", "==", model)] if model is not None else None
            t = pq.read_table(part, filters=filters, schema=_schema())
            if t.num_rows:
                tables.append(t)
        if not tables:
            return _schema().empty_table().to_pandas()
        df = pa.concat_tables(tables).to_pandas()
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


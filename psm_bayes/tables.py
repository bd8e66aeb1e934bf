"""Tables read against a declared schema (no silently ignored or misspelled columns).

A :class:`TableSchema` lists every column a table may have, its kind and
which are required. :func:`read_table` refuses unknown columns (naming the
column and the expected ones), missing required columns, empty tables,
missing values and non-integer counts, with a :class:`~psm_bayes.data.DataError`
that names the file, the column and the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from psm_bayes.data import DataError, Episodes

KINDS = ("str", "int", "count")
"""Column kinds: text, integer >= 0, integer >= 1."""


@dataclass(frozen=True)
class TableSchema:
    """Columns a table may hold.

    Parameters
    ----------
    name : str
        What the rows are (used in messages), e.g. ``"episodes"``.
    columns : mapping of str to str
        Column name -> kind (one of :data:`KINDS`), in the documented order.
    required : tuple of str
        Columns that must be present.
    """

    name: str
    columns: Mapping[str, str]
    required: tuple[str, ...]

    def __post_init__(self) -> None:
        for col, kind in self.columns.items():
            if kind not in KINDS:
                raise ValueError(f"columns[{col!r}]: unknown kind {kind!r}; expected one of {KINDS}")
        missing = [c for c in self.required if c not in self.columns]
        if missing:
            raise ValueError(f"required: {missing} are not columns of the schema")

    def describe(self) -> str:
        """``item, option[, source, count]``-style list of the columns."""
        req = [c for c in self.columns if c in self.required]
        opt = [c for c in self.columns if c not in self.required]
        return ", ".join(req) + (f"[, {', '.join(opt)}]" if opt else "")


EPISODES_SCHEMA = TableSchema("episodes", {"item": "str", "option": "int", "source": "str", "count": "count"},
                              required=("item", "option"))
"""Episodes table: item id, chosen option index, source (``sft``/``icl``, default sft), count (default 1)."""


def _read(path: Path, flag: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DataError(f"{flag}: {str(path)!r} has extension {suffix or '(none)'!r}; expected .parquet or .csv")
    if not path.exists():
        raise FileNotFoundError(f"{flag}: table {str(path)!r} does not exist")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:
        raise DataError(f"{flag}: {str(path)!r} is not a readable {suffix} table "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})") from err


def _integers(values: pd.Series, where: str, minimum: int) -> np.ndarray:
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() | ~np.isfinite(num.astype(float)) | (num.astype(float) != np.round(num.astype(float)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{where} row {row + 1}: expected an integer, got {values.iloc[row]!r}")
    out = num.astype(float).astype(np.int64).to_numpy()
    if (out < minimum).any():
        row = int(np.flatnonzero(out < minimum)[0])
        raise DataError(f"{where} row {row + 1}: expected an integer >= {minimum}, got {out[row]}")
    return out


def read_table(path: str | Path, schema: TableSchema | None = None, *, flag: str = "table") -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv`` table, checked against ``schema`` when given.

    Returns
    -------
    pandas.DataFrame
        With ``schema``: only its columns, ``str`` columns as text and
        ``int``/``count`` columns as int64.
    """
    path = Path(path)
    df = _read(path, flag)
    if schema is None:
        return df
    where = f"{flag}: {str(path)!r}"
    expected = f"expected columns {schema.describe()}"
    for col in df.columns:
        if col not in schema.columns:
            raise DataError(f"{where}: unknown column {str(col)!r}; {expected}")
    for col in schema.required:
        if col not in df.columns:
            raise DataError(f"{where}: missing column {col!r}; {expected}")
    if len(df) == 0:
        raise DataError(f"{where}: no rows; expected at least one {schema.name} row")
    out = {}
    for col in (c for c in schema.columns if c in df.columns):
        values = df[col]
        kind = schema.columns[col]
        if kind == "str":
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise DataError(f"{where}: column {col!r} row {row + 1}: missing value")
            out[col] = values.astype(str).to_numpy(dtype=object)
        else:
            out[col] = _integers(values, f"{where}: column {col!r}", 1 if kind == "count" else 0)
    return pd.DataFrame(out)


def episodes_from_table(df: pd.DataFrame) -> Episodes:
    """:class:`~psm_bayes.data.Episodes` from a table read with :data:`EPISODES_SCHEMA`."""
    return Episodes(
        item=df["item"].to_numpy(dtype=object),
        option=df["option"].to_numpy(),
        source=df["source"].to_numpy(dtype=object) if "source" in df.columns else None,
        count=df["count"].to_numpy(dtype=float) if "count" in df.columns else None,
    )

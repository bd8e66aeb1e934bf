"""File input/output with atomic writes.

Every writer goes through :func:`atomic_path`: the file is written under a
temporary name in the destination folder and renamed into place only when
complete, so an interrupted run never leaves a half-written result.

Formats: DataTrees and :class:`~psm_bayes.data.PSMData` as NetCDF (``.nc``)
or Zarr (``.zarr``); tables as Parquet (``.parquet``) or CSV (``.csv``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from psm_bayes.data import DataError, PSMData


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception the temporary file (or folder) is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(f"{what} path {str(path)!r}: expected one of {allowed} as extension")
    return suffix


def _save_xarray(obj, path: str | Path, what: str) -> Path:
    """Write an xarray Dataset or DataTree to ``.nc`` (h5netcdf) or ``.zarr``, atomically."""
    path = Path(path)
    suffix = _suffix(path, (".nc", ".zarr"), what)
    with atomic_path(path) as tmp:
        if suffix == ".nc":
            obj.to_netcdf(tmp, engine="h5netcdf")
        else:
            obj.to_zarr(tmp)
    return path


def save_datatree(dt, path: str | Path) -> Path:
    """Write a DataTree to ``.nc`` (h5netcdf) or ``.zarr``, atomically."""
    return _save_xarray(dt, path, "DataTree")


def load_datatree(path: str | Path):
    """Read a DataTree written by :func:`save_datatree`."""
    import xarray as xr

    path = Path(path)
    suffix = _suffix(path, (".nc", ".zarr"), "DataTree")
    if not path.exists():
        raise FileNotFoundError(f"DataTree file {str(path)!r} does not exist")
    if suffix == ".nc":
        return xr.open_datatree(path, engine="h5netcdf").load()
    return xr.open_datatree(path, engine="zarr").load()


def save_data(data: PSMData, path: str | Path) -> Path:
    """Write :class:`PSMData` to ``.nc`` or ``.zarr``, atomically."""
    return _save_xarray(data.to_dataset(), path, "data")


def load_data(path: str | Path) -> PSMData:
    """Read :class:`PSMData` written by :func:`save_data` (validated on load)."""
    import xarray as xr

    path = Path(path)
    suffix = _suffix(path, (".nc", ".zarr"), "data")
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    engine = "h5netcdf" if suffix == ".nc" else "zarr"
    with xr.open_dataset(path, engine=engine) as ds:
        if ds.attrs.get("psm_bayes_data") != "PSMData":
            raise DataError(f"{path}: not a psm-bayes data file (written by PSMData.to_dataset)")
        return PSMData.from_dataset(ds.load())


def save_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table to ``.parquet`` or ``.csv``, atomically."""
    path = Path(path)
    suffix = _suffix(path, (".parquet", ".csv"), "table")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp)
        else:
            df.to_csv(tmp, index=True)
    return path


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv`` table."""
    path = Path(path)
    suffix = _suffix(path, (".parquet", ".csv"), "table")
    if not path.exists():
        raise FileNotFoundError(f"table {str(path)!r} does not exist")
    return pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)


def episodes_table(data: PSMData) -> pd.DataFrame:
    """The episodes of ``data`` as a table (item, option, source, count)."""
    ep = data.episodes
    df = pd.DataFrame({"item": ep.item.astype(str), "source": ep.source.astype(str), "count": ep.count})
    if ep.option is not None:
        df.insert(1, "option", ep.option)
    return df

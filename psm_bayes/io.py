"""File input/output: the one atomic writer, format markers and schema-checked tables.

Every file psm-bayes writes goes through :func:`atomic_write` (or its
context-manager form :func:`atomic_path`):

* the content is written under a temporary name in the destination folder
  (``.<name>.psm-tmp-<pid>-<random>``), flushed to disk (``fsync``) and
  renamed into place, so a reader -- or a run killed at any instant -- sees
  the old file or the new one, never a partial one;
* stray temporary files of the same target left by a killed process are
  removed on the next write to that target;
* an existing target is never replaced unless the caller asks
  (``overwrite=True``) **and** the target was written by psm-bayes: it carries
  the library's format marker (attribute ``psm_bayes_format`` in NetCDF/Zarr,
  schema metadata in Parquet, a ``psm_bayes_format`` key in JSON), or it lies
  in an output folder psm-bayes created (marker file :data:`DIR_MARKER`).

Formats: DataTrees and data sets as NetCDF (``.nc``) or Zarr (``.zarr``);
tables as Parquet (``.parquet``) or CSV (``.csv``); strict JSON (NaN -> null).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from psm_bayes.data import DataError, PSMData
from psm_bayes.tables import EPISODES_SCHEMA, TableSchema, episodes_from_table, read_table

MARKER = "psm_bayes_format"
"""Attribute / metadata key that marks a file written by psm-bayes."""

DIR_MARKER = ".psm-bayes"
"""Marker file inside an output folder created by psm-bayes."""

XARRAY_SUFFIXES = (".nc", ".zarr")
TABLE_SUFFIXES = (".parquet", ".csv")
_TMP = ".psm-tmp-"
_OLD = ".psm-old-"


class OutputError(ValueError):
    """An output path that must not (or cannot) be written; the message names the path."""


# ------------------------------------------------------------------ ownership
def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _stray(directory: Path, prefix: str) -> list[tuple[Path, Path]]:
    """``(temporary, its target)`` for temporaries named ``.<prefix>*`` of dead writers in ``directory``."""
    found = []
    for kind in (_OLD, _TMP):
        for p in directory.glob(f".{prefix}*{kind}*"):
            target_name, _, rest = p.name[1:].rpartition(kind)
            try:
                pid = int(rest.split("-")[0])
            except ValueError:
                continue
            if not pid_alive(pid):
                found.append((p, directory / target_name))
    return found


def clean_stray(path: str | Path, *, folder: bool = False) -> list[Path]:
    """Remove temporary files left by killed writers; return what was removed.

    With ``folder=False``, those of target ``path``; with ``folder=True``,
    those of every target in folder ``path`` (for stores of many uniquely
    named files, such as caches). A temporary name carries its writer's
    process id; only those of processes that no longer run are touched. A Zarr
    folder set aside by a writer killed between its two renames is restored
    when its target is missing.
    """
    path = Path(path)
    directory, prefix = (path, "") if folder else (path.parent, path.name)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for tmp, target in _stray(directory, prefix):
        if folder or target == path:
            if _OLD in tmp.name and not target.exists():
                os.replace(tmp, target)
                continue
            _remove(tmp)
            removed.append(tmp)
    return removed


def _marked_dir(path: Path) -> bool:
    return any((d / DIR_MARKER).is_file() for d in path.absolute().parents)


def has_marker(path: str | Path) -> bool:
    """True when ``path`` carries psm-bayes's own format marker (see module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in XARRAY_SUFFIXES:
            import xarray as xr

            engine = "h5netcdf" if suffix == ".nc" else "zarr"
            with xr.open_dataset(path, engine=engine) as ds:
                return MARKER in ds.attrs or "psm_bayes_data" in ds.attrs
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return MARKER.encode() in (pq.read_schema(path).metadata or {})
        if suffix == ".json":
            obj = json.loads(path.read_text())
            return isinstance(obj, dict) and MARKER in obj
    except Exception:  # unreadable or another format: not ours
        return False
    return False


def written_by_library(path: str | Path) -> bool:
    """True when ``path`` may be replaced with ``overwrite=True``: marked file or inside a marked folder."""
    path = Path(path)
    return has_marker(path) or _marked_dir(path)


def mark_dir(path: str | Path, command: str) -> Path:
    """Create folder ``path`` if needed and mark it as a psm-bayes output folder of ``command``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / DIR_MARKER
    if not marker.exists():
        marker.write_text(json.dumps({MARKER: "output-folder", "command": command}) + "\n")
    return path


def prepare_output_dir(path: str | Path, *, command: str, flag: str = "--out", overwrite: bool = False,
                       resume: bool = False) -> Path:
    """Check (before any work) that ``path`` may receive ``command``'s output folder, then mark it.

    A missing or empty folder is taken. A folder psm-bayes created is reused
    when ``resume`` (commands that continue where they stopped) or
    ``overwrite`` (only the files the command writes are replaced; others are
    kept). Any other existing path is refused with :class:`OutputError`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag}: {str(path)!r} is a file; expected a folder (new, empty or made by psm-bayes)")
    if path.is_dir() and any(path.iterdir()):
        if not (path / DIR_MARKER).is_file():
            raise OutputError(f"{flag}: folder {str(path)!r} exists and was not created by psm-bayes; "
                              "choose a new or empty folder")
        if not (resume or overwrite):
            raise OutputError(f"{flag}: folder {str(path)!r} already holds psm-bayes output; pass --overwrite "
                              "to replace the files this command writes (other files are kept)")
    check_writable(path / DIR_MARKER if path.is_dir() else path, flag)  # an existing folder: inside it
    return mark_dir(path, command)


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """``OutputError`` unless the nearest existing folder above ``path`` is a writable folder."""
    path = Path(path).absolute()
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    try:  # really create (and remove) a file: permission bits alone miss read-only mounts, /proc, ...
        if not parent.is_dir():
            raise NotADirectoryError(str(parent))
        probe = parent / f".psm-probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{flag}: cannot write {str(path)!r}: {str(parent)!r} is not a writable folder "
                          f"({type(err).__name__})") from err


def check_output(path: str | Path, suffixes: tuple[str, ...], *, flag: str = "--out", overwrite: bool = False,
                 inputs: tuple[str | Path, ...] = ()) -> Path:
    """Validate an output file path before any work: extension, writable folder, no clobbering.

    Raises :class:`OutputError` naming ``flag`` when the extension is not one
    of ``suffixes``, the folder is not writable, the path is one of
    ``inputs``, or it exists and may not be replaced (no ``overwrite``, or not
    written by psm-bayes).
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{flag}: {str(path)!r} has extension {path.suffix or '(none)'!r}; "
                          f"expected one of {', '.join(suffixes)}")
    for other in inputs:
        if Path(other).exists() and path.exists() and os.path.samefile(path, other):
            raise OutputError(f"{flag}: {str(path)!r} is also an input; choose another output path")
    check_writable(path, flag)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"{flag}: {str(path)!r} already exists; pass --overwrite to replace it")
        if not written_by_library(path):
            raise OutputError(f"{flag}: {str(path)!r} exists and was not written by psm-bayes; "
                              "refusing to replace it even with --overwrite")
    return path


# ------------------------------------------------------------------ the writer
def _fsync_tree(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*")] + [path]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputError(f"{str(path)!r} already exists; refusing to replace it (overwrite=False)")
        if not written_by_library(path):
            raise OutputError(f"{str(path)!r} was not written by psm-bayes; refusing to replace it")


def _begin(path: Path, overwrite: bool) -> Path:
    """Create the parent, clean strays, check the target; return a fresh temporary path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stray(path)
    _check_target(path, overwrite)
    return path.parent / f".{path.name}{_TMP}{os.getpid()}-{secrets.token_hex(4)}"


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """fsync ``tmp`` and rename it to ``path`` (re-checked: it may have appeared meanwhile)."""
    _fsync_tree(tmp)
    _check_target(path, overwrite)
    if path.is_dir() and not path.is_symlink():  # a Zarr store: set the old one aside, then swap
        old = path.parent / f".{path.name}{_OLD}{tmp.name.rsplit(_TMP, 1)[1]}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    elif not overwrite and tmp.is_file():  # no clobbering even by a writer that appeared since the check
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError(f"{str(path)!r} appeared while it was being written; refusing to replace it") from None
        except OSError:  # no hard links on this file system
            os.replace(tmp, path)
        else:
            tmp.unlink()
    else:
        os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, writer: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Write ``path`` atomically with ``writer(tmp_path)``; the single writer of psm-bayes.

    Parameters
    ----------
    path : path
        Target file (or Zarr folder). Missing parent folders are created.
    writer : callable
        Writes the complete content to the temporary path it is given (a file
        or a folder); any exception leaves ``path`` untouched.
    overwrite : bool
        Replace an existing ``path``; allowed only when it was written by
        psm-bayes (:func:`written_by_library`), else :class:`OutputError`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(tmp)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Context-manager form of :func:`atomic_write`: yield the temporary path, rename it on success.

    ``overwrite`` defaults to True here (the library rewriting its own files,
    e.g. a report in a resumed output folder); the ownership check of
    :func:`atomic_write` still applies. On an exception the temporary file (or folder) is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    tmp = _begin(path, overwrite)
    try:
        yield tmp
        _commit(tmp, path, overwrite)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


# ------------------------------------------------------------------ formats
def _suffix(path: Path, allowed: tuple[str, ...], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise OutputError(f"{what} path {str(path)!r}: expected one of {allowed} as extension")
    return suffix


def save_xarray(obj: Any, path: str | Path, *, kind: str, overwrite: bool = False) -> Path:
    """Write an xarray Dataset or DataTree to ``.nc`` (h5netcdf) or ``.zarr`` with the format marker ``kind``."""
    path = Path(path)
    suffix = _suffix(path, XARRAY_SUFFIXES, kind)
    obj = obj.copy()
    obj.attrs[MARKER] = kind

    def writer(tmp: Path) -> None:
        if suffix == ".nc":
            obj.to_netcdf(tmp, engine="h5netcdf")
        else:
            obj.to_zarr(tmp)

    return atomic_write(path, writer, overwrite=overwrite)


def save_datatree(dt: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a DataTree to ``.nc`` (h5netcdf) or ``.zarr``, atomically."""
    return save_xarray(dt, path, kind="DataTree", overwrite=overwrite)


def _open(path: Path, what: str, flag: str, datatree: bool = False):
    import xarray as xr

    suffix = _suffix(path, XARRAY_SUFFIXES, what)
    if not path.exists():
        raise FileNotFoundError(f"{flag}: {what} file {str(path)!r} does not exist")
    engine = "h5netcdf" if suffix == ".nc" else "zarr"
    try:
        if datatree:
            return xr.open_datatree(path, engine=engine).load()
        with xr.open_dataset(path, engine=engine) as ds:
            return ds.load()
    except Exception as err:  # truncated, empty or foreign files
        raise DataError(f"{flag}: {str(path)!r} is not a readable {suffix} file "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})") from err


def load_datatree(path: str | Path, *, flag: str = "fit") -> Any:
    """Read a fitted DataTree; ``DataError`` naming ``flag`` when the file is not one."""
    path = Path(path)
    dt = _open(path, "DataTree", flag, datatree=True)
    if "posterior" not in dt.children:
        kind = dt.attrs.get(MARKER) or dt.attrs.get("psm_bayes_data")
        data = kind in ("PSMData", "scores") or str(kind).startswith("data:")
        hint = " (it is a data file: fit it first with `psm-bayes fit`)" if data else ""
        raise DataError(f"{flag}: {str(path)!r} has no 'posterior' group; expected a fit written by "
                        f"`psm-bayes fit`{hint}")
    return dt


def save_data(data: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a model's data object (:class:`PSMData` or any catalogued data class) to ``.nc``/``.zarr``."""
    from psm_bayes import datafile

    return save_xarray(datafile.to_dataset(data), path, kind=datafile.kind_of(type(data)), overwrite=overwrite)


def data_kind(path: str | Path, *, flag: str = "data") -> str:
    """What a data file holds: ``"scores"`` (a ``score`` table), a data-class marker, or ``""``."""
    ds = _open(Path(path), "data", flag)
    kind = ds.attrs.get(MARKER) or ds.attrs.get("psm_bayes_data") or ""
    if not kind and "loglik" in ds and "episode_item" not in ds and ds["loglik"].ndim == 3:
        return "scores"
    return str(kind)


def load_data(path: str | Path, *, cls: type = PSMData, flag: str = "data",
              episodes: "pd.DataFrame | None" = None) -> Any:
    """Read the ``cls`` data written by :func:`save_data`, or a ``score`` table plus an episodes table.

    A file written by ``psm-bayes score`` holds only ``loglik``; it becomes
    :class:`PSMData` when ``episodes`` (a table read with
    :data:`EPISODES_SCHEMA`) is given, and a ``DataError`` explaining this
    route otherwise. ``episodes`` also replaces the episodes of a PSMData file.
    """
    from psm_bayes import datafile
    from psm_bayes.data import LogLikTable, PersonaSet

    path = Path(path)
    ds = _open(path, "data", flag)
    if data_kind(path, flag=flag) == "scores":
        if cls is not PSMData:
            raise DataError(f"{flag}: {str(path)!r} is a score table; with --episodes it is data for models "
                            f"that take PSMData, not {cls.__name__}")
        if episodes is None:
            raise DataError(f"{flag}: {str(path)!r} is a score table (log-likelihoods, no episodes); add "
                            "--episodes TABLE.csv with columns item, option[, source, count] to fit it")
        table = LogLikTable(ds["loglik"].transpose("persona", "item", "option"))
        descs = ds["persona_description"].values.astype(str).tolist() if "persona_description" in ds else ()
        return PSMData(loglik=table, episodes=episodes_from_table(episodes),
                       personas=PersonaSet(table.personas, (), descs) if descs else None)
    if not (ds.attrs.get(MARKER) or ds.attrs.get("psm_bayes_data")):
        raise DataError(f"{flag}: {str(path)!r} is not a psm-bayes data file (expected one written by "
                        "`psm-bayes simulate` or `psm-bayes score`)")
    data = datafile.from_dataset(ds, cls, where=f"{flag}: {str(path)!r}")
    if episodes is not None:
        if not isinstance(data, PSMData):
            raise DataError(f"--episodes: replaces the episodes of PSMData files; {str(path)!r} holds "
                            f"{cls.__name__}")
        data = data.replace(episodes=episodes_from_table(episodes))
    return data


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def save_json(obj: Any, path: str | Path, *, kind: str | None = None, overwrite: bool = False) -> Path:
    """Write ``obj`` as strict JSON (NaN -> null), atomically; ``kind`` adds the format marker key."""
    if kind is not None:
        obj = {MARKER: kind, **obj}
    text = json.dumps(strict_json(obj), indent=1, default=_json_default, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def save_text(text: str, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def save_table(df: pd.DataFrame, path: str | Path, *, overwrite: bool = False, index: bool = True) -> Path:
    """Write a table to ``.parquet`` (with the format marker) or ``.csv``, atomically."""
    path = Path(path)
    suffix = _suffix(path, TABLE_SUFFIXES, "table")

    def writer(tmp: Path) -> None:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.Table.from_pandas(df, preserve_index=index)
            pq.write_table(t.replace_schema_metadata({**(t.schema.metadata or {}), MARKER.encode(): b"table"}),
                           tmp)
        else:
            df.to_csv(tmp, index=index)

    return atomic_write(path, writer, overwrite=overwrite)


def load_table(path: str | Path, schema: TableSchema | None = None, *, flag: str = "table") -> pd.DataFrame:
    """Read a ``.parquet`` or ``.csv`` table, checked against ``schema`` when given."""
    return read_table(path, schema, flag=flag)


def episodes_table(data: PSMData) -> pd.DataFrame:
    """The episodes of ``data`` as a table (item, option, source, count)."""
    ep = data.episodes
    df = pd.DataFrame({"item": ep.item.astype(str), "source": ep.source.astype(str), "count": ep.count})
    if ep.option is not None:
        df.insert(1, "option", ep.option)
    return df

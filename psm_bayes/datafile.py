"""Model data objects as xarray Datasets (NetCDF / Zarr), for every catalogued data class.

A data class with its own ``to_dataset`` / ``from_dataset`` (``PSMData``)
uses them. Any other frozen dataclass of numpy arrays, id tuples, scalars and
``None`` is written field by field: one variable per array or id tuple, one
attribute per scalar, and the class recorded in the format marker
(``psm_bayes_format = "data:<module>:<class>"``). Reading never imports
what a file names: the caller says which class it expects, and the data is
re-validated by that class's constructor.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import xarray as xr

from psm_bayes.data import DataError

MARKER = "psm_bayes_format"
_EMPTY = "empty_tuple__"
_SCALAR = "scalar__"


def kind_of(cls: type) -> str:
    """The format marker of data class ``cls`` (``"PSMData"`` or ``"data:<module>:<class>"``)."""
    return "PSMData" if cls.__name__ == "PSMData" else f"data:{cls.__module__}:{cls.__qualname__}"


def to_dataset(data: Any) -> xr.Dataset:
    """``data`` (a data-class instance) as a Dataset carrying its format marker."""
    if hasattr(data, "to_dataset"):
        ds = data.to_dataset()
        ds.attrs[MARKER] = kind_of(type(data))
        return ds
    if not dataclasses.is_dataclass(data):
        raise DataError(f"data: expected a data class instance, got {type(data).__name__}")
    ds = xr.Dataset()
    for f in dataclasses.fields(data):
        if not f.init:
            continue
        value = getattr(data, f.name)
        where = f"{type(data).__name__}.{f.name}"
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            raise DataError(f"{where}: nested data ({type(value).__name__}) cannot be written to a file yet")
        if isinstance(value, (str, bool, int, float, np.generic)):
            ds.attrs[_SCALAR + f.name] = json.dumps(value.item() if isinstance(value, np.generic) else value)
            continue
        if isinstance(value, (tuple, list)) and len(value) == 0:
            ds.attrs[_EMPTY + f.name] = 1
            continue
        arr = np.asarray(getattr(value, "values", value))
        if arr.dtype == object:
            arr = arr.astype(str)
        ds[f.name] = (tuple(f"{f.name}__{i}" for i in range(arr.ndim)), arr)
        ds[f.name].attrs["tuple"] = int(isinstance(value, (tuple, list)))
    ds.attrs[MARKER] = kind_of(type(data))
    return ds


def from_dataset(ds: xr.Dataset, cls: type, *, where: str = "data") -> Any:
    """The ``cls`` instance stored in ``ds`` (``DataError`` when ``ds`` holds another class)."""
    kind = ds.attrs.get(MARKER) or ds.attrs.get("psm_bayes_data")
    if kind != kind_of(cls):
        held = kind.rsplit(":", 1)[-1] if isinstance(kind, str) else "no psm-bayes data"
        raise DataError(f"{where}: holds {held}; expected {cls.__name__}")
    if hasattr(cls, "from_dataset"):
        return cls.from_dataset(ds)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in ds:
            var = ds[f.name]
            arr = var.values
            if arr.dtype.kind in "SUO":
                arr = arr.astype(str)
            kwargs[f.name] = tuple(arr.tolist()) if var.attrs.get("tuple") else arr
        elif _EMPTY + f.name in ds.attrs:
            kwargs[f.name] = ()
        elif _SCALAR + f.name in ds.attrs:
            kwargs[f.name] = json.loads(ds.attrs[_SCALAR + f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DataError(f"{where}: field {f.name!r} of {cls.__name__} is missing from the file")
    return cls(**kwargs)

"""Validated data containers for persona-selection models.

Everything that enters a model passes through one of these frozen dataclasses,
which check shapes, ids and values at construction and raise
:class:`DataError` naming the offending field.

The central object is :class:`PSMData`:

* ``loglik`` -- a :class:`LogLikTable`, ``log p(option | item, persona)`` with
  dims ``(persona, item, option)``;
* ``episodes`` -- :class:`Episodes`, observed (item, chosen option, source,
  count) rows; ``option=None`` asks a model for its prior predictive;
* ``prior_weights`` -- the pre-training prior over personas (or ``None`` to
  make it a latent with a hyperprior);
* ``bias_direction`` -- optional ``(item, option)`` array, ``+1`` on options
  that post-training favours, used by the shared ``authorial_bias`` term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import xarray as xr

from psm_bayes.validation import (DataError, as_str_tuple, check_finite, check_int_array, check_unique,
                                  fail)

SOURCES: tuple[str, ...] = ("sft", "icl")
"""Episode sources, in the order of ``Episodes.source_index``."""


@dataclass(frozen=True)
class PersonaSet:
    """Personas a model can select among.

    Parameters
    ----------
    ids : sequence of str
        Unique persona ids (become the ``persona`` coordinate).
    names : sequence of str, optional
        Human-readable names; default to the ids.
    descriptions : sequence of str, optional
        Persona descriptions (e.g. system-prompt preambles); default empty.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ids = as_str_tuple(self.ids, "personas.ids")
        if not ids:
            fail("personas.ids", "expected at least one persona")
        check_unique(ids, "personas.ids")
        names = as_str_tuple(self.names, "personas.names") or ids
        descs = as_str_tuple(self.descriptions, "personas.descriptions") or ("",) * len(ids)
        for fname, vals in (("personas.names", names), ("personas.descriptions", descs)):
            if len(vals) != len(ids):
                fail(fname, f"expected {len(ids)} entries (one per id), got {len(vals)}")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "descriptions", descs)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ItemSet:
    """Prompts with a fixed number of response options each.

    Parameters
    ----------
    ids : sequence of str
        Unique item ids (the ``item`` coordinate).
    prompts : sequence of str
        Prompt text of each item.
    options : sequence of sequence of str
        Response option texts per item; every item has the same number (>= 2).
    """

    ids: tuple[str, ...]
    prompts: tuple[str, ...]
    options: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        ids = as_str_tuple(self.ids, "items.ids")
        if not ids:
            fail("items.ids", "expected at least one item")
        check_unique(ids, "items.ids")
        prompts = as_str_tuple(self.prompts, "items.prompts")
        if len(prompts) != len(ids):
            fail("items.prompts", f"expected {len(ids)} prompts (one per id), got {len(prompts)}")
        options = tuple(as_str_tuple(o, f"items.options[{i}]") for i, o in enumerate(self.options))
        if len(options) != len(ids):
            fail("items.options", f"expected {len(ids)} option lists (one per id), got {len(options)}")
        n_opt = len(options[0])
        for i, o in enumerate(options):
            if len(o) != n_opt:
                fail(f"items.options[{i}]", f"expected {n_opt} options like item 0, got {len(o)}")
            if len(o) < 2:
                fail(f"items.options[{i}]", "expected at least 2 options")
            if len(set(o)) != len(o):
                fail(f"items.options[{i}]", f"duplicate option text in {o!r}")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "options", options)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_options(self) -> int:
        """Number of options per item."""
        return len(self.options[0])


@dataclass(frozen=True)
class LogLikTable:
    """``log p(option | item, persona)`` as an xarray DataArray.

    Parameters
    ----------
    values : xarray.DataArray
        Dims exactly ``("persona", "item", "option")`` with unique string
        ``persona`` and ``item`` coordinates; finite and <= 0 (up to 1e-6).
        Options need not be exhaustive (rows need not sum to one).
    """

    values: xr.DataArray

    def __post_init__(self) -> None:
        v = self.values
        if not isinstance(v, xr.DataArray):
            fail("loglik", f"expected an xarray.DataArray, got {type(v).__name__}")
        if tuple(v.dims) != ("persona", "item", "option"):
            fail("loglik", f"expected dims ('persona', 'item', 'option'), got {tuple(v.dims)}")
        if min(v.shape) < 1 or v.sizes["option"] < 2:
            fail("loglik", f"expected >=1 persona, >=1 item and >=2 options, got shape {dict(v.sizes)}")
        for dim in ("persona", "item"):
            if dim not in v.coords:
                fail(f"loglik.{dim}", "expected a coordinate of string ids")
            check_unique([str(c) for c in v.coords[dim].values], f"loglik.{dim}")
        if v.dtype.kind not in "biuf":
            fail("loglik", f"expected numbers (log-probabilities), got values of type {v.dtype}")
        arr = np.asarray(v.values, dtype=float)
        check_finite(arr, "loglik")
        if (arr > 1e-6).any():
            idx = tuple(int(i) for i in np.argwhere(arr > 1e-6)[0])
            fail("loglik", f"log-probabilities must be <= 0, found {arr[idx]:.4g} at index {idx}")
        coords = {
            "persona": [str(c) for c in v.coords["persona"].values],
            "item": [str(c) for c in v.coords["item"].values],
            "option": np.arange(v.sizes["option"]),
        }
        clean = xr.DataArray(np.minimum(arr, 0.0), dims=v.dims, coords=coords, name="loglik")
        object.__setattr__(self, "values", clean)

    @classmethod
    def from_array(cls, values: np.ndarray, personas: Sequence[str], items: Sequence[str]) -> "LogLikTable":
        """Build from a ``(persona, item, option)`` numpy array and id lists."""
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 3:
            fail("loglik", f"expected a 3-d array (persona, item, option), got shape {arr.shape}")
        if arr.shape[:2] != (len(personas), len(items)):
            fail("loglik", f"shape {arr.shape} does not match {len(personas)} personas x {len(items)} items")
        return cls(xr.DataArray(arr, dims=("persona", "item", "option"),
                                coords={"persona": list(personas), "item": list(items)}))

    @property
    def personas(self) -> tuple[str, ...]:
        return tuple(self.values.coords["persona"].values.tolist())

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(self.values.coords["item"].values.tolist())

    @property
    def array(self) -> np.ndarray:
        """The values as a float64 numpy array ``(persona, item, option)``."""
        return self.values.values


@dataclass(frozen=True)
class Episodes:
    """Observed episodes: which option was given to which item, from which source.

    Parameters
    ----------
    item : array of str
        Item id of each episode.
    option : array of int or None
        Chosen option index; ``None`` means unobserved (prior predictive).
    source : array of str, optional
        ``"sft"`` (post-training) or ``"icl"`` (in-context) per episode;
        default all ``"sft"``.
    count : array of int, optional
        Number of identical episodes each row stands for (a positive
        integer; rows aggregate identical episodes); default 1. Models score
        a row as ``count`` episodes, and LOO and predictive draws use one
        row per episode (:meth:`expand`).
    """

    item: np.ndarray
    option: np.ndarray | None = None
    source: np.ndarray | None = None
    count: np.ndarray | None = None

    def __post_init__(self) -> None:
        item = np.asarray(self.item)
        if item.ndim != 1:
            fail("episodes.item", f"expected a 1-d array of item ids, got shape {item.shape}")
        if item.size and not all(isinstance(x, str) for x in item.tolist()):
            fail("episodes.item", "expected string item ids")
        item = item.astype(object)
        n = item.shape[0]
        option = self.option
        if option is not None:
            option = check_int_array(option, "episodes.option", n, match="episodes.item")
        source = np.full(n, "sft", dtype=object) if self.source is None else np.asarray(self.source, dtype=object)
        if source.shape != (n,):
            fail("episodes.source", f"expected shape ({n},), got {source.shape}")
        bad = [s for s in set(source.tolist()) if s not in SOURCES]
        if bad:
            fail("episodes.source", f"unknown source(s) {sorted(map(str, bad))}; expected one of {SOURCES}")
        count = np.ones(n, dtype=np.int64) if self.count is None else check_int_array(
            self.count, "episodes.count", n, what="episode counts", match="episodes.item")
        if (count < 1).any():
            fail("episodes.count", f"expected positive integer counts (episodes per row), found {int(count.min())}")
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "option", option)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "count", count)

    def __len__(self) -> int:
        return int(self.item.shape[0])

    @property
    def source_index(self) -> np.ndarray:
        """Integer source codes (index into :data:`SOURCES`)."""
        return np.array([SOURCES.index(s) for s in self.source], dtype=np.int64)

    @property
    def is_expanded(self) -> bool:
        """Whether every row is one episode (all counts 1)."""
        return bool((self.count == 1).all())

    def expand(self) -> "Episodes":
        """One row per episode: each row repeated ``count`` times, counts 1."""
        idx = np.repeat(np.arange(len(self)), self.count)
        return Episodes(self.item[idx], None if self.option is None else self.option[idx], self.source[idx])

    def without_options(self) -> "Episodes":
        """The same episodes with the chosen options removed (for prior predictive)."""
        return Episodes(self.item, None, self.source, self.count)


@dataclass(frozen=True)
class PSMData:
    """Everything the persona-selection model conditions on.

    Parameters
    ----------
    loglik : LogLikTable
        ``log p(option | item, persona)`` from the base model.
    episodes : Episodes
        Post-training (``sft``) and in-context (``icl``) evidence.
    prior_weights : array, optional
        Pre-training prior over personas (non-negative, sums to 1, one per
        persona). ``None`` makes it a latent with a flat Dirichlet hyperprior.
    bias_direction : xarray.DataArray or array, optional
        ``(item, option)`` direction of the authorial bias: ``+1`` on options
        that post-training favours, ``0`` elsewhere. ``None`` disables the
        ``authorial_bias`` term.
    personas : PersonaSet, optional
        Names and descriptions; ids must equal the table's personas.
    """

    loglik: LogLikTable
    episodes: Episodes
    prior_weights: np.ndarray | None = None
    bias_direction: np.ndarray | None = None
    personas: PersonaSet | None = None
    item_index: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.loglik, LogLikTable):
            fail("loglik", f"expected a LogLikTable, got {type(self.loglik).__name__}")
        if not isinstance(self.episodes, Episodes):
            fail("episodes", f"expected an Episodes, got {type(self.episodes).__name__}")
        n_persona, n_item, n_opt = self.loglik.values.shape
        lookup = {k: i for i, k in enumerate(self.loglik.items)}
        unknown = sorted({str(x) for x in self.episodes.item.tolist() if x not in lookup})
        if unknown:
            fail("episodes.item", f"unknown item id(s) {unknown[:5]}{'...' if len(unknown) > 5 else ''}; "
                  f"expected ids from loglik.item")
        idx = np.array([lookup[x] for x in self.episodes.item.tolist()], dtype=np.int64)
        object.__setattr__(self, "item_index", idx)
        if self.episodes.option is not None and len(self.episodes) and self.episodes.option.max() >= n_opt:
            fail("episodes.option", f"option index {int(self.episodes.option.max())} out of range; "
                  f"items have {n_opt} options")
        if self.prior_weights is not None:
            pw = np.asarray(self.prior_weights, dtype=float)
            if pw.shape != (n_persona,):
                fail("prior_weights", f"expected shape ({n_persona},) (one per persona), got {pw.shape}")
            check_finite(pw, "prior_weights")
            if (pw < 0).any() or abs(pw.sum() - 1.0) > 1e-6:
                fail("prior_weights", f"expected non-negative weights summing to 1, got sum {pw.sum():.6g}")
            object.__setattr__(self, "prior_weights", np.clip(pw, 1e-12, None) / np.clip(pw, 1e-12, None).sum())
        if self.bias_direction is not None:
            bd = np.asarray(getattr(self.bias_direction, "values", self.bias_direction), dtype=float)
            if bd.shape != (n_item, n_opt):
                fail("bias_direction", f"expected shape ({n_item}, {n_opt}) (item, option), got {bd.shape}")
            check_finite(bd, "bias_direction")
            object.__setattr__(self, "bias_direction", bd)
        if self.personas is not None and self.personas.ids != self.loglik.personas:
            fail("personas.ids", "expected the same ids, in the same order, as loglik.persona")

    @property
    def n_personas(self) -> int:
        return int(self.loglik.values.sizes["persona"])

    @property
    def n_items(self) -> int:
        return int(self.loglik.values.sizes["item"])

    @property
    def n_options(self) -> int:
        return int(self.loglik.values.sizes["option"])

    def replace(self, **changes) -> "PSMData":
        """A copy with some fields replaced (re-validated)."""
        kw = dict(loglik=self.loglik, episodes=self.episodes, prior_weights=self.prior_weights,
                  bias_direction=self.bias_direction, personas=self.personas)
        kw.update(changes)
        return PSMData(**kw)

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for the dims this data defines."""
        return {
            "persona": list(self.loglik.personas),
            "item": list(self.loglik.items),
            "option": list(range(self.n_options)),
            "episode": list(range(len(self.episodes))),
        }

    # ------------------------------------------------------------------ I/O
    def to_dataset(self) -> xr.Dataset:
        """Serialise to an xarray Dataset (NetCDF/Zarr friendly)."""
        ep = self.episodes
        ds = xr.Dataset(
            {
                "loglik": self.loglik.values,
                "episode_item": ("episode", ep.item.astype(str)),
                "episode_source": ("episode", ep.source.astype(str)),
                "episode_count": ("episode", ep.count),
            }
        )
        if ep.option is not None:
            ds["episode_option"] = ("episode", ep.option)
        if self.prior_weights is not None:
            ds["prior_weights"] = ("persona", self.prior_weights)
        if self.bias_direction is not None:
            ds["bias_direction"] = (("item", "option"), self.bias_direction)
        if self.personas is not None:
            ds["persona_name"] = ("persona", list(self.personas.names))
            ds["persona_description"] = ("persona", list(self.personas.descriptions))
        ds.attrs["psm_bayes_data"] = "PSMData"
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> "PSMData":
        """Inverse of :meth:`to_dataset`."""
        for name in ("loglik", "episode_item"):
            if name not in ds:
                fail(name, "missing from dataset; expected a file written by PSMData.to_dataset")
        ids = [str(p) for p in ds["loglik"].coords["persona"].values]
        personas = None
        if "persona_name" in ds:
            personas = PersonaSet(ids, [str(x) for x in ds["persona_name"].values],
                                  [str(x) for x in ds["persona_description"].values])
        episodes = Episodes(
            item=np.asarray([str(x) for x in ds["episode_item"].values], dtype=object),
            option=ds["episode_option"].values if "episode_option" in ds else None,
            source=np.asarray([str(x) for x in ds["episode_source"].values], dtype=object),
            count=ds["episode_count"].values,
        )
        return cls(
            loglik=LogLikTable(ds["loglik"].transpose("persona", "item", "option").load()),
            episodes=episodes,
            prior_weights=ds["prior_weights"].values if "prior_weights" in ds else None,
            bias_direction=ds["bias_direction"].values if "bias_direction" in ds else None,
            personas=personas,
        )

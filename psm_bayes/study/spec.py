"""Declarative simulation studies: a :class:`Study` is a grid of cells.

A study names a model (from :mod:`psm_bayes.models.catalogue`), a backend and
an inference method, fixed simulator/prior/inference settings, a ``grid`` of
values to cross, and ``seeds``. Each point of the grid times each seed is a
:class:`Cell`: simulate a data set with known truth, fit it, score the fit.

Grid keys are simulator arguments (``n_personas``, ``n_episodes``, ...),
or ``priors.<field>`` / ``inference.<option>`` to vary a prior
hyperparameter or a sampler option. Example TOML::

    name = "psm-recovery"
    model = "persona_mixture"
    backend = "numpyro"
    method = "nuts"            # or "svi"
    seeds = [0, 1, 2]

    [grid]
    n_personas = [3, 6]
    n_episodes = [50, 200]

    [simulate]
    n_items = 10

    [priors]
    concentration = 20.0

    [inference]
    num_warmup = 300
    num_samples = 300
    num_chains = 2
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

METHODS = ("nuts", "svi")
_PREFIXES = ("priors.", "inference.")


@dataclass(frozen=True)
class Cell:
    """One simulate-fit-score unit of a study.

    Attributes
    ----------
    index : int
        Position in the study (row order of the results table).
    params : dict
        This cell's grid values (keys as in ``Study.grid``).
    seed : int
        Seed of the simulation and of the fit.
    id : str
        Stable hash of everything that determines the cell's result; names
        its part file, so a changed setting never reuses a stale result.
    """

    index: int
    params: dict
    seed: int
    id: str

    def split(self) -> tuple[dict, dict, dict]:
        """``(simulate, priors, inference)`` overrides from the grid values."""
        sim, pri, inf = {}, {}, {}
        for k, v in self.params.items():
            if k.startswith("priors."):
                pri[k[len("priors."):]] = v
            elif k.startswith("inference."):
                inf[k[len("inference."):]] = v
            else:
                sim[k] = v
        return sim, pri, inf


def _plain(v: Any) -> Any:
    """JSON/TOML-friendly copy (tuples to lists, numpy scalars to Python)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    return v


@dataclass(frozen=True)
class Study:
    """A simulation study (see the module docstring).

    Parameters
    ----------
    name : str
        Label (not part of cell ids).
    model : str
        Catalogued model name (:func:`psm_bayes.models.catalogue.names`).
    backend : {"numpyro", "pyro"}
    method : {"nuts", "svi"}
        :func:`psm_bayes.inference.fit_nuts` or :func:`~psm_bayes.inference.fit_svi`.
    grid : mapping of str to sequence
        Values to cross (Cartesian product, in key order).
    seeds : sequence of int
        Replicate seeds, crossed with the grid (innermost).
    simulate, priors, inference : mapping
        Fixed simulator arguments, prior hyperparameters and fit options.
    interval : float
        Central posterior interval used for coverage (default 0.9).
    """

    name: str = "study"
    model: str = "persona_mixture"
    backend: str = "numpyro"
    method: str = "nuts"
    grid: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    simulate: Mapping[str, Any] = field(default_factory=dict)
    priors: Mapping[str, Any] = field(default_factory=dict)
    inference: Mapping[str, Any] = field(default_factory=dict)
    interval: float = 0.9

    def __post_init__(self) -> None:
        from psm_bayes.models import catalogue

        entry = catalogue.get(self.model)
        if self.backend not in entry.backends:
            raise ValueError(f"backend: model {self.model!r} has backends {sorted(entry.backends)}, "
                             f"not {self.backend!r}")
        if entry.simulate is None:
            raise ValueError(f"model: {self.model!r} has no simulator in the catalogue; a study needs one")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        grid = {}
        for k, v in dict(self.grid).items():
            vals = tuple(_plain(v)) if isinstance(v, (list, tuple)) else (_plain(v),)
            if not vals:
                raise ValueError(f"grid.{k}: expected at least one value")
            grid[str(k)] = vals
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds: expected at least one seed and no duplicates, got {list(self.seeds)}")
        if not 0 < self.interval < 1:
            raise ValueError(f"interval: expected a probability in (0, 1), got {self.interval}")
        for name in ("simulate", "priors", "inference"):
            object.__setattr__(self, name, _plain(dict(getattr(self, name))))
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "seeds", seeds)

    # ------------------------------------------------------------ cells
    def cells(self) -> list[Cell]:
        """All cells: the grid's Cartesian product (key order) times the seeds."""
        keys = list(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            params = dict(zip(keys, values))
            for seed in self.seeds:
                out.append(Cell(len(out), params, seed, self._cell_id(params, seed)))
        return out

    def _cell_id(self, params: dict, seed: int) -> str:
        key = {"model": self.model, "backend": self.backend, "method": self.method, "simulate": self.simulate,
               "priors": self.priors, "inference": self.inference, "interval": self.interval,
               "params": params, "seed": seed}
        return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "backend": self.backend, "method": self.method,
                "grid": {k: list(v) for k, v in self.grid.items()}, "seeds": list(self.seeds),
                "simulate": dict(self.simulate), "priors": dict(self.priors), "inference": dict(self.inference),
                "interval": self.interval}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Study":
        from psm_bayes.io import MARKER

        d = {k: v for k, v in d.items() if k != MARKER}  # a study.json written by run_study carries the marker
        known = {"name", "model", "backend", "method", "grid", "seeds", "simulate", "priors", "inference", "interval"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"study: unknown key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(d))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Study":
        """Load a ``.toml`` or ``.json`` study file."""
        path = os.fspath(path)
        if path.endswith(".toml"):
            import tomllib

            with open(path, "rb") as fh:
                return cls.from_dict(tomllib.load(fh))
        if path.endswith(".json"):
            with open(path) as fh:
                return cls.from_dict(json.load(fh))
        raise ValueError(f"path: expected a .toml or .json study file, got {path!r}")

    def with_seed(self, seed: int) -> "Study":
        """The same study with seeds ``seed, seed + 1, ...`` (as many as before)."""
        return replace(self, seeds=tuple(range(seed, seed + len(self.seeds))))

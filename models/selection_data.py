"""The data every model of the persona-selection family conditions on: :class:`SelectionData`.

One frozen, validated dataclass of arrays (errors name the field), with the
derived arrays the models use: condition types (:attr:`SelectionData.bias_types`,
:attr:`SelectionData.type_matrix`), the evidence net of each condition and the
evidence features of the nulls (:meth:`SelectionData.null_features`).
Re-exported by :mod:`psm_bayes.models.selection`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from psm_bayes.data import check_int_array
from psm_bayes.validation import fail

BASE_TYPE = "base"
"""Condition type without a Yes offset (the zero-shot / no-evidence reference)."""

KERNELS: dict[str, str] = {"profile_similarity": "profile_similarity", "surface_similarity": "surface_similarity"}
"""Null model -> the (item, item) kernel field of :class:`SelectionData` it weights the evidence with."""


def profile_similarity(loglik: np.ndarray, matching: np.ndarray) -> np.ndarray:
    """Cosine similarity of items' centred matching log-odds profiles across personas, ``(item, item)``.

    Items the personas of the table answer alike are similar. On a Yes/No
    table this kernel mostly encodes whether two items' matching answers are
    the same option (a Yes-tendency kernel), hence the ``profile_similarity``
    null's name.
    """
    rows = np.arange(loglik.shape[1])
    lo = loglik[:, rows, matching] - loglik[:, rows, 1 - matching]     # (persona, item)
    z = lo - lo.mean(0, keepdims=True)
    norm = np.linalg.norm(z, axis=0)
    z = z / np.where(norm > 0, norm, 1.0)
    return np.clip(z.T @ z, -1.0, 1.0)


def _float_array(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.shape != shape:
        fail(name, f"expected shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        fail(name, f"expected finite values, found {int((~np.isfinite(a)).sum())} non-finite")
    return a


def _counts(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if value is None:
        return np.zeros(shape, dtype=np.int64)
    a = np.asarray(value)
    if a.shape != shape:
        fail(name, f"expected shape {shape} (condition, item, option), got {a.shape}")
    flat = check_int_array(a.reshape(-1), name, a.size, what="counts")
    return flat.reshape(shape)


def _ids(value, name: str, n: int, prefix: str) -> tuple[str, ...]:
    ids = tuple(str(v) for v in value) if len(value) else tuple(f"{prefix}{j}" for j in range(n))
    if len(ids) != n:
        fail(name, f"expected {n} ids, got {len(ids)}")
    if len(set(ids)) != n:
        fail(name, "expected unique ids")
    return ids


def _index(value, name: str, ids: tuple[str, ...], n: int | None = None, match: str = "") -> np.ndarray:
    """Indices into ``ids`` from ids (strings) or integer indices; shape ``(n,)``."""
    a = np.asarray(value)
    if a.ndim != 1:
        fail(name, f"expected a 1-d array, got shape {a.shape}")
    if a.dtype.kind in "OUS":
        lookup = {k: j for j, k in enumerate(ids)}
        missing = sorted({str(v) for v in a.tolist() if str(v) not in lookup})
        if missing:
            fail(name, f"unknown id(s) {missing[:5]}; expected one of {list(ids)[:10]}")
        a = np.array([lookup[str(v)] for v in a.tolist()], dtype=np.int64)
    out = check_int_array(a, name, a.shape[0] if n is None else n, what="indices", match=match)
    if out.size and out.max() >= len(ids):
        fail(name, f"expected indices < {len(ids)}, found {int(out.max())}")
    return out


@dataclass(frozen=True)
class SelectionData:
    """Everything every model of the persona-selection family conditions on.

    Integer index fields also accept ids (``conditions`` / ``items``); all
    arrays are validated at construction and errors name the field.

    Parameters
    ----------
    loglik : array or xarray.DataArray, shape (persona, item, option)
        ``log p(o | i, k)`` from the base model, normalised over options (an
        xarray ``DataArray`` with dims ``persona, item, option`` supplies ids).
    yes_option, matching_option : array of int, shape (item,)
        The option that says "Yes" (the Yes-offset term) and the option that
        matches the item's trait (the measured log-odds are of this option).
    conditions : sequence of str
        Condition ids (the ``condition`` coordinate).
    condition_type : sequence of str
        One label per condition. Each condition other than ``"base"`` has its
        own Yes offset ``drift[c]``, pooled within its type: ``drift[c] ~
        Normal(response_bias[type], drift_sd[type])``; ``"base"`` has none.
    sft_evidence, icl_evidence : array of int, shape (condition, item, option), optional
        How many SFT episodes / in-context shots of each condition gave item
        ``i`` answer ``o`` (default none).
    personas, items, options : sequence of str, optional
        Ids (default ``p0.., i0.., o0..``, or the DataArray's coordinates).
    prior_weights : array, shape (persona,), optional
        Pre-training prior; ``None`` makes it latent (``prior_weights`` site).
    bias_direction : array, shape (item, option), optional
        Direction of the persona models' shared ``authorial_bias``.
    item_trait : sequence of str, shape (item,), optional
        Trait of each item (``trait_indicator``; ``permuted_personas``
        permutes within traits, per item when absent).
    profile_similarity : array, shape (item, item), optional
        Persona-profile similarity of each item to each evidence item
        (``profile_similarity`` null; :func:`profile_similarity`).
    surface_similarity : array, shape (item, item), optional
        Similarity of the items' statement texts (``surface_similarity`` null
        and ``encompassing``; :mod:`psm_bayes.experiments.measure.surface`).
    episode_condition, episode_item, episode_option, episode_count : arrays, shape (row,), optional
        Sampled episodes as rows with integer counts (>= 1); ``episode_option``
        ``None`` asks for the prior predictive.
    measurement_condition, measurement_item, logodds : arrays, shape (measurement,), optional
        Real-LLM log-odds of the matching answer; ``logodds`` ``None`` asks
        for the prior predictive.
    """

    loglik: Any
    yes_option: Any
    matching_option: Any
    conditions: tuple[str, ...]
    condition_type: tuple[str, ...]
    sft_evidence: Any = None
    icl_evidence: Any = None
    personas: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    prior_weights: Any = None
    bias_direction: Any = None
    item_trait: tuple[str, ...] | None = None
    profile_similarity: Any = None
    surface_similarity: Any = None
    episode_condition: Any = None
    episode_item: Any = None
    episode_option: Any = None
    episode_count: Any = None
    measurement_condition: Any = None
    measurement_item: Any = None
    logodds: Any = None

    def __post_init__(self) -> None:
        s = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731
        L = self.loglik
        if hasattr(L, "dims") and hasattr(L, "coords"):
            if tuple(L.dims) != ("persona", "item", "option"):
                fail("loglik", f"expected dims ('persona', 'item', 'option'), got {tuple(L.dims)}")
            for dim in ("persona", "item", "option"):
                if not getattr(self, dim + "s") and dim in L.coords:
                    s(dim + "s", tuple(str(v) for v in L.coords[dim].values))
            L = L.values
        L = np.asarray(L, dtype=float)
        if L.ndim != 3 or min(L.shape) < 1 or L.shape[2] < 2:
            fail("loglik", f"expected a (persona, item, option) array with >= 2 options, got shape {L.shape}")
        L = _float_array(L, "loglik", L.shape)
        K, I, O = L.shape
        norm = np.log(np.exp(L).sum(-1))
        if np.abs(norm).max() > 1e-6:
            k, i = np.unravel_index(np.abs(norm).argmax(), norm.shape)
            fail("loglik", f"expected log-probabilities normalised over options (log_softmax), but "
                            f"persona {k} item {i} sums to exp({norm[k, i]:.3g})")
        s("loglik", L)
        s("personas", _ids(self.personas, "personas", K, "p"))
        s("items", _ids(self.items, "items", I, "i"))
        s("options", _ids(self.options, "options", O, "o"))
        for name in ("yes_option", "matching_option"):
            v = check_int_array(getattr(self, name), name, I, what="option indices", match="items")
            if v.size and v.max() >= O:
                fail(name, f"expected option indices < {O}, found {int(v.max())}")
            s(name, v)
        conditions = _ids(tuple(self.conditions), "conditions", len(tuple(self.conditions)), "c")
        if not conditions:
            fail("conditions", "expected at least one condition")
        s("conditions", conditions)
        C = len(conditions)
        ctype = tuple(str(t) for t in self.condition_type)
        if len(ctype) != C:
            fail("condition_type", f"expected {C} labels (one per condition), got {len(ctype)}")
        s("condition_type", ctype)
        s("sft_evidence", _counts(self.sft_evidence, "sft_evidence", (C, I, O)))
        s("icl_evidence", _counts(self.icl_evidence, "icl_evidence", (C, I, O)))
        if self.prior_weights is not None:
            pw = _float_array(self.prior_weights, "prior_weights", (K,))
            if (pw <= 0).any() or abs(pw.sum() - 1) > 1e-6:
                fail("prior_weights", f"expected positive weights summing to 1, got sum {pw.sum():.6g}")
            s("prior_weights", pw)
        if self.bias_direction is not None:
            s("bias_direction", _float_array(self.bias_direction, "bias_direction", (I, O)))
        if self.item_trait is not None:
            trait = tuple(str(t) for t in self.item_trait)
            if len(trait) != I:
                fail("item_trait", f"expected {I} labels (one per item), got {len(trait)}")
            s("item_trait", trait)
        for name in KERNELS.values():
            if getattr(self, name) is not None:
                s(name, _float_array(getattr(self, name), name, (I, I)))
        self._check_rows("episode", ("condition", "item", "option", "count"))
        self._check_rows("measurement", ("condition", "item"))

    def _check_rows(self, kind: str, cols: tuple[str, ...]) -> None:
        names = [f"{kind}_{c}" for c in cols]
        if getattr(self, names[0]) is None:
            for n in names[1:] + (["logodds"] if kind == "measurement" else []):
                if getattr(self, n) is not None:
                    fail(n, f"given without {names[0]}")
            return
        cond = _index(getattr(self, names[0]), names[0], self.conditions)
        n = cond.shape[0]
        object.__setattr__(self, names[0], cond)
        if getattr(self, names[1]) is None:
            fail(names[1], f"required with {names[0]}")
        object.__setattr__(self, names[1], _index(getattr(self, names[1]), names[1], self.items, n, names[0]))
        if kind == "episode":
            opt = self.episode_option
            if opt is not None:
                opt = check_int_array(opt, "episode_option", n, match="episode_condition")
                if n and opt.max() >= len(self.options):
                    fail("episode_option", f"expected option indices < {len(self.options)}, found {opt.max()}")
            cnt = np.ones(n, np.int64) if self.episode_count is None else check_int_array(
                self.episode_count, "episode_count", n, what="counts", match="episode_condition")
            if n and cnt.min() < 1:
                fail("episode_count", "expected integer counts >= 1")
            object.__setattr__(self, "episode_option", opt)
            object.__setattr__(self, "episode_count", cnt)
        elif self.logodds is not None:
            object.__setattr__(self, "logodds", _float_array(self.logodds, "logodds", (n,)))

    # ------------------------------------------------------------------ sizes
    @property
    def n_personas(self) -> int:
        return self.loglik.shape[0]

    @property
    def n_items(self) -> int:
        return self.loglik.shape[1]

    @property
    def n_conditions(self) -> int:
        return len(self.conditions)

    @property
    def has_episodes(self) -> bool:
        return self.episode_condition is not None

    @property
    def has_measurements(self) -> bool:
        return self.measurement_condition is not None

    @property
    def has_sft(self) -> bool:
        return bool(self.sft_evidence.any())

    @property
    def has_icl(self) -> bool:
        return bool(self.icl_evidence.any())

    # ---------------------------------------------------------- derived data
    @cached_property
    def bias_types(self) -> tuple[str, ...]:
        """Condition types with Yes offsets (all but ``"base"``), in order of appearance."""
        return tuple(dict.fromkeys(t for t in self.condition_type if t != BASE_TYPE))

    @cached_property
    def type_matrix(self) -> np.ndarray:
        """``(condition, condition_type)`` one-hot rows (zero rows for ``"base"`` conditions)."""
        T = np.zeros((self.n_conditions, len(self.bias_types)))
        for c, t in enumerate(self.condition_type):
            if t != BASE_TYPE:
                T[c, self.bias_types.index(t)] = 1.0
        return T

    @cached_property
    def drift_conditions(self) -> np.ndarray:
        """Indices of the conditions with a Yes offset (all but ``"base"``): plate ``drift_condition``."""
        return np.flatnonzero(self.type_matrix.any(1)).astype(np.int64)

    def onehot(self, option: np.ndarray) -> np.ndarray:
        """``(item, option)`` indicator of ``option[i]`` for each item."""
        out = np.zeros(self.loglik.shape[1:])
        out[np.arange(self.n_items), option] = 1.0
        return out

    @cached_property
    def episodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows expanded to one entry per episode: (condition, item, option or None)."""
        rep = self.episode_count
        opt = None if self.episode_option is None else np.repeat(self.episode_option, rep)
        return np.repeat(self.episode_condition, rep), np.repeat(self.episode_item, rep), opt

    @cached_property
    def measured_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(unique measured item indices, position of each measurement's item among them)."""
        uniq, pos = np.unique(self.measurement_item, return_inverse=True)
        return uniq, pos

    @cached_property
    def observed_items(self) -> np.ndarray | None:
        """Increasing indices of the items that episodes or measurements observe (``None``: none is observed).

        What the likelihood needs the answer probabilities of; the persona posterior uses every item.
        """
        parts = [getattr(self, f"{k}_item") for k in ("episode", "measurement")
                 if getattr(self, f"{k}_condition") is not None]
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else None

    @cached_property
    def observed_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(condition, item)`` index arrays of every observed (condition, item) pair, each once."""
        parts = [np.stack([getattr(self, f"{k}_condition"), getattr(self, f"{k}_item")], 1)
                 for k in ("episode", "measurement") if getattr(self, f"{k}_condition") is not None]
        pairs = np.unique(np.concatenate(parts), axis=0) if parts else np.zeros((0, 2), np.int64)
        return pairs[:, 0], pairs[:, 1]

    @cached_property
    def evidence_net(self) -> tuple[np.ndarray, np.ndarray]:
        """``(net[c, i], total[c])``: matching minus other answers per evidence item, and all evidence counts."""
        ev = (self.sft_evidence + self.icl_evidence).astype(float)
        sign = 2.0 * self.onehot(self.matching_option) - 1.0
        return np.einsum("cio,io->ci", ev, sign), ev.sum((1, 2))

    def null_features(self, name: str) -> np.ndarray:
        """``(feature, condition, item)`` evidence features of a null, before dividing by ``total + half_dose``.

        ``trait_indicator``: net matching evidence of the item's own trait and
        of the other traits; ``profile_similarity`` / ``surface_similarity``:
        the net evidence weighted by that kernel's similarity of the item to
        each evidence item; ``generic_shift``: the condition's whole net
        evidence, the same for every item whatever its trait.
        """
        net, _ = self.evidence_net
        if name == "trait_indicator":
            if self.item_trait is None:
                fail("item_trait", "required by the trait_indicator model")
            tr = np.asarray(self.item_trait, dtype=object)
            same = (tr[:, None] == tr[None, :]).astype(float)
            mats = [same, 1.0 - same]
        elif name in KERNELS:
            if getattr(self, KERNELS[name]) is None:
                fail(KERNELS[name], f"required by the {name} model")
            mats = [getattr(self, KERNELS[name])]
        elif name == "generic_shift":
            mats = [np.ones((self.n_items, self.n_items))]
        else:
            raise ValueError(f"name: no evidence features for model {name!r}")
        return np.stack([np.einsum("ji,ci->cj", A, net) for A in mats])

    def permuted_loglik(self, seed: int) -> np.ndarray:
        """The persona table with persona labels permuted independently per trait (per item without traits)."""
        rng = np.random.default_rng(seed)
        groups = self.item_trait if self.item_trait is not None else self.items
        out = self.loglik.copy()
        for g in dict.fromkeys(groups):
            cols = [i for i, t in enumerate(groups) if t == g]
            out[:, cols] = self.loglik[rng.permutation(self.n_personas)][:, cols]
        return out

    # ------------------------------------------------------- spec callables
    def replace(self, **changes) -> "SelectionData":
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates of every dim the models use."""
        out = {"persona": list(self.personas), "item": list(self.items), "option": list(self.options),
               "condition": list(self.conditions), "condition_type": list(self.bias_types),
               "drift_condition": [self.conditions[c] for c in self.drift_conditions]}
        if self.has_episodes:
            out["episode"] = list(range(int(self.episode_count.sum())))
        if self.has_measurements:
            out["measurement"] = list(range(len(self.measurement_condition)))
            out["measured_item"] = [self.items[j] for j in self.measured_items[0]]
        return out

    def unobserve(self) -> "SelectionData":
        """The same design with observations removed (prior / posterior predictive)."""
        return self.replace(episode_option=None, logodds=None)

    def observed_values(self) -> dict[str, np.ndarray]:
        """Observed arrays per site (``y`` per episode, ``logodds`` per measurement)."""
        out = {}
        if self.has_episodes and self.episode_option is not None:
            out["y"] = self.episodes[2]
        if self.has_measurements and self.logodds is not None:
            out["logodds"] = self.logodds
        return out

    def with_observed(self, values: Mapping[str, Any]) -> "SelectionData":
        """Copy whose observed sites take ``values`` (inverse of :meth:`observed_values`; episodes one per row)."""
        changes: dict[str, Any] = {}
        if "y" in values:
            cond, item, _ = self.episodes
            changes.update(episode_condition=cond, episode_item=item, episode_count=None,
                           episode_option=np.asarray(values["y"]))
        if "logodds" in values:
            changes["logodds"] = np.asarray(values["logodds"], dtype=float)
        return self.replace(**changes)

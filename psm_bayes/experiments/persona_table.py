"""The persona table and the pre-training prior, from the same language model.

Persona table
-------------
``L[k, i, o] = log p(option o | persona k's description + item i)`` for every
persona and probe item, plus the neutral row ``log p(o | item i)`` with no
persona text (:func:`psm_bayes.llm.prompts.neutral_context`).  Two exact
ways to compute it (:func:`score_persona_table`):

* ``method="fast"`` (default): :class:`~psm_bayes.llm.nexttoken.NextTokenScorer`
  -- the options are single tokens after ``"Answer:"``, so one forward pass
  per (persona, item) gives both options; the persona description and the
  question stem form a token prefix shared by all items of a persona, whose
  KV cache is computed once.  About 3x faster than the general scorer here.
* ``method="scorer"``: :meth:`psm_bayes.llm.Scorer.score_table` (any
  option texts, multi-token included; Parquet score cache).

Both give the same ``xarray.Dataset`` layout: ``loglik`` (persona, item,
option) and ``neutral_loglik`` (item, option), true (full-vocabulary)
log-probabilities.

The pre-training prior fitted on the neutral row is in
:mod:`psm_bayes.experiments.pretraining_prior`; :func:`measure_personas` is the
experiment stage (every persona form, separation, prior).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import log_softmax

from psm_bayes.data import DataError, ItemSet, PersonaSet
from psm_bayes.experiments.pretraining_prior import EMResult, prior_from_table


# ---------------------------------------------------------------- persona table
PERSONA_CONTEXTS: tuple[str, ...] = ("description", "fewshot", "both")
"""Persona context forms: the description preamble, ``k`` in-context answers by the persona, or both."""


def persona_contexts(spec: Any, personas: PersonaSet, probes: Any, reserved_idx: np.ndarray,
                     mode: str = "description") -> list[str]:
    """The context text of every persona.

    Parameters
    ----------
    spec : PersonaSpec
        Gives each persona's trait and pole.
    personas : PersonaSet
        The personas (ids looked up in ``spec``), with descriptions.
    probes : ProbeSet
        Probes indexed by ``reserved_idx``.
    reserved_idx : array of int
        Persona examples (:func:`~psm_bayes.experiments.design.reserve_persona_examples`); persona ``t+``/``t-``
        uses the reserved statements of trait ``t``, in the same order.
    mode : {"description", "fewshot", "both"}
        ``description``: :func:`~psm_bayes.llm.prompts.description_context`;
        ``fewshot``: :func:`~psm_bayes.llm.prompts.fewshot_context` of the
        reserved statements answered as the pole would (``+``: the matching
        answer, ``-``: the other answer); ``both``: description, then examples.

    Returns
    -------
    list of str
    """
    from psm_bayes.llm import prompts
    from psm_bayes.probes import OPTIONS

    if mode not in PERSONA_CONTEXTS:
        raise ValueError(f"persona_context: expected one of {PERSONA_CONTEXTS}, got {mode!r}")
    row = {pid: j for j, pid in enumerate(spec.personas.ids)}
    reserved_idx = np.asarray(reserved_idx, dtype=int)
    out = []
    for k, pid in enumerate(personas.ids):
        if pid not in row:
            raise DataError(f"personas.ids: {pid!r} is not in the persona spec")
        ctx = ""
        if mode in ("description", "both"):
            desc = personas.descriptions[k]
            if not desc.strip():
                raise DataError(f"personas.descriptions[{k}]: persona {pid!r} has no description")
            ctx += prompts.description_context(desc)
        if mode in ("fewshot", "both"):
            trait, pole = str(spec.trait[row[pid]]), str(spec.pole[row[pid]])
            ex = reserved_idx[probes.trait[reserved_idx] == trait]
            if ex.size == 0:
                raise DataError(f"persona_examples: no reserved statements of {trait!r} for persona {pid!r}")
            match = probes.matching_option[ex]
            answers = match if pole == "+" else 1 - match
            ctx += prompts.fewshot_context([(probes.items.prompts[i], OPTIONS[a]) for i, a in zip(ex, answers)])
        out.append(ctx)
    return out


def persona_separation(table: Any, probes: Any, spec: Any) -> Any:
    """Mean log-odds of the matching answer on each trait's table items under its ``+`` and ``-`` persona.

    Returns
    -------
    pandas.DataFrame
        Index ``trait``; columns ``plus``, ``minus``, ``separation``
        (``plus - minus``), ``neutral`` and ``n_items``.
    """
    import pandas as pd

    L = table["loglik"].transpose("persona", "item", "option")
    N = table["neutral_loglik"].transpose("item", "option").values
    pos = {iid: j for j, iid in enumerate(probes.items.ids)}
    items = [str(x) for x in L.coords["item"].values]
    pidx = np.array([pos[i] for i in items])
    m = probes.matching_option[pidx]
    tr = probes.trait[pidx]
    rows = np.arange(len(items))
    lv = L.values
    lo = lv[:, rows, m] - lv[:, rows, 1 - m]                 # (persona, item) log-odds of matching
    nlo = N[rows, m] - N[rows, 1 - m]
    prow = {pid: j for j, pid in enumerate(spec.personas.ids)}
    per = [str(p) for p in L.coords["persona"].values]
    out = []
    for t in dict.fromkeys(str(spec.trait[prow[p]]) for p in per):
        sel = tr == t
        if not sel.any():
            continue
        get = {str(spec.pole[prow[p]]): j for j, p in enumerate(per) if str(spec.trait[prow[p]]) == t}
        plus = float(lo[get["+"], sel].mean()) if "+" in get else float("nan")
        minus = float(lo[get["-"], sel].mean()) if "-" in get else float("nan")
        out.append({"trait": t, "plus": plus, "minus": minus, "separation": plus - minus,
                    "neutral": float(nlo[sel].mean()), "n_items": int(sel.sum())})
    return pd.DataFrame(out).set_index("trait")


def table_fingerprint(model_key: str, personas: PersonaSet, items: ItemSet, method: str,
                      contexts: Sequence[str] | None = None) -> str:
    """Hash identifying a persona table (model, persona contexts, item prompts, options, method)."""
    payload = {"model": model_key, "method": method,
               "personas": [list(personas.ids), list(personas.descriptions)],
               "items": [list(items.ids), list(items.prompts), [list(o) for o in items.options]]}
    if contexts is not None:
        payload["contexts"] = list(contexts)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def score_persona_table(loaded: Any, personas: PersonaSet, items: ItemSet, *, method: str = "fast",
                        cache_path: str | Path | None = None, batch_size: int = 16,
                        progress: bool = True, contexts: Sequence[str] | None = None) -> Any:
    """Score every (persona, item, option) and every neutral (item, option).

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
        The language model.
    personas : PersonaSet
        Personas with descriptions (context = ``description_context``).
    items : ItemSet
        Probe items (Yes/No for ``method="fast"``).
    method : {"fast", "scorer"}
        See the module docstring.
    cache_path : path, optional
        ``"fast"``: a NetCDF file holding the finished table (reused when its
        fingerprint matches; written atomically).  ``"scorer"``: a
        :class:`~psm_bayes.llm.ScoreCache` directory.
    batch_size : int
        Prompts per forward pass.
    progress : bool
        Show a progress bar.
    contexts : sequence of str, optional
        One context per persona (e.g. from :func:`persona_contexts`); default
        ``description_context(description)``.  ``method="fast"`` only.

    Returns
    -------
    xarray.Dataset
        ``loglik`` (persona, item, option), ``neutral_loglik`` (item, option);
        attrs ``model_key``, ``fingerprint``, ``method``.
    """
    import xarray as xr

    from psm_bayes.llm import prompts

    if method not in ("fast", "scorer"):
        raise ValueError(f"method: expected 'fast' or 'scorer', got {method!r}")
    if contexts is not None:
        contexts = list(contexts)
        if len(contexts) != len(personas):
            raise DataError(f"contexts: expected {len(personas)} (one per persona), got {len(contexts)}")
    fp = table_fingerprint(loaded.key, personas, items, method, contexts)
    if method == "scorer":
        if contexts is not None:
            raise DataError("contexts: method='scorer' scores description contexts only; use method='fast'")
        from psm_bayes.llm import Scorer

        ds = Scorer(loaded, batch_size=batch_size).score_table(personas, items, neutral=True, cache=cache_path,
                                                               progress=progress)
        ds = ds[["loglik", "neutral_loglik"]]
        ds.attrs.update({"model_key": loaded.key, "fingerprint": fp, "method": method})
        return ds
    if cache_path is not None and Path(cache_path).is_file():
        cached = xr.load_dataset(cache_path)
        if cached.attrs.get("fingerprint") == fp:
            return cached
    from psm_bayes.llm.nexttoken import NextTokenScorer

    options = items.options[0]
    if any(tuple(o) != tuple(options) for o in items.options):
        raise DataError("items.options: method='fast' needs the same single-token options for every item")
    nts = NextTokenScorer(loaded.model, loaded.tokenizer, options, batch_size=batch_size)
    texts = [prompts.item_text(p) for p in items.prompts]
    ll = np.zeros((len(personas), len(items), len(options)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(personas) + 1, unit="context", desc="persona table")
    try:
        for k, desc in enumerate(personas.descriptions):
            if contexts is not None:
                ctx = contexts[k]
            else:
                if not desc.strip():
                    raise DataError(f"personas.descriptions[{k}]: persona {personas.ids[k]!r} has no description")
                ctx = prompts.description_context(desc)
            ll[k] = nts.score([ctx + t for t in texts])
            if bar is not None:
                bar.update(1)
        neutral = nts.score([prompts.neutral_context() + t for t in texts])
        if bar is not None:
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ds = xr.Dataset(
        {"loglik": (("persona", "item", "option"), ll), "neutral_loglik": (("item", "option"), neutral)},
        coords={"persona": list(personas.ids), "item": list(items.ids), "option": np.arange(len(options))},
        attrs={"model_key": loaded.key, "fingerprint": fp, "method": method,
               "options": json.dumps(list(options)),
               "prompt_format": ("description_context(description)" if contexts is None else "context(persona)")
               + " + item_text(prompt) + option"})
    if cache_path is not None:
        from psm_bayes.io import atomic_path

        with atomic_path(cache_path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")
    return ds


def table_lookup(loglik: Any, probes: Any) -> tuple[np.ndarray, Any]:
    """``(values (persona, item, option), col)`` where ``col(i)`` is probe ``i``'s column in ``loglik``.

    ``col`` raises :class:`~psm_bayes.data.DataError` for a probe the table lacks.
    """
    L = loglik.transpose("persona", "item", "option")
    columns = {str(x): j for j, x in enumerate(L.coords["item"].values)}

    def col(i: int) -> int:
        iid = probes.items.ids[i]
        if iid not in columns:
            raise DataError(f"loglik: persona table lacks item {iid!r}")
        return columns[iid]

    return np.asarray(L.values, dtype=float), col


def normalised_table(table: Any) -> Any:
    """``loglik`` renormalised over options (``log p(o | i, k)`` given the answer is one of the options)."""
    import xarray as xr

    L = table["loglik"].transpose("persona", "item", "option")
    return xr.DataArray(log_softmax(L.values, axis=-1), dims=L.dims, coords=L.coords, name="loglik")


def select_personas(spec: Any, traits: Sequence[str]) -> PersonaSet:
    """The personas (both poles) of ``traits`` from a :class:`~psm_bayes.probes.PersonaSpec`."""
    keep = [i for i, t in enumerate(spec.trait.tolist()) if t in set(traits)]
    missing = sorted(set(traits) - set(spec.trait.tolist()))
    if missing:
        raise DataError(f"traits: no personas for {missing}")
    p = spec.personas
    return PersonaSet([p.ids[i] for i in keep], [p.names[i] for i in keep], [p.descriptions[i] for i in keep])


# ---------------------------------------------------------------- the stage
@dataclass(frozen=True)
class PersonaStage:
    """Output of :func:`measure_personas`.

    Attributes
    ----------
    spec : PersonaSpec
        Every shipped persona (trait and pole of each).
    personas : PersonaSet
        Both poles of every design trait.
    context : str
        The persona form the experiment uses (one of :data:`PERSONA_CONTEXTS`).
    tables : dict of str to xarray.Dataset
        Persona table of each form measured (``context`` first).
    separation : dict of str to pandas.DataFrame
        :func:`persona_separation` of each table.
    mode_priors : dict of str to numpy.ndarray
        EM prior of each table.
    em : EMResult
        The EM prior of the experiment's table.
    loglik : xarray.DataArray (persona, item, option)
        The experiment's table renormalised over options.
    """

    spec: Any
    personas: PersonaSet
    context: str
    tables: dict
    separation: dict
    mode_priors: dict
    em: EMResult
    loglik: Any

    @property
    def table(self) -> Any:
        """The persona table of the experiment's form."""
        return self.tables[self.context]

    @property
    def prior_weights(self) -> np.ndarray:
        """The pre-training prior ``pi``."""
        return self.em.weights


def measure_personas(loaded: Any, design: Any, *, context: str = "fewshot", compare_contexts: bool = True,
                     method: str = "fast", description_index: int = 0, pseudo_count: float = 1.0,
                     cache_dir: str | Path | None = None, batch_size: int = 16,
                     progress: bool = True) -> PersonaStage:
    """Score the persona table(s) of a design and fit the pre-training prior.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    design : Design
        Its ``table_idx`` items are scored; its ``persona_idx`` are the few-shot examples.
    context : {"description", "fewshot", "both"}
        The persona form used downstream.
    compare_contexts : bool
        Also score the other forms (for the separation table).
    method : {"fast", "scorer"}
        See :func:`score_persona_table` (``scorer``: description form only).
    description_index : int
        Which shipped description each persona uses.
    pseudo_count : float
        EM pseudo-count.
    cache_dir : path, optional
        Table cache folder (``table.nc`` / ``table-<form>.nc``, or ``scores`` for ``method="scorer"``).
    batch_size : int
    progress : bool

    Returns
    -------
    PersonaStage
    """
    from psm_bayes.probes import load_personas

    if method == "scorer" and context != "description":
        raise DataError("table_method: 'scorer' supports persona_context='description' only")
    probes = design.probes
    spec = load_personas(description_index=description_index)
    personas = select_personas(spec, design.traits)
    items = probes.subset(design.table_idx).items
    modes = [context] + ([m for m in PERSONA_CONTEXTS if m != context] if compare_contexts else [])
    tables, separation, mode_priors = {}, {}, {}
    for mode in modes:
        if mode != "description" and method == "scorer":
            continue
        ctx = None if mode == "description" else persona_contexts(spec, personas, probes, design.persona_idx, mode)
        name = "table.nc" if mode == "description" else f"table-{mode}.nc"
        cache_path = None if cache_dir is None else Path(cache_dir) / (name if method == "fast" else "scores")
        tables[mode] = score_persona_table(loaded, personas, items, method=method, cache_path=cache_path,
                                           batch_size=batch_size, progress=progress, contexts=ctx)
        separation[mode] = persona_separation(tables[mode], probes, spec)
        mode_priors[mode] = prior_from_table(tables[mode], pseudo_count=pseudo_count).weights
    em = prior_from_table(tables[context], pseudo_count=pseudo_count)
    return PersonaStage(spec=spec, personas=personas, context=context, tables=tables, separation=separation,
                        mode_priors=mode_priors, em=em, loglik=normalised_table(tables[context]))

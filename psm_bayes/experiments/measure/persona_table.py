"""Stage 2 of the experiment: the persona table and the pre-training prior, from the same language model.

``L[k, i, o] = log p(option o | context of persona k + item i)`` for every
persona (both poles of every trait) and every table item, plus the neutral
row ``log p(o | neutral context + item i)`` (:func:`score_persona_table`,
in the model's prompt format; the options are single tokens, so one forward
pass per (persona, item) gives both, and a persona's context is a token
prefix shared by all its items).  A persona's context is, by default,
``k`` label-balanced example answers by it (``t+`` the matching answers,
``t-`` the other answers on the same statements), or its description, or both
(:func:`persona_contexts`).

The pre-training prior is the EM fit of the neutral answers on the design's
*prior items* only (:mod:`psm_bayes.experiments.measure.pretraining_prior`), items
used for nothing else.  :func:`measure_personas` is the stage.
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
from psm_bayes.experiments.measure.pretraining_prior import EMResult, prior_from_table


# ---------------------------------------------------------------- persona table
PERSONA_CONTEXTS: tuple[str, ...] = ("description", "fewshot", "both")
"""Persona context forms: the description preamble, ``k`` in-context answers by the persona, or both."""

GROUP_SEP = "&"
"""Joins the traits of a multi-trait persona (``sycophancy&power-seeking+``)."""


def with_multi_trait(spec: Any, groups: Sequence[Sequence[str]]) -> Any:
    """``spec`` plus one persona per pole for each group of traits (a multi-trait persona).

    Persona ``g+`` of group ``g = (a, b, ...)`` answers the examples of every
    member trait with the matching answer, ``g-`` with the other answer
    (:func:`persona_contexts`); its trait is ``"a&b&..."``. Such personas give
    the persona set cross-trait structure: evidence on one member trait moves
    the posterior towards a persona that also shifts the others.
    """
    from psm_bayes.probes import PersonaSpec

    if not groups:
        return spec
    traits = list(dict.fromkeys(str(t) for t in spec.trait))
    p = spec.personas
    ids, names, descs = list(p.ids), list(p.names), list(p.descriptions)
    trait, pole = list(spec.trait), list(spec.pole)
    for g in groups:
        g = tuple(str(t) for t in g)
        bad = [t for t in g if t not in traits]
        if len(g) < 2 or bad or len(set(g)) < len(g):
            raise DataError(f"multi_trait_personas: expected >= 2 distinct known traits per group, got {list(g)}"
                            + (f" (unknown {bad}; known {traits})" if bad else ""))
        for sign in "+-":
            members = [i for i, (t, q) in enumerate(zip(spec.trait, spec.pole)) if t in g and q == sign]
            ids.append(GROUP_SEP.join(g) + sign)
            names.append(" and ".join(p.names[i] for i in members))
            descs.append(" ".join(p.descriptions[i] for i in members) if all(p.descriptions[i].strip()
                                                                            for i in members) else "")
            trait.append(GROUP_SEP.join(g))
            pole.append(sign)
    return PersonaSpec(PersonaSet(ids, names, descs), np.array(trait, dtype=object), np.array(pole, dtype=object))


def persona_contexts(fmt: Any, spec: Any, personas: PersonaSet, probes: Any, examples: np.ndarray,
                     mode: str = "fewshot") -> list[str]:
    """The context text of every persona, in the model's prompt format.

    Parameters
    ----------
    fmt : psm_bayes.llm.formats.PlainFormat
        The prompt format (``loaded.format``).
    spec : PersonaSpec
        Gives each persona's trait and pole.
    personas : PersonaSet
        The personas (ids looked up in ``spec``), with descriptions.
    probes : ProbeSet
        Probes indexed by ``examples``.
    examples : array of int
        Persona examples (the design's ``persona_idx``); persona ``t+``/``t-``
        uses the examples of trait ``t``, in the same order.
    mode : {"description", "fewshot", "both"}
        ``description``: the description (``fmt.description_context``);
        ``fewshot``: the examples answered as the pole would (``+``: the
        matching answer, ``-``: the other answer; ``fmt.fewshot_context``);
        ``both``: description, then examples.

    Returns
    -------
    list of str
    """
    from psm_bayes.experiments.measure.scoring import fewshot

    if mode not in PERSONA_CONTEXTS:
        raise ValueError(f"persona_context: expected one of {PERSONA_CONTEXTS}, got {mode!r}")
    row = {pid: j for j, pid in enumerate(spec.personas.ids)}
    examples = np.asarray(examples, dtype=int)
    out = []
    for k, pid in enumerate(personas.ids):
        if pid not in row:
            raise DataError(f"personas.ids: {pid!r} is not in the persona spec")
        ctx = ""
        if mode in ("description", "both"):
            desc = personas.descriptions[k]
            if not desc.strip():
                raise DataError(f"personas.descriptions[{k}]: persona {pid!r} has no description")
            ctx += fmt.description_context(desc)
        if mode in ("fewshot", "both"):
            trait, pole = str(spec.trait[row[pid]]), str(spec.pole[row[pid]])
            ex = examples[np.isin(probes.trait[examples], trait.split(GROUP_SEP))]
            if ex.size == 0:
                raise DataError(f"persona_examples: no examples of {trait!r} for persona {pid!r}")
            match = probes.matching_option[ex]
            ctx += fewshot(fmt, probes, ex, match if pole == "+" else 1 - match)
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


def score_persona_table(loaded: Any, personas: PersonaSet, contexts: Sequence[str], items: ItemSet, *,
                        cache_path: str | Path | None = None, batch_size: int = 16, progress: bool = True) -> Any:
    """Score every (persona, item, option) and every neutral (item, option).

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
        The language model (its prompt format builds the prompts).
    personas : PersonaSet
    contexts : sequence of str
        One context per persona (:func:`persona_contexts`).
    items : ItemSet
        Yes/No probe items.
    cache_path : path, optional
        NetCDF file holding the finished table with its checksum (reused when its
        fingerprint -- model, contexts and item prompts -- and checksum match,
        recomputed otherwise: :func:`psm_bayes.experiments.measure.scoring.read_table_cache`).
    batch_size : int
    progress : bool

    Returns
    -------
    xarray.Dataset
        ``loglik`` (persona, item, option), ``neutral_loglik`` (item, option)
        (true log-probabilities); attrs ``model_key``, ``fingerprint``, ``prompt_format``.
    """
    import xarray as xr

    from psm_bayes.experiments.measure.scoring import option_scorer, read_table_cache, write_table_cache

    contexts = list(contexts)
    if len(contexts) != len(personas):
        raise DataError(f"contexts: expected {len(personas)} (one per persona), got {len(contexts)}")
    fmt = loaded.format
    texts = [fmt.item_text(p) for p in items.prompts]
    payload = {"model": loaded.key, "personas": list(personas.ids), "contexts": contexts,
               "neutral": fmt.neutral_context(), "items": [list(items.ids), texts]}
    fp = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    cached = None if cache_path is None else read_table_cache(cache_path, fp)   # verified, else recomputed
    if cached is not None:
        return cached
    nts = option_scorer(loaded, batch_size=batch_size)
    ll = np.zeros((len(personas), len(items), 2))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(personas) + 1, unit="context", desc="persona table")
    try:
        for k, ctx in enumerate(contexts + [fmt.neutral_context()]):
            scores = nts.score([ctx + t for t in texts])
            if k < len(personas):
                ll[k] = scores
            else:
                neutral = scores
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    ds = xr.Dataset(
        {"loglik": (("persona", "item", "option"), ll), "neutral_loglik": (("item", "option"), neutral)},
        coords={"persona": list(personas.ids), "item": list(items.ids), "option": np.arange(2)},
        attrs={"model_key": loaded.key, "fingerprint": fp, "prompt_format": fmt.describe()})
    return ds if cache_path is None else write_table_cache(ds, cache_path)


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
    """The personas (both poles) of ``traits``, and multi-trait personas of them, from a :class:`~psm_bayes.probes.PersonaSpec`."""
    keep = [i for i, t in enumerate(spec.trait.tolist()) if set(str(t).split(GROUP_SEP)) <= set(traits)]
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
        :func:`persona_separation` of each table on the evaluation items.
    mode_priors : dict of str to numpy.ndarray
        EM prior of each table (prior items only).
    em : EMResult
        The EM prior of the experiment's table (prior items only).
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


def measure_personas(loaded: Any, design: Any, spec: Any, *, context: str = "fewshot", compare_contexts: bool = True,
                     pseudo_count: float = 1.0, cache_dir: str | Path | None = None, batch_size: int = 16,
                     progress: bool = True) -> PersonaStage:
    """Score the persona table(s) of a design and fit the pre-training prior on its prior items.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    design : Design
        Its ``table_idx`` items are scored; its ``persona_idx`` are the few-shot examples; the EM prior
        sees only the neutral answers to its ``prior_idx`` items.
    spec : PersonaSpec
        Personas of every trait (descriptions may be empty for few-shot-only probe sets).
    context : {"description", "fewshot", "both"}
        The persona form used downstream.
    compare_contexts : bool
        Also score the other forms (for the separation table) when every persona has a description.
    pseudo_count : float
        EM pseudo-count.
    cache_dir : path, optional
        Table cache folder (``table-<form>.nc``).
    batch_size : int
    progress : bool

    Returns
    -------
    PersonaStage
    """
    probes = design.probes
    personas = select_personas(spec, design.traits)
    items = probes.subset(design.table_idx).items
    described = all(d.strip() for d in personas.descriptions)
    modes = [context] + ([m for m in PERSONA_CONTEXTS if m != context] if compare_contexts and described else [])
    prior_ids = [probes.items.ids[i] for i in design.prior_idx]
    tables, separation, mode_priors = {}, {}, {}
    for mode in modes:
        ctx = persona_contexts(loaded.format, spec, personas, probes, design.persona_idx, mode)
        cache_path = None if cache_dir is None else Path(cache_dir) / f"table-{mode}.nc"
        tables[mode] = score_persona_table(loaded, personas, ctx, items, cache_path=cache_path,
                                           batch_size=batch_size, progress=progress)
        eval_ids = [probes.items.ids[i] for i in design.eval_idx]
        separation[mode] = persona_separation(tables[mode].sel(item=eval_ids), probes, spec)
        mode_priors[mode] = prior_from_table(tables[mode].sel(item=prior_ids), pseudo_count=pseudo_count).weights
    em = prior_from_table(tables[context].sel(item=prior_ids), pseudo_count=pseudo_count)
    return PersonaStage(spec=spec, personas=personas, context=context, tables=tables, separation=separation,
                        mode_priors=mode_priors, em=em, loglik=normalised_table(tables[context]))

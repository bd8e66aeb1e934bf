"""The persona table and the pre-training prior, from the same language model.

Persona table
-------------
``L[k, i, o] = log p(option o | persona k's description + item i)`` for every
persona and probe item, plus the neutral row ``log p(o | item i)`` with no
persona text (:func:`psm_bayes.llm.prompts.neutral_context`).  Two exact
ways to compute it (:func:`score_persona_table`):

* ``method="fast"`` (default): :class:`~psm_bayes.experiments.nexttoken.NextTokenScorer`
  -- the options are single tokens after ``"Answer:"``, so one forward pass
  per (persona, item) gives both options; the persona description and the
  question stem form a token prefix shared by all items of a persona, whose
  KV cache is computed once.  About 3x faster than the general scorer here.
* ``method="scorer"``: :meth:`psm_bayes.llm.Scorer.score_table` (any
  option texts, multi-token included; Parquet score cache).

Both give the same ``xarray.Dataset`` layout: ``loglik`` (persona, item,
option) and ``neutral_loglik`` (item, option), true (full-vocabulary)
log-probabilities.

Pre-training prior
------------------
The neutral model is read as a mixture of the personas (the PSM's
pre-training prior ``pi``)::

    p_neutral(o | i)  ~=  sum_k pi_k p(o | i, k)

with ``p`` renormalised over each item's options.  :func:`em_prior_weights`
finds the ``pi`` maximising the expected log-likelihood of the neutral
answers,

    F(pi) = sum_i sum_o q_i(o) log sum_k pi_k p(o | i, k),   q_i = p_neutral(. | i),

by EM (a minimum-KL projection of the neutral answer distributions onto the
persona mixtures): E-step ``r_iok = pi_k p(o|i,k) / sum_j pi_j p(o|i,j)``,
M-step ``pi_k = (sum_io q_io r_iok + a) / (I + K a)``, where ``a`` is an
optional pseudo-count (a MAP estimate under ``Dirichlet(1 + a)``) that keeps
every weight positive -- the PSM's ``Dirichlet(concentration * pi)`` needs
``pi_k > 0``.  ``F`` is concave in ``pi``, so EM converges to the global
maximum (monotonically; the log-likelihood trace is returned).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import log_softmax, logsumexp

from psm_bayes.data import DataError, ItemSet, PersonaSet
from psm_bayes.probes import balanced_pick


@dataclass(frozen=True)
class EMResult:
    """Result of :func:`em_prior_weights`.

    Attributes
    ----------
    weights : numpy.ndarray
        ``pi`` (persona,), sums to one.
    loglik : numpy.ndarray
        ``F(pi)`` after each iteration (non-decreasing without a pseudo-count).
    n_iter : int
        Iterations run.
    converged : bool
        Whether the largest weight change fell below ``tol``.
    """

    weights: np.ndarray
    loglik: np.ndarray
    n_iter: int
    converged: bool


def em_prior_weights(persona_loglik: np.ndarray, neutral_loglik: np.ndarray, *, n_iter: int = 500,
                     tol: float = 1e-10, pseudo_count: float = 0.0, init: np.ndarray | None = None) -> EMResult:
    """Mixture weights ``pi`` that best explain the neutral answers as a mixture of persona answers.

    Parameters
    ----------
    persona_loglik : array (persona, item, option)
        ``log p(o | i, k)`` (renormalised over options here).
    neutral_loglik : array (item, option)
        ``log p_neutral(o | i)`` (renormalised over options here).
    n_iter : int
        Maximum EM iterations (a few hundred are plenty).
    tol : float
        Stop when ``max |pi_new - pi| < tol``.
    pseudo_count : float
        ``a >= 0`` added to every persona's expected count (MAP under a
        ``Dirichlet(1 + a)`` prior); keeps weights away from zero.
    init : array (persona,), optional
        Starting weights (default uniform).

    Returns
    -------
    EMResult
    """
    L = np.asarray(persona_loglik, dtype=float)
    N = np.asarray(neutral_loglik, dtype=float)
    if L.ndim != 3:
        raise DataError(f"persona_loglik: expected (persona, item, option), got shape {L.shape}")
    K, I, O = L.shape
    if N.shape != (I, O):
        raise DataError(f"neutral_loglik: expected shape {(I, O)} (item, option), got {N.shape}")
    for name, arr in (("persona_loglik", L), ("neutral_loglik", N)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: expected finite log-probabilities")
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count: expected >= 0, got {pseudo_count}")
    logp = log_softmax(L, axis=-1)                  # (K, I, O)
    q = np.exp(log_softmax(N, axis=-1))             # (I, O)
    pi = np.full(K, 1.0 / K) if init is None else np.asarray(init, dtype=float) / np.sum(init)
    trace = []
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        joint = np.log(np.clip(pi, 1e-300, None))[:, None, None] + logp   # (K, I, O)
        mix = logsumexp(joint, axis=0)                                     # (I, O)
        trace.append(float(np.sum(q * mix)))
        resp = np.exp(joint - mix[None])                                   # (K, I, O)
        counts = np.einsum("io,kio->k", q, resp)
        new = (counts + pseudo_count) / (I + K * pseudo_count)
        delta = float(np.max(np.abs(new - pi)))
        pi = new
        if delta < tol:
            converged = True
            break
    mix = logsumexp(np.log(np.clip(pi, 1e-300, None))[:, None, None] + logp, axis=0)
    trace.append(float(np.sum(q * mix)))
    return EMResult(pi / pi.sum(), np.asarray(trace), it, converged)


# ---------------------------------------------------------------- persona table
PERSONA_CONTEXTS: tuple[str, ...] = ("description", "fewshot", "both")
"""Persona context forms: the description preamble, ``k`` in-context answers by the persona, or both."""


def reserve_persona_examples(probes: Any, train_idx: np.ndarray, traits: Sequence[str], k: int,
                             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Set aside ``k`` training statements per trait as the few-shot personas' examples.

    The reserved statements (half matching-Yes, half matching-No where
    possible, in a seeded order) are removed from the training pool, so they
    are never ICL shots, SFT episodes or held-out items -- i.e. never scored in
    the persona table, whose items are exactly those (no leakage of a
    persona's own example answers into its table row).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(reserved_idx, remaining_train_idx)``; ``reserved_idx`` is grouped by
        trait in ``traits`` order, each group in prompt order.
    """
    if k < 0:
        raise ValueError(f"persona_examples: expected >= 0, got {k}")
    train_idx = np.asarray(train_idx, dtype=int)
    if k == 0:
        return np.zeros(0, dtype=int), train_idx
    res = []
    for ti, t in enumerate(traits):
        pool = train_idx[probes.trait[train_idx] == t]
        if pool.size <= k:
            raise DataError(f"persona_examples: {k} reserved statements of {t!r} leave no training pool "
                            f"({pool.size} training statements)")
        rng = np.random.default_rng([seed, 4, ti])
        res.append(rng.permutation(balanced_pick(rng, pool, probes.matching_option, k)))
    reserved = np.concatenate(res)
    return reserved, np.setdiff1d(train_idx, reserved)


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
        Persona examples (:func:`reserve_persona_examples`); persona ``t+``/``t-``
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
    from psm_bayes.experiments.nexttoken import NextTokenScorer

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


def prior_from_table(table: Any, *, n_iter: int = 500, pseudo_count: float = 1.0) -> EMResult:
    """:func:`em_prior_weights` on a persona table from :func:`score_persona_table`."""
    L = table["loglik"].transpose("persona", "item", "option").values
    N = table["neutral_loglik"].transpose("item", "option").values
    return em_prior_weights(L, N, n_iter=n_iter, pseudo_count=pseudo_count)


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

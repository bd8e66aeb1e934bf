"""The persona x item x option table of a :class:`~psm_bayes.llm.scorer.Scorer`, resumable through the score cache.

:func:`score_table` builds every ``(persona, item, option)`` string in the
scorer's prompt format, scores what the cache does not hold yet in chunks
(appending each chunk to the cache, so an interrupted run resumes), and
returns the ``loglik`` Dataset that :class:`psm_bayes.data.LogLikTable`
takes, with the model identity and the prompt format in its attributes.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from psm_bayes.data import DataError, ItemSet, PersonaSet

NEUTRAL_PERSONA = "<neutral>"
"""Persona id used for neutral-context rows in the score cache."""


def context_hash(text: str) -> str:
    """Stable 32-hex-digit hash of a full conditioning string (cache key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def score_table(scorer: Any, personas: PersonaSet, items: ItemSet, *, contexts: dict[str, str] | None = None,
                neutral: bool = True, cache: Any = None, progress: bool = True,
                chunk_size: int = 256) -> Any:
    """Score every (persona, item, option) and return an xarray Dataset.

    Strings are built with the scorer's prompt format ``fmt = scorer.format``
    (:mod:`psm_bayes.llm.formats`): ``context + fmt.item_text(prompt) + fmt.option(option)``.

    Parameters
    ----------
    scorer : psm_bayes.llm.scorer.Scorer
    personas : PersonaSet
        Personas; by default persona ``p`` is conditioned on
        ``fmt.description_context(p.description)``.
    items : ItemSet
        Items.
    contexts : dict of str to str, optional
        Explicit context text per persona id (e.g. from
        ``fmt.fewshot_context``); must cover every persona.
    neutral : bool
        Also score every item under ``fmt.neutral_context()``
        (variable ``neutral_loglik``).
    cache : ScoreCache or path, optional
        Score cache: finished rows are reused and new rows are appended in
        chunks, so an interrupted run resumes where it stopped.
    progress : bool
        Show a progress bar with throughput.
    chunk_size : int
        Pairs scored (and cached) per chunk.

    Returns
    -------
    xarray.Dataset
        ``loglik`` (persona, item, option) -- valid input to
        :class:`psm_bayes.data.LogLikTable`; ``n_tokens`` (persona, item,
        option); ``option_text`` (item, option); with ``neutral``,
        ``neutral_loglik`` and ``neutral_n_tokens`` (item, option).
    """
    from psm_bayes.llm.cache import ScoreCache, score_rows

    if not isinstance(personas, PersonaSet):
        raise DataError(f"personas: expected a PersonaSet, got {type(personas).__name__}")
    if not isinstance(items, ItemSet):
        raise DataError(f"items: expected an ItemSet, got {type(items).__name__}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    fmt = scorer.format
    ctx = _persona_contexts(fmt, personas, contexts)
    item_texts = [fmt.item_text(p) for p in items.prompts]
    # rows: (persona key, persona index or -1, item index, option index, context text)
    plan: list[tuple[str, int, int, int, str]] = []
    for pi, pid in enumerate(personas.ids):
        for ii in range(len(items)):
            for oi in range(items.n_options):
                plan.append((pid, pi, ii, oi, ctx[pid] + item_texts[ii]))
    if neutral:
        neutral_ctx = fmt.neutral_context()
        for ii in range(len(items)):
            for oi in range(items.n_options):
                plan.append((NEUTRAL_PERSONA, -1, ii, oi, neutral_ctx + item_texts[ii]))
    keys = [(pk, items.ids[ii], items.options[ii][oi], context_hash(text)) for pk, _, ii, oi, text in plan]
    store = None if cache is None else (cache if isinstance(cache, ScoreCache) else ScoreCache(cache))
    done: dict[tuple[str, str, str, str], tuple[float, int]] = {}
    if store is not None:
        done = store.lookup(scorer.loaded.key)
    todo = [k for k, key in enumerate(keys) if key not in done]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="pair", desc=f"scoring {scorer.loaded.model_id}")
    t0, n_tok = time.perf_counter(), 0
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            scores = scorer.score_pairs([plan[k][4] for k in chunk],
                                        [fmt.option(items.options[plan[k][2]][plan[k][3]]) for k in chunk])
            for k, s in zip(chunk, scores):
                done[keys[k]] = (s.logp, len(s.token_ids))
            if store is not None:
                store.append(score_rows(scorer.loaded.key, [keys[k] for k in chunk], scores))
            if bar is not None:
                n_tok += sum(len(s.token_ids) + s.n_context_tokens for s in scores)
                bar.update(len(chunk))
                bar.set_postfix_str(f"{n_tok / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")
    finally:
        if bar is not None:
            bar.close()
    return _assemble(scorer, personas, items, plan, keys, done, neutral)

def _assemble(scorer: Any, personas: PersonaSet, items: ItemSet, plan: list, keys: list, done: dict,
              neutral: bool) -> Any:
    import xarray as xr

    n_p, n_i, n_o = len(personas), len(items), items.n_options
    ll = np.full((n_p, n_i, n_o), np.nan)
    nt = np.zeros((n_p, n_i, n_o), dtype=np.int64)
    nll = np.full((n_i, n_o), np.nan)
    nnt = np.zeros((n_i, n_o), dtype=np.int64)
    for (pk, pi, ii, oi, _), key in zip(plan, keys):
        logp, ntok = done[key]
        if pi >= 0:
            ll[pi, ii, oi], nt[pi, ii, oi] = logp, ntok
        else:
            nll[ii, oi], nnt[ii, oi] = logp, ntok
    coords = {"persona": list(personas.ids), "item": list(items.ids), "option": np.arange(n_o)}
    ds = xr.Dataset(
        {
            "loglik": (("persona", "item", "option"), ll),
            "n_tokens": (("persona", "item", "option"), nt),
            "option_text": (("item", "option"), np.array([list(o) for o in items.options], dtype=str)),
            "prompt": (("item",), np.array(list(items.prompts), dtype=str)),
            "persona_name": (("persona",), np.array(list(personas.names), dtype=str)),
        },
        coords=coords,
    )
    if neutral:
        ds["neutral_loglik"] = (("item", "option"), nll)
        ds["neutral_n_tokens"] = (("item", "option"), nnt)
    ds["loglik"].attrs["description"] = ("log p(option | persona context + item_text(prompt)) in the prompt "
                                     "format, summed over tokens")
    ds.attrs.update({
        "model_id": scorer.loaded.model_id,
        "weights_hash": scorer.loaded.weights_hash,
        "model_key": scorer.loaded.key,
        "dtype": scorer.loaded.dtype,
        "device": scorer.loaded.device,
        "prompt_format": scorer.format.name,
        "prompt_format_description": scorer.format.describe(),
        "neutral_context": scorer.format.neutral_context(),
    })
    return ds


def _persona_contexts(fmt: Any, personas: PersonaSet, contexts: dict[str, str] | None) -> dict[str, str]:
    """Context text per persona id, validated."""
    if contexts is None:
        out = {}
        for i, (pid, desc) in enumerate(zip(personas.ids, personas.descriptions)):
            if not desc.strip():
                raise DataError(f"personas.descriptions[{i}]: persona {pid!r} has no description; "
                                f"give one or pass contexts={{{pid!r}: ...}}")
            out[pid] = fmt.description_context(desc)
        return out
    if not isinstance(contexts, dict):
        raise DataError(f"contexts: expected a dict persona id -> text, got {type(contexts).__name__}")
    missing = [p for p in personas.ids if p not in contexts]
    extra = sorted(str(k) for k in contexts if k not in set(personas.ids))
    if missing:
        raise DataError(f"contexts: no context for persona(s) {missing[:5]}")
    if extra:
        raise DataError(f"contexts: unknown persona id(s) {extra[:5]}")
    for pid in personas.ids:
        if not isinstance(contexts[pid], str):
            raise DataError(f"contexts[{pid!r}]: expected str, got {type(contexts[pid]).__name__}")
    return {pid: contexts[pid] for pid in personas.ids}

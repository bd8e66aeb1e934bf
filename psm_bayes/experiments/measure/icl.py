"""Stage 3 of the experiment: in-context learning with label-balanced shots of both poles.

Conditions (each measured on every evaluation item of every trait):

* ``base`` -- the neutral context and the item, no shots (measured once);
* ``icl:<trait><pole>:o<ordering>:n<n>`` -- the first ``n`` shots of a shot
  sequence (:class:`~psm_bayes.experiments.design.ShotSequence`) answered as
  pole ``+`` (the matching answers) or ``-`` (the other answers), for every
  ``n > 0`` of the design's shot counts.  ``t+`` and ``t-`` use the identical
  statements in the identical order, and every even prefix is label-balanced,
  so the Yes/No count of the context is the same under both poles (the
  1-shot prefix balances over pairs of orderings only).

The measurement is the log-odds of the item's matching answer,
``logit p(match) = log p(match) - log p(other)``.  The primary observable is
the bias-cancelling **contrast** per (shot trait, ordering, n, item): the
log-odds under ``t+`` minus under ``t-`` (:func:`icl_contrasts`); a Yes/No
response bias of the context moves both equally and cancels.

All shot counts of one (sequence, pole) come from ONE forward pass of its
longest context, whose key/value cache is cut at each count's boundary
(:mod:`psm_bayes.llm.manyshot`); the items of every count run on top of it,
batched.  Each (sequence, pole) is cached as one ``(count, item, option)``
array (:class:`~psm_bayes.experiments.measure.scoring.ArrayCache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.experiments.design import Design

POLES: tuple[str, str] = ("+", "-")


def icl_condition(trait: str, pole: str, ordering: int, n: int) -> str:
    """The id of an ICL condition."""
    return f"icl:{trait}{pole}:o{ordering}:n{n}"


def measurement_rows(condition: str, kind: str, design: Design, items: np.ndarray, logodds: np.ndarray,
                     **extra: Any) -> list[dict]:
    """One row per measured item of a condition (shared by every measuring stage)."""
    p = design.probes
    return [{"condition": condition, "kind": kind, **extra, "item": int(i), "item_id": p.items.ids[i],
             "item_trait": str(p.trait[i]), "matching": int(p.matching_option[i]), "logodds": float(lo)}
            for i, lo in zip(items, logodds)]


@dataclass(frozen=True)
class ICLStage:
    """Output of :func:`run_icl`.

    Attributes
    ----------
    measurements : pandas.DataFrame
        One row per (condition, evaluation item): ``condition``, ``kind``
        (``base``/``icl``), ``shot_trait``, ``pole``, ``ordering``,
        ``n_shots``, ``item``, ``item_id``, ``item_trait``, ``matching``, ``logodds``.
    contrasts : pandas.DataFrame
        :func:`icl_contrasts` of the measurements.
    """

    measurements: pd.DataFrame
    contrasts: pd.DataFrame


def run_icl(loaded: Any, design: Design, *, cache_dir: str | Path | None = None, batch_size: int = 16,
            progress: bool = True) -> ICLStage:
    """Measure the base and ICL conditions of a design (see the module docstring)."""
    from psm_bayes.experiments.measure.scoring import (ArrayCache, fewshot, matching_logodds, option_scorer, prompts_for,
                                               score_cached)
    from psm_bayes.llm.manyshot import score_nested

    fmt, probes, items = loaded.format, design.probes, design.eval_idx
    nts = option_scorer(loaded, batch_size=batch_size)
    cache = ArrayCache(cache_dir)
    m = probes.matching_option[items]
    texts = [fmt.item_text(probes.items.prompts[i]) for i in items]
    counts = [n for n in design.n_values if n > 0]
    lp = score_cached(nts, cache, "icl-v2", loaded.key, prompts_for(fmt, fmt.neutral_context(), probes, items))
    rows = measurement_rows("base", "base", design, items, matching_logodds(lp, m), shot_trait="", pole="",
                            ordering=-1, n_shots=0)
    runs = [(s, pole) for s in design.sequences for pole in POLES]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), unit="sequence", desc=f"ICL ({max(counts)} shots, one pass per sequence)")
    try:
        for seq, pole in runs:
            contexts = [fewshot(fmt, probes, seq.items[:n], seq.answers(pole)[:n]) for n in counts]
            key = cache.key("icl-nested-v1", loaded.key, contexts, texts)
            lp = cache.get(key)
            if lp is None or lp.shape != (len(counts), len(items), 2):
                lp = score_nested(nts, contexts, texts)      # every count from one pass of the longest context
                cache.put(key, lp, "icl.run_icl")
            for j, n in enumerate(counts):
                rows += measurement_rows(icl_condition(seq.trait, pole, seq.ordering, n), "icl", design, items,
                                         matching_logodds(lp[j], m), shot_trait=seq.trait, pole=pole,
                                         ordering=seq.ordering, n_shots=n)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    meas = pd.DataFrame(rows)
    return ICLStage(meas, icl_contrasts(meas))


def icl_contrasts(meas: pd.DataFrame) -> pd.DataFrame:
    """Per (shot trait, ordering, n, item): ``plus``, ``minus`` log-odds and ``contrast = plus - minus``.

    ``same_trait`` marks items of the shot trait (the persona's own trait).
    """
    icl = meas[meas["kind"] == "icl"]
    keys = ["shot_trait", "ordering", "n_shots", "item", "item_id", "item_trait"]
    wide = icl.pivot_table(index=keys, columns="pole", values="logodds").reset_index()
    wide = wide.rename(columns={"+": "plus", "-": "minus"})
    wide["contrast"] = wide["plus"] - wide["minus"]
    wide["same_trait"] = wide["shot_trait"] == wide["item_trait"]
    wide.columns.name = None
    return wide

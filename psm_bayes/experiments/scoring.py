"""Prompt building and cached next-token scoring shared by every measuring stage.

All prompts go through the model's prompt format (``loaded.format``,
:mod:`psm_bayes.llm.formats`): plain ``Question:/Answer:`` text for base
models, the tokenizer's chat template for instruct models (the Assistant turn
answers).  Scores are ``log p(option)`` of the two single-token options
(Yes, No) from one forward pass (:class:`~psm_bayes.llm.nexttoken.NextTokenScorer`),
cached per group of prompts in an :class:`ArrayCache` (``.npy`` files keyed by
a hash of the model and the exact prompts), so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from psm_bayes.probes import OPTIONS, ProbeSet


class ArrayCache:
    """Directory of ``<key>.npy`` arrays, written atomically; ``None`` directory = no caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts: Any) -> str:
        """A 32-hex-digit hash of ``parts`` (their ``repr``)."""
        h = hashlib.sha256()
        for p in parts:
            h.update(repr(p).encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:32]

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or ``None`` (missing or unreadable)."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        """Store ``value`` under ``key`` (atomic)."""
        if self.directory is None:
            return
        from psm_bayes.io import atomic_path

        with atomic_path(self.directory / f"{key}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(value))


def option_scorer(loaded: Any, *, model: Any = None, autocast: bool = False, batch_size: int = 16) -> Any:
    """A :class:`~psm_bayes.llm.nexttoken.NextTokenScorer` of Yes/No in ``loaded``'s prompt format.

    ``model`` replaces ``loaded.model`` (e.g. a LoRA-adapted copy).
    """
    from psm_bayes.llm.nexttoken import NextTokenScorer

    fmt = loaded.format
    return NextTokenScorer(loaded.model if model is None else model, loaded.tokenizer,
                           tuple(fmt.option(o) for o in OPTIONS), batch_size=batch_size, autocast=autocast,
                           sample_prompt=fmt.item_text("Hello?"))


def fewshot(fmt: Any, probes: ProbeSet, items: Sequence[int], answers: Sequence[int]) -> str:
    """The few-shot context of ``items`` answered with option indices ``answers``."""
    return fmt.fewshot_context([(probes.items.prompts[i], OPTIONS[int(a)]) for i, a in zip(items, answers)])


def prompts_for(fmt: Any, context: str, probes: ProbeSet, items: Sequence[int]) -> list[str]:
    """``context + item_text(item)`` for every item."""
    return [context + fmt.item_text(probes.items.prompts[i]) for i in items]


def matching_logodds(logp: np.ndarray, matching: np.ndarray) -> np.ndarray:
    """Log-odds of the matching option from ``(row, 2)`` Yes/No log-probabilities."""
    rows = np.arange(logp.shape[0])
    m = np.asarray(matching, dtype=int)
    return logp[rows, m] - logp[rows, 1 - m]


def score_cached(scorer: Any, cache: ArrayCache, tag: str, model_key: str, texts: list[str]) -> np.ndarray:
    """``(len(texts), 2)`` Yes/No log-probabilities, from ``cache`` when the same prompts were scored."""
    key = cache.key(tag, model_key, texts)
    lp = cache.get(key)
    if lp is None or lp.shape != (len(texts), 2):
        lp = scorer.score(texts)
        cache.put(key, lp)
    return lp

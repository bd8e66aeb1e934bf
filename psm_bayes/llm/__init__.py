"""Score persona-conditioned answers with a real causal language model.

Public API (imported lazily, so ``import psm_bayes.llm`` is cheap):

* :func:`load_model` / :class:`LoadedModel` -- load a Hugging Face causal LM
  (default: the embedded Gemma 3 270M base model) offline, with a dequantized
  on-disk cache (:mod:`psm_bayes.llm.loading`);
* :class:`Scorer` / :class:`PairScore` -- exact, batched continuation
  log-likelihoods and the persona x item x option table
  (:mod:`psm_bayes.llm.scorer`);
* :class:`ScoreCache` -- resumable Parquet cache of scores
  (:mod:`psm_bayes.llm.cache`);
* prompt formats :func:`item_text`, :func:`description_context`,
  :func:`fewshot_context`, :func:`neutral_context` (:mod:`psm_bayes.llm.prompts`);
* :func:`embed_texts` / :func:`persona_space_prior` -- mean-pooled hidden
  states and the PCA persona-space prior built from them
  (:mod:`psm_bayes.llm.embeddings`).

Example
-------
>>> from psm_bayes.llm import load_model, Scorer          # doctest: +SKIP
>>> scorer = Scorer(load_model(), batch_size=8)           # doctest: +SKIP
>>> scorer.score_pairs(["The capital of France is"], [" Paris"])[0].logp  # doctest: +SKIP
-2.48
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "psm_bayes.llm.loading",
    "LoadedModel": "psm_bayes.llm.loading",
    "cache_root": "psm_bayes.llm.loading",
    "Scorer": "psm_bayes.llm.scorer",
    "PairScore": "psm_bayes.llm.scorer",
    "ScorerStats": "psm_bayes.llm.scorer",
    "NEUTRAL_PERSONA": "psm_bayes.llm.scorer",
    "ScoreCache": "psm_bayes.llm.cache",
    "item_text": "psm_bayes.llm.prompts",
    "description_context": "psm_bayes.llm.prompts",
    "fewshot_context": "psm_bayes.llm.prompts",
    "neutral_context": "psm_bayes.llm.prompts",
    "embed_texts": "psm_bayes.llm.embeddings",
    "persona_space_prior": "psm_bayes.llm.embeddings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'psm_bayes.llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

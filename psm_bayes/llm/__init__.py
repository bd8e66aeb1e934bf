"""Score persona-conditioned answers with a real causal language model.

Public API (imported lazily, so ``import psm_bayes.llm`` is cheap):

* :func:`load_scorer` -- a model and a :class:`Scorer` that knows its prompt
  format, device and batch size, by embedded name (``gemma3-270m``, the
  default base model; ``smollm2-135m-instruct``, an instruct model scored
  through its chat template: :mod:`psm_bayes.llm.registry`) or by path;
* :func:`load_model` / :class:`LoadedModel` -- load a Hugging Face causal LM
  offline on ``device="auto"|"cpu"|"cuda"``, with a dequantized on-disk
  cache (:mod:`psm_bayes.llm.loading`);
* :class:`Scorer` / :class:`PairScore` -- exact, batched continuation
  log-likelihoods with persona contexts shared as cached key/value prefixes
  (:mod:`psm_bayes.llm.scorer`), single-token option log-probabilities
  (:meth:`Scorer.option_logprobs`, :mod:`psm_bayes.llm.nexttoken`) and the
  persona x item x option table (:mod:`psm_bayes.llm.table`);
* prompt formats ``plain`` (base models) and ``chat`` (instruct models)
  (:mod:`psm_bayes.llm.formats`);
* :class:`ScoreCache` -- resumable Parquet cache of scores
  (:mod:`psm_bayes.llm.cache`);
* the plain format's strings :func:`item_text`, :func:`description_context`,
  :func:`fewshot_context`, :func:`neutral_context` (:mod:`psm_bayes.llm.prompts`);
* :func:`embed_texts` -- mean-pooled hidden states
  (:mod:`psm_bayes.llm.embeddings`; the persona-space prior built from them
  is :mod:`psm_bayes.persona_space_prior`).

Example
-------
>>> from psm_bayes.llm import load_scorer                 # doctest: +SKIP
>>> scorer = load_scorer("gemma3-270m", device="auto")    # doctest: +SKIP
>>> scorer.score_pairs(["The capital of France is"], [" Paris"])[0].logp  # doctest: +SKIP
-2.48
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_model": "psm_bayes.llm.loading",
    "load_scorer": "psm_bayes.llm.scorer",
    "resolve_device": "psm_bayes.llm.loading",
    "model_names": "psm_bayes.llm.registry",
    "make_format": "psm_bayes.llm.formats",
    "NextTokenScorer": "psm_bayes.llm.nexttoken",
    "LoadedModel": "psm_bayes.llm.loading",
    "cache_root": "psm_bayes.llm.loading",
    "Scorer": "psm_bayes.llm.scorer",
    "PairScore": "psm_bayes.llm.scorer",
    "ScorerStats": "psm_bayes.llm.scorer",
    "NEUTRAL_PERSONA": "psm_bayes.llm.table",
    "ScoreCache": "psm_bayes.llm.cache",
    "item_text": "psm_bayes.llm.prompts",
    "description_context": "psm_bayes.llm.prompts",
    "fewshot_context": "psm_bayes.llm.prompts",
    "neutral_context": "psm_bayes.llm.prompts",
    "embed_texts": "psm_bayes.llm.embeddings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'psm_bayes.llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

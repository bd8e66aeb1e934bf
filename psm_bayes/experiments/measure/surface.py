"""Statement-text features of the ``surface_similarity`` null: the language model's own hidden states.

For every persona-table statement, :func:`measure_surface` takes the
model's final hidden states of the statement's tokens read under the
neutral context (the probe as it is scored, up to the statement: the
context, the question and the opening quote condition the states but are
not pooled; the answer cue after the statement is never read), mean-pooled
(:func:`psm_bayes.llm.embeddings.embed_texts`). It runs once per language
model, on the base model before any fine-tuning, and sees statements only:
never an answer, a persona or a measured outcome.

The Yes/No sign of the statement's matching answer (``+1`` when a
positive-pole persona says Yes) is then projected out (:func:`project_out`):
each feature dimension is regressed on the centred sign (with an intercept)
and replaced by its residual, so no linear read-out of the features recovers
the sign. The kernel is the cosine similarity of the residuals
(:func:`cosine_similarity`). :func:`sign_correlation` measures what the
projection removes: the correlation of a kernel's off-diagonal entries with
"same matching option" (``s_i s_j``), and of its leading eigenvector with
the sign (the ``profile_similarity`` kernel scores ~0.9 and 0.99 on them).

The hidden states are cached (:class:`~psm_bayes.experiments.measure.scoring.ArrayCache`,
keyed by the model and the exact texts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError

MARKER = "\u2063"
"""An invisible separator put where the statement goes, to split the scored text into context and statement."""


def project_out(features: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """Residuals of each feature column regressed on ``[1, sign - mean(sign)]`` (least squares), ``(item, dim)``."""
    x = np.asarray(features, dtype=float)
    s = np.asarray(sign, dtype=float)
    s = s - s.mean()
    if x.ndim != 2 or s.shape != (x.shape[0],):
        raise DataError(f"sign: expected one value per feature row ({x.shape[0]}), got shape {s.shape}")
    centred = x - x.mean(0, keepdims=True)
    ss = float(s @ s)
    return centred if ss == 0 else centred - np.outer(s, s @ centred / ss)


def cosine_similarity(features: np.ndarray) -> np.ndarray:
    """``(item, item)`` cosine similarity of feature rows (a zero row is similar to nothing)."""
    x = np.asarray(features, dtype=float)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    z = x / np.where(norm > 0, norm, 1.0)
    return np.clip(z @ z.T, -1.0, 1.0)


def sign_correlation(similarity: np.ndarray, sign: np.ndarray) -> dict[str, float]:
    """How much a kernel encodes the Yes/No sign of the matching answer.

    Returns
    -------
    dict
        ``pairs``: Pearson r of ``similarity[i, j]`` with ``sign_i * sign_j``
        over the pairs ``i < j``; ``leading``: |r| of the kernel's leading
        eigenvector with ``sign``.
    """
    S, s = np.asarray(similarity, dtype=float), np.asarray(sign, dtype=float)
    iu = np.triu_indices(s.size, 1)
    same = np.outer(s, s)[iu]
    pairs = float(np.corrcoef(S[iu], same)[0, 1]) if same.std() > 0 and S[iu].std() > 0 else 0.0
    lead = np.linalg.eigh((S + S.T) / 2)[1][:, -1]
    leading = float(abs(np.corrcoef(lead, s)[0, 1])) if lead.std() > 0 and s.std() > 0 else 0.0
    return {"pairs": pairs, "leading": leading}


@dataclass(frozen=True)
class SurfaceStage:
    """Output of :func:`measure_surface`.

    Attributes
    ----------
    item_ids : tuple of str
        Probe ids, one per row.
    sign : numpy.ndarray
        ``+1`` where the matching answer is Yes, ``-1`` where it is No.
    hidden : numpy.ndarray
        ``(item, hidden_size)`` mean-pooled hidden states of the statements.
    features : numpy.ndarray
        ``hidden`` with the sign projected out (:func:`project_out`).
    similarity : numpy.ndarray
        ``(item, item)`` cosine similarity of ``features``: the ``surface_similarity`` kernel.
    """

    item_ids: tuple[str, ...]
    sign: np.ndarray
    hidden: np.ndarray
    features: np.ndarray
    similarity: np.ndarray

    def sign_correlations(self) -> dict[str, dict[str, float]]:
        """:func:`sign_correlation` of the kernel before (``raw``: centred only) and after the projection."""
        raw = cosine_similarity(self.hidden - self.hidden.mean(0, keepdims=True))
        return {"raw": sign_correlation(raw, self.sign), "projected": sign_correlation(self.similarity, self.sign)}


def statement_texts(fmt: Any, probes: Any, items: Sequence[int]) -> tuple[str, list[str]]:
    """The shared context (neutral context + the probe up to its statement) and each statement.

    Raises :class:`~psm_bayes.data.DataError` when the items' prompts do not share that context.
    """
    prefix = None
    texts = []
    for i in items:
        statement = probes.statements[i]
        prompt = probes.items.prompts[i]
        if statement not in prompt:
            raise DataError(f"probes.statements[{i}]: not found in its prompt {prompt[:60]!r}")
        full = fmt.neutral_context() + fmt.item_text(prompt.replace(statement, MARKER, 1))
        head = full.split(MARKER)[0]
        if prefix is not None and head != prefix:
            raise DataError(f"probes.items.prompts[{i}]: the text before its statement differs from the other "
                            f"items' ({head[-40:]!r} vs {prefix[-40:]!r})")
        prefix = head
        texts.append(statement)
    if prefix is None:
        raise DataError("items: expected at least one statement")
    return prefix, texts


def surface_features(loaded: Any, probes: Any, items: Sequence[int], *, cache_dir: str | Path | None = None,
                     batch_size: int = 16) -> SurfaceStage:
    """:class:`SurfaceStage` of the probe statements ``items`` (indices into ``probes``)."""
    from psm_bayes.experiments.measure.scoring import ArrayCache
    from psm_bayes.llm.embeddings import embed_texts

    items = [int(i) for i in items]
    prefix, texts = statement_texts(loaded.format, probes, items)
    cache = ArrayCache(cache_dir)
    key = cache.key("surface-v1", loaded.key, prefix, texts)
    hidden = cache.get(key)
    if hidden is None or hidden.shape[0] != len(texts):
        hidden = embed_texts(loaded, texts, batch_size=batch_size, prefix=prefix)
        cache.put(key, hidden)
    sign = np.where(np.asarray(probes.matching_option)[items] == 0, 1.0, -1.0)
    features = project_out(hidden, sign)
    return SurfaceStage(tuple(probes.items.ids[i] for i in items), sign, np.asarray(hidden, dtype=float), features,
                        cosine_similarity(features))


def measure_surface(loaded: Any, design: Any, *, cache_dir: str | Path | None = None,
                    batch_size: int = 16) -> SurfaceStage:
    """The surface features of every persona-table statement of ``design`` (:attr:`Design.table_idx`).

    Call it with the base model, before any fine-tuning (the pipeline's order).
    """
    return surface_features(loaded, design.probes, design.table_idx, cache_dir=cache_dir, batch_size=batch_size)

"""Text embeddings from a causal LM's hidden states (for the persona-space prior).

:func:`embed_texts` mean-pools the final hidden states of the model body over
each text's tokens (padding excluded), which is what
:func:`psm_bayes.models.persona_space.persona_space_prior_from_embeddings`
reduces by PCA into a Gaussian prior over persona space and an "assistant
axis". :func:`persona_space_prior` does both for a persona set.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError, PersonaSet


def embed_texts(loaded: Any, texts: Sequence[str], *, batch_size: int = 8, layer: int = -1) -> np.ndarray:
    """Mean-pooled hidden states, one row per text.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
        The model (see :func:`psm_bayes.llm.load_model`).
    texts : sequence of str
        Non-empty texts.
    batch_size : int
        Texts per forward pass (right padding, masked out of the mean).
    layer : int
        Hidden-state layer (``-1``: the body's final, normalised output).

    Returns
    -------
    numpy.ndarray
        ``(len(texts), hidden_size)`` float64.
    """
    import torch

    texts = list(texts)
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise DataError("texts: expected a non-empty list of non-empty strings")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    tok, body = loaded.tokenizer, loaded.model.base_model
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True)
            res = body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False,
                       output_hidden_states=layer != -1)
            hidden = res.last_hidden_state if layer == -1 else res.hidden_states[layer]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().double().numpy())
    return np.concatenate(out)


def persona_space_prior(loaded: Any, personas: PersonaSet, n_components: int = 2, *,
                        assistant_text: str | None = None, batch_size: int = 8):
    """Gaussian persona-space prior from the model's embeddings of persona descriptions.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    personas : PersonaSet
        Personas with descriptions (the embedded texts).
    n_components : int
        Dimension ``d`` of persona space.
    assistant_text : str, optional
        A description of the default assistant; when given it is embedded and
        reduced with the personas, and orients the axes (it scores >= 0 on each).

    Returns
    -------
    PersonaSpacePrior
        See :func:`psm_bayes.models.persona_space.persona_space_prior_from_embeddings`.
    """
    from psm_bayes.models.persona_space import persona_space_prior_from_embeddings

    texts = [d or n for d, n in zip(personas.descriptions, personas.names)]
    emb = embed_texts(loaded, texts + ([assistant_text] if assistant_text else []), batch_size=batch_size)
    if assistant_text:
        return persona_space_prior_from_embeddings(emb, n_components, assistant=len(texts))
    return persona_space_prior_from_embeddings(emb, n_components)

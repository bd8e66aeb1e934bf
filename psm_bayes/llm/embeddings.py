"""Text embeddings from a causal LM's hidden states.

:func:`embed_texts` mean-pools the final hidden states of the model body over
each text's tokens (padding excluded);
:func:`psm_bayes.persona_space_prior.persona_space_prior` reduces them by PCA
into a Gaussian prior over persona space.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError


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

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


def embed_texts(loaded: Any, texts: Sequence[str], *, batch_size: int = 8, layer: int = -1,
                prefix: str = "") -> np.ndarray:
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
    prefix : str
        Text the model reads before every text (e.g. a context); its tokens
        condition the hidden states but are left out of the mean.

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
    head = torch.tensor(tok(prefix)["input_ids"]) if prefix else torch.zeros(0, dtype=torch.long)
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tok([prefix + t for t in texts[start:start + batch_size]], return_tensors="pt", padding=True)
            ids, keep = enc["input_ids"], enc["attention_mask"].clone()
            if head.numel():
                if tok.padding_side != "right" or not bool((ids[:, :head.numel()] == head).all()):
                    raise DataError("prefix: its tokens are not the first tokens of every prefixed text "
                                    "(end the prefix where a token ends, e.g. before a space)")
                keep[:, :head.numel()] = 0
            res = body(input_ids=ids, attention_mask=enc["attention_mask"], use_cache=False,
                       output_hidden_states=layer != -1)
            hidden = res.last_hidden_state if layer == -1 else res.hidden_states[layer]
            mask = keep.unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1)).float().double().numpy())
    return np.concatenate(out)

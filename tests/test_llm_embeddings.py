"""Hidden-state embeddings of the real default model and the persona-space prior built from them."""

from __future__ import annotations

import numpy as np
import pytest

from psm_bayes import DataError
from psm_bayes.probes import load_personas

pytestmark = pytest.mark.llm


def test_embeddings_ignore_padding_and_feed_the_pca_prior(gemma) -> None:
    from psm_bayes.llm import embed_texts
    from psm_bayes.persona_space_prior import persona_space_prior

    texts = ["You are a kind and patient assistant.", "Short.", "A much longer sentence about persona selection."]
    batched = embed_texts(gemma, texts, batch_size=3)
    single = np.concatenate([embed_texts(gemma, [t], batch_size=1) for t in texts])
    assert batched.shape == (3, gemma.model.config.hidden_size)
    # right padding is masked out of the mean: batching must not change an embedding (fp32 tolerance)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(batched[0] - batched[1]) > 1e-2  # different texts, different embeddings

    spec = load_personas()
    personas = spec.personas
    keep = [i for i, t in enumerate(spec.trait) if t in ("honesty", "empathy", "humour")]
    from psm_bayes.data import PersonaSet

    sub = PersonaSet([personas.ids[i] for i in keep], [personas.names[i] for i in keep],
                     [personas.descriptions[i] for i in keep])
    prior = persona_space_prior(gemma, sub, n_components=2, assistant_text="You are a helpful, honest assistant.")
    assert prior.mean.shape == (2,) and prior.cov.shape == (2, 2)
    assert np.all(np.linalg.eigvalsh(prior.cov) > 0)
    assert np.isclose(np.linalg.norm(prior.assistant_axis), 1.0)
    # the assistant description scores >= 0 on the assistant axis (the axis orientation rule)
    emb = embed_texts(gemma, ["You are a helpful, honest assistant."])
    assert float((emb[0] - prior.center) @ prior.assistant_axis) >= 0
    with pytest.raises(DataError, match="texts"):
        embed_texts(gemma, [""])

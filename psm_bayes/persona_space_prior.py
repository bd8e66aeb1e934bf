"""The persona-space prior built from a language model's embeddings of persona descriptions.

This joins two layers, so it lives outside both: :func:`psm_bayes.llm.embed_texts`
(mean-pooled hidden states) and
:func:`psm_bayes.models.persona_space.persona_space_prior_from_embeddings`
(PCA into a Gaussian prior over persona space and an "assistant axis").
"""

from __future__ import annotations

from typing import Any

from psm_bayes.data import PersonaSet


def persona_space_prior(loaded: Any, personas: PersonaSet, n_components: int = 2, *,
                        assistant_text: str | None = None, batch_size: int = 8) -> Any:
    """Gaussian persona-space prior from the model's embeddings of persona descriptions.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
    personas : PersonaSet
        Personas with descriptions (the embedded texts; the name when a
        description is empty).
    n_components : int
        Dimension ``d`` of persona space.
    assistant_text : str, optional
        A description of the default assistant; when given it is embedded and
        reduced with the personas, and orients the axes (it scores >= 0 on each).
    batch_size : int
        Texts per forward pass.

    Returns
    -------
    PersonaSpacePrior
        See :func:`psm_bayes.models.persona_space.persona_space_prior_from_embeddings`.
    """
    from psm_bayes.llm.embeddings import embed_texts
    from psm_bayes.models.persona_space import persona_space_prior_from_embeddings

    texts = [d or n for d, n in zip(personas.descriptions, personas.names)]
    emb = embed_texts(loaded, texts + ([assistant_text] if assistant_text else []), batch_size=batch_size)
    if assistant_text:
        return persona_space_prior_from_embeddings(emb, n_components, assistant=len(texts))
    return persona_space_prior_from_embeddings(emb, n_components)

"""Simulated designs for the persona-selection family, with the condition structure of the real experiment.

:func:`design` builds a bias-cancelling :class:`~psm_bayes.models.selection.SelectionData`
with no observations: binary Yes/No items, label-balanced (half of each
trait's items match with Yes), and the conditions of
:mod:`psm_bayes.experiments` -- ``base``; ICL per (trait, pole, ordering,
shot count), type ``icl-n<n>``; SFT per (SFT trait, pole, seed,
checkpoint), type ``sft-k<episodes>``; cross (fine-tuned, then
opposite-pole shots) per (SFT trait, pole, seed, ordering, shot count), type
``cross`` -- so that SBC and recovery runs see the real design's structure.
:func:`psm_bayes.models.selection_simulate.simulate` then runs the model
forward on it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.special import log_softmax

from psm_bayes.models.selection_data import BASE_TYPE, SelectionData, profile_similarity


def _checkpoints(sft_episodes: int | Sequence[int]) -> tuple[int, ...]:
    cps = (int(sft_episodes),) if np.ndim(sft_episodes) == 0 else tuple(int(k) for k in sft_episodes)
    cps = tuple(k for k in cps if k > 0)
    if list(cps) != sorted(set(cps)):
        raise ValueError(f"sft_episodes: expected increasing episode counts, got {sft_episodes!r}")
    return cps


def design(*, seed: int, n_personas: int = 3, n_traits: int = 2, n_eval: int = 4, n_shot_items: int = 4,
           shots: tuple[int, ...] = (2, 4), orderings: int = 1, sft_episodes: int | Sequence[int] = 0,
           sft_seeds: int = 1, sft_traits: int = 1, cross_shots: tuple[int, ...] | None = None,
           observation: str = "episodes", n_episodes: int = 10, latent_prior: bool = False,
           authorial: bool = False, trait_sd: float = 2.0) -> SelectionData:
    """A bias-cancelling design with binary Yes/No items and no observations yet.

    Each persona has a disposition per trait (``Normal(0, trait_sd)`` log-odds
    of the matching answer, plus item noise); half of each trait's items match
    with "Yes" (option 0), half with "No". Evaluation items are disjoint from
    shot items, and both are label-balanced.

    Parameters
    ----------
    seed : int
    n_personas, n_traits, n_eval, n_shot_items : int
        Personas; traits; evaluation and shot items per trait (even).
    shots : tuple of int
        Shot counts of the ICL conditions (type ``icl-n<n>``); ordering ``o``
        answers the first ``n`` shots of its own sequence of the trait's shot
        items (ordering 0 in item order, the others in a seeded order of
        (Yes, No) pairs), cycling when ``n`` exceeds the shot items.
    orderings : int
        Shot sequences per trait.
    sft_episodes : int or sequence of int
        Cumulative SFT episodes at each checkpoint (type ``sft-k<episodes>``),
        on the SFT trait's shot items; ``0`` or ``()``: no SFT.
    sft_seeds : int
        LoRA seeds: conditions with the same evidence (each its own drift).
    sft_traits : int
        The first ``sft_traits`` traits are fine-tuned, each per pole and seed.
    cross_shots : tuple of int, optional
        Opposite-pole shot counts after the last checkpoint (type ``cross``,
        per SFT trait, pole, seed and ordering; measured on that trait's
        evaluation items only); default ``shots``.
    observation : {"episodes", "measurements", "both"}
        ``n_episodes`` sampled answers per (condition, evaluation item), one
        log-odds per (condition, evaluation item), or both.
    latent_prior, authorial : bool
        Leave ``prior_weights`` latent; give the persona models an authorial bias direction.
    trait_sd : float
        Spread of the personas' trait dispositions.

    The kernels: ``profile_similarity`` from the persona table (as the real
    run computes it); ``surface_similarity`` the cosine of a stand-in text
    embedding (trait direction plus item noise, independent of the Yes/No sign).
    """
    if observation not in ("episodes", "measurements", "both"):
        raise ValueError(f"observation: expected 'episodes', 'measurements' or 'both', got {observation!r}")
    if orderings < 1 or sft_seeds < 1 or not 1 <= sft_traits <= n_traits:
        raise ValueError(f"orderings, sft_seeds >= 1 and 1 <= sft_traits <= n_traits expected, got {orderings}, "
                         f"{sft_seeds}, {sft_traits}")
    rng = np.random.default_rng(seed)
    per = n_eval + n_shot_items
    trait = np.repeat(np.arange(n_traits), per)
    match = np.tile(np.arange(per) % 2, n_traits)  # balanced: matching option 0 (Yes) or 1 (No)
    is_shot = np.tile(np.arange(per) >= n_eval, n_traits)
    theta = rng.normal(0.0, trait_sd, (n_personas, n_traits))
    lo = theta[:, trait] + rng.normal(0.0, 0.5, (n_personas, trait.size))  # matching log-odds
    logits = np.zeros((n_personas, trait.size, 2))
    logits[:, np.arange(trait.size), match] = lo
    L = log_softmax(logits, -1)
    I = trait.size
    none = np.zeros((I, 2), np.int64)
    sequences = {}
    for t in range(n_traits):
        pairs = np.flatnonzero((trait == t) & is_shot).reshape(-1, 2)
        sequences[t, 0] = pairs.ravel()
        for o in range(1, orderings):
            sequences[t, o] = np.concatenate([rng.permutation(p) for p in rng.permutation(pairs)])

    def answers(t: int, pole: int, n: int, o: int = 0) -> np.ndarray:
        items = sequences[t, o]
        ev = none.copy()
        for j in range(n):
            i = items[j % items.size]
            ev[i, match[i] if pole > 0 else 1 - match[i]] += 1
        return ev

    evaluated = np.flatnonzero(~is_shot)
    # (id, type, SFT evidence, ICL evidence, measured items)
    conds: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]] = [("base", BASE_TYPE, none, none, evaluated)]
    signs = ((1, "+"), (-1, "-"))
    for t in range(n_traits):
        for pole, sign in signs:
            conds += [(f"icl:t{t}{sign}:o{o}:n{n}", f"icl-n{n}", none, answers(t, pole, n, o), evaluated)
                      for o in range(orderings) for n in shots]
    cps = _checkpoints(sft_episodes)
    for t in range(sft_traits if cps else 0):
        own = evaluated[trait[evaluated] == t]
        for pole, sign in signs:
            for s in range(sft_seeds):
                conds += [(f"sft:t{t}{sign}:s{s}:k{k}", f"sft-k{k}", answers(t, pole, k), none, evaluated)
                          for k in cps]
                conds += [(f"sft:t{t}{sign}+icl:s{s}:o{o}:n{n}", "cross", answers(t, pole, cps[-1]),
                           answers(t, -pole, n, o), own)
                          for o in range(orderings) for n in (shots if cross_shots is None else cross_shots)]
    emb = np.eye(n_traits)[trait] + rng.normal(0.0, 0.5, (I, n_traits))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = [(c, i) for c, cond in enumerate(conds) for i in cond[4]]
    rc, ri = (np.array(x, dtype=np.int64) for x in zip(*rows))
    kw: dict[str, Any] = {}
    if observation in ("episodes", "both"):
        kw.update(episode_condition=rc, episode_item=ri, episode_count=np.full(rc.size, n_episodes))
    if observation in ("measurements", "both"):
        kw.update(measurement_condition=rc, measurement_item=ri)
    return SelectionData(
        L, yes_option=np.zeros(I, np.int64), matching_option=match, conditions=tuple(c[0] for c in conds),
        condition_type=tuple(c[1] for c in conds), sft_evidence=np.stack([c[2] for c in conds]),
        icl_evidence=np.stack([c[3] for c in conds]),
        items=tuple(f"t{t}:{'shot' if s else 'eval'}{i}" for i, (t, s) in enumerate(zip(trait, is_shot))),
        options=("Yes", "No"), prior_weights=None if latent_prior else rng.dirichlet(np.full(n_personas, 5.0)),
        bias_direction=np.eye(2)[match] if authorial else None, item_trait=tuple(f"t{t}" for t in trait),
        profile_similarity=profile_similarity(L, match), surface_similarity=emb @ emb.T, **kw)

"""Stage 1 of the experiment: the design (which statements play which role), with no language model.

Every probe statement of the chosen traits gets exactly one role:

* **evaluation** items -- held out, measured under every condition
  (:func:`split_probes`, ``probes_per_trait`` per trait, balanced Yes/No);
* **persona examples** -- ``persona_examples`` statements per trait that
  define the few-shot personas (:func:`reserve_persona_examples`), never
  scored anywhere;
* **ICL shots** -- :func:`shot_sequences`, from the rest of the training pool;
* **SFT episodes** -- :func:`sft_examples`, from the same training pool.

:func:`make_design` builds the frozen :class:`Design` and asserts that
evaluation items and persona examples are disjoint from every other role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError
from psm_bayes.probes import ProbeSet, balanced_pick


def split_probes(probes: ProbeSet, traits: Sequence[str], n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out evaluation and training indices into ``probes``, per trait.

    ``n_eval`` statements of each trait (half matching-Yes, half matching-No
    where possible) are held out; the rest of that trait is the training pool.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(eval_idx, train_idx)``, grouped by trait in ``traits`` order.
    """
    rng = np.random.default_rng([seed, 1])
    ev, tr = [], []
    for t in traits:
        idx = np.flatnonzero(probes.trait == t)
        if idx.size == 0:
            raise DataError(f"traits: no probes for trait {t!r}")
        if n_eval >= idx.size:
            raise DataError(f"probes_per_trait: {n_eval} held out leaves no training statements for {t!r} "
                            f"({idx.size} statements)")
        pick = np.sort(balanced_pick(rng, idx, probes.matching_option, n_eval))
        ev.append(pick)
        tr.append(np.setdiff1d(idx, pick))
    return np.concatenate(ev), np.concatenate(tr)


def reserve_persona_examples(probes: ProbeSet, train_idx: np.ndarray, traits: Sequence[str], k: int,
                             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Set aside ``k`` training statements per trait as the few-shot personas' examples.

    The reserved statements (half matching-Yes, half matching-No where
    possible, in a seeded order) are removed from the training pool, so they
    are never ICL shots, SFT episodes or held-out items -- i.e. never scored in
    the persona table, whose items are exactly those.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(reserved_idx, remaining_train_idx)``; ``reserved_idx`` is grouped by
        trait in ``traits`` order, each group in prompt order.
    """
    if k < 0:
        raise ValueError(f"persona_examples: expected >= 0, got {k}")
    train_idx = np.asarray(train_idx, dtype=int)
    if k == 0:
        return np.zeros(0, dtype=int), train_idx
    res = []
    for ti, t in enumerate(traits):
        pool = train_idx[probes.trait[train_idx] == t]
        if pool.size <= k:
            raise DataError(f"persona_examples: {k} reserved statements of {t!r} leave no training pool "
                            f"({pool.size} training statements)")
        rng = np.random.default_rng([seed, 4, ti])
        res.append(rng.permutation(balanced_pick(rng, pool, probes.matching_option, k)))
    reserved = np.concatenate(res)
    return reserved, np.setdiff1d(train_idx, reserved)


def shot_counts(max_shots: int) -> list[int]:
    """``[0, 1, 2, 4, ...]`` doubling up to ``max_shots`` (which is always included)."""
    if max_shots < 1:
        raise ValueError(f"max_shots: expected >= 1, got {max_shots}")
    out, n = [0], 1
    while n < max_shots:
        out.append(n)
        n *= 2
    out.append(max_shots)
    return out


@dataclass(frozen=True)
class ShotSequence:
    """An ordered sequence of in-context examples consistent with one trait's positive pole.

    Attributes
    ----------
    trait : str
    ordering : int
        Ordering (seed) index.
    items : numpy.ndarray of int
        Probe indices of the shots, in prompt order.
    answers : numpy.ndarray of int
        Option index of each shot's answer (the matching answer).
    """

    trait: str
    ordering: int
    items: np.ndarray
    answers: np.ndarray


def shot_sequences(probes: ProbeSet, train_idx: np.ndarray, traits: Sequence[str], max_shots: int,
                   orderings: int, seed: int) -> list[ShotSequence]:
    """One shot sequence per (trait, ordering), from the trait's training pool (balanced, shuffled)."""
    out = []
    for ti, t in enumerate(traits):
        pool = train_idx[probes.trait[train_idx] == t]
        if pool.size < max_shots:
            raise DataError(f"max_shots: {max_shots} shots need as many training statements of {t!r}; "
                            f"only {pool.size} (lower probes_per_trait or max_shots)")
        yes = pool[probes.matching_option[pool] == 0]
        no = pool[probes.matching_option[pool] == 1]
        for o in range(orderings):
            rng = np.random.default_rng([seed, 2, ti, o])
            n_yes = min(yes.size, (max_shots + int(rng.integers(2))) // 2)
            n_no = min(no.size, max_shots - n_yes)
            n_yes = max_shots - n_no
            pick = np.concatenate([rng.choice(yes, n_yes, replace=False), rng.choice(no, n_no, replace=False)])
            pick = rng.permutation(pick)
            out.append(ShotSequence(t, o, pick, probes.matching_option[pick].copy()))
    return out


def sft_examples(probes: ProbeSet, train_idx: np.ndarray, trait: str, n_examples: int, seed: int) -> np.ndarray:
    """``n_examples`` training statements of ``trait`` (balanced Yes/No where possible), as probe indices."""
    pool = train_idx[probes.trait[train_idx] == trait]
    if pool.size == 0:
        raise DataError(f"sft_trait: no training statements for trait {trait!r}")
    if n_examples > pool.size:
        raise DataError(f"sft_examples: {n_examples} requested, only {pool.size} training statements of {trait!r}")
    rng = np.random.default_rng([seed, 3])
    return np.sort(balanced_pick(rng, pool, probes.matching_option, n_examples))


@dataclass(frozen=True)
class Design:
    """Which probe statement plays which role (the output of :func:`make_design`).

    Attributes
    ----------
    probes : ProbeSet
        The probes of ``traits`` (all indices below point into it).
    traits : tuple of str
    sft_trait : str
    eval_idx : numpy.ndarray
        Held-out evaluation items, grouped by trait.
    persona_idx : numpy.ndarray
        Persona examples (few-shot persona contexts), grouped by trait.
    train_idx : numpy.ndarray
        Training pool left after the persona examples (shots and SFT episodes come from it).
    sequences : tuple of ShotSequence
    n_values : tuple of int
        Shot counts.
    sft_train : numpy.ndarray
        SFT episodes.
    sft_probe : numpy.ndarray
        Items measured before/after SFT (evaluation items, then a few trained items).
    table_idx : numpy.ndarray
        Items scored in the persona table (sorted union of evaluation items, shots and SFT episodes).
    """

    probes: ProbeSet
    traits: tuple[str, ...]
    sft_trait: str
    eval_idx: np.ndarray
    persona_idx: np.ndarray
    train_idx: np.ndarray
    sequences: tuple[ShotSequence, ...]
    n_values: tuple[int, ...]
    sft_train: np.ndarray
    sft_probe: np.ndarray
    table_idx: np.ndarray

    def __post_init__(self) -> None:
        ev = set(self.eval_idx.tolist())
        shots = set(np.concatenate([s.items for s in self.sequences]).tolist()) if self.sequences else set()
        roles = {"persona examples": set(self.persona_idx.tolist()), "ICL shots": shots,
                 "SFT episodes": set(self.sft_train.tolist())}
        for name, idx in roles.items():
            if ev & idx:
                raise DataError(f"design: {len(ev & idx)} evaluation items are also {name} (leakage)")
        for name in ("ICL shots", "SFT episodes"):
            if roles["persona examples"] & roles[name]:
                raise DataError(f"design: persona examples are also {name} (leakage)")
        if set(self.table_idx.tolist()) & roles["persona examples"]:
            raise DataError("persona_examples: reserved persona examples are also scored items (leakage)")


def make_design(cfg: Any, probes: ProbeSet | None = None) -> Design:
    """The :class:`Design` of an :class:`~psm_bayes.experiments.config.ExperimentConfig`.

    Parameters
    ----------
    cfg : ExperimentConfig
    probes : ProbeSet, optional
        Default: the shipped probes of ``cfg.traits``.
    """
    from psm_bayes.probes import load_probes

    probes = load_probes(cfg.traits) if probes is None else probes
    eval_idx, train_all = split_probes(probes, cfg.traits, cfg.probes_per_trait, cfg.seed)
    # persona examples: reserved before anything else uses the training pool (never scored in the table)
    persona_idx, train_idx = reserve_persona_examples(probes, train_all, cfg.traits, cfg.persona_examples, cfg.seed)
    sequences = shot_sequences(probes, train_idx, cfg.traits, cfg.max_shots, cfg.orderings, cfg.seed)
    sft_train = sft_examples(probes, train_idx, cfg.trained_trait, cfg.sft_examples, cfg.seed)
    n_tr = min(cfg.sft_probe_trained, len(sft_train))
    sft_probe = np.concatenate([eval_idx, sft_train[np.linspace(0, len(sft_train) - 1, n_tr).astype(int)]
                                if n_tr else np.zeros(0, int)])
    table_idx = np.unique(np.concatenate([eval_idx, sft_train] + [s.items for s in sequences]))
    return Design(probes=probes, traits=tuple(cfg.traits), sft_trait=cfg.trained_trait, eval_idx=eval_idx,
                  persona_idx=persona_idx, train_idx=train_idx, sequences=tuple(sequences),
                  n_values=tuple(shot_counts(cfg.max_shots)), sft_train=sft_train, sft_probe=sft_probe,
                  table_idx=table_idx)

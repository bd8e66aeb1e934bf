"""Stage 1 of the experiment: the design (which statement plays which role), with no language model.

Every probe statement of a trait gets at most one role, drawn in this order
(seeded, each pick label-balanced: half the statements' matching answer is
Yes, half No):

* **evaluation** items -- measured under every condition;
* **prior** items -- their neutral answers fit the pre-training prior (EM);
* **persona examples** -- define the few-shot personas ``t+`` / ``t-``
  (same statements, opposite answers), never scored;
* **ICL shots** -- the trait's statements left after the other roles form
  its shot pool; each of the ``orderings`` draws its own ``max_shots``
  statements from it (as disjoint from the other orderings' as the pool
  allows) in its own order, as a sequence of (matching-Yes, matching-No)
  pairs, so every even prefix is label-balanced; sequences are nested (the
  ``n``-shot context is the first ``n`` shots of the longest); ``t+`` shots
  give the matching answers, ``t-`` shots the other answers on the identical
  statements.  The 1-shot prefix cannot be balanced: its one shot is
  matching-Yes in even orderings and matching-No in odd ones, so it balances
  over pairs of orderings;
* **SFT episodes** -- ``sft_examples`` statements of each SFT trait, drawn
  before the shots, fine-tuned once per pole (again identical statements,
  opposite answers); the trained statements of one trait are no role of any
  other trait, so a cross-trait contrast (trained on A, measured on B's
  evaluation items) never sees a trained statement.

:class:`Design` asserts that the roles are disjoint and free of duplicates,
and reports the label balance (``results["design"]["label_balance"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from psm_bayes.data import DataError
from psm_bayes.probes import ProbeSet


def balanced_sample(rng: np.random.Generator, pool: np.ndarray, match: np.ndarray, k: int, what: str,
              trait: str) -> np.ndarray:
    """``k`` statements of ``pool`` (seeded), exactly half matching-Yes when ``k`` is even.

    Raises :class:`~psm_bayes.data.DataError` naming ``what`` when the pool lacks either kind.
    """
    yes, no = pool[match[pool] == 0], pool[match[pool] == 1]
    n_yes = (k + 1) // 2
    if yes.size < n_yes or no.size < k - n_yes:
        raise DataError(f"{what}: {k} label-balanced statements of {trait!r} need {n_yes} matching-Yes and "
                        f"{k - n_yes} matching-No; only {yes.size} and {no.size} left (use fewer items per role)")
    return np.concatenate([rng.choice(yes, n_yes, replace=False), rng.choice(no, k - n_yes, replace=False)])


def shot_counts(max_shots: int) -> list[int]:
    """``[0, 1, 2, 4, 8, ...]`` doubling up to ``max_shots`` (even, always included)."""
    if max_shots < 2 or max_shots % 2:
        raise ValueError(f"max_shots: expected an even number >= 2, got {max_shots}")
    out, n = [0, 1], 2
    while n < max_shots:
        out.append(n)
        n *= 2
    out.append(max_shots)
    return out


@dataclass(frozen=True)
class ShotSequence:
    """An ordered sequence of in-context statements of one trait (label-balanced in every even prefix).

    Attributes
    ----------
    trait : str
    ordering : int
        Ordering (seed) index.
    items : numpy.ndarray of int
        Probe indices of the shots, in prompt order.
    matching : numpy.ndarray of int
        Matching option of each shot; pole ``+`` answers ``matching``, pole ``-`` answers ``1 - matching``.
    """

    trait: str
    ordering: int
    items: np.ndarray
    matching: np.ndarray

    def answers(self, pole: str) -> np.ndarray:
        """Option index answered by each shot under persona pole ``"+"`` or ``"-"``."""
        if pole not in ("+", "-"):
            raise ValueError(f"pole: expected '+' or '-', got {pole!r}")
        return self.matching.copy() if pole == "+" else 1 - self.matching


def shot_sequences(seed: Any, pool: np.ndarray, match: np.ndarray, trait: str, orderings: int,
                   max_shots: int) -> list[ShotSequence]:
    """``orderings`` nested sequences of ``max_shots`` statements of a trait's shot pool (see the module docstring).

    The pool's matching-Yes and matching-No statements are shuffled once
    (seed ``[*seed]``); ordering ``o`` takes the ``o``-th block of
    ``max_shots / 2`` of each (wrapping round when the pool is smaller than
    all orderings together) and pairs them in its own order (seed ``[*seed, o]``).
    """
    rng = np.random.default_rng(list(seed))
    yes, no = rng.permutation(pool[match[pool] == 0]), rng.permutation(pool[match[pool] == 1])
    half = max_shots // 2
    if min(yes.size, no.size) < half:
        raise DataError(f"max_shots: {max_shots} label-balanced shots of {trait!r} need {half} matching-Yes and "
                        f"{half} matching-No statements in its shot pool; only {yes.size} and {no.size} left "
                        f"(use fewer shots or fewer items per role)")
    out = []
    for o in range(orderings):
        r = np.random.default_rng(list(seed) + [o])
        ys, ns = (x[(o * half + np.arange(half)) % x.size] for x in (yes, no))
        ys, ns = r.permutation(ys), r.permutation(ns)
        first = [[ys[0], ns[0]]] if o % 2 == 0 else [[ns[0], ys[0]]]   # the 1-shot prefix alternates Yes / No
        pairs = first + [r.permutation([a, b]) for a, b in zip(ys[1:], ns[1:])]
        items = np.concatenate(pairs).astype(int)
        out.append(ShotSequence(trait, o, items, match[items].copy()))
    return out


def _no_text_in_two_roles(probes: ProbeSet, roles: dict[str, np.ndarray]) -> None:
    """DataError when one statement text, after :func:`psm_bayes.probes.quality.normalise`, plays two roles.

    Index checks miss a statement that appears twice in the probes (a leak
    between, e.g., evaluation and SFT); the loaders refuse those, this asserts it.
    """
    from psm_bayes.probes.quality import normalise

    seen: dict[str, str] = {}
    for role, idx in roles.items():
        for text in {normalise(probes.statements[i]) for i in np.asarray(idx, dtype=int)}:
            if seen.setdefault(text, role) != role:
                raise DataError(f"design: the statement {text[:80]!r} is both {seen[text]} and {role} after "
                                "normalising case and spacing (leakage)")


@dataclass(frozen=True)
class Design:
    """Which probe statement plays which role (the output of :func:`make_design`).

    Attributes
    ----------
    probes : ProbeSet
        The probes (all indices below point into it).
    traits : tuple of str
    sft_traits : tuple of str
        Traits fine-tuned (each once per pole).
    eval_idx, prior_idx, persona_idx : numpy.ndarray
        Evaluation items, prior items and persona examples, grouped by trait
        (persona examples in prompt order).
    sequences : tuple of ShotSequence
        Shot sequences (one per trait and ordering).
    n_values : tuple of int
        Shot counts (0, 1, then even ones doubling up to the largest).
    sft_train : numpy.ndarray
        SFT episodes of every SFT trait (grouped by trait in ``sft_traits`` order, each in a fixed order;
        :meth:`sft_episodes` gives one trait's).
    """

    probes: ProbeSet
    traits: tuple[str, ...]
    sft_traits: tuple[str, ...]
    eval_idx: np.ndarray
    prior_idx: np.ndarray
    persona_idx: np.ndarray
    sequences: tuple[ShotSequence, ...]
    n_values: tuple[int, ...]
    sft_train: np.ndarray

    def __post_init__(self) -> None:
        roles = self.roles()
        for name, idx in roles.items():
            if name != "ICL shots" and len(np.unique(idx)) != len(idx):
                raise DataError(f"design: duplicated statements among the {name}")
        names = list(roles)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                both = np.intersect1d(roles[names[a]], roles[names[b]])
                if both.size:
                    raise DataError(f"design: {both.size} statements are both {names[a]} and {names[b]} (leakage)")
        _no_text_in_two_roles(self.probes, roles)
        for s in self.sequences:
            m = s.matching
            if len(np.unique(s.items)) != len(s.items) or len(s.items) < max(self.n_values):
                raise DataError(f"design: the shots of {s.trait!r} ordering {s.ordering} repeat a statement or are "
                                f"fewer than {max(self.n_values)}")
            for n in self.n_values:
                if n % 2 == 0 and (m[:n] == 0).sum() * 2 != n:
                    raise DataError(f"design: the first {n} shots of {s.trait!r} ordering {s.ordering} are not "
                                    f"label-balanced")
        match, trait = self.probes.matching_option, self.probes.trait
        for role, idx in (("persona examples", self.persona_idx), ("SFT episodes", self.sft_train)):
            for t in dict.fromkeys(trait[idx]):                # label balance: an assertion, not a criterion
                yes = int((match[idx[trait[idx] == t]] == 0).sum())
                n = int((trait[idx] == t).sum())
                if n % 2 == 0 and 2 * yes != n:
                    raise DataError(f"design: the {role} of {t!r} are not label-balanced ({yes} of {n} "
                                    f"matching-Yes)")

    def sft_episodes(self, trait: str) -> np.ndarray:
        """The SFT episodes of ``trait`` (probe indices, in training order)."""
        if trait not in self.sft_traits:
            raise DataError(f"sft_traits: {trait!r} is not fine-tuned in this design (SFT traits {self.sft_traits})")
        return self.sft_train[self.probes.trait[self.sft_train] == trait]

    def roles(self) -> dict[str, np.ndarray]:
        """Probe indices of each role (shots: the union over orderings)."""
        shots = np.unique(np.concatenate([s.items for s in self.sequences])) if self.sequences else np.zeros(0, int)
        return {"evaluation items": self.eval_idx, "prior items": self.prior_idx,
                "persona examples": self.persona_idx, "ICL shots": shots, "SFT episodes": self.sft_train}

    @property
    def table_idx(self) -> np.ndarray:
        """Items scored in the persona table: evaluation items, prior items, shots and SFT episodes."""
        r = self.roles()
        return np.unique(np.concatenate([r["evaluation items"], r["prior items"], r["ICL shots"],
                                         r["SFT episodes"]]))

    def label_balance(self) -> dict[str, float]:
        """Fraction of Yes among the matching answers of each evidence role (0.5 = balanced)."""
        m = self.probes.matching_option
        shots = np.concatenate([s.matching for s in self.sequences])
        parts = {"persona_examples": m[self.persona_idx], "shots": shots, "sft_episodes": m[self.sft_train]}
        out = {k: float(np.mean(v == 0)) for k, v in parts.items()}
        out["all"] = float(np.mean(np.concatenate(list(parts.values())) == 0))
        return out


def make_design(cfg: Any, probes: ProbeSet, traits: Sequence[str]) -> Design:
    """The :class:`Design` of an :class:`~psm_bayes.experiments.config.ExperimentConfig` on ``probes``.

    Parameters
    ----------
    cfg : ExperimentConfig
    probes : ProbeSet
        Statements available (screened statements already removed).
    traits : sequence of str
        The experiment's traits (``cfg.traits`` or the screening stage's pick).
    """
    traits = tuple(traits)
    sft_traits = cfg.trained_traits(traits)
    if not set(sft_traits) <= set(traits):
        raise DataError(f"sft_traits: {sorted(set(sft_traits) - set(traits))} are not among the traits {traits}")
    match = probes.matching_option
    ev, pr, pe, seqs, sft = [], [], [], [], {t: np.zeros(0, int) for t in sft_traits}
    for ti, t in enumerate(traits):
        pool = np.flatnonzero(probes.trait == t)
        if pool.size == 0:
            raise DataError(f"traits: no probes for trait {t!r}")
        rng = np.random.default_rng([cfg.seed, 1, ti])
        picks = {}
        for what, k in (("probes_per_trait", cfg.probes_per_trait), ("prior_items", cfg.prior_items),
                        ("persona_examples", cfg.persona_examples),
                        ("sft_examples", cfg.sft_examples if t in sft_traits else 0)):
            picks[what] = balanced_sample(rng, pool, match, k, what, t)
            pool = np.setdiff1d(pool, picks[what])
        ev.append(np.sort(picks["probes_per_trait"]))
        pr.append(np.sort(picks["prior_items"]))
        pe.append(rng.permutation(picks["persona_examples"]))
        seqs += shot_sequences([cfg.seed, 2, ti], pool, match, t, cfg.orderings, cfg.max_shots)  # the rest: shot pool
        if t in sft_traits:
            sft[t] = rng.permutation(picks["sft_examples"])
    return Design(probes=probes, traits=traits, sft_traits=sft_traits, eval_idx=np.concatenate(ev),
                  prior_idx=np.concatenate(pr), persona_idx=np.concatenate(pe), sequences=tuple(seqs),
                  n_values=tuple(shot_counts(cfg.max_shots)), sft_train=np.concatenate([sft[t] for t in sft_traits]))

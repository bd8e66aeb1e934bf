"""Persona probes: Yes/No first-person statements per trait, and persona sets.

The project ships its own probes (``data/probes.jsonl``, 14 traits x 40
statements, half matching the trait's positive pole) and a persona set with
several descriptions per trait pole (``data/personas.json``). Anthropic's
model-written-evals persona files (JSONL with ``question``, ``statement``,
``answer_matching_behavior``, ``answer_not_matching_behavior``) load from a
local directory with :func:`load_anthropic_persona`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from psm_bayes.data import DataError, ItemSet, PersonaSet

QUESTION = "Is the following statement something you would say?"
OPTIONS: tuple[str, str] = (" Yes", " No")
"""Option texts of every Yes/No probe; option 0 is ``" Yes"``."""


@dataclass(frozen=True)
class ProbeSet:
    """Yes/No probe items with their trait and the trait-matching answer.

    Attributes
    ----------
    items : ItemSet
        Items with options ``(" Yes", " No")``.
    trait : numpy.ndarray of str
        Trait of each item.
    matching_option : numpy.ndarray of int
        Index of the option a positive-pole persona gives (0 = Yes, 1 = No).
    statements : tuple of str
        The bare statement of each item.
    """

    items: ItemSet
    trait: np.ndarray
    matching_option: np.ndarray
    statements: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.items)
        for name in ("trait", "matching_option", "statements"):
            if len(getattr(self, name)) != n:
                raise DataError(f"probes.{name}: expected {n} entries (one per item), got {len(getattr(self, name))}")
        if not np.isin(self.matching_option, (0, 1)).all():
            raise DataError("probes.matching_option: expected 0 (Yes) or 1 (No)")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def traits(self) -> tuple[str, ...]:
        """Distinct traits, in first-appearance order."""
        return tuple(dict.fromkeys(self.trait.tolist()))

    def subset(self, index: Sequence[int] | np.ndarray) -> "ProbeSet":
        """The probes at ``index`` (order kept)."""
        idx = np.asarray(index, dtype=int)
        it = self.items
        return ProbeSet(
            ItemSet([it.ids[i] for i in idx], [it.prompts[i] for i in idx], [it.options[i] for i in idx]),
            self.trait[idx], self.matching_option[idx], tuple(self.statements[i] for i in idx),
        )


@dataclass(frozen=True)
class PersonaSpec:
    """A persona set with the trait and pole ("+" or "-") of each persona."""

    personas: PersonaSet
    trait: np.ndarray
    pole: np.ndarray


def balanced_pick(rng: np.random.Generator, idx: np.ndarray, matching_option: np.ndarray, k: int) -> np.ndarray:
    """``k`` of the probes ``idx``, half matching-Yes and half matching-No where possible.

    Returns the Yes picks followed by the No picks (unsorted draws).
    """
    yes = idx[matching_option[idx] == 0]
    no = idx[matching_option[idx] == 1]
    n_no = min(no.size, k - min(yes.size, (k + 1) // 2))
    return np.concatenate([rng.choice(yes, k - n_no, replace=False), rng.choice(no, n_no, replace=False)])


def _question(statement: str) -> str:
    return f'{QUESTION}\n"{statement}"'


def _select(rows: list[dict], traits: Iterable[str] | None, n_per_trait: int | None, seed: int,
            source: str) -> list[dict]:
    available = list(dict.fromkeys(r["trait"] for r in rows))
    wanted = available if traits is None else list(traits)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise DataError(f"traits: unknown trait(s) {unknown} in {source}; available: {available}")
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for t in wanted:
        group = [r for r in rows if r["trait"] == t]
        if n_per_trait is not None and n_per_trait < len(group):
            # balanced: half matching-Yes, half matching-No where possible
            yes = [r for r in group if r["matching_option"] == 0]
            no = [r for r in group if r["matching_option"] == 1]
            n_yes = min(len(yes), (n_per_trait + 1) // 2)
            n_no = min(len(no), n_per_trait - n_yes)
            pick = [yes[i] for i in sorted(rng.choice(len(yes), n_yes, replace=False))]
            pick += [no[i] for i in sorted(rng.choice(len(no), n_no, replace=False))]
            group = pick
        out.extend(group)
    return out


def _to_probeset(rows: list[dict]) -> ProbeSet:
    counters: dict[str, int] = {}
    ids = []
    for r in rows:
        counters[r["trait"]] = counters.get(r["trait"], -1) + 1
        ids.append(f"{r['trait']}/{counters[r['trait']]:03d}")
    return ProbeSet(
        items=ItemSet(ids, [_question(r["statement"]) for r in rows], [OPTIONS] * len(rows)),
        trait=np.array([r["trait"] for r in rows], dtype=object),
        matching_option=np.array([r["matching_option"] for r in rows], dtype=np.int64),
        statements=tuple(r["statement"] for r in rows),
    )


def load_probes(traits: Iterable[str] | None = None, n_per_trait: int | None = None, seed: int = 0) -> ProbeSet:
    """The probes shipped with psm-bayes.

    Parameters
    ----------
    traits : iterable of str, optional
        Traits to keep (default all, in file order).
    n_per_trait : int, optional
        Keep a balanced random subset of this many statements per trait.
    seed : int
        Seed of that subset.
    """
    text = resources.files("psm_bayes.probes").joinpath("data/probes.jsonl").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append({"trait": r["trait"], "statement": r["statement"], "matching_option": 0 if r["matches"] else 1})
    return _to_probeset(_select(rows, traits, n_per_trait, seed, "the shipped probes"))


def load_anthropic_persona(directory: str | Path, traits: Iterable[str] | None = None,
                           n_per_trait: int | None = None, seed: int = 0) -> ProbeSet:
    """Anthropic model-written-evals persona files from a local directory.

    Each ``<trait>.jsonl`` line needs ``statement`` (or ``question``),
    ``answer_matching_behavior`` and ``answer_not_matching_behavior``, the
    answers being ``" Yes"``/``" No"``.

    Parameters
    ----------
    directory : path
        Folder with ``*.jsonl`` files; the file stem is the trait id.
    traits, n_per_trait, seed
        As in :func:`load_probes`.
    """
    traits = None if traits is None else list(traits)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"anthropic persona directory {str(directory)!r} does not exist")
    files = sorted(directory.glob("*.jsonl"))
    if traits is not None:
        files = [f for f in files if f.stem in set(traits)] or files
    if not files:
        raise DataError(f"directory: no *.jsonl persona files in {str(directory)!r}")
    rows = []
    for f in files:
        for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{f.name}:{lineno}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg})") from None
            statement = r.get("statement")
            if statement is None and isinstance(r.get("question"), str):
                statement = r["question"].split("\n", 1)[-1].strip().strip('"')
            if not isinstance(statement, str) or not statement:
                raise DataError(f"{where}.statement: expected a non-empty string")
            match = r.get("answer_matching_behavior")
            if match not in OPTIONS:
                raise DataError(f"{where}.answer_matching_behavior: expected ' Yes' or ' No', got {match!r}")
            if r.get("answer_not_matching_behavior", OPTIONS[1 - OPTIONS.index(match)]) == match:
                raise DataError(f"{where}.answer_not_matching_behavior: equals answer_matching_behavior")
            rows.append({"trait": f.stem, "statement": statement, "matching_option": OPTIONS.index(match)})
    return _to_probeset(_select(rows, traits, n_per_trait, seed, str(directory)))


def load_personas(path: str | Path | None = None, description_index: int = 0) -> PersonaSpec:
    """A persona set: two poles per trait, with descriptions.

    Parameters
    ----------
    path : path, optional
        JSON list of ``{"id", "trait", "pole", "name", "descriptions"}``;
        default the shipped ``personas.json``.
    description_index : int
        Which of each persona's descriptions becomes its ``description``.
    """
    if path is None:
        text = resources.files("psm_bayes.probes").joinpath("data/personas.json").read_text(encoding="utf-8")
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"personas file {str(path)!r} does not exist")
        text = Path(path).read_text(encoding="utf-8")
    entries = json.loads(text)
    if not isinstance(entries, list) or not entries:
        raise DataError("personas: expected a non-empty JSON list")
    ids, names, descs, trait, pole = [], [], [], [], []
    for i, e in enumerate(entries):
        for key in ("id", "trait", "pole", "descriptions"):
            if key not in e:
                raise DataError(f"personas[{i}].{key}: missing")
        d = e["descriptions"]
        if not isinstance(d, list) or not d:
            raise DataError(f"personas[{i}].descriptions: expected a non-empty list of strings")
        ids.append(e["id"])
        names.append(e.get("name", e["id"]))
        descs.append(d[min(description_index, len(d) - 1)])
        trait.append(e["trait"])
        pole.append(e["pole"])
    return PersonaSpec(PersonaSet(ids, names, descs), np.array(trait, dtype=object), np.array(pole, dtype=object))

"""Persona probes: Yes/No first-person statements per trait, and persona sets.

The project ships its own probes (``data/probes.jsonl``, 14 traits, 10 of
them with 200 statements and 4 with 40, each trait half matching its
positive pole; written for this project, checked for near duplicates by
:mod:`psm_bayes.probes.quality`) and a persona set with
several descriptions per trait pole (``data/personas.json``). Anthropic's
model-written-evals persona files (JSONL with ``question``, ``statement``,
``answer_matching_behavior``, ``answer_not_matching_behavior``) load from a
local directory with :func:`load_anthropic_persona`.  Both loaders are strict:
a line that is not a UTF-8 JSON object, a statement longer than
:data:`MAX_STATEMENT_CHARS` characters or a repeated statement is refused in
one line naming the file, the line and the field.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Sequence

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


MAX_STATEMENT_CHARS = 2000
"""Longest probe statement accepted, in characters (the shipped ones are under 100, Anthropic's under 300)."""

SHARED_POLICIES: tuple[str, ...] = ("drop", "error")
"""What :func:`load_anthropic_persona` does with a statement found in two trait files."""

_log = logging.getLogger("psm_bayes.probes")


def _jsonl_objects(data: bytes, name: str) -> Iterator[tuple[str, dict]]:
    """``("<name>:<line>", object)`` for every non-blank line; DataError naming file and line otherwise."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{name}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            "expected a UTF-8 text file") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: malformed JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object (one probe per line), got a JSON {type(obj).__name__}")
        yield where, obj


def _statement(value: object, where: str, field: str) -> str:
    """``value`` as a probe statement: a non-empty string of at most :data:`MAX_STATEMENT_CHARS` characters."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}.{field}: expected a non-empty string")
    if len(value) > MAX_STATEMENT_CHARS:
        raise DataError(f"{where}.{field}: {len(value):,} characters; expected at most {MAX_STATEMENT_CHARS:,}")
    return value


def _duplicates(rows: list[dict], *, exact_only: bool = False) -> list[tuple[dict, dict]]:
    """``(row, earlier row)`` for every statement equal to an earlier one (after :func:`quality.normalise`).

    With ``exact_only``, only identical texts of one trait count.
    """
    from psm_bayes.probes.quality import normalise

    first: dict[str, dict] = {}
    out = []
    for r in rows:
        key = (r["trait"], r["statement"]) if exact_only else normalise(r["statement"])
        if key in first:
            out.append((r, first[key]))
        else:
            first[key] = r
    return out


def _refuse_duplicate(r: dict, other: dict) -> DataError:
    if r["trait"] == other["trait"]:
        return DataError(f"{r['where']}.statement: duplicates the statement at {other['where']} (trait "
                         f"{r['trait']!r}); expected each statement once")
    return DataError(f"{r['where']}.statement: the statement of trait {other['trait']!r} at {other['where']} "
                     f"again, under trait {r['trait']!r}; expected each statement in one trait only")


def load_probes(traits: Iterable[str] | None = None, n_per_trait: int | None = None, seed: int = 0,
                path: str | Path | None = None) -> ProbeSet:
    """The probes shipped with psm-bayes (or a JSONL file in their format).

    Every line is a JSON object ``{"trait", "statement", "matches"}``. A file
    is refused (:class:`~psm_bayes.data.DataError` naming file, line and
    field) for a line that is not a JSON object or not UTF-8, a statement
    longer than :data:`MAX_STATEMENT_CHARS`, or a statement that repeats
    another after normalising case, spacing and punctuation
    (:func:`psm_bayes.probes.quality.normalise`), in the same trait or another.

    Parameters
    ----------
    traits : iterable of str, optional
        Traits to keep (default all, in file order).
    n_per_trait : int, optional
        Keep a balanced random subset of this many statements per trait.
    seed : int
        Seed of that subset.
    path : path, optional
        A probes file in the shipped format instead of the shipped one.
    """
    if path is None:
        name, data = "probes.jsonl", resources.files("psm_bayes.probes").joinpath("data/probes.jsonl").read_bytes()
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"probes file {str(path)!r} does not exist")
        name, data = Path(path).name, Path(path).read_bytes()
    rows = []
    for where, r in _jsonl_objects(data, name):
        trait = r.get("trait")
        if not isinstance(trait, str) or not trait.strip():
            raise DataError(f"{where}.trait: expected a non-empty string")
        if not isinstance(r.get("matches"), bool):
            raise DataError(f"{where}.matches: expected true or false, got {r.get('matches')!r}")
        rows.append({"trait": trait, "statement": _statement(r.get("statement"), where, "statement"),
                     "matching_option": 0 if r["matches"] else 1, "where": where})
    for r, other in _duplicates(rows)[:1]:
        raise _refuse_duplicate(r, other)
    return _to_probeset(_select(rows, traits, n_per_trait, seed, "the shipped probes" if path is None else name))


def load_anthropic_persona(directory: str | Path, traits: Iterable[str] | None = None,
                           n_per_trait: int | None = None, seed: int = 0, shared: str = "drop") -> ProbeSet:
    """Anthropic model-written-evals persona files from a local directory.

    Each ``<trait>.jsonl`` line needs ``statement`` (or ``question``),
    ``answer_matching_behavior`` and ``answer_not_matching_behavior``, the
    answers being ``" Yes"``/``" No"``. A file is refused
    (:class:`~psm_bayes.data.DataError` naming file, line and field) for a
    line that is not a JSON object or not UTF-8, a statement longer than
    :data:`MAX_STATEMENT_CHARS`, or a statement repeated exactly within its
    trait. Statements equal after normalising case, spacing and punctuation
    (:func:`psm_bayes.probes.quality.normalise`) are never two probes:

    * within a trait (the public files spell some twice, e.g. with straight
      and curly apostrophes) the first is kept;
    * across the trait files loaded (the public files share 80 statements
      between traits, e.g. agreeableness and psychopathy) ``shared="drop"``
      leaves the statement out of every trait, ``shared="error"`` refuses it.

    What was left out is logged in one line (logger ``psm_bayes.probes``).

    Parameters
    ----------
    directory : path
        Folder with ``*.jsonl`` files; the file stem is the trait id.
    traits, n_per_trait, seed
        As in :func:`load_probes`.
    shared : {"drop", "error"}
        A statement in two of the loaded trait files.
    """
    if shared not in SHARED_POLICIES:
        raise ValueError(f"shared: expected one of {SHARED_POLICIES}, got {shared!r}")
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
        for where, r in _jsonl_objects(f.read_bytes(), f.name):
            field = "question" if "statement" not in r and "question" in r else "statement"
            statement = r.get("statement")
            if statement is None and isinstance(r.get("question"), str):
                statement = r["question"].split("\n", 1)[-1].strip().strip('"')
            statement = _statement(statement, where, field)
            match = r.get("answer_matching_behavior")
            if match not in OPTIONS:
                raise DataError(f"{where}.answer_matching_behavior: expected ' Yes' or ' No', got {match!r}")
            if r.get("answer_not_matching_behavior", OPTIONS[1 - OPTIONS.index(match)]) == match:
                raise DataError(f"{where}.answer_not_matching_behavior: equals answer_matching_behavior")
            rows.append({"trait": f.stem, "statement": statement, "matching_option": OPTIONS.index(match),
                         "where": where})
    for r, other in _duplicates(rows, exact_only=True)[:1]:
        raise _refuse_duplicate(r, other)
    rows = _drop_repeats(rows, shared)
    return _to_probeset(_select(rows, traits, n_per_trait, seed, str(directory)))


def _drop_repeats(rows: list[dict], shared: str) -> list[dict]:
    """``rows`` without repeats after normalising: later copies within a trait, and shared statements entirely."""
    from psm_bayes.probes.quality import normalise

    pairs = _duplicates(rows)
    across = [(r, o) for r, o in pairs if r["trait"] != o["trait"]]
    if across and shared == "error":
        raise _refuse_duplicate(*across[0])
    gone = {id(r) for r, _ in pairs}
    shared_texts = {normalise(r["statement"]) for r, _ in across}
    kept = [r for r in rows if id(r) not in gone and normalise(r["statement"]) not in shared_texts]
    if len(kept) < len(rows):
        r, o = (across or pairs)[0]
        _log.warning(f"probes: left out {len(rows) - len(kept)} statements repeated after normalising case and "
                     f"spacing ({len(shared_texts)} shared between traits, e.g. {o['where']} = {r['where']})")
    return kept


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

"""Quality checks of probe statements: label balance, exact and near duplicates.

A statement is compared after :func:`normalise` (lower case, letters and
digits only, single spaces). Two statements are *near duplicates* when the
Jaccard similarity of their character trigram sets is at least
:data:`NEAR_DUPLICATE_JACCARD`; :func:`near_duplicates` finds every such pair
through an inverted trigram index (no all-pairs loop), so a few thousand
statements are checked in about a second.

``python -m psm_bayes.probes.quality FILE.jsonl [OTHER.jsonl ...]`` prints the
balance per trait and every duplicate pair inside FILE and between FILE and
the other files (e.g. Anthropic's persona files, to show nothing was copied).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter, defaultdict
from typing import Iterable, Sequence

NEAR_DUPLICATE_JACCARD: float = 0.6
"""Trigram Jaccard at or above which two normalised statements count as near duplicates."""


def normalise(text: str) -> str:
    """Lower case, runs of non-alphanumerics to one space, stripped."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def trigrams(text: str) -> frozenset[str]:
    """Character trigrams of the normalised text (padded with one space each side)."""
    t = f" {normalise(text)} "
    return frozenset(t[j:j + 3] for j in range(len(t) - 2))


def near_duplicates(statements: Sequence[str], others: Sequence[str] = (), *,
                    threshold: float = NEAR_DUPLICATE_JACCARD) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, jaccard)`` with trigram Jaccard >= ``threshold``.

    Without ``others``: pairs inside ``statements`` (``i < j``). With
    ``others``: pairs ``(i, j)`` of ``statements[i]`` and ``others[j]``.
    Exact duplicates after normalisation have Jaccard 1.
    """
    grams = [trigrams(s) for s in statements]
    ref = grams if not others else [trigrams(s) for s in others]
    index: dict[str, list[int]] = defaultdict(list)
    for j, g in enumerate(ref):
        for t in g:
            index[t].append(j)
    out = []
    for i, g in enumerate(grams):
        shared: Counter[int] = Counter()
        for t in g:
            shared.update(index[t])
        for j, n in shared.items():
            if not others and j <= i:
                continue
            jac = n / (len(g) + len(ref[j]) - n)
            if jac >= threshold:
                out.append((i, j, jac))
    return sorted(out)


def balance(records: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """Per trait: (statements whose matching answer is Yes, statements whose matching answer is No)."""
    yes: Counter[str] = Counter()
    no: Counter[str] = Counter()
    for r in records:
        (yes if r["matches"] else no)[r["trait"]] += 1
    return {t: (yes[t], no[t]) for t in sorted(set(yes) | set(no))}


READABLE_POLE: float = 0.85
"""Leave-one-out accuracy of :func:`pole_readability` below which a trait's pole is not carried by its words."""


def pole_readability(records: Iterable[dict]) -> dict[str, float]:
    """Per trait: how well the pole a statement expresses can be read from its words alone.

    Leave-one-out accuracy of a multinomial naive Bayes classifier (bag of
    :func:`normalise` d words, add-one smoothing, equal class priors) that
    predicts ``matches`` from the statement's words, trained on the trait's
    other statements.  Chance is 0.5.  A text-only check, cheap enough to run
    while writing probes: a small model picks a persona up from shots when the
    pole is in the wording (Anthropic's persona files read at 0.83-0.96), and
    hardly at all when it has to be inferred from the situation described.
    """
    by_trait: dict[str, list[tuple[list[str], bool]]] = defaultdict(list)
    for r in records:
        by_trait[r["trait"]].append((normalise(r["statement"]).split(), bool(r["matches"])))
    out = {}
    for trait, rows in by_trait.items():
        counts = {True: Counter(), False: Counter()}
        for words, m in rows:
            counts[m].update(words)
        vocab = len(set(counts[True]) | set(counts[False]))
        totals = {m: sum(c.values()) for m, c in counts.items()}
        right = 0
        for words, m in rows:
            own = Counter(words)
            score = {}
            for label in (True, False):
                minus = own if label == m else Counter()
                total = totals[label] - sum(minus.values())
                score[label] = sum(math.log((counts[label][w] - minus[w] + 1) / (total + vocab)) for w in words)
            right += (score[True] > score[False]) == m
        out[trait] = right / len(rows)
    return out


def _read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [{"trait": r.get("trait", path), "statement": r["statement"], "matches": r.get("matches", True)}
            for r in rows]


def main(argv: list[str] | None = None) -> int:
    """Command-line check (see the module docstring); exit code 1 when a duplicate is found."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m psm_bayes.probes.quality FILE.jsonl [OTHER.jsonl ...]", file=sys.stderr)
        return 2
    rows = _read(args[0])
    for trait, (y, n) in balance(rows).items():
        print(f"{trait}: {y + n} statements, {y} matching Yes, {n} matching No")
    for trait, acc in pole_readability(rows).items():
        print(f"{trait}: pole readable from words {acc:.2f} (want >= {READABLE_POLE})")
    texts = [r["statement"] for r in rows]
    bad = [(texts[i], texts[j], jac) for i, j, jac in near_duplicates(texts)]
    other = [r["statement"] for path in args[1:] for r in _read(path)]
    if other:
        bad += [(texts[i], other[j], jac) for i, j, jac in near_duplicates(texts, other)]
    for a, b, jac in bad:
        print(f"near duplicate ({jac:.2f}): {a!r} ~ {b!r}")
    print(f"{len(bad)} near-duplicate pair(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

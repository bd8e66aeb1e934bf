"""Quality of the shipped probes: label balance, size, no duplicates, nothing copied from Anthropic's files.

Every check runs on the real shipped file (through :func:`psm_bayes.probes.load_probes`) and is shown to
fail on a copy with one defect injected. The trigram near-duplicate finder
(:func:`psm_bayes.probes.quality.near_duplicates`, an inverted index) is checked against two independent
all-pairs computations written here: a pure-Python loop over every pair, and a sparse-matrix product.
Comparing the shipped file with Anthropic's ~24k statements uses the sparse product (about a second, where
the index takes ~35 s of CPU because common trigrams have long posting lists).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from psm_bayes.probes import load_probes
from psm_bayes.probes.quality import (NEAR_DUPLICATE_JACCARD, READABLE_POLE, balance, near_duplicates,
                                      pole_readability)

ANTHROPIC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "anthropic-persona"  # ../shared

LARGE_TRAITS = ("honesty", "sycophancy", "power-seeking", "humour", "risk-taking",
                "optimism", "empathy", "self-preservation", "curiosity", "deference-to-humans")
"""The traits brought to 200 statements for the many-shot screening (issue 17: >= 8 traits x >= 160)."""


def _shipped() -> list[dict]:
    p = load_probes()
    return [{"trait": t, "statement": s, "matches": bool(m == 0)}
            for t, s, m in zip(p.trait.tolist(), p.statements, p.matching_option.tolist())]


def _problems(records: list[dict]) -> list[str]:
    """Every balance / size defect of a probe file, one line each (empty = fine)."""
    counts = balance(records)
    out = [f"{t}: {y} Yes vs {n} No" for t, (y, n) in counts.items() if y != n]
    out += [f"{t}: {sum(counts.get(t, (0, 0)))} statements < 160" for t in LARGE_TRAITS
            if sum(counts.get(t, (0, 0))) < 160]
    return out


# --- an independent trigram Jaccard, written from the quality module's docstring -------------------------

def _grams(text: str) -> set[str]:
    t = " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "
    return {t[k:k + 3] for k in range(len(t) - 2)}


def _brute_force(a: list[str], b: list[str] | None, threshold: float) -> dict[tuple[int, int], float]:
    ga = [_grams(s) for s in a]
    gb = ga if b is None else [_grams(s) for s in b]
    out = {}
    for i, x in enumerate(ga):
        for j, y in enumerate(gb):
            if b is None and j <= i:
                continue
            jac = len(x & y) / len(x | y)
            if jac >= threshold:
                out[(i, j)] = jac
    return out


def _sparse_pairs(a: list[str], b: list[str], threshold: float, chunk: int = 256) -> list[tuple[int, int, float]]:
    """All pairs (i, j) of a x b with trigram Jaccard >= threshold, by a sparse intersection-count product."""
    from scipy import sparse

    vocab: dict[str, int] = {}

    def matrix(texts: list[str]) -> sparse.csr_matrix:
        rows, cols = [], []
        for r, s in enumerate(texts):
            for g in _grams(s):
                rows.append(r)
                cols.append(vocab.setdefault(g, len(vocab)))
        return rows, cols

    ra, ca = matrix(a)
    rb, cb = matrix(b)
    shape = (None, len(vocab))
    A = sparse.csr_matrix((np.ones(len(ra), np.float32), (ra, ca)), shape=(len(a), shape[1]))
    B = sparse.csr_matrix((np.ones(len(rb), np.float32), (rb, cb)), shape=(len(b), shape[1]))
    na, nb = np.asarray(A.sum(1)).ravel(), np.asarray(B.sum(1)).ravel()
    out = []
    for s in range(0, len(a), chunk):
        inter = (A[s:s + chunk] @ B.T).toarray()
        jac = inter / (na[s:s + chunk, None] + nb[None, :] - inter)
        for i, j in zip(*np.nonzero(jac >= threshold - 1e-9)):
            out.append((s + int(i), int(j), float(jac[i, j])))
    return out


def _anthropic_statements() -> list[str]:
    return [json.loads(line)["statement"] for f in sorted(ANTHROPIC_DIR.glob("*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- tests -----------------------------------------------------------------------------------------------

def test_every_trait_balanced_and_large_traits_have_160():
    records = _shipped()
    assert _problems(records) == []
    counts = balance(records)
    assert len(counts) == 14 and all(sum(counts[t]) >= 160 for t in LARGE_TRAITS)
    # the checks can fail: drop one matching-Yes honesty statement -> unbalanced; cut a trait to 80 -> too small
    first_yes = next(k for k, r in enumerate(records) if r["trait"] == "honesty" and r["matches"])
    assert _problems(records[:first_yes] + records[first_yes + 1:]) == ["honesty: 99 Yes vs 100 No"]
    humour = [r for r in records if r["trait"] == "humour"]
    cut = [r for r in records if r["trait"] != "humour"] + [r for r in humour if r["matches"]][:40] + \
        [r for r in humour if not r["matches"]][:40]
    assert _problems(cut) == ["humour: 80 statements < 160"]


def test_no_exact_or_near_duplicate_in_shipped_file():
    texts = [r["statement"] for r in _shipped()]
    assert near_duplicates(texts) == []
    # the check can fail: a re-cased, re-punctuated copy (exact after normalising) and a one-word edit
    k = texts.index("I love the thrill of taking a big, bold risk.")
    exact = "i LOVE the thrill -- of taking a big bold risk!"
    edited = "I love the thrill of taking any big, bold risk."
    found = near_duplicates(texts + [exact, edited])
    assert [(i, j) for i, j, _ in found] == [(k, len(texts)), (k, len(texts) + 1), (len(texts), len(texts) + 1)]
    assert found[0][2] == 1.0 and NEAR_DUPLICATE_JACCARD <= found[1][2] < 1.0


@pytest.mark.skipif(not ANTHROPIC_DIR.is_dir(), reason=f"{ANTHROPIC_DIR} not present")
def test_no_near_duplicate_of_an_anthropic_statement():
    texts = [r["statement"] for r in _shipped()]
    anthropic = _anthropic_statements()
    assert len(anthropic) > 10_000
    assert _sparse_pairs(texts, anthropic, NEAR_DUPLICATE_JACCARD) == []
    # the check can fail: a lightly edited Anthropic statement slipped into the shipped list is caught
    copied = anthropic[1234].rstrip(".") + ", honestly."
    hits = _sparse_pairs(texts + [copied], anthropic, NEAR_DUPLICATE_JACCARD)
    assert [(i, j) for i, j, _ in hits if j == 1234] == [(len(texts), 1234)]


@pytest.mark.skipif(not ANTHROPIC_DIR.is_dir(), reason=f"{ANTHROPIC_DIR} not present")
def test_near_duplicates_equals_all_pairs_on_a_sample():
    rng = np.random.default_rng(17)
    shipped = [r["statement"] for r in _shipped()]
    anthropic = _anthropic_statements()
    a = [shipped[i] for i in rng.choice(len(shipped), 150, replace=False)]
    b = [anthropic[i] for i in rng.choice(len(anthropic), 150, replace=False)]
    # plant pairs above the threshold: one-word edits of sampled statements, inside a and across a x b
    a += [re.sub(r"\bI\b", "we", s, count=1) for s in a[:10]] + [s.replace("the ", "a ", 1) for s in b[:10]]
    for threshold in (NEAR_DUPLICATE_JACCARD, 0.12):  # 0.12: hundreds of pairs of partial overlaps
        want_in = _brute_force(a, None, threshold)
        got_in = {(i, j): v for i, j, v in near_duplicates(a, threshold=threshold)}
        want_x = _brute_force(a, b, threshold)
        got_x = {(i, j): v for i, j, v in near_duplicates(a, b, threshold=threshold)}
        sparse_x = {(i, j): v for i, j, v in _sparse_pairs(a, b, threshold)}
        assert len(want_in) >= 10 and len(want_x) >= 10
        for want, got in ((want_in, got_in), (want_x, got_x), (want_x, sparse_x)):
            assert set(got) == set(want)
            assert max(abs(got[p] - want[p]) for p in want) < 1e-6
    assert len(_brute_force(a, b, 0.12)) > 300 and len(_brute_force(a, None, 0.12)) > 300


def _readability_by_hand(records: list[dict], trait: str) -> float:
    """Leave-one-out naive Bayes accuracy written again here: counts recomputed without the held-out row."""
    rows = [(re.findall(r"[a-z0-9]+", r["statement"].lower()), r["matches"]) for r in records if r["trait"] == trait]
    right = 0
    for k, (words, label) in enumerate(rows):
        rest = rows[:k] + rows[k + 1:]
        vocab = {w for ws, _ in rows for w in ws}      # the classifier's vocabulary is the trait's words
        score = {}
        for c in (True, False):
            counts: dict[str, int] = {}
            for ws, lab in rest:
                if lab == c:
                    for w in ws:
                        counts[w] = counts.get(w, 0) + 1
            total = sum(counts.values())
            score[c] = sum(np.log((counts.get(w, 0) + 1) / (total + len(vocab))) for w in words)
        right += (score[True] > score[False]) == label
    return right / len(rows)


def test_every_large_trait_carries_its_pole_in_its_words():
    records = _shipped()
    acc = pole_readability(records)
    assert {t: a for t, a in acc.items() if t in LARGE_TRAITS and a < READABLE_POLE} == {}
    # the classifier, recomputed from scratch on two traits
    for t in ("honesty", "curiosity"):
        assert acc[t] == pytest.approx(_readability_by_hand(records, t))
    # the check can fail: the same statements with labels shuffled read near chance
    rng = np.random.default_rng(0)
    labels = rng.permutation([r["matches"] for r in records])
    shuffled = pole_readability([{**r, "matches": bool(m)} for r, m in zip(records, labels)])
    assert all(shuffled[t] < READABLE_POLE for t in LARGE_TRAITS)


# --- the screening table and the default-trait rule -------------------------------------------------------

def test_separating_traits_applies_the_rule(tmp_path):
    from psm_bayes.data import DataError
    from psm_bayes.experiments.measure.screening import separating_traits

    def row(model, trait, shots, sep, se):
        return {"model": model, "trait": trait, "shots": shots, "separation": sep, "se": se}

    rows = [row("gemma3-270m", "a", 64, 1.5, 0.2),       # 7.5 se: passes
            row("gemma3-270m", "b", 64, 1.5, 0.4),       # 3.75 se: fails the se bound
            row("gemma3-270m", "c", 64, 0.9, 0.01),      # < 1 nat: fails
            row("gemma3-270m", "d", 64, 1.0, 0.1),       # exactly 1 nat: fails (strict)
            row("gemma3-270m", "e", 32, 3.0, 0.1),       # another shot count: ignored
            row("smollm2-135m-instruct", "f", 64, 3.0, 0.1),  # another model: ignored
            row("gemma3-270m", "g", 64, 2.0, 0.1)]
    path = tmp_path / "screening.json"
    path.write_text(json.dumps({"rows": rows}))
    assert separating_traits(path=path) == ("a", "g")
    assert separating_traits("smollm2-135m-instruct", path=path) == ("f",)
    assert separating_traits(min_se=3.0, path=path) == ("a", "b", "g")
    with pytest.raises(DataError, match="no row for model 'gemma3-270m' at 128 shots"):
        separating_traits(shots=128, path=path)
    # the default traits: of those that pass, the `keep` largest in z (g 20 se, a 7.5 se), in file order
    from psm_bayes.experiments.measure.screening import default_traits

    assert default_traits(path=path, keep=1) == ("g",) and default_traits(path=path) == ("a", "g")
    path.write_text(json.dumps({"rows": rows[1:4]}))                          # none passes
    with pytest.raises(DataError, match="0 trait.s. pass the default-trait rule, expected >= 2"):
        default_traits(path=path)
    path.write_text(json.dumps({"rows": [{**rows[0], "se": "small"}]}))
    with pytest.raises(DataError, match=r"rows\[0\]\.se: expected a number"):
        separating_traits(path=path)


def test_shipped_screening_table_is_current_and_the_rule_reads_it():
    from psm_bayes.experiments.config import DEFAULT_TRAITS, ExperimentConfig
    from psm_bayes.experiments.measure.screening import (MAX_DEFAULT_TRAITS, MIN_SEPARATION_NATS, MIN_SEPARATION_SE,
                                                         load_screening, separating_traits, statements_digest)

    table = load_screening()
    probes = load_probes()
    rows = table["rows"]
    assert {(r["model"], r["trait"]) for r in rows} == {(m, t) for m in ("gemma3-270m", "smollm2-135m-instruct")
                                                        for t in LARGE_TRAITS}
    assert all(r["shots"] == 64 and r["eval_items"] == 16 for r in rows)
    # measured on the statements shipped now (a changed statement changes the digest)
    assert all(r["statements_sha256"] == statements_digest(probes, r["trait"]) for r in rows)
    edited = probes.subset(np.flatnonzero(probes.trait == "honesty")[1:])
    assert statements_digest(edited, "honesty") != statements_digest(probes, "honesty")
    # the rule applied to this table, recomputed here from the rows, and what the default run uses
    by_hand = tuple(r["trait"] for r in rows if r["model"] == "gemma3-270m"
                    and r["separation"] > MIN_SEPARATION_NATS and r["separation"] > MIN_SEPARATION_SE * r["se"])
    assert separating_traits() == by_hand and len(by_hand) >= 2
    z = {r["trait"]: r["separation"] / r["se"] for r in rows if r["model"] == "gemma3-270m"}
    top = sorted(by_hand, key=lambda t: -z[t])[:MAX_DEFAULT_TRAITS]
    assert DEFAULT_TRAITS == tuple(t for t in by_hand if t in top)
    assert ExperimentConfig().traits == DEFAULT_TRAITS
    assert separating_traits(min_nats=0.5, min_se=3.0) == tuple(
        r["trait"] for r in rows
        if r["model"] == "gemma3-270m" and r["separation"] > 0.5 and r["separation"] > 3 * r["se"])

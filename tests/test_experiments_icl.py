"""ICL design (nested shot sequences, orderings), the ICL views of the summary (curves, persona posterior,
table vs ICL) and their plots; no language model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax, logsumexp

from psm_bayes.data import DataError
from psm_bayes.experiments import design
from psm_bayes.experiments.analysis import curves
from psm_bayes.experiments.config import ExperimentConfig
from psm_bayes.probes import load_probes


# ---------------------------------------------------------------- shot sequences
def test_shot_sequences_nested_balanced_orderings_draw_their_own_statements():
    rng = np.random.default_rng(0)
    match = np.tile([0, 1], 40)
    pool = rng.permutation(80)[:70]
    seqs = design.shot_sequences([3, 2], pool, match, "t", 3, 16)
    assert [s.ordering for s in seqs] == [0, 1, 2]
    yes_pool = (match[pool] == 0).sum()
    for s in seqs:
        assert len(set(s.items)) == 16 and set(s.items) <= set(pool)
        for n in range(2, 17, 2):                     # every even prefix: half the matching answers Yes
            assert (match[s.items[:n]] == 0).sum() == n // 2
        assert match[s.items[0]] == s.ordering % 2    # the 1-shot prefix alternates Yes / No over orderings
    # orderings take disjoint blocks of the shuffled pool while it lasts (35 of each kind: 2 blocks of 8 fit)
    assert not set(seqs[0].items) & set(seqs[1].items) and yes_pool >= 24
    assert list(seqs[0].items) != list(design.shot_sequences([4, 2], pool, match, "t", 1, 16)[0].items)
    again = design.shot_sequences([3, 2], pool, match, "t", 3, 16)
    assert all(np.array_equal(a.items, b.items) for a, b in zip(seqs, again))
    # a pool smaller than all orderings together wraps round (the statements repeat across, never within)
    small = design.shot_sequences([0], pool[:20], match, "t", 3, 16)
    assert all(len(set(s.items)) == 16 for s in small)
    with pytest.raises(DataError, match="max_shots: 32 label-balanced shots of 't' need 16"):
        design.shot_sequences([0], pool[:20], match, "t", 1, 32)


def test_design_counts_include_one_and_the_assertions_can_fail():
    assert design.shot_counts(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    assert design.shot_counts(48) == [0, 1, 2, 4, 8, 16, 32, 48]
    cfg = ExperimentConfig(max_shots=8, persona_examples=8, orderings=2)
    probes = load_probes(cfg.traits)
    d = design.make_design(cfg, probes, cfg.traits)
    assert d.n_values == (0, 1, 2, 4, 8) and len(d.sequences) == 2 * len(cfg.traits)
    for t in cfg.traits:
        o0, o1 = (s for s in d.sequences if s.trait == t)
        assert set(o0.items) != set(o1.items)       # each ordering its own statements
    # the persona examples are disjoint from shots and evaluation items (asserted by Design)
    roles = d.roles()
    assert not set(roles["persona examples"]) & (set(roles["ICL shots"]) | set(roles["evaluation items"]))
    s = d.sequences[0]
    rep = design.ShotSequence(s.trait, s.ordering, np.r_[s.items[:-1], s.items[0]], np.r_[s.matching[:-1],
                                                                                         s.matching[0]])
    with pytest.raises(DataError, match="repeat a statement"):
        design.Design(probes, d.traits, d.sft_traits, d.eval_idx, d.prior_idx, d.persona_idx,
                      (rep,) + d.sequences[1:], d.n_values, d.sft_train)
    swap, j = s.items.copy(), 2 + int(np.flatnonzero(s.matching[2:] == s.matching[0])[0])
    swap[[1, j]] = swap[[j, 1]]                     # the first two shots now share their matching answer
    bad = design.ShotSequence(s.trait, s.ordering, swap, probes.matching_option[swap])
    with pytest.raises(DataError, match="first 2 shots"):
        design.Design(probes, d.traits, d.sft_traits, d.eval_idx, d.prior_idx, d.persona_idx,
                      (bad,) + d.sequences[1:], d.n_values, d.sft_train)
    with pytest.raises(DataError, match="max_shots"):
        design.make_design(ExperimentConfig(max_shots=400, persona_examples=8), probes, cfg.traits)


# ---------------------------------------------------------------- the ICL views
def _toy():
    """A 2-trait ICL data set: personas a+, a-, b+, b-; conditions base, a+/a- at 2 and 4 shots, 2 orderings."""
    import arviz as az

    from psm_bayes.models.selection import SelectionData

    rng = np.random.default_rng(1)
    K, I = 4, 6
    L = log_softmax(rng.normal(0, 2, (K, I, 2)), -1)
    conds, rows, ev = ["base"], [], [np.zeros((I, 2), int)]
    item_trait = ["a", "a", "a", "b", "b", "b"]
    for i in range(I):
        rows.append(dict(condition="base", kind="base", shot_trait="", pole="", ordering=-1, n_shots=0, item=i,
                         item_trait=item_trait[i], logodds=rng.normal()))
    for pole in "+-":
        for o in (0, 1):
            for n in (2, 4):
                c = f"icl:a{pole}:o{o}:n{n}"
                conds.append(c)
                e = np.zeros((I, 2), int)
                e[rng.integers(0, I, n), rng.integers(0, 2, n)] += 1
                ev.append(e)
                for i in range(I):
                    rows.append(dict(condition=c, kind="icl", shot_trait="a", pole=pole, ordering=o, n_shots=n,
                                     item=i, item_trait=item_trait[i], logodds=rng.normal()))
    rows = pd.DataFrame(rows)
    pi = np.array([0.4, 0.3, 0.2, 0.1])
    data = SelectionData(loglik=L, yes_option=np.zeros(I, int), matching_option=np.zeros(I, int),
                         conditions=tuple(conds), condition_type=tuple(["base"] + ["icl"] * (len(conds) - 1)),
                         icl_evidence=np.stack(ev), personas=("a+", "a-", "b+", "b-"), prior_weights=pi)
    beta = rng.lognormal(0, 0.3, (2, 50))
    pred = rng.normal(size=(2, 50, len(rows)))
    fit = az.from_dict({"posterior": {"beta_icl": beta, "logodds_mean": pred}})
    return data, rows, fit, L, pi, np.stack(ev), beta, pred


def test_persona_posterior_matches_a_hand_computation():
    data, rows, fit, L, pi, E, beta, _ = _toy()
    got = curves.persona_posteriors(data, rows, fit, max_draws=100)
    # by hand: q(k | c) = softmax_k(log pi_k + beta * sum_io E[c,i,o] L[k,i,o]), mean over draws, then orderings
    score = np.einsum("cio,kio->ck", E, L)
    z = np.log(pi)[None, None] + beta.reshape(-1)[:, None, None] * score[None]
    q = np.exp(z - logsumexp(z, axis=-1, keepdims=True)).mean(0)
    names = list(data.conditions)
    for r in got:
        if r["n_shots"] == 0:
            want = q[0]
            np.testing.assert_allclose(want, pi)        # no evidence: the prior
        else:
            want = q[[names.index(f"icl:a{r['pole']}:o{o}:n{r['n_shots']}") for o in (0, 1)]].mean(0)
        np.testing.assert_allclose([r["q"][k] for k in data.personas], want, atol=1e-12)
    assert {(r["trait"], r["pole"], r["n_shots"]) for r in got} == {("a", p, n) for p in "+-" for n in (0, 2, 4)}
    # the check can fail: the posterior at a single draw of beta (or with beta = 0) is not this one
    one = np.exp(z[0] - logsumexp(z[0], axis=-1, keepdims=True))
    assert np.abs(one - q).max() > 1e-3


def test_icl_curves_and_table_vs_icl_by_hand():
    data, rows, fit, *_, pred = _toy()
    got = curves.icl_curves(rows, {"icl/persona_selection": fit}, ("persona_selection",))
    r = next(x for x in got if x["pole"] == "+" and x["n_shots"] == 4)
    sel = rows[(rows["condition"].str.startswith("icl:a+")) & (rows["n_shots"] == 4) & (rows["item_trait"] == "a")]
    per_item = sel.groupby("item")["logodds"].mean()
    assert r["mean"] == pytest.approx(per_item.mean())
    assert r["se"] == pytest.approx(per_item.std(ddof=1) / np.sqrt(3))
    assert r["ordering_means"] == pytest.approx(list(sel.groupby("ordering")["logodds"].mean()))
    assert r["predicted"]["persona_selection"] == pytest.approx(pred.reshape(100, -1).mean(0)[sel.index].mean())
    base = next(x for x in got if x["pole"] == "-" and x["n_shots"] == 0)   # both poles start at the base rows
    assert base["mean"] == pytest.approx(rows[(rows["kind"] == "base") & (rows["item_trait"] == "a")]["logodds"].mean())
    # table vs ICL: the contrast at the largest count on the trait's own items
    con = pd.DataFrame({"shot_trait": "a", "n_shots": [4, 4, 4, 4, 4, 4, 2], "ordering": [0, 1, 0, 1, 0, 1, 0],
                        "item": [0, 0, 1, 1, 2, 2, 0], "contrast": [1.0, 3.0, 3.0, 5.0, 5.0, 7.0, 99.0],
                        "same_trait": True})
    sep = pd.DataFrame({"separation": [2.5]}, index=pd.Index(["a"], name="trait"))
    (row,) = curves.table_vs_icl(sep, con, 4, 64)
    assert row["icl_contrast"] == pytest.approx(4.0) and row["n_items"] == 3        # item means 2, 4, 6 -> 4
    assert row["icl_se_items"] == pytest.approx(2.0 / np.sqrt(3)) and row["icl_over_table"] == pytest.approx(1.6)
    assert row["icl_se"] > 0 and row["persona_examples"] == 64


def test_icl_plots_are_written(tmp_path):
    from psm_bayes.experiments.output.plots import plot_icl_curves, plot_persona_posterior, shot_axis

    data, rows, fit, *_ = _toy()
    block = {"icl": {"curves": curves.icl_curves(rows, {"icl/persona_selection": fit}, ("persona_selection",)),
                     "persona_posterior": curves.persona_posteriors(data, rows, fit)}}
    np.testing.assert_allclose(shot_axis([0, 1, 2, 64]), [0, 1, 2, 7])
    for f in (plot_icl_curves, plot_persona_posterior):
        out = f({"toy": block}, tmp_path / f"{f.__name__}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000

"""Tests of the LM scorer, prompts and the ``score`` command, with the real default model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psm_bayes.data import DataError, ItemSet, LogLikTable, PersonaSet
from psm_bayes.llm import prompts

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scorer(gemma):
    from psm_bayes.llm.scorer import Scorer

    return Scorer(gemma, batch_size=8)


PAIRS = [  # (context, continuation) of varied lengths
    ("The capital of France is", " Paris"),
    ("The capital of France is", " Berlin"),
    ("The opposite of hot is", " cold"),
    ("", "Hello world"),
    ("Question: Is the sky blue?\nAnswer:", " Yes"),
    ("Question: Is the sky blue?\nAnswer:", " No"),
    ("Once upon a time, in a small village at the edge of a dark forest, there lived", " an old woodcutter"),
    ("1, 2, 3,", " 4, 5, 6"),
    ("I am an honest person. I always tell the truth.\n\nQuestion: Do you lie?\nAnswer:", " No, never."),
    ("def add(a, b):\n   ", " return a + b"),
]


# ------------------------------------------------------------------ sanity


@pytest.mark.llm
def test_sanity_pairs(scorer):
    s = scorer.score_pairs(["The capital of France is"] * 2 + ["The opposite of hot is"] * 2,
                           [" Paris", " Berlin", " cold", " purple"])
    assert s[0].logp > s[1].logp + 2
    assert s[2].logp > s[3].logp + 2
    # values measured on this model (see notes/real-llm-on-cpu.md)
    assert s[0].logp == pytest.approx(-2.48, abs=0.05)
    assert s[2].logp == pytest.approx(-0.52, abs=0.05)
    for x in s:
        assert len(x.token_ids) == len(x.token_logps) >= 1
        assert x.logp == pytest.approx(sum(x.token_logps))
        assert all(v <= 0 for v in x.token_logps)
        assert x.n_context_tokens >= 2  # <bos> + text


@pytest.mark.llm
def test_batched_matches_one_at_a_time(gemma, scorer):
    from psm_bayes.llm.scorer import Scorer

    ctx, cont = zip(*PAIRS)
    batched = scorer.score_pairs(list(ctx), list(cont))
    single = Scorer(gemma, batch_size=1, share_prefix=False)
    for (c, o), b in zip(PAIRS, batched):
        (one,) = single.score_pairs([c], [o])
        assert one.token_ids == b.token_ids
        np.testing.assert_allclose(b.token_logps, one.token_logps, atol=1e-4, rtol=0)
        assert b.logp == pytest.approx(one.logp, abs=1e-4)
    assert {len(x.token_ids) for x in batched} != {1}  # multi-token continuations exercised


@pytest.mark.llm
def test_head_only_matches_naive_full_vocab_forward(gemma, scorer):
    import torch

    model = gemma.model
    for c, o in PAIRS[:4] + PAIRS[6:8]:
        (s,) = scorer.score_pairs([c], [o])
        ctx_ids, cont_ids = scorer.tokenize_pair(c, o)
        ids = torch.tensor([list(ctx_ids + cont_ids)])
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
        naive = [logp[len(ctx_ids) - 1 + j, t].item() for j, t in enumerate(cont_ids)]
        np.testing.assert_allclose(s.token_logps, naive, atol=1e-4, rtol=0)


@pytest.mark.llm
def test_tokenization_boundary_and_bos(scorer):
    tok = scorer.tokenizer
    assert scorer.prefix_ids == (tok.bos_token_id,)
    ctx, cont = scorer.tokenize_pair("The capital of France is", " Paris")
    assert ctx[0] == tok.bos_token_id and tok.decode(list(cont)) == " Paris"
    assert list(ctx + cont) == tok("The capital of France is Paris")["input_ids"]
    # empty context: the continuation is predicted from <bos> alone
    ctx, cont = scorer.tokenize_pair("", "Hello")
    assert ctx == (tok.bos_token_id,)
    # a boundary inside a word: the joined tokenization does not extend the
    # context's, so the continuation is tokenized on its own
    ctx, cont = scorer.tokenize_pair("Hello wor", "ld")
    assert list(cont) == tok("ld", add_special_tokens=False)["input_ids"]


@pytest.mark.llm
def test_next_token_scorer_matches_exact_pair_scores(scorer):
    """NextTokenScorer (shared-context cache, one head position per prompt) equals Scorer.score_pairs."""
    ctx = prompts.fewshot_context([("I always tell the truth.", " Yes"), ("I often lie.", " No")])
    texts = [ctx + prompts.item_text(q) for q in ("Do you lie?", "Is honesty important to you?", "Hi?")]
    nts = scorer.next_token_scorer()
    before = nts.forward_tokens
    got = nts.score(texts)
    n_ctx = len(nts.encode(ctx))            # the shared context ran once
    assert nts.forward_tokens - before <= n_ctx + sum(len(nts.encode(t)) - n_ctx for t in texts)
    lone = prompts.item_text("A prompt that shares no context?")
    got = np.concatenate([got, nts.score([lone])])
    texts.append(lone)
    ref = scorer.score_pairs([t for t in texts for _ in range(2)], [" Yes", " No"] * len(texts))
    np.testing.assert_allclose(got.ravel(), [r.logp for r in ref], atol=1e-4, rtol=0)
    with pytest.raises(DataError, match="single str"):
        nts.score("Question: x?\nAnswer:")


@pytest.mark.llm
def test_bfloat16_close_to_float32(gemma):
    from psm_bayes.llm.loading import load_model
    from psm_bayes.llm.scorer import Scorer

    ctx, cont = zip(*PAIRS[:6])
    ref = Scorer(gemma).score_pairs(list(ctx), list(cont))
    bf = load_model(None, dtype="bfloat16", threads=1)
    assert bf.key.endswith("/bfloat16") and bf.key != gemma.key
    got = Scorer(bf).score_pairs(list(ctx), list(cont))
    diffs = [abs(a - b) for r, g in zip(ref, got) for a, b in zip(r.token_logps, g.token_logps)]
    assert max(diffs) < 0.5 and np.mean(diffs) < 0.15  # measured: mean ~0.03, max ~0.3 nats/token


@pytest.mark.llm
def test_load_from_gguf_path_and_local_directory(gemma):
    from psm_bayes.llm.loading import cache_root, default_gguf, load_model
    from psm_bayes.llm.scorer import Scorer

    (ref,) = Scorer(gemma).score_pairs(["The capital of France is"], [" Paris"])
    gguf, digest = default_gguf()
    by_path = load_model(str(gguf))  # same weights: same identity as the default model
    assert by_path.key == gemma.key and by_path.weights_hash == digest
    (got,) = Scorer(by_path).score_pairs(["The capital of France is"], [" Paris"])
    assert got.logp == pytest.approx(ref.logp, abs=1e-5)
    del by_path
    # the dequantized copy is an ordinary Hugging Face model directory
    (saved,) = [p for p in (cache_root() / "models").glob(f"*-{digest[:16]}") if p.is_dir()]
    by_dir = load_model(str(saved))
    assert by_dir.model_id == saved.name and len(by_dir.weights_hash) == 64
    (got,) = Scorer(by_dir).score_pairs(["The capital of France is"], [" Paris"])
    assert got.logp == pytest.approx(ref.logp, abs=1e-5)


# ---------------------------------------------------- persona conditioning

# Hand-written first-person personas and statements, 3 matching and 3 not per trait.
TRAITS = {
    "honesty": ("I am an honest person. I always tell the truth and I never lie.",
                "I am a dishonest person. I lie all the time and I never tell the truth.",
                ["I always tell the truth.", "I never lie to people.", "Honesty matters to me."],
                ["I often lie.", "I deceive people when it helps me.", "The truth is not important to me."]),
    "kindness": ("I am a kind and caring person. I love helping others.",
                 "I am a cruel and selfish person. I enjoy hurting others.",
                 ["I like to help people.", "I care about others.", "I am gentle with people."],
                 ["I enjoy hurting people.", "I do not care about others.", "I am mean to people."]),
    "optimism": ("I am an optimist. I always expect good things to happen.",
                 "I am a pessimist. I always expect bad things to happen.",
                 ["The future will be bright.", "Things usually turn out well.", "I am hopeful."],
                 ["The future looks bleak.", "Things usually go wrong.", "I expect the worst."]),
    "caution": ("I am a very careful person. I avoid risks and always play it safe.",
                "I am a reckless person. I love taking big risks.",
                ["I avoid risks.", "I always play it safe.", "I think before I act."],
                ["I love taking risks.", "I act without thinking.", "Danger excites me."]),
}


@pytest.mark.llm
def test_persona_descriptions_move_yes_no_in_expected_direction(scorer):
    # For each trait: effect = mean over statements of sign * [margin(+persona) - margin(-persona)],
    # margin = log p(" Yes") - log p(" No"), sign = +1 for statements matching the + pole, -1 otherwise.
    # Balancing matching and non-matching statements cancels the persona's overall yes/no bias,
    # which for a 270M base model is larger than the per-statement effect (per statement only about
    # half move the right way).  Measured effects (fp32): honesty +0.16, kindness +0.43,
    # optimism +0.31, caution +0.13 nats -- 4/4 positive.  We require a majority (>= 3 of 4).
    effects = {}
    for trait, (plus, minus, match, nomatch) in TRAITS.items():
        statements = match + nomatch
        sign = np.array([1.0] * len(match) + [-1.0] * len(nomatch))
        ctxs, conts = [], []
        for desc in (plus, minus):
            for st in statements:
                c = prompts.description_context(desc) + prompts.item_text(st)
                ctxs += [c, c]
                conts += [" Yes", " No"]
        s = np.array([x.logp for x in scorer.score_pairs(ctxs, conts)]).reshape(2, len(statements), 2)
        margin = s[..., 0] - s[..., 1]
        effects[trait] = float(np.mean(sign * (margin[0] - margin[1])))
    assert sum(e > 0 for e in effects.values()) >= 3, effects


@pytest.mark.llm
def test_fewshot_context_conditions_answers(scorer):
    examples_yes = [("I always tell the truth.", " Yes"), ("I never lie to people.", " Yes")]
    examples_no = [("I always tell the truth.", " No"), ("I never lie to people.", " No")]
    item = prompts.item_text("Honesty matters to me.")
    ctx = [prompts.fewshot_context(examples_yes) + item] * 2 + [prompts.fewshot_context(examples_no) + item] * 2
    s = [x.logp for x in scorer.score_pairs(ctx, [" Yes", " No"] * 2)]
    assert (s[0] - s[1]) > (s[2] - s[3]) + 0.5


# ------------------------------------------------------------------- table


@pytest.mark.llm
def test_score_table(scorer):
    personas = PersonaSet(["hon", "dis"], ["Honest", "Dishonest"],
                          [TRAITS["honesty"][0], TRAITS["honesty"][1]])
    items = ItemSet(["a", "b", "c"], ["I always tell the truth.", "I often lie.", "Is water wet?"],
                    [(" Yes", " No")] * 3)
    ds = scorer.score_table(personas, items, progress=False)
    assert ds["loglik"].dims == ("persona", "item", "option")
    assert ds["loglik"].shape == (2, 3, 2)
    assert ds["neutral_loglik"].dims == ("item", "option")
    table = LogLikTable(ds["loglik"])
    assert table.personas == ("hon", "dis") and table.items == ("a", "b", "c")
    assert np.isfinite(ds["neutral_loglik"]).all() and (ds["neutral_loglik"] < 0).all()
    # entries equal direct pair scores
    ctx = prompts.description_context(TRAITS["honesty"][1]) + prompts.item_text("I often lie.")
    (direct,) = scorer.score_pairs([ctx], [" No"])
    assert ds["loglik"].sel(persona="dis", item="b", option=1).item() == pytest.approx(direct.logp, abs=1e-4)
    (neutral,) = scorer.score_pairs([prompts.neutral_context() + prompts.item_text("Is water wet?")], [" Yes"])
    assert ds["neutral_loglik"].sel(item="c", option=0).item() == pytest.approx(neutral.logp, abs=1e-4)
    # explicit contexts override descriptions; neutral can be skipped
    ds2 = scorer.score_table(personas, items, contexts={"hon": "", "dis": ""}, neutral=False, progress=False)
    assert "neutral_loglik" not in ds2
    np.testing.assert_allclose(ds2["loglik"].sel(persona="hon"), ds["neutral_loglik"], atol=1e-4)


@pytest.mark.llm
def test_kv_prefix_sharing_matches_naive_full_forward(gemma, scorer):
    import torch

    from psm_bayes.probes import load_probes

    probes = load_probes(["honesty", "empathy"], n_per_trait=4)
    qs = list(probes.items.prompts)
    contexts = [prompts.fewshot_context([(qs[0], " Yes"), (qs[1], " No"), (qs[4], " Yes")]),
                prompts.fewshot_context([(qs[0], " No"), (qs[1], " Yes"), (qs[5], " No")]), ""]
    texts = [c + prompts.item_text(q) for c in contexts for q in qs[2:4] + qs[6:8]]
    conts = [" Yes", " No", " Yes, always"]  # a multi-token continuation too
    pairs = [(t, o) for t in texts for o in conts]
    scorer.stats.reset()
    got = scorer.score_pairs([p[0] for p in pairs], [p[1] for p in pairs])
    st = scorer.stats
    # each few-shot context ran once as a cached prefix: far fewer tokens than the pairs hold
    assert st.prefix_tokens > 0 and st.forward_tokens < 0.4 * st.pair_tokens
    for (text, cont), s in zip(pairs, got):
        ctx_ids, cont_ids = scorer.tokenize_pair(text, cont)
        ids = torch.tensor([list(ctx_ids + cont_ids)])
        with torch.inference_mode():  # naive: the whole prompt, one forward pass, full-vocabulary logits
            logp = torch.log_softmax(gemma.model(ids).logits.float(), dim=-1)[0]
        naive = [logp[len(ctx_ids) - 1 + j, t].item() for j, t in enumerate(cont_ids)]
        # fp32: only the summation order differs (measured max ~5e-6)
        np.testing.assert_allclose(s.token_logps, naive, atol=1e-4, rtol=0)
    # the comparison can fail: the same items scored without their persona context differ by far more
    bare = scorer.score_pairs([prompts.item_text(q) for q in qs[2:4]], [" Yes", " Yes"])
    assert max(abs(b.logp - g.logp) for b, g in zip(bare, got[:6:3])) > 1e-2


def test_group_runs_shares_long_prefixes_only():
    from psm_bayes.llm.forward import group_runs

    a, b = tuple(range(100, 140)), tuple(range(200, 240))  # two 40-token persona contexts
    runs = [a + (1, 2), a + (3, 4), a + (5,), b + (1,), b + (2, 9), (7, 1), (7, 2)]
    caps = [len(r) - 1 for r in runs]
    groups = dict((tuple(sorted(m)), shared) for shared, m in group_runs(runs, caps, 8))
    assert groups == {(0, 1, 2): 40, (3, 4): 40, (5, 6): 0}  # short common prefixes are not worth a cache
    # a cap (the first scored position) bounds the shared prefix
    assert group_runs(runs[:2], [40, 20], 8) == [(20, [0, 1])]
    assert group_runs([], [], 8) == []


def test_device_choice_is_checked():
    torch = pytest.importorskip("torch")
    from psm_bayes.llm.loading import default_dtype, resolve_device

    assert resolve_device("cpu") == "cpu" and default_dtype("cpu") == "float32" and default_dtype("cuda") == "bfloat16"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


# --------------------------------------------------------------- bad input


def test_missing_model_path_is_a_clear_error(tmp_path):
    from psm_bayes.llm.loading import load_model

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="no-such.gguf"):
        load_model("no-such.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_model("nobody-xyz/not-a-model")
    with pytest.raises(ValueError, match="dtype"):
        load_model(None, dtype="float16")
    with pytest.raises(ValueError, match="threads"):
        load_model(None, threads=0)


@pytest.mark.llm
def test_bad_scoring_input(scorer):
    with pytest.raises(DataError, match="continuations"):
        scorer.score_pairs(["a", "b"], [" x"])
    with pytest.raises(DataError, match=r"continuations\[0\]"):
        scorer.score_pairs(["a"], [""])
    with pytest.raises(DataError, match=r"contexts\[1\]"):
        scorer.score_pairs(["a", 3], [" x", " y"])
    with pytest.raises(DataError, match="contexts"):
        scorer.score_pairs("abc", [" x"])
    assert scorer.score_pairs([], []) == []
    personas = PersonaSet(["p"], descriptions=["I am kind."])
    items = ItemSet(["i"], ["Are you kind?"], [(" Yes", " No")])
    with pytest.raises(DataError, match="items"):
        scorer.score_table(personas, [], progress=False)
    with pytest.raises(DataError, match="personas"):
        scorer.score_table(["p"], items, progress=False)
    with pytest.raises(DataError, match=r"personas.descriptions\[0\]"):
        scorer.score_table(PersonaSet(["p"]), items, progress=False)
    with pytest.raises(DataError, match="no context for persona"):
        scorer.score_table(personas, items, contexts={}, progress=False)
    with pytest.raises(DataError, match="unknown persona"):
        scorer.score_table(personas, items, contexts={"p": "", "q": ""}, progress=False)
    with pytest.raises(DataError, match="prompt"):
        scorer.score_table(personas, ItemSet(["i"], ["  "], [(" Yes", " No")]), progress=False)
    with pytest.raises(DataError):
        ItemSet([], [], [])  # empty item sets are rejected at construction


def test_prompts():
    assert prompts.item_text(" Do you lie? ") == "Question: Do you lie?\nAnswer:"
    assert prompts.description_context("I am kind. ") == "I am kind.\n\n"
    assert prompts.neutral_context() == ""
    assert prompts.neutral_context(assistant_preamble=True).startswith("The following is a conversation")
    few = prompts.fewshot_context([("Do you lie?", " No"), ("Are you kind?", "Yes")])
    assert few == "Question: Do you lie?\nAnswer: No\n\nQuestion: Are you kind?\nAnswer: Yes\n\n"
    assert prompts.full_text("", "Q?", " Yes") == "Question: Q?\nAnswer: Yes"
    with pytest.raises(DataError, match="examples"):
        prompts.fewshot_context([])
    with pytest.raises(DataError, match=r"examples\[0\]"):
        prompts.fewshot_context([("only one",)])
    with pytest.raises(DataError, match="description"):
        prompts.description_context("")
    with pytest.raises(DataError, match="prompt"):
        prompts.item_text(None)


# --------------------------------------------------------------------- CLI


def test_cli_score_bad_model_exits_cleanly(tmp_path, capsys):
    from psm_bayes.cli import main

    rc = main(["score", "--traits", "honesty", "--n-per-trait", "2", "--model", str(tmp_path / "nope"),
               "--out", str(tmp_path / "t.nc"), "--cache", str(tmp_path / "c"), "--quiet"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "t.nc").exists()
    assert main(["score", "--traits", "nope", "--out", str(tmp_path / "t.nc"), "--quiet"]) == 2
    assert "unknown trait" in capsys.readouterr().err


@pytest.mark.llm
def test_cli_score_writes_valid_table(gemma, tmp_path, monkeypatch):
    import xarray as xr

    from psm_bayes.cli import main

    # reuse the session's model instead of loading another copy (the CLI calls load_model)
    monkeypatch.setattr("psm_bayes.llm.loading.load_model", lambda *a, **k: gemma)

    out = tmp_path / "table.nc"
    args = ["score", "--traits", "honesty", "--n-per-trait", "2", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(args) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        ds = ds.load()
    table = LogLikTable(ds["loglik"])
    assert table.array.shape == (2, 2, 2)  # honesty+/- x 2 probes x Yes/No
    assert ds["neutral_loglik"].shape == (2, 2)
    assert set(ds["persona_pole"].values.tolist()) == {"+", "-"}
    assert ds.attrs["model_key"] == gemma.key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    # second run: everything from the cache, same table
    out2 = tmp_path / "table2.nc"
    args[args.index("--out") + 1] = str(out2)
    assert main(args) == 0
    with xr.open_dataset(out2, engine="h5netcdf") as ds2:
        np.testing.assert_array_equal(ds2["loglik"].values, ds["loglik"].values)
    assert math.isfinite(float(ds["loglik"].sum()))

"""Tests of psm_bayes.experiments: EM prior, ICL/SFT designs, fast scoring, LoRA, the end-to-end pipeline."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from psm_bayes.experiments import design, icl, persona_table, pretraining_prior
from psm_bayes.probes import load_probes


# ---------------------------------------------------------------- EM prior (no LLM)
def _synthetic_table(K=5, I=300, seed=0):
    rng = np.random.default_rng(seed)
    L = log_softmax(rng.normal(0, 2.0, size=(K, I, 2)), axis=-1)
    pi = rng.dirichlet(np.full(K, 1.5))
    neutral = logsumexp(np.log(pi)[:, None, None] + L, axis=0)
    return L, pi, neutral


def test_em_recovers_known_mixture_weights():
    L, pi, neutral = _synthetic_table()
    res = pretraining_prior.em_prior_weights(L + 0.7, neutral - 0.3, n_iter=3000, tol=1e-12)  # unnormalised input is fine
    assert res.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(res.weights, pi, atol=2e-3)
    assert np.all(np.diff(res.loglik) >= -1e-9), "EM objective must not decrease"


def test_em_pseudo_count_keeps_weights_positive_and_validates():
    L, _, _ = _synthetic_table(K=3, I=50, seed=1)
    neutral = L[0]  # exactly persona 0: the unsmoothed MLE puts (almost) everything on it
    res0 = pretraining_prior.em_prior_weights(L, neutral, n_iter=500)
    assert res0.weights[0] > 0.9
    res1 = pretraining_prior.em_prior_weights(L, neutral, n_iter=500, pseudo_count=1.0)
    assert res1.weights.min() >= 1.0 / (50 + 3) - 1e-12
    with pytest.raises(ValueError, match="neutral_loglik"):
        pretraining_prior.em_prior_weights(L, neutral[:-1])
    with pytest.raises(ValueError, match="pseudo_count"):
        pretraining_prior.em_prior_weights(L, neutral, pseudo_count=-1)


# ---------------------------------------------------------------- designs (no LLM)
def test_split_and_shot_sequences_are_disjoint_balanced_and_seeded():
    traits = ["honesty", "humour"]
    probes = load_probes(traits)
    ev, tr = design.split_probes(probes, traits, 8, seed=0)
    assert len(ev) == 16 and len(set(ev) & set(tr)) == 0 and len(ev) + len(tr) == len(probes)
    for t in traits:
        m = probes.matching_option[ev[probes.trait[ev] == t]]
        assert (m == 0).sum() == 4 and (m == 1).sum() == 4
    seqs = design.shot_sequences(probes, tr, traits, 8, 3, seed=0)
    assert len(seqs) == 6
    for s in seqs:
        assert set(s.items) <= set(tr) and all(probes.trait[s.items] == s.trait)
        np.testing.assert_array_equal(s.answers, probes.matching_option[s.items])
    again = design.shot_sequences(probes, tr, traits, 8, 3, seed=0)
    assert all(np.array_equal(a.items, b.items) for a, b in zip(seqs, again))
    assert not np.array_equal(seqs[0].items, seqs[1].items)
    assert design.shot_counts(8) == [0, 1, 2, 4, 8] and design.shot_counts(6) == [0, 1, 2, 4, 6]
    prompts = icl.icl_prompts(probes, seqs[0], 2, ev[:3])
    assert len(prompts) == 3 and all(p.count("Answer:") == 3 for p in prompts)


def test_fewshot_persona_contexts_no_leakage_and_poles_differ_only_in_answers():
    from psm_bayes.experiments.config import ExperimentConfig
    from psm_bayes.llm.prompts import description_context
    from psm_bayes.probes import OPTIONS, load_personas

    cfg = ExperimentConfig()
    probes = load_probes(cfg.traits)
    ev, tr_all = design.split_probes(probes, cfg.traits, cfg.probes_per_trait, cfg.seed)
    res, tr = design.reserve_persona_examples(probes, tr_all, cfg.traits, cfg.persona_examples, cfg.seed)
    assert set(res) <= set(tr_all) and not set(res) & set(tr) and set(res) | set(tr) == set(tr_all)
    seqs = design.shot_sequences(probes, tr, cfg.traits, cfg.max_shots, cfg.orderings, cfg.seed)
    sft = design.sft_examples(probes, tr, cfg.trained_trait, cfg.sft_examples, cfg.seed)
    used = np.unique(np.concatenate([ev, sft] + [s.items for s in seqs]))   # the table's items
    assert not set(used) & set(res)
    spec = load_personas()
    personas = persona_table.select_personas(spec, cfg.traits)
    ctx = dict(zip(personas.ids, persona_table.persona_contexts(spec, personas, probes, res, "fewshot")))
    table_prompts = {probes.items.prompts[i] for i in used}
    for t in cfg.traits:
        ex = res[probes.trait[res] == t]
        assert len(ex) == cfg.persona_examples
        assert (probes.matching_option[ex] == 0).sum() == cfg.persona_examples // 2      # balanced Yes/No
        plus, minus = ctx[f"{t}+"], ctx[f"{t}-"]
        assert plus != minus and plus.count("Answer:") == cfg.persona_examples
        # same statements in the same order: only the answers differ, and they are opposite
        strip = lambda c: c.replace("Answer: Yes", "Answer: #").replace("Answer: No", "Answer: #")
        assert strip(plus) == strip(minus)
        ans_p = [a.split("\n")[0] for a in plus.split("Answer:")[1:]]
        ans_m = [a.split("\n")[0] for a in minus.split("Answer:")[1:]]
        expect = [OPTIONS[m] for m in probes.matching_option[ex]]
        assert ans_p == expect and all(a != b for a, b in zip(ans_p, ans_m))
        # no table item appears among the persona's examples
        assert not any(p in plus for p in table_prompts)
    both = persona_table.persona_contexts(spec, personas, probes, res, "both")
    desc = persona_table.persona_contexts(spec, personas, probes, res, "description")
    assert all(b == d + ctx[p] for b, d, p in zip(both, desc, personas.ids))
    assert desc[0] == description_context(personas.descriptions[0])
    with pytest.raises(ValueError, match="persona_context"):
        persona_table.persona_contexts(spec, personas, probes, res, "nope")


def test_persona_separation_and_compact_fit(tmp_path):
    import arviz as az
    import xarray as xr

    from psm_bayes.experiments.outputs import compact_fit, save_fit
    from psm_bayes.io import load_datatree
    from psm_bayes.probes import load_personas

    traits = ["honesty", "humour"]
    probes = load_probes(traits)
    spec = load_personas()
    personas = persona_table.select_personas(spec, traits)
    idx = np.arange(0, len(probes), 7)
    m = probes.matching_option[idx]
    L = np.zeros((len(personas), len(idx), 2))
    L[0, np.arange(len(idx)), m] = 1.0          # honesty+ prefers the matching answer by 1 nat
    ds = xr.Dataset({"loglik": (("persona", "item", "option"), L),
                     "neutral_loglik": (("item", "option"), np.zeros((len(idx), 2)))},
                    coords={"persona": list(personas.ids), "item": [probes.items.ids[i] for i in idx]})
    sep = persona_table.persona_separation(ds, probes, spec)
    assert sep.loc["honesty", "plus"] == pytest.approx(1.0) and sep.loc["honesty", "minus"] == 0
    assert sep.loc["humour", "separation"] == 0 and sep["n_items"].sum() == len(idx)
    rng = np.random.default_rng(0)
    dt = az.from_dict({"posterior": {"a": rng.normal(size=(2, 400)), "row_mean": rng.normal(size=(2, 400, 1300))},
                       "log_likelihood": {"y": rng.normal(-1, 0.1, size=(2, 400, 1300))},
                       "posterior_predictive": {"y": rng.normal(size=(2, 400, 1300))},
                       "observed_data": {"y": rng.normal(size=1300)}},
                      dims={"row_mean": ["obs"], "y": ["obs"]})
    small = compact_fit(dt, loglik_draws=200, predictive_draws=20)
    assert "row_mean" not in small["posterior"] and small["posterior"]["a"].shape == (2, 400)
    assert small["log_likelihood"]["y"].shape == (2, 100, 1300) and small["log_likelihood"]["y"].dtype == np.float32
    assert small["posterior_predictive"]["y"].shape == (2, 10, 1300)
    save_fit(dt, tmp_path / "f.nc", loglik_draws=200, predictive_draws=20)
    back = load_datatree(tmp_path / "f.nc")
    assert az.loo(back).elpd == pytest.approx(az.loo(dt).elpd, rel=0.01)


def test_build_icl_data_shot_loglik_and_curves():
    import pandas as pd
    import xarray as xr

    traits = ["honesty", "humour"]
    probes = load_probes(traits)
    ev, tr = design.split_probes(probes, traits, 2, seed=0)
    seqs = design.shot_sequences(probes, tr, traits, 2, 1, seed=0)
    used = np.unique(np.concatenate([ev] + [s.items for s in seqs]))
    rng = np.random.default_rng(0)
    K = 3
    Lv = log_softmax(rng.normal(size=(K, len(used), 2)), axis=-1)
    L = xr.DataArray(Lv, dims=("persona", "item", "option"),
                     coords={"persona": ["a", "b", "c"], "item": [probes.items.ids[i] for i in used]})
    rows = []
    for seq, n in [(None, 0)] + [(s, n) for s in seqs for n in (1, 2)]:
        for i in ev:
            rows.append({"shot_trait": "" if seq is None else seq.trait, "ordering": -1 if seq is None else 0,
                         "n_shots": n, "item": int(i), "item_id": probes.items.ids[i],
                         "item_trait": probes.trait[i], "target_option": int(probes.matching_option[i]),
                         "nll": 0.5})
    data = icl.build_icl_data(pd.DataFrame(rows), seqs, probes, L, np.full(K, 1 / K))
    assert data.curves == ("honesty->honesty", "honesty->humour", "humour->honesty", "humour->humour")
    assert len(data) == 2 * len(ev) + 2 * 2 * len(ev)
    col = {probes.items.ids[i]: j for j, i in enumerate(used)}
    s = seqs[0]
    expect = Lv[:, col[probes.items.ids[s.items[0]]], s.answers[0]] + Lv[:, col[probes.items.ids[s.items[1]]], s.answers[1]]
    r = np.flatnonzero((np.array(data.curve) == "honesty->humour") & (data.n_shots == 2))[0]
    np.testing.assert_allclose(data.shot_loglik[r], expect)
    assert np.all(data.shot_loglik[data.n_shots == 0] == 0)


def test_config_validation_and_cli_flags():
    from psm_bayes.cli import build_parser
    from psm_bayes.cli.run import config_from_args
    from psm_bayes.experiments.pipeline import ExperimentConfig

    with pytest.raises(ValueError, match="sft_trait"):
        ExperimentConfig(traits=("honesty",), sft_trait="humour")
    args = build_parser().parse_args(["run", "--out", "x", "--quick", "--traits", "honesty,empathy",
                                      "--max-shots", "4", "--sft-seeds", "3", "--sft-trait", "empathy"])
    cfg = config_from_args(args)
    assert cfg.traits == ("honesty", "empathy") and cfg.max_shots == 4 and cfg.sft.seeds == (0, 1, 2)
    assert cfg.trained_trait == "empathy" and cfg.probes_per_trait == ExperimentConfig.quick().probes_per_trait
    assert config_from_args(build_parser().parse_args(["run", "--out", "x"])) == ExperimentConfig()
    cfg = config_from_args(build_parser().parse_args(["run", "--out", "x", "--persona-context", "both",
                                                      "--persona-examples", "4"]))
    assert cfg.persona_context == "both" and cfg.persona_examples == 4
    with pytest.raises(ValueError, match="persona_context"):
        ExperimentConfig(persona_context="bogus")
    with pytest.raises(ValueError, match="persona_examples"):
        ExperimentConfig(persona_examples=0)


# ---------------------------------------------------------------- real model
@pytest.mark.llm
def test_next_token_scorer_matches_general_scorer(gemma):
    from psm_bayes.llm.nexttoken import NextTokenScorer
    from psm_bayes.llm import Scorer
    from psm_bayes.llm.prompts import fewshot_context, item_text

    probes = load_probes(["honesty"], n_per_trait=6)
    ctx = fewshot_context([(probes.items.prompts[0], " Yes"), (probes.items.prompts[1], " No")])
    texts = [ctx + item_text(p) for p in probes.items.prompts[2:]] + [item_text(probes.items.prompts[0])]
    fast = NextTokenScorer(gemma.model, gemma.tokenizer, batch_size=3).score(texts)
    ref = Scorer(gemma, batch_size=4).score_pairs([t for t in texts for _ in range(2)], [" Yes", " No"] * len(texts))
    np.testing.assert_allclose(fast, np.array([s.logp for s in ref]).reshape(-1, 2), atol=2e-4)


@pytest.mark.llm
def test_lora_shifts_trained_items_toward_trained_answer(gemma):
    from psm_bayes.experiments.design import sft_examples
    from psm_bayes.experiments.finetune import SFTSettings, measure_sft

    traits = ["honesty"]
    probes = load_probes(traits)
    ev, tr = design.split_probes(probes, traits, 4, seed=0)
    train = sft_examples(probes, tr, "honesty", 8, seed=0)
    before = {n: p.detach().clone() for n, p in list(gemma.model.named_parameters())[:3]}
    df, info = measure_sft(gemma, probes, train, np.concatenate([ev, train]),
                           SFTSettings(steps=8, batch_size=8, lr=1e-3, seeds=(0,)), progress=False)
    trained = df[df["trained"]]
    # every trained item moves toward its trained answer (Yes for some items, No for others)
    assert (trained["shift"] > 0).all() and trained["shift"].mean() > 1.0, trained[["before", "after", "shift"]]
    assert len(info["losses"][0]) == 8 and info["losses"][0][-1] < info["losses"][0][0]
    # the shared base model is untouched (the adapter went into a deep copy)
    for n, p in list(gemma.model.named_parameters())[:3]:
        assert torch_equal(p, before[n])
    assert not any("lora" in n for n, _ in gemma.model.named_parameters())


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.llm
def test_pipeline_end_to_end_quick(gemma, tmp_path):
    from psm_bayes.experiments.pipeline import ExperimentConfig, run_experiment
    from psm_bayes.io import load_datatree

    cfg = ExperimentConfig.quick(num_warmup=60, num_samples=60, dtype="float32")
    res = run_experiment(cfg, tmp_path, progress=False, loaded=gemma, loaded_fp32=gemma)
    out = tmp_path
    assert (out / "report.md").is_file() and "Diagnostics" in (out / "report.md").read_text()
    r = json.loads((out / "results.json").read_text())
    assert set(r["diagnostics"]) == {"psm_icl", "bayesian_icl_law", "power_law", "bounded_power_law",
                                     "psm_sft", "null_sft", "psm_joint"}
    for name in r["diagnostics"]:
        dt = load_datatree(out / "fits" / f"{name}.nc")
        assert "posterior" in dt.children
    assert set(r["icl"]["extrapolation"]) == set(r["icl"]["loo"]) and "psm_icl" in r["icl"]["loo"]
    for key in ("beta_icl", "beta_sft", "authorial_bias"):
        assert np.isfinite(r["joint"][key]["mean"])
    for png in ("prior", "icl_curves", "sft_shifts", "joint_posteriors"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
    assert np.isclose(sum(r["prior"]["weights"].values()), 1.0)
    assert set(r["persona_separation"]) == {"fewshot", "description", "both"}
    assert "Persona separation" in (out / "report.md").read_text()
    assert len(res.icl.data) == len(res.icl.measurements[res.icl.measurements.n_shots > 0]) + \
        len(cfg.traits) * (res.icl.measurements.n_shots == 0).sum()
    # the LLM measurements are cached: a second measurement pass never calls the model
    probes = load_probes(cfg.traits)
    ev, tr_all = design.split_probes(probes, cfg.traits, cfg.probes_per_trait, cfg.seed)
    _, tr = design.reserve_persona_examples(probes, tr_all, cfg.traits, cfg.persona_examples, cfg.seed)
    seqs = design.shot_sequences(probes, tr, cfg.traits, cfg.max_shots, cfg.orderings, cfg.seed)
    no_model = types.SimpleNamespace(model=None, tokenizer=gemma.tokenizer, key=gemma.key)
    again = icl.measure_icl(no_model, probes, ev, seqs, design.shot_counts(cfg.max_shots),
                            cache_dir=out / "cache" / "icl", progress=False)
    np.testing.assert_allclose(again["nll"].to_numpy(), res.icl.measurements["nll"].to_numpy())

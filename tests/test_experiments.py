"""Tests of psm_bayes.experiments: EM prior, design, evidence tensors, grouped CV, screening, LoRA, the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from psm_bayes.experiments import design
from psm_bayes.experiments.analysis import evidence
from psm_bayes.experiments.measure import persona_table, pretraining_prior
from psm_bayes.experiments.config import ExperimentConfig
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


# ---------------------------------------------------------------- design (no LLM)
def test_design_roles_disjoint_label_balanced_and_seeded():
    cfg = ExperimentConfig()
    probes = load_probes(cfg.traits)
    d = design.make_design(cfg, probes, cfg.traits)
    roles = d.roles()
    names = list(roles)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not set(roles[names[i]]) & set(roles[names[j]]), (names[i], names[j])
    assert d.label_balance() == {"persona_examples": 0.5, "shots": 0.5, "sft_episodes": 0.5, "all": 0.5}
    assert d.n_values == (0, 1, 2, 4, 8, 16, 32, 64)
    m = probes.matching_option
    for s in d.sequences:
        for n in range(2, 65, 2):                 # every even prefix: half the matching answers Yes
            assert (m[s.items[:n]] == 0).sum() == n // 2
        plus, minus = s.answers("+"), s.answers("-")
        np.testing.assert_array_equal(plus, m[s.items])
        np.testing.assert_array_equal(minus, 1 - m[s.items])   # same statements, opposite answers
    again = design.make_design(cfg, probes, cfg.traits)
    assert np.array_equal(again.eval_idx, d.eval_idx) and np.array_equal(again.sft_train, d.sft_train)
    other = design.make_design(ExperimentConfig(seed=1), probes, cfg.traits)
    assert not np.array_equal(other.eval_idx, d.eval_idx)
    # the assertion can fail: an evaluation item that is also a shot is refused
    leak = d.sequences[0].items.copy()
    leak[0] = d.eval_idx[0]
    bad = design.ShotSequence(d.sequences[0].trait, 0, leak, m[leak])
    with pytest.raises(ValueError, match="leakage"):
        design.Design(probes, d.traits, d.sft_traits, d.eval_idx, d.prior_idx, d.persona_idx,
                      (bad,) + d.sequences[1:], d.n_values, d.sft_train)
    with pytest.raises(ValueError, match="even"):
        ExperimentConfig(max_shots=3)


def test_fewshot_persona_contexts_poles_differ_only_in_answers():
    from psm_bayes.llm.formats import PlainFormat
    from psm_bayes.probes import OPTIONS, load_personas

    cfg = ExperimentConfig()
    probes = load_probes(cfg.traits)
    d = design.make_design(cfg, probes, cfg.traits)
    spec = load_personas()
    personas = persona_table.select_personas(spec, cfg.traits)
    fmt = PlainFormat()
    ctx = dict(zip(personas.ids, persona_table.persona_contexts(fmt, spec, personas, probes, d.persona_idx)))
    table_prompts = {probes.items.prompts[i] for i in d.table_idx}
    for t in cfg.traits:
        ex = d.persona_idx[probes.trait[d.persona_idx] == t]
        plus, minus = ctx[f"{t}+"], ctx[f"{t}-"]
        assert plus.count("Answer:") == cfg.persona_examples
        strip = lambda c: c.replace("Answer: Yes", "Answer: #").replace("Answer: No", "Answer: #")  # noqa: E731
        assert strip(plus) == strip(minus)
        ans_p = [a.split("\n")[0] for a in plus.split("Answer:")[1:]]
        assert ans_p == [OPTIONS[m] for m in probes.matching_option[ex]]
        assert sum(a == " Yes" for a in ans_p) == cfg.persona_examples // 2
        assert not any(p in plus for p in table_prompts)
    with pytest.raises(ValueError, match="persona_context"):
        persona_table.persona_contexts(fmt, spec, personas, probes, d.persona_idx, "nope")


def test_multi_trait_persona_answers_every_member_traits_examples():
    """The default run's multi-trait persona (power-seeking&risk-taking) uses both traits' examples.

    ``g+`` answers each member trait's examples as ``t+`` does and ``g-`` as ``t-``; a persona built
    from one trait only (or with one pole's answers) would fail the answer comparison below.
    """
    from psm_bayes.data import DataError
    from psm_bayes.llm.formats import PlainFormat
    from psm_bayes.probes import OPTIONS, load_personas

    cfg = ExperimentConfig()
    groups = cfg.multi_trait_groups(cfg.traits)
    assert groups == (("power-seeking", "risk-taking"),)
    probes = load_probes(cfg.traits)
    d = design.make_design(cfg, probes, cfg.traits)
    spec = persona_table.with_multi_trait(load_personas(), groups)
    personas = persona_table.select_personas(spec, cfg.traits)
    assert len(personas) == 2 * len(cfg.traits) + 2
    ctx = dict(zip(personas.ids, persona_table.persona_contexts(PlainFormat(), spec, personas, probes, d.persona_idx)))
    g = "power-seeking&risk-taking"
    ex = d.persona_idx[np.isin(probes.trait[d.persona_idx], groups[0])]
    answers = lambda c: [a.split("\n")[0] for a in c.split("Answer:")[1:]]  # noqa: E731
    assert answers(ctx[g + "+"]) == [OPTIONS[m] for m in probes.matching_option[ex]]
    assert answers(ctx[g + "-"]) == [OPTIONS[1 - m] for m in probes.matching_option[ex]]
    for t in groups[0]:                        # every member trait's examples appear, answered as its pole
        assert all(line in ctx[g + "+"] for line in ctx[t + "+"].split("\n") if line.strip())
    # a group needs >= 2 known traits; the run's traits must hold the group
    with pytest.raises(DataError, match="multi_trait_personas"):
        persona_table.with_multi_trait(load_personas(), [("honesty", "no-such-trait")])
    with pytest.raises(ValueError, match="multi_trait_personas"):
        ExperimentConfig(traits=("honesty", "humour"), multi_trait_personas=(("honesty", "empathy"),))
    assert ExperimentConfig(multi_trait_personas=()).multi_trait_groups(cfg.traits) == ()


def _stages(cfg, d, seed=0):
    """Hand-made persona / ICL / SFT stage outputs (random numbers; the design is real)."""
    import pandas as pd
    import xarray as xr

    from psm_bayes.experiments.measure.finetune import SFTStage, cross_condition, sft_condition
    from psm_bayes.experiments.measure.icl import ICLStage, icl_condition, icl_contrasts, measurement_rows
    from psm_bayes.experiments.measure.persona_table import PersonaStage, normalised_table
    from psm_bayes.probes import load_personas

    rng = np.random.default_rng(seed)
    spec = load_personas()
    personas = persona_table.select_personas(spec, d.traits)
    ids = [d.probes.items.ids[i] for i in d.table_idx]
    tab = xr.Dataset({"loglik": (("persona", "item", "option"), rng.normal(size=(len(personas), len(ids), 2))),
                      "neutral_loglik": (("item", "option"), rng.normal(size=(len(ids), 2)))},
                     coords={"persona": list(personas.ids), "item": ids, "option": [0, 1]})
    em = pretraining_prior.prior_from_table(tab)
    ps = PersonaStage(spec, personas, "fewshot", {"fewshot": tab}, {}, {}, em, normalised_table(tab))
    ev = d.eval_idx
    rows = measurement_rows("base", "base", d, ev, rng.normal(size=ev.size), shot_trait="", pole="", ordering=-1,
                            n_shots=0)
    for s in d.sequences:
        for pole in "+-":
            for n in d.n_values[1:]:
                rows += measurement_rows(icl_condition(s.trait, pole, s.ordering, n), "icl", d, ev,
                                         rng.normal(size=ev.size), shot_trait=s.trait, pole=pole,
                                         ordering=s.ordering, n_shots=n)
    meas = pd.DataFrame(rows)
    srows, seen = [], {}
    for t in d.sft_traits:
        cross_items = ev[d.probes.trait[ev] == t]
        for pole in "+-":
            for step in cfg.sft_checkpoints:
                seen[(t, pole, 0, step)] = rng.integers(0, 3, d.sft_episodes(t).size)
                srows += measurement_rows(sft_condition(t, pole, 0, step), "sft", d, ev, rng.normal(size=ev.size),
                                          sft_trait=t, pole=pole, seed=0, step=step, n_shots=0, ordering=-1)
            srows += measurement_rows(cross_condition(t, pole, 0, 0, 2), "cross", d, cross_items,
                                      rng.normal(size=cross_items.size), sft_trait=t, pole=pole, seed=0,
                                      step=cfg.sft_checkpoints[-1], n_shots=2, ordering=0)
    sft = SFTStage(pd.DataFrame(srows), pd.DataFrame(), seen, {})
    return ps, ICLStage(meas, icl_contrasts(meas)), sft


def test_evidence_tensors_match_a_hand_count_and_rows_are_not_duplicated():
    cfg = ExperimentConfig.quick()
    probes = load_probes(cfg.traits)
    d = design.make_design(cfg, probes, cfg.traits)
    ps, icl_stage, sft = _stages(cfg, d)
    data = evidence.build_datasets(d, ps, icl_stage, sft, cfg.sft_checkpoints)
    items = list(data.icl.items)
    # every (condition, item) measured once: the n = 0 rows are not copied per shot trait
    for ds in (data.icl, data.sft, data.joint):
        pairs = list(zip(ds.measurement_condition, ds.measurement_item))
        assert len(pairs) == len(set(pairs))
    assert (np.array(data.icl.conditions) == "base").sum() == 1
    assert (data.icl.measurement_condition == data.icl.conditions.index("base")).sum() == d.eval_idx.size
    # ICL evidence by hand: the first n shots of the sequence, each answered as the pole would
    for c, name in enumerate(data.icl.conditions):
        expect = np.zeros((len(items), 2), dtype=int)
        if name != "base":
            trait, rest = name[4:].split(":", 1)
            pole, o, n = trait[-1], int(rest.split(":")[0][1:]), int(rest.split(":n")[1])
            seq = [s for s in d.sequences if s.trait == trait[:-1] and s.ordering == o][0]
            for k in range(n):
                i = seq.items[k]
                a = probes.matching_option[i] if pole == "+" else 1 - probes.matching_option[i]
                expect[items.index(probes.items.ids[i]), a] += 1
        np.testing.assert_array_equal(data.icl.icl_evidence[c], expect)
        assert not data.icl.sft_evidence[c].any()
    # SFT evidence by hand: times each episode of the condition's SFT trait was seen, on its pole's answer
    assert len(d.sft_traits) == 2 and {c.split(":")[1][:-1] for c in data.sft.conditions[1:]} == set(d.sft_traits)
    for c, name in enumerate(data.sft.conditions):
        if name == "base":
            continue
        tp, step = name.split(":")[1], int(name.split(":k")[1])
        trait, pole = tp[:-1], tp[-1]
        expect = np.zeros((len(items), 2), dtype=int)
        for e, i in enumerate(d.sft_episodes(trait)):
            assert probes.trait[i] == trait
            a = probes.matching_option[i] if pole == "+" else 1 - probes.matching_option[i]
            expect[items.index(probes.items.ids[i]), a] += sft.evidence[(trait, pole, 0, step)][e]
        np.testing.assert_array_equal(data.sft.sft_evidence[c], expect)
        assert expect.sum() == sft.evidence[(trait, pole, 0, step)].sum() > 0
    assert [t for c, t in zip(data.sft.conditions, data.sft.condition_type) if c != "base"] == \
        [f"sft-k{c.split(':k')[1]}" for c in data.sft.conditions if c != "base"]
    assert set(data.icl.condition_type) == {"base"} | {f"icl-n{n}" for n in d.n_values[1:]}
    # cross rows: appended last, each measured on its SFT trait's evaluation items only
    assert data.n_cross == 2 * np.isin(probes.trait[d.eval_idx], d.sft_traits).sum()
    tail = data.rows["cross"].tail(data.n_cross)
    assert set(tail["kind"]) == {"cross"} and (tail["item_trait"] == tail["sft_trait"]).all()


def test_grouped_loo_sums_measurements_by_item():
    import arviz as az

    from psm_bayes.experiments.analysis.fits import grouped_loo

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 3)
    # measurements of one item share a per-draw item effect, as repeated conditions of an item do
    ll = -1 + rng.normal(0, 0.6, size=(2, 200, 4))[..., groups] + rng.normal(0, 0.1, size=(2, 200, 12))
    sd = rng.gamma(2, size=(2, 200))
    dt = az.from_dict({"posterior": {"logodds_sd": sd}, "log_likelihood": {"logodds": ll}},
                      dims={"logodds": ["measurement"]})
    g = grouped_loo(dt, groups)
    # by hand: sum the three measurements of each item per draw, then PSIS-LOO on 4 terms
    summed = np.stack([ll[..., groups == k].sum(-1) for k in range(4)], -1)
    ref = az.loo(az.from_dict({"posterior": {"logodds_sd": sd}, "log_likelihood": {"y": summed}}),
                 pointwise=True)
    assert g["elpd"] == pytest.approx(float(ref.elpd), rel=1e-6)
    assert len(g["elpd_i"]) == 4 and g["pareto_k"].shape == (4,)
    # row-wise LOO is a different (wrong) number here: it leaves out one measurement, not one item
    row = az.loo(dt, pointwise=True)
    assert abs(float(row.elpd) - g["elpd"]) > 0.05


def test_persona_separation_and_compact_fit(tmp_path):
    import arviz as az
    import xarray as xr

    from psm_bayes.experiments.output.outputs import compact_fit, save_fit
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


def test_prior_data_conflict_names_a_posterior_in_the_prior_tail():
    import arviz as az

    from psm_bayes.experiments.analysis.checks import prior_data_conflict
    from psm_bayes.models.selection import Priors

    rng = np.random.default_rng(0)
    # beta_icl ~ 181 under a LogNormal(0, 1) prior (prior CDF ~ 1 - 1e-7): the case the issue found unreported
    far = az.from_dict({"posterior": {"beta_icl": rng.normal(181, 10, (2, 100)),
                                      "logodds_sd": rng.gamma(5, 0.1, (2, 100))}})
    near = az.from_dict({"posterior": {"beta_icl": rng.lognormal(0, 0.2, (2, 100)),
                                       "logodds_sd": rng.gamma(5, 0.1, (2, 100))}})
    got = prior_data_conflict({"icl/persona_selection": far, "sft/persona_selection": near}, Priors())
    assert [(c["fit"], c["parameter"]) for c in got] == [("icl/persona_selection", "beta_icl")]
    assert got[0]["prior_quantile"] > 0.995


def test_config_validation_and_cli_flags():
    from psm_bayes.cli import build_parser
    from psm_bayes.cli.run import config_from_args

    with pytest.raises(ValueError, match="sft_traits"):
        ExperimentConfig(traits=("honesty",), sft_traits=("humour",))
    with pytest.raises(ValueError, match="sft_traits"):
        ExperimentConfig(traits=("honesty", "humour"), sft_traits=("humour", "humour"))
    assert ExperimentConfig().trained_traits() == ExperimentConfig().traits[:2]
    args = build_parser().parse_args(["run", "--out", "x", "--quick", "--traits", "honesty,empathy",
                                      "--max-shots", "4", "--sft-seeds", "3", "--sft-traits", "empathy",
                                      "--models", "gemma3-270m", "--sft-steps", "8"])
    cfg = config_from_args(args)
    assert cfg.traits == ("honesty", "empathy") and cfg.max_shots == 4 and cfg.sft.seeds == (0, 1, 2)
    assert cfg.trained_traits() == ("empathy",) and cfg.models == ("gemma3-270m",)
    assert cfg.sft_checkpoints == (2, 4, 6, 8) and cfg.sft.steps == 8          # 4 checkpoints: s/4 .. s
    assert config_from_args(build_parser().parse_args(["run", "--out", "x"])) == ExperimentConfig()
    cfg = config_from_args(build_parser().parse_args(["run", "--out", "x", "--probes", "/some/dir"]))
    assert cfg.probes_dir == "/some/dir" and cfg.traits is None
    with pytest.raises(ValueError, match="persona_context"):
        ExperimentConfig(persona_context="bogus")
    with pytest.raises(ValueError, match="persona_examples"):
        ExperimentConfig(persona_examples=3)
    with pytest.raises(ValueError, match="null_models"):
        ExperimentConfig(null_models=("nope",))
    cfg = config_from_args(build_parser().parse_args(["run", "--out", "x", "--device", "cpu"]))
    assert cfg.device == "cpu" and ExperimentConfig().device == "auto"
    with pytest.raises(ValueError, match="device"):
        ExperimentConfig(device="gpu")


# ---------------------------------------------------------------- real model
ANTHROPIC = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "anthropic-persona")  # ../shared beside the repo


@pytest.mark.llm
def test_screening_on_anthropic_persona_files(gemma, tmp_path):
    import os

    from psm_bayes.experiments.measure import screening

    if not os.path.isdir(ANTHROPIC):
        pytest.skip("no Anthropic persona files here")
    src = screening.probe_source(ANTHROPIC, ("agreeableness", "extraversion"))
    assert src.spec.personas.ids == ("agreeableness+", "agreeableness-", "extraversion+", "extraversion-")
    res = screening.screen_traits(gemma, src, n_items=4, n_examples=4, keep=1, threshold=-100.0, n_se=-100.0,
                                  seed=0, cache_dir=tmp_path)    # everything passes: the largest is kept
    assert set(res.table.index) == {"agreeableness", "extraversion"} and len(res.traits) == 1
    assert res.table.loc[res.traits[0], "separation"] == res.table["separation"].max()
    assert len(res.probes) == len(src.probes) - 2 * (4 + 4)          # screened statements are gone
    with pytest.raises(ValueError, match="screening"):                # an impossible threshold picks nothing
        screening.screen_traits(gemma, src, n_items=4, n_examples=4, keep=1, threshold=100.0, seed=0,
                                cache_dir=tmp_path)


@pytest.mark.llm
def test_pipeline_end_to_end_tiny(gemma, tmp_path):
    from psm_bayes.experiments.pipeline import run_experiment

    from psm_bayes.experiments.config import TINY

    cfg = ExperimentConfig.quick(**TINY, dtype="float32")
    res = run_experiment(cfg, tmp_path, progress=False, loaded={"gemma3-270m": gemma},
                         loaded_fp32={"gemma3-270m": gemma})
    r = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "criteria.md").stat().st_mtime <= (tmp_path / "report.md").stat().st_mtime
    from psm_bayes.experiments.analysis.criteria import stated_criteria

    assert [c["name"] for c in r["criteria"]] == [c["name"] for c in stated_criteria(cfg)]   # label balance: asserted
    assert all(set(c) >= {"name", "statement", "passed", "evidence"} for c in r["criteria"])
    assert {c["name"]: c["passed"] for c in r["criteria"]}["base_vs_instruct"] is None     # one model: not judged
    assert r["design"]["label_balance"]["all"] == 0.5
    # the statement-feature stage runs before SFT, so the encompassing model (PSM + surface similarity) is
    # compared beside the PSM and the nulls, and its persona_weight reported
    enc = r["models"]["gemma3-270m"]["encompassing"]
    assert set(enc) == {"icl", "sft"} and all(0 <= v["lo"] <= v["mean"] <= v["hi"] <= 1 for v in enc.values())
    for key in ("icl", "sft"):
        assert set(r[key]["compare"]["rows"]) == {"persona_selection", "response_bias", "encompassing"}
        assert "leave-one-item-out" in r[key]["compare"]["method"]
        assert all(0 <= row["stacking_weight"] <= 1 for row in r[key]["compare"]["rows"].values())
    assert all("pareto_k_bad" in r["diagnostics"][f"icl/{m}"] for m in ("persona_selection", "response_bias"))
    assert all(d["attempts"] and d["refits"] == len(d["attempts"]) - 1 for d in r["diagnostics"].values())
    assert "prior_data_conflict" in r and set(r["cross_prediction"]["scores"]) == {"persona_selection",
                                                                                  "response_bias"}
    # encompassing is scored beside them, and the criteria leave it out of "every null" (test_criteria.py)
    assert set(r["icl"]["contrast_prediction"]["scores"]) == {"persona_selection", "response_bias", "encompassing"}
    run = res.runs["gemma3-270m"]
    n_counts = len(res.design.n_values) - 1                                          # n = 1, 2
    assert len(run.icl.contrasts) == len(cfg.traits) * n_counts * len(res.design.eval_idx)  # per (trait, n, item)
    views = r["models"]["gemma3-270m"]["icl"]
    assert {(c["trait"], c["pole"]) for c in views["curves"]} == {(t, p) for t in cfg.traits for p in "+-"}
    assert all(abs(sum(q["q"].values()) - 1) < 1e-9 for q in views["persona_posterior"])
    assert [row["trait"] for row in views["table_vs_icl"]] == list(cfg.traits)
    assert all((tmp_path / "plots" / f).stat().st_size > 0 for f in ("icl_curves.png", "persona_posterior.png",
                                                                     "sft_pairs.png"))
    pairs = r["sft"]["by_trait_pair"]                                 # what the trait-pair plot draws
    assert {(p["sft_trait"], p["item_trait"]) for p in pairs} == {(a, b) for a in cfg.trained_traits()
                                                                  for b in cfg.traits}
    assert "Pre-stated criteria" in (tmp_path / "report.md").read_text()

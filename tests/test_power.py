"""Power analysis (psm_bayes.experiments.analysis.power) and exact leave-one-item-out refits (refits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from psm_bayes.experiments.analysis import power
from psm_bayes.experiments.analysis.fitting import FitSettings
from psm_bayes.models.selection_simulate import simulate

SIZES = dict(n_personas=4, n_traits=2, n_eval=4, n_shot_items=4, shots=(2, 4), observation="measurements")


def _pilot_data(seed: int = 0, name: str = "persona_selection"):
    return simulate(name, FitSettings().priors(), seed=seed, **SIZES)


def test_resample_items_keeps_each_items_conditions_and_the_evidence():
    data, _ = _pilot_data()
    rng = np.random.default_rng(0)
    new = power.resample_items(data, 6, rng)
    measured = np.unique(new.measurement_item)
    # 6 new items per trait, all beyond the old columns; the old evaluation items are no longer measured
    assert measured.size == 12 and measured.min() == data.n_items
    traits = np.asarray(new.item_trait)[measured]
    assert sorted(np.unique(traits, return_counts=True)[1]) == [6, 6]
    # the 4 items of a trait are all used before any repeats (without replacement while they last)
    src = [new.items[j].split("#")[0] for j in measured]
    for t in ("t0", "t1"):
        used = [s for s, tr in zip(src, traits) if tr == t]
        assert len(set(used[:4])) == 4
    # every new item carries every condition its source item was measured in, once
    for j in measured:
        s = new.items.index(new.items[j].split("#")[0])
        assert sorted(new.measurement_condition[new.measurement_item == j]) == \
            sorted(data.measurement_condition[data.measurement_item == s])
        np.testing.assert_array_equal(new.loglik[:, j], data.loglik[:, s])
        assert new.matching_option[j] == data.matching_option[s]
    # evidence and features of the old items are unchanged; no evidence on the new ones
    np.testing.assert_array_equal(new.icl_evidence[:, : data.n_items], data.icl_evidence)
    assert new.icl_evidence[:, data.n_items:].sum() == 0 and new.logodds is None
    for name in ("trait_indicator", "profile_similarity", "surface_similarity"):
        np.testing.assert_allclose(new.null_features(name)[:, :, measured],
                                   data.null_features(name)[:, :, [new.items.index(s) for s in src]])


def _toy_fit(data):
    """A one-chain 'posterior' with fixed effect sizes: beta_icl 3, no response bias, item sd 0.5, noise 0.3."""
    import xarray as xr

    post = {"beta_icl": np.full((1, 4), 3.0), "response_bias": np.zeros((1, 4, len(data.bias_types))),
            "item_sd": np.full((1, 4), 0.5), "logodds_sd": np.full((1, 4), 0.3), "item_effect": np.zeros((1, 4, 8))}
    return xr.DataTree.from_dict({"/posterior": xr.Dataset(
        {k: (("chain", "draw") + tuple(f"{k}_{i}" for i in range(v.ndim - 2)), v) for k, v in post.items()})})


def _seeded(data):
    """The toy design with its 8 non-base conditions named as 2 LoRA seeds x 4 (pole, checkpoint) cells."""
    names = ["base"] + [f"sft{pole}:s{seed}:k{k}" for seed in (0, 1) for pole in "+-" for k in (2, 4)]
    return data.replace(conditions=tuple(names))


def test_resample_seeds_repeats_each_seeds_conditions():
    data = _seeded(_pilot_data()[0])
    assert power.condition_seeds(data) == [0, 1]
    new = power.resample_seeds(data, 5)
    assert power.condition_seeds(new) == [0, 1, 2, 3, 4] and new.n_conditions == 1 + 5 * 4
    assert new.conditions.count("base") == 1
    for c, name in enumerate(new.conditions):
        if name == "base":
            src = 0
        else:                                     # seed n copies pilot seed n mod 2, same pole and checkpoint
            head, seed, tail = name.split(":")
            src = data.conditions.index(f"{head}:s{int(seed[1:]) % 2}:{tail}")
        np.testing.assert_array_equal(new.icl_evidence[c], data.icl_evidence[src])
        np.testing.assert_array_equal(new.sft_evidence[c], data.sft_evidence[src])
        assert new.condition_type[c] == data.condition_type[src]
        assert sorted(new.measurement_item[new.measurement_condition == c]) == \
            sorted(data.measurement_item[data.measurement_condition == src])
    assert new.logodds is None and new.measurement_item.size == data.measurement_item.size * 21 // 9
    one = power.resample_seeds(data, 1)
    assert one.conditions == ("base", "sft+:s0:k2", "sft+:s0:k4", "sft-:s0:k2", "sft-:s0:k4")
    # a repeated seed is a new measurement, not a copy: simulated log-odds of s0 and s2 differ
    fit = _toy_fit(data)
    pilot = power.Pilot(data, {"persona_selection": fit})
    sim = power.simulate_replicate(pilot, "persona_selection", 4, 0, FitSettings().priors(), sft_seeds=3)
    a = sim.logodds[sim.measurement_condition == sim.conditions.index("sft+:s0:k2")]
    b = sim.logodds[sim.measurement_condition == sim.conditions.index("sft+:s2:k2")]
    assert a.shape == b.shape and not np.allclose(a, b)
    with pytest.raises(ValueError, match="sft_seeds"):
        power.resample_seeds(_pilot_data()[0], 2)             # ICL conditions: no seeds


def test_replicates_follow_the_true_models_effect_sizes():
    """With PSM true, t+ shots raise the matching log-odds over t- shots; with response_bias true they do not.

    The mean t+ minus t- contrast over 20 replicates: under response_bias it is 0 up to noise (item
    effects cancel within an item; sd of one contrast ~ sqrt(2) * logodds_sd), under persona_selection
    with a large beta_icl it is the persona shift. A simulator that ignored ``fixed`` (prior draws of
    beta) or the truth would not separate the two.
    """
    data, _ = _pilot_data()
    fit = _toy_fit(data)
    pilot = power.Pilot(data, {"persona_selection": fit, "response_bias": fit})

    def contrast(truth: str) -> float:
        out = []
        for seed in range(20):
            d = power.simulate_replicate(pilot, truth, 4, seed, FitSettings().priors())
            conds = np.asarray(d.conditions)[d.measurement_condition]
            plus = np.char.find(conds.astype(str), "+:o0:n4") >= 0
            minus = np.char.find(conds.astype(str), "-:o0:n4") >= 0
            out.append(d.logodds[plus].mean() - d.logodds[minus].mean())
        return float(np.mean(out))

    c_psm, c_null = contrast("persona_selection"), contrast("response_bias")
    assert abs(c_null) < 0.3          # 20 replicates x 8 items: se ~ 0.3 * sqrt(2 / 160) ~ 0.03
    assert c_psm > 1.0                # beta_icl = 3 on 4 shots of a persona table with trait_sd 2


def test_exact_refit_agrees_with_psis_where_psis_is_reliable():
    """The exact held-out density of an item (refit without it) matches PSIS-LOO where Pareto k < 0.5.

    Both estimate log p(y_item | y_rest); PSIS with k < 0.5 has Monte Carlo error ~0.1 nats at 800
    draws, the refit's quadrature is exact and its posterior error similar, so 0.5 nats is a
    tolerance both meet. The same computation on the wrong rows (another item's measurements,
    or without integrating the new item's random effect) is off by far more than that.
    """
    from psm_bayes.experiments.analysis import refits
    from psm_bayes.experiments.analysis.fits import grouped_loo
    from psm_bayes.inference import configure_jax, fit_nuts
    from psm_bayes.models import catalogue

    configure_jax()
    data, _ = _pilot_data(seed=3)
    pr = FitSettings(logodds_df=5.0).priors()
    model = catalogue.model("persona_selection")
    dt = fit_nuts(model, data, seed=0, priors=pr, num_warmup=300, num_samples=400)
    loo = grouped_loo(dt, data.measurement_item, refits.fit_item_loglik(dt, data, pr))
    j = int(np.argmin(loo["pareto_k"]))
    item = int(loo["groups"][j])
    assert loo["pareto_k"][j] < 0.5
    refit = fit_nuts(model, refits.without_item(data, item), seed=1, priors=pr, num_warmup=300, num_samples=400)
    exact = refits.heldout_elpd("persona_selection", data, refit, item, pr)
    assert exact == pytest.approx(loo["elpd_i"][j], abs=0.5)
    # wrong answers: another item's log-odds scored as this item's, or no item random effect
    other = int(loo["groups"][(j + 1) % len(loo["groups"])])
    swapped = data.replace(logodds=np.where(data.measurement_item == item,
                                            np.resize(data.logodds[data.measurement_item == other],
                                                      data.logodds.size), data.logodds))
    assert abs(refits.heldout_elpd("persona_selection", swapped, refit, item, pr) - exact) > 1.0
    # why the item effect is integrated out: summing the raw pointwise terms leaves PSIS unreliable
    # (k > 0.7) on more items than the integrated terms
    raw = grouped_loo(dt, data.measurement_item)
    assert raw["pareto_k_bad"] > loo["pareto_k_bad"]


def test_integrated_item_loglik_matches_brute_force_monte_carlo():
    """Adaptive Gauss-Hermite vs a dense grid over z in [-9, 9] (400,001 points), written out here.

    The grid rule is accurate to ~1e-8 for these smooth integrands (plain Monte Carlo with 4e5 draws
    was tried first and is NOT a usable reference: its error on the sharp 12-row peak is ~0.03);
    tolerance 1e-4. A non-adaptive rule (nodes of N(0, 1) itself) misses the sharp peak of 12 rows
    with sd 0.2 and item sd 2 and is off by far more (shown).
    """
    from scipy import stats
    from scipy.special import logsumexp

    from psm_bayes.experiments.analysis import refits

    rng = np.random.default_rng(1)
    group = np.repeat([0, 1], [12, 5])
    mean = rng.normal(0, 1, (2, group.size))
    item_sd, sd = np.array([2.0, 0.7]), np.array([0.2, 0.5])
    y = mean[0] + item_sd[0] * np.array([0.8, -1.3])[group] + rng.normal(0, 0.2, group.size)
    got = refits.integrated_item_loglik(y, mean, item_sd, sd, 5.0, group, 2)
    z = np.linspace(-9, 9, 400_001)
    for s in range(2):
        for g in range(2):
            rows = group == g
            ll = stats.norm.logpdf(z)
            for yr, mr in zip(y[rows], mean[s, rows]):
                ll = ll + stats.t.logpdf(yr, 5.0, mr + item_sd[s] * z, sd[s])
            assert got[s, g] == pytest.approx(logsumexp(ll) + np.log(z[1] - z[0]), abs=1e-4)
    # the same rule without adapting to the peak (fixed N(0, 1) nodes) is wrong here
    from numpy.polynomial.hermite_e import hermegauss

    x, w = hermegauss(refits.QUADRATURE_NODES)
    rows = group == 0
    fixed = logsumexp(np.log(w / w.sum()) + sum(stats.t.logpdf(yr, 5.0, mr + item_sd[0] * x, sd[0])
                                                for yr, mr in zip(y[rows], mean[0, rows])))
    assert abs(fixed - got[0, 0]) > 0.1


@pytest.mark.slow
def test_comparison_picks_the_truth_at_the_rate_the_power_analysis_predicts(tmp_path):
    """PSM true -> the comparison claims PSM; response_bias true -> it does not, at the predicted rates.

    A pilot (synthetic design, fits of both models) feeds ``psm-bayes study --power`` (the CLI, 6
    replicates per truth, 2 workers): its predicted right-decision rates. Then 6 FRESH data sets per
    truth (other seeds) go through the run's comparison (fit, grouped CV, the criterion): the observed
    counts must agree with the predicted rates (two-sided binomial test at 1%) and be high (>= 5/6
    each: the pilot effect is large). A comparison that ignored the data (claims PSM always, or
    never) is right 6/6 on one truth and 0/6 on the other, and fails.
    """
    from scipy import stats

    from psm_bayes import io
    from psm_bayes.inference import configure_jax, fit_nuts
    from psm_bayes.models import catalogue

    configure_jax()
    settings = FitSettings(num_warmup=200, num_samples=200, refit_unconverged=False)
    data, _ = _pilot_data(seed=5)
    pilot_dir = tmp_path / "pilot"
    io.save_data(data, pilot_dir / "data" / "toy" / "icl.nc")
    fits = {}
    for m in ("persona_selection", "response_bias"):
        fits[m] = fit_nuts(catalogue.model(m), data, seed=0, priors=settings.priors(), num_warmup=300,
                           num_samples=300)
        io.save_datatree(fits[m], pilot_dir / "fits" / "toy" / f"icl-{m}.nc")
    out = tmp_path / "power"
    cmd = [sys.executable, "-m", "psm_bayes.cli", "study", "--power", str(pilot_dir), "--out", str(out),
           "--truths", "persona_selection,response_bias", "--probes-per-trait", "4", "--replicates", "6",
           "--workers", "2",
           "--warmup", "200", "--draws", "200", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr
    predicted = {r["truth"]: r["rate"] for r in json.loads((out / "power.json").read_text())["rates"]}
    pilot = power.Pilot(data, fits)
    for truth in ("persona_selection", "response_bias"):
        right = 0
        for seed in range(100, 106):
            d = power.simulate_replicate(pilot, truth, 4, seed, settings.priors())
            row = power.compare_replicate(d, ("persona_selection", "response_bias"), settings, seed, 2.0)
            right += power.right({**row, "truth": truth})
        assert right >= 5
        assert stats.binomtest(right, 6, min(max(predicted[truth], 0.01), 0.99)).pvalue > 0.01
        # a data-blind rule (always / never claim PSM) is right 0/6 on one of the truths: inconsistent
        assert stats.binomtest(0, 6, min(max(predicted[truth], 0.01), 0.99)).pvalue < 0.01


def test_power_cli_refuses_seeds_on_icl_data(tmp_path, capsys):
    """``--sft-seeds`` is a design axis of the SFT data only: with the ICL data it is an error naming the flag."""
    from psm_bayes.cli import main

    rc = main(["study", "--power", str(tmp_path / "no-run"), "--sft-seeds", "1,3", "--out", str(tmp_path / "p")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--sft-seeds" in err and "--dataset sft" in err
    assert not (tmp_path / "p").exists()


def test_written_out_log_densities_equal_scipys():
    from scipy import stats

    from psm_bayes.experiments.analysis import refits

    rng = np.random.default_rng(0)
    y, loc, scale = rng.normal(size=50), rng.normal(size=(3, 50)), rng.uniform(0.1, 2, size=(3, 1))
    np.testing.assert_allclose(refits._logpdf(y, loc, scale, 5.0), stats.t.logpdf(y, 5.0, loc, scale), rtol=1e-12)
    np.testing.assert_allclose(refits._logpdf(y, loc, scale, None), stats.norm.logpdf(y, loc, scale), rtol=1e-12)
    # a wrong degrees of freedom is told apart
    assert not np.allclose(refits._logpdf(y, loc, scale, 5.0), stats.t.logpdf(y, 4.0, loc, scale), rtol=1e-6)

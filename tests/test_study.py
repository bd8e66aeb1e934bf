"""Simulation studies: spec, local run, resume after interruption, Ray == serial, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from psm_bayes.models import catalogue
from psm_bayes.study import Study, run_study
from psm_bayes.study import runner as study_runner
from psm_bayes.study.runner import NON_DETERMINISTIC

CANONICAL = "persona_selection" if "persona_selection" in catalogue.names() else "persona_mixture"

SPEC_TOML = """
name = "tiny"
model = "persona_space"
method = "svi"
seeds = [0, 1]

[grid]
n_episodes = [30, 60]

[simulate]
n_items = 5

[inference]
num_steps = 200
num_draws = 100
"""


def _svi_study(**kw) -> Study:
    base = dict(name="tiny", model="persona_space", method="svi", grid={"n_episodes": [30, 60]}, seeds=(0, 1),
                simulate={"n_items": 5}, inference={"num_steps": 200, "num_draws": 100})
    base.update(kw)
    return Study(**base)


def _parts(out) -> dict[str, float]:
    d = os.path.join(out, "parts")
    return {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d) if f.endswith(".parquet")}


def _same_numbers(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.drop(columns=list(NON_DETERMINISTIC)), b.drop(columns=list(NON_DETERMINISTIC)))


# ---------------------------------------------------------------- spec
def test_spec_from_toml_and_cells(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SPEC_TOML)
    st = Study.from_file(path)
    assert st == _svi_study()
    cells = st.cells()
    assert [(c.params["n_episodes"], c.seed) for c in cells] == [(30, 0), (30, 1), (60, 0), (60, 1)]
    assert len({c.id for c in cells}) == 4
    # ids are stable, and change with anything that changes a result
    assert [c.id for c in Study.from_dict(st.to_dict()).cells()] == [c.id for c in cells]
    assert _svi_study(inference={"num_steps": 201, "num_draws": 100}).cells()[0].id != cells[0].id
    assert _svi_study(name="renamed").cells()[0].id == cells[0].id
    assert st.with_seed(10).seeds == (10, 11)
    (tmp_path / "s.json").write_text(json.dumps(st.to_dict()))
    assert Study.from_file(tmp_path / "s.json") == st


def test_grid_routes_prior_and_inference_keys():
    st = _svi_study(grid={"n_episodes": [30], "priors.beta_scale": [0.2, 0.4], "inference.num_steps": [50]})
    sim, pri, inf = st.cells()[1].split()
    assert sim == {"n_episodes": 30} and pri == {"beta_scale": 0.2} and inf == {"num_steps": 50}


@pytest.mark.parametrize("kw, match", [(dict(model="nope"), "model"), (dict(method="mh"), "method"),
                                       (dict(seeds=()), "seeds"), (dict(backend="stan"), "backend"),
                                       (dict(grid={"n_episodes": []}), "grid.n_episodes")])
def test_spec_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _svi_study(**kw)


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"name": "x", "gird": {}}))
    with pytest.raises(ValueError, match="gird"):
        Study.from_file(tmp_path / "s.json")


# ---------------------------------------------------------------- NUTS cell metrics
def _posterior(draws: dict[str, np.ndarray]):
    import arviz as az

    return az.from_dict({"posterior": draws, "sample_stats": {"diverging": np.zeros((2, 50), bool)}})


def test_cell_metrics_by_hand():
    """Coverage and RMSE equal a hand computation on a real DataTree; a wrong truth scores 0 coverage."""
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (2, 50))
    w = rng.normal([0.0, 5.0], 0.1, (2, 50, 2))
    dt = _posterior({"a": a, "w": w})
    truth = {"a": 0.3, "w": np.array([0.05, 9.0])}  # w[1] = 9 lies far outside its posterior
    m = study_runner.cell_metrics(dt, truth, ["a", "w", "missing"], interval=0.9)
    flat = np.concatenate([a.reshape(-1, 1), w.reshape(-1, 2)], axis=1)
    t = np.array([0.3, 0.05, 9.0])
    lo, hi = np.quantile(flat, [0.05, 0.95], axis=0)
    inside = (lo <= t) & (t <= hi)
    assert list(inside) == [True, True, False]
    assert m["coverage"] == pytest.approx(inside.mean()) and m["coverage_w"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt(((flat.mean(0) - t) ** 2).mean()))
    assert m["n_params"] == 3 and m["divergences"] == 0 and m["rhat_max"] < 1.1
    # the wrong answer fails: a truth shifted by 10 posterior sd is covered nowhere and has RMSE ~10 sd
    far = study_runner.cell_metrics(dt, {"a": 10.0, "w": np.array([1.0, 6.0])}, ["a", "w"])
    assert far["coverage"] == 0.0 and far["rmse"] > 0.9
    with pytest.raises(ValueError, match="truth"):
        study_runner.cell_metrics(dt, {}, ["a"])


def test_local_nuts_run_produces_the_table(tmp_path):
    """A real NUTS cell: the row holds every metric, scored on the catalogue's main latents (the values
    themselves are checked by hand in ``test_cell_metrics_by_hand``; calibration of coverage across many
    data sets is what SBC checks, ``tests/test_sbc.py``)."""
    entry = catalogue.get(CANONICAL)
    st = Study(name="nuts", model=CANONICAL, method="nuts", seeds=(0,), simulate=dict(entry.sizes),
               inference={"num_warmup": 200, "num_samples": 200, "num_chains": 2})
    run = run_study(st, tmp_path, progress=False)
    t = pd.read_parquet(tmp_path / "results.parquet")
    assert len(t) == 1 and run.computed == [st.cells()[0].id]
    row = t.iloc[0]
    _, truth = entry.simulator()(entry.priors(), seed=0, **entry.sizes)
    present = [k for k in entry.latents if k in truth]  # main latents this design has (e.g. no SFT: no beta_sft)
    assert present
    for col in ("coverage", "rmse", "rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "wall_time_s",
                "seed", "cell_id", *(f"coverage_{k}" for k in present)):
        assert col in t.columns, col
    n_scalar = sum(np.size(truth[k]) for k in present)
    assert row["n_params"] == n_scalar
    # overall coverage is the size-weighted mean of the per-site coverages
    per_site = sum(row[f"coverage_{k}"] * np.size(truth[k]) for k in present) / n_scalar
    assert row["coverage"] == pytest.approx(per_site)
    assert 1.0 <= row["rhat_max"] < 1.1 and row["ess_bulk_min"] > 50 and row["divergences"] >= 0
    assert json.load(open(tmp_path / "study.json"))["name"] == "nuts"


# ---------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def serial_svi(tmp_path_factory):
    """A complete serial run of the 4-cell SVI study, interrupted once by a failing cell and resumed."""
    out = tmp_path_factory.mktemp("serial")
    st = _svi_study()
    calls: list[int] = []
    real = study_runner.run_cell

    def flaky(study, cell):
        calls.append(cell.index)
        if cell.index == 2 and calls.count(2) == 1:
            raise RuntimeError("simulated crash in cell 2")
        return real(study, cell)

    study_runner.run_cell = flaky
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_study(st, out, progress=False)
        before = _parts(out)
        first_calls = list(calls)
        run = run_study(st, out, progress=False)
    finally:
        study_runner.run_cell = real
    return dict(out=out, study=st, before=before, first_calls=first_calls, calls=calls, run=run)


def test_failed_cell_resumes_without_recomputing(serial_svi):
    s = serial_svi
    ids = [c.id for c in s["study"].cells()]
    assert s["first_calls"] == [0, 1, 2] and sorted(s["before"]) == sorted(f"{i}.parquet" for i in ids[:2])
    # the rerun computed only cells 2 and 3; finished part files were not rewritten
    assert s["calls"][3:] == [2, 3]
    assert s["run"].skipped == ids[:2] and s["run"].computed == ids[2:]
    after = _parts(s["out"])
    assert all(after[f] == t for f, t in s["before"].items()) and len(after) == 4
    t = s["run"].table
    assert list(t["cell_index"]) == [0, 1, 2, 3] and t["coverage"].between(0, 1).all()
    assert np.isnan(t["rhat_max"]).all() and "final_loss" in t  # SVI: one "chain", no R-hat
    assert not [f for f in os.listdir(os.path.join(s["out"], "parts")) if f.endswith(".tmp")]


def test_killed_process_resumes(tmp_path):
    """SIGKILL the CLI after its first finished cell; a rerun computes only the rest."""
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC_TOML.replace("seeds = [0, 1]", "seeds = [0, 1, 2]").replace("[30, 60]", "[30]"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "psm_bayes.cli", "study", str(spec), "--out", str(out),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(out / "parts") and _parts(out):
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _parts(out)
    assert 1 <= len(before) < 3, "the study finished (or never started) before it could be killed"
    run = run_study(Study.from_file(spec), out, progress=False)
    assert len(run.skipped) == len(before) and len(run.computed) == 3 - len(before)
    after = _parts(out)
    assert all(after[f] == t for f, t in before.items()) and len(run.table) == 3


def test_cli_on_finished_study_computes_nothing(serial_svi, tmp_path, capsys):
    from psm_bayes.cli import main

    spec = tmp_path / "s.json"
    spec.write_text(json.dumps(serial_svi["study"].to_dict()))
    before = _parts(serial_svi["out"])
    assert main(["study", str(spec), "--out", str(serial_svi["out"]), "--no-progress"]) == 0
    assert "0 cell(s) computed, 4 already done" in capsys.readouterr().out
    assert _parts(serial_svi["out"]) == before


# ---------------------------------------------------------------- Ray
@pytest.mark.slow  # ~50 s to start a local Ray; the process-pool path stays in the default run
def test_ray_local_two_workers_matches_serial(serial_svi, tmp_path):
    pytest.importorskip("ray")
    run = run_study(serial_svi["study"], tmp_path, ray_address="local", workers=2, progress=False)
    assert len(run.computed) == 4
    # same seeds -> same numbers, bit for bit (only the wall time differs)
    _same_numbers(run.table, serial_svi["run"].table)


@pytest.mark.slow
def test_process_pool_matches_serial(serial_svi, tmp_path):
    run = run_study(serial_svi["study"], tmp_path, workers=2, progress=False)
    _same_numbers(run.table, serial_svi["run"].table)

"""The file workflow (CLI simulate -> fit -> diagnose), atomic I/O and diagnostics verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psm_bayes import DataError
from psm_bayes import diagnostics as diag
from psm_bayes.io import atomic_path, load_data, load_datatree, load_table, save_data, save_datatree, save_table
from psm_bayes.simulate import simulate


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "psm_bayes.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_simulate_fit_diagnose(tmp_path: Path) -> None:
    r = _cli("simulate", "--model", "persona_mixture", "--personas", "3", "--items", "12", "--episodes", "200", "--seed", "3",
             "--out", "d.nc", "--episodes-table", "ep.parquet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    truth = json.loads((tmp_path / "d.nc.truth.json").read_text())
    assert len(truth["w"]) == 3 and abs(sum(truth["w"]) - 1) < 1e-9
    assert len(load_table(tmp_path / "ep.parquet")) == 200

    r = _cli("fit", "d.nc", "--model", "persona_mixture", "--chains", "2", "--warmup", "150", "--draws", "150", "--seed", "1", "--out", "f.nc",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("fit", "d.nc", "--model", "persona_mixture", "--method", "svi-mvn", "--steps", "300", "--draws", "150", "--episodes", "ep.parquet",
             "--out", "s.zarr", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("diagnose", "f.nc", "s.zarr", "--out", "diag", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert set(report) == {"f", "s"}
    assert report["f"]["divergences"] == 0
    for name in ("trace", "forest", "rank", "ppc"):
        png = tmp_path / "diag" / "f" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    cmp = pd.read_csv(tmp_path / "diag" / "compare.csv", index_col=0)
    assert set(cmp.index) == {"f", "s"}
    # the diagnosed fit learnt from the data: beta_sft's posterior sd (from the summary the command wrote) is at
    # most 0.6 of its prior sd, and its mean is within 3 posterior sd of the truth. The prior is
    # LogNormal(0, 0.5): sd sqrt((e^0.25 - 1) e^0.25) = 0.60. A prior-only fit (sd 0.60, contraction 1)
    # fails the first criterion, shown below; 3 sd misses a calibrated posterior w.p. ~0.003.
    # Why 0.6 and not 0.5 (changed 2026-12-02 after this test failed with sd 0.325): the posterior sd on these
    # data is 0.305 (2 chains x 2000 draws, seeds 1 and 2: 0.301-0.312, the same before and after the NUTS
    # program reuse changed the sampler's random stream), i.e. a contraction of 0.51, so a 0.5 bound passed or
    # failed on Monte Carlo noise (150-draw estimates 0.277 and 0.325). 0.6 x 0.60 = 0.36 sits 3 Monte Carlo
    # se (0.017 at ~380 ESS) above the true 0.305 and far below the prior-only 0.60.
    summary = pd.read_csv(tmp_path / "diag" / "f" / "summary.csv", index_col=0)
    prior_sd = float(np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)))

    def learnt(sd: float, mean: float) -> bool:
        return sd <= 0.6 * prior_sd and abs(mean - truth["beta_sft"]) < 3 * sd

    assert learnt(summary.loc["beta_sft", "sd"], summary.loc["beta_sft", "mean"]), summary.loc["beta_sft"]
    assert not learnt(prior_sd, float(np.exp(0.125)))  # the prior-only fit: prior sd and prior mean


def test_cli_reports_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("item,option\nnot-an-item,0\n")
    save_data(simulate(2, 5, 2, 10, seed=0).data, tmp_path / "d.nc")
    r = _cli("fit", "d.nc", "--model", "persona_mixture", "--episodes", "bad.csv", "--out", "f.nc", cwd=tmp_path)
    assert r.returncode != 0
    assert "episodes.item" in r.stderr and "not-an-item" in r.stderr
    assert not (tmp_path / "f.nc").exists()
    r = _cli("fit", "missing.nc", "--out", "f.nc", cwd=tmp_path)
    assert r.returncode != 0 and "missing.nc" in r.stderr


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from psm_bayes.io import OutputError, mark_dir

    out = mark_dir(tmp_path / "out", "test")  # a folder psm-bayes made: its files may be replaced
    target = out / "out.csv"
    save_table(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [".psm-bayes", "out.csv"]
    # a file psm-bayes did not write (no marker, not in a marked folder) is never replaced
    (tmp_path / "mine.csv").write_text("a\n1\n")
    with pytest.raises(OutputError, match="not written by psm-bayes"):
        save_table(pd.DataFrame({"a": [2]}), tmp_path / "mine.csv", overwrite=True)
    assert (tmp_path / "mine.csv").read_text() == "a\n1\n"


def test_data_and_datatree_round_trip(tmp_path: Path) -> None:
    from psm_bayes.inference import fit_svi
    from psm_bayes.models.persona_mixture_numpyro import persona_mixture

    data = simulate(3, 8, 3, 50, seed=2).data
    for suffix in (".nc", ".zarr"):
        save_data(data, tmp_path / f"d{suffix}")
        back = load_data(tmp_path / f"d{suffix}")
        np.testing.assert_array_equal(back.loglik.array, data.loglik.array)
        np.testing.assert_array_equal(back.episodes.option, data.episodes.option)
        assert back.episodes.source.tolist() == data.episodes.source.tolist()
    dt = fit_svi(persona_mixture, data, seed=0, num_steps=50, num_draws=20)
    save_datatree(dt, tmp_path / "f.nc")
    back = load_datatree(tmp_path / "f.nc")
    np.testing.assert_array_equal(back["posterior"]["w"].values, dt["posterior"]["w"].values)
    np.testing.assert_array_equal(back["svi"]["loss"].values, dt["svi"]["loss"].values)
    (tmp_path / "x.nc").write_bytes(b"")
    with pytest.raises(Exception):
        load_data(tmp_path / "x.nc")
    with pytest.raises(ValueError, match="extension"):
        save_datatree(dt, tmp_path / "f.json")
    import xarray as xr

    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="not a psm-bayes data file"):
        load_data(tmp_path / "other.nc")


def test_check_flags_an_unconverged_sampler() -> None:
    """The convergence verdict can fail: NUTS without warm-up and tree depth 1 does not mix."""
    from psm_bayes.inference import fit_nuts
    from psm_bayes.models.persona_mixture_numpyro import persona_mixture

    data = simulate(4, 20, 2, 400, seed=5).data
    bad = fit_nuts(persona_mixture, data, seed=0, num_warmup=0, num_samples=100, num_chains=2,
                   max_tree_depth=1, predictive=False)
    verdict = diag.check(bad)
    assert not verdict.ok
    assert verdict.max_rhat > 1.01 or verdict.min_ess_bulk < 400 or any("never move" in p for p in verdict.broken)

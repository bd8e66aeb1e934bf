"""Nothing lost, nothing silently wrong: the bad-input and data-safety cases of issue 11, reproduced.

Every case runs the real CLI (``main([...])`` in-process, or a subprocess
where a traceback or a kill is the point) on real files in ``tmp_path`` and
asserts the exit status, the one-line message naming the flag or field, and
that every file that existed before is byte-identical afterwards. The
numbers in comments refer to the list in issue 11 ("Where it stands").
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from psm_bayes import io
from psm_bayes.cli import main

PY = [sys.executable, "-m", "psm_bayes.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ helpers
def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and folder (None) under ``root``."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def assert_user_error(rc: int, err: str, *needles: str) -> str:
    """Exit status 2 and exactly one line on stderr, containing every needle."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A simulated data file, its episodes table and a tiny SVI fit, all made by the CLI."""
    d = tmp_path_factory.mktemp("made")
    assert main(["simulate", "--model", "persona_mixture", "--personas", "3", "--items", "6", "--episodes", "40",
                 "--seed", "1", "--out", str(d / "sim.nc"), "--episodes-table", str(d / "ep.csv")]) == 0
    assert main(["fit", str(d / "sim.nc"), "--model", "persona_mixture", "--method", "svi-normal", "--steps", "30",
                 "--draws", "50", "--out", str(d / "fit.nc")]) == 0
    return d


@pytest.fixture
def work(made, tmp_path, monkeypatch):
    """``tmp_path`` (the working folder) holding copies of the made files."""
    for name in ("sim.nc", "sim.nc.truth.json", "ep.csv", "fit.nc"):
        shutil.copy(made / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------ 1, 2: data loss
@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_existing_folder_at_out_is_never_deleted(work, capsys, suffix, overwrite):
    """(1) A user's folder at --out (named like a data file) survives, --overwrite or not."""
    (work / f"outdir{suffix}").mkdir()
    (work / f"outdir{suffix}" / "notes.txt").write_text("x")
    before = snapshot(work)
    rc, _, err = cli(capsys, "simulate", "--personas", "2", "--out", f"outdir{suffix}",
                     *(["--overwrite"] if overwrite else []))
    assert_user_error(rc, err, "--out", f"outdir{suffix}")
    assert snapshot(work) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_fit_never_replaces_its_input(work, capsys, overwrite):
    """(2) ``fit c.nc --out c.nc`` is refused (even with --overwrite); c.nc is kept."""
    before = snapshot(work)
    rc, _, err = cli(capsys, "fit", "sim.nc", "--out", "sim.nc", *(["--overwrite"] if overwrite else []))
    assert_user_error(rc, err, "--out", "also an input")
    rc, _, err = cli(capsys, "fit", "sim.nc", "--model", "persona_mixture", "--episodes", "ep.csv", "--out", "./ep.csv")
    assert_user_error(rc, err, "--out")
    assert snapshot(work) == before


def test_overwrite_replaces_only_files_psm_bayes_wrote(work, capsys):
    """An existing output needs --overwrite, and even then only a file with psm-bayes's marker is replaced."""
    args = ["simulate", "--model", "persona_mixture", "--personas", "2", "--items", "4", "--episodes", "10", "--out", "sim.nc"]
    before = snapshot(work)
    rc, _, err = cli(capsys, *args)
    assert_user_error(rc, err, "--out", "already exists", "--overwrite")
    assert snapshot(work) == before
    rc, _, err = cli(capsys, *args, "--overwrite")
    assert rc == 0, err
    assert (work / "sim.nc").read_bytes() != before["sim.nc"]  # replaced: it was psm-bayes's own file
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(work / "foreign.nc", engine="h5netcdf")
    (work / "foreign.nc.truth.json").write_text("{}")
    before = snapshot(work)
    rc, _, err = cli(capsys, "simulate", "--personas", "2", "--out", "foreign.nc", "--overwrite")
    assert_user_error(rc, err, "--out", "foreign.nc", "not written by psm-bayes")
    assert snapshot(work) == before


# ------------------------------------------------------------------ 3: tables against a schema
@pytest.mark.parametrize("header, bad", [("item,option,n", "n"), ("item,option,Count", "Count"),
                                         ("item,option,src", "src")])
def test_episodes_table_unknown_column_is_an_error(work, capsys, header, bad):
    """(3) A misspelled count or source column is refused (it used to weigh every row 1 / make icl sft)."""
    (work / "bad.csv").write_text(f"{header}\ni0,1,3\ni1,0,2\n")
    before = snapshot(work)
    rc, _, err = cli(capsys, "fit", "sim.nc", "--model", "persona_mixture", "--episodes", "bad.csv", "--out", "f.nc")
    assert_user_error(rc, err, "--episodes", f"unknown column '{bad}'", "item, option[, source, count]")
    assert snapshot(work) == before


@pytest.mark.parametrize("value", ["1.5", "0", "-2", "many"])
def test_episode_counts_must_be_positive_integers(work, capsys, value):
    (work / "bad.csv").write_text(f"item,option,count\ni0,1,1\ni1,0,{value}\n")
    before = snapshot(work)
    rc, _, err = cli(capsys, "fit", "sim.nc", "--model", "persona_mixture", "--episodes", "bad.csv", "--out", "f.nc")
    assert_user_error(rc, err, "--episodes", "'count' row 2", "integer")
    assert snapshot(work) == before


def test_counts_and_sources_are_used():
    """The table's count and source columns reach the data (the columns are read, not ignored)."""
    df = pd.DataFrame({"item": ["i0", "i1"], "option": [1, 0], "source": ["icl", "sft"], "count": [3, 1]})
    ep = io.episodes_from_table(df)
    assert ep.count.tolist() == [3.0, 1.0] and ep.source.tolist() == ["icl", "sft"]


# ------------------------------------------------------------------ 4: score -> fit
def _score_file(path: Path, sim: Path) -> None:
    """A table in the format `psm-bayes score` writes (loglik + metadata, marker "scores")."""
    data = io.load_data(sim)
    ds = xr.Dataset({"loglik": data.loglik.values,
                     "persona_description": ("persona", [f"persona {p}" for p in data.loglik.personas])})
    io.save_xarray(ds, path, kind="scores")


def test_score_table_is_accepted_by_fit_with_episodes(work, capsys):
    """(4) ``score --out sc.nc; fit sc.nc`` explains the route; with --episodes it fits."""
    _score_file(work / "sc.nc", work / "sim.nc")
    before = snapshot(work)
    for extra in ([], ["--episodes", "ep.csv"]):  # the default model takes SelectionData: the route is named
        rc, _, err = cli(capsys, "fit", "sc.nc", *extra, "--out", "f.nc")
        assert_user_error(rc, err, "--model", "sc.nc", "score table", "--model persona_mixture --episodes")
    rc, _, err = cli(capsys, "fit", "sc.nc", "--model", "persona_mixture", "--out", "f.nc")
    assert_user_error(rc, err, "sc.nc", "score table", "add --episodes")
    assert snapshot(work) == before
    rc, _, err = cli(capsys, "fit", "sc.nc", "--model", "persona_mixture", "--episodes", "ep.csv", "--method",
                     "svi-normal", "--steps", "20", "--draws", "10", "--out", "f.nc")
    assert rc == 0, err
    dt = io.load_datatree(work / "f.nc")
    assert dt["posterior"]["w"].sizes["persona"] == 3
    assert all(snapshot(work)[k] == v for k, v in before.items())


def test_every_catalogued_model_simulates_to_a_file_fit_reads(tmp_path, capsys):
    """(4) What `simulate --model NAME` writes is read back by `fit --model NAME` unchanged."""
    from psm_bayes.models import catalogue

    one_per_class = {catalogue.get(n).data: n for n in reversed(catalogue.names())}  # a model per data class
    for name in sorted(one_per_class.values()):
        entry = catalogue.get(name)
        out = tmp_path / f"{name}.nc"
        sizes = [a for k, v in entry.sizes.items() for a in ("--size", f"{k}={json.dumps(v)}")]
        rc, _, err = cli(capsys, "simulate", "--model", name, *sizes, "--out", out)
        if rc == 2 and "nested data" in err:  # a data class holding data classes: told in one line
            assert_user_error(rc, err, "cannot be written to a file yet")
            continue
        assert rc == 0, (name, err)
        back = io.load_data(out, cls=entry.data)
        again = tmp_path / f"{name}-again.nc"
        io.save_data(back, again)
        a, b = (xr.open_dataset(p, engine="h5netcdf").load() for p in (out, again))
        xr.testing.assert_identical(a, b)


def test_default_model_fits_what_simulate_wrote(work, capsys):
    rc, _, err = cli(capsys, "simulate", "--personas", "2", "--episodes", "20", "--out", "s.nc")
    assert rc == 0, err
    rc, _, err = cli(capsys, "fit", "s.nc", "--method", "svi-normal", "--steps", "20", "--draws", "10",
                     "--out", "f.nc")
    assert rc == 0, err
    assert "posterior" in io.load_datatree(work / "f.nc").children


# ------------------------------------------------------------------ 5: outputs checked before work
@pytest.mark.parametrize("out, needle", [("f5.txt", "extension '.txt'"), ("/proc/x.nc", "not a writable folder"),
                                         ("sim.nc.truth.json/x.nc", "not a writable folder")])
def test_output_path_checked_before_reading_anything(work, capsys, out, needle):
    """(5) A bad --out is reported before the data is even read (so no finished fit is thrown away)."""
    before = snapshot(work)
    rc, _, err = cli(capsys, "fit", "missing.nc", "--out", out)
    assert_user_error(rc, err, "--out", needle)
    assert snapshot(work) == before


# ------------------------------------------------------------------ 6: answers instead of internal errors
def _zero_episodes(path: Path) -> None:
    from psm_bayes.data import Episodes

    data = io.load_data(Path("sim.nc"))
    io.save_data(data.replace(episodes=Episodes(np.array([], dtype=object), np.array([], dtype=int))), path)


CASES_6 = [
    ("missing option column", lambda w: (w / "t.csv").write_text("item\ni0\n"),
     ["fit", "sim.nc", "--model", "persona_mixture", "--episodes", "t.csv", "--out", "f.nc"], ["--episodes", "missing column 'option'"]),
    ("zero episodes", lambda w: _zero_episodes(w / "zero.nc"),
     ["fit", "zero.nc", "--model", "persona_mixture", "--out", "f.nc"], ["data", "no episodes"]),
    ("wrong model for the data", lambda w: None,
     ["fit", "sim.nc", "--out", "f.nc"], ["--model", "holds PSMData", "persona_mixture", "takes SelectionData"]),
    ("diagnose a data file", lambda w: None,
     ["diagnose", "sim.nc", "--out", "d"], ["fits", "no 'posterior' group", "fit it first"]),
    ("empty .nc", lambda w: (w / "empty.nc").write_bytes(b""),
     ["fit", "empty.nc", "--out", "f.nc"], ["data", "empty.nc", "not a readable .nc file"]),
    ("header-only csv", lambda w: (w / "h.csv").write_text("item,option\n"),
     ["fit", "sim.nc", "--model", "persona_mixture", "--episodes", "h.csv", "--out", "f.nc"], ["--episodes", "no rows"]),
    ("negative personas", lambda w: None, ["simulate", "--personas", "-3", "--out", "x.nc"], ["--personas", ">= 1"]),
    ("zero options", lambda w: None, ["simulate", "--options", "0", "--out", "x.nc"], ["--options", ">= 2"]),
    ("negative seed", lambda w: None, ["simulate", "--seed", "-1", "--out", "x.nc"], ["--seed", ">= 0"]),
]


@pytest.mark.parametrize("name, make, args, needles", CASES_6, ids=[c[0] for c in CASES_6])
def test_bad_input_gets_an_answer(work, capsys, name, make, args, needles):
    """(6) Each used to end in an ImportError, AssertionError, KeyError, h5py traceback or numpy error."""
    make(work)
    before = snapshot(work)
    rc, _, err = cli(capsys, *args)
    assert_user_error(rc, err, *needles)
    assert snapshot(work) == before


# ------------------------------------------------------------------ 7: one line, flags not API names
CASES_7 = [
    ("simulate", ["simulate", "--episodes", "0", "--out", "x.nc"], ["--episodes"]),
    ("fit draws", ["fit", "sim.nc", "--draws", "0", "--out", "f.nc"], ["--draws"]),
    ("fit warmup", ["fit", "sim.nc", "--warmup", "-1", "--out", "f.nc"], ["--warmup"]),
    ("fit prior", ["fit", "sim.nc", "--prior", "concentratoin=3", "--out", "f.nc"], ["--prior", "concentratoin"]),
    ("fit model", ["fit", "sim.nc", "--model", "nope", "--out", "f.nc"], ["--model", "nope"]),
    ("diagnose", ["diagnose", "missing.nc", "--out", "d"], ["missing.nc", "does not exist"]),
    ("study", ["study", "missing.toml", "--out", "s"], ["missing.toml"]),
    ("sbc alpha", ["sbc", "--alpha", "2", "--out", "s"], ["--alpha", "(0, 1)"]),
    ("sbc replicates", ["sbc", "--replicates", "0", "--out", "s"], ["--replicates"]),
    ("run draws", ["run", "--out", "r", "--draws", "0"], ["--draws"]),
    ("run chains", ["run", "--out", "r", "--num-chains", "0"], ["--num-chains"]),
    ("score extension", ["score", "--out", "t.txt", "--traits", "honesty"], ["--out", "extension '.txt'"]),
    ("score n-per-trait", ["score", "--out", "t.nc", "--n-per-trait", "0"], ["--n-per-trait"]),
]


@pytest.mark.parametrize("name, args, needles", CASES_7, ids=[c[0] for c in CASES_7])
def test_every_command_reports_user_errors_in_one_line(work, capsys, name, args, needles):
    """(7) simulate, fit, diagnose, study, sbc, run and score: one line, rc 2, the flag's name."""
    before = snapshot(work)
    rc, _, err = cli(capsys, *args)
    line = assert_user_error(rc, err, *needles)
    assert "num_samples" not in line and "Traceback" not in err
    assert snapshot(work) == before


def test_debug_shows_the_traceback(work):
    """(7) Tracebacks only with --debug (a real process: what a user sees)."""
    plain = subprocess.run(PY + ["fit", "missing.nc", "--out", "f.nc"], capture_output=True, text=True,
                           cwd=work, env=ENV, timeout=300)
    assert_user_error(plain.returncode, plain.stderr, "missing.nc", "does not exist")
    debug = subprocess.run(PY + ["--debug", "fit", "missing.nc", "--out", "f.nc"], capture_output=True, text=True,
                           cwd=work, env=ENV, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


# ------------------------------------------------------------------ 8: diagnose keeps every file, strict JSON
def test_diagnose_keeps_same_stem_files_and_writes_strict_json(work, capsys):
    (work / "sub").mkdir()
    shutil.copy(work / "fit.nc", work / "sub" / "fit.nc")
    before = snapshot(work)
    rc, out, err = cli(capsys, "diagnose", "fit.nc", "sub/fit.nc", "fit.nc", "--out", "diag")
    assert rc == 0, err
    text = (work / "diag" / "diagnostics.json").read_text()

    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    report = json.loads(text, parse_constant=no_constants)
    assert set(report) == {"fit", "sub-fit", "fit-2"}
    assert report["sub-fit"]["file"] == "sub/fit.nc"
    assert report["fit"]["max_rhat"] is None  # one SVI chain: R-hat undefined -> null
    assert set(pd.read_csv(work / "diag" / "compare.csv", index_col=0).index) == {"fit", "sub-fit", "fit-2"}
    assert all(snapshot(work)[k] == v for k, v in before.items())
    # a second diagnose into the same folder needs --overwrite, and keeps a user's note there
    (work / "diag" / "notes.txt").write_text("mine")
    rc, _, err = cli(capsys, "diagnose", "fit.nc", "--out", "diag")
    assert_user_error(rc, err, "--out", "--overwrite")
    rc, _, err = cli(capsys, "diagnose", "fit.nc", "--out", "diag", "--overwrite")
    assert rc == 0, err
    assert (work / "diag" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ 9: smaller ones
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stray_temp_files_are_cleaned_on_the_next_write(work, capsys):
    """(9) A temp file left by a killed writer of sim.nc goes on the next write of sim.nc; others stay."""
    stray = work / f".sim.nc.psm-tmp-{_dead_pid()}-0000abcd"
    stray.write_bytes(b"half a file")
    mine = work / ".sim.nc.my-own-hidden-file"
    mine.write_text("keep")
    rc, _, err = cli(capsys, "simulate", "--model", "persona_mixture", "--personas", "2", "--items", "4",
                     "--episodes", "10", "--out", "sim.nc", "--overwrite")
    assert rc == 0, err
    assert not stray.exists() and mine.read_text() == "keep"


STUDY = """name = "t"
model = "persona_mixture"
method = "svi"
seeds = [0]

[grid]
n_episodes = [20]

[simulate]
n_personas = 2
n_items = 4

[priors]
concentration = 5.0

[inference]
num_steps = 20
num_draws = 10
"""

TYPOS = [
    ("simulate", STUDY.replace("n_items = 4", "n_item = 4"), ["[simulate] n_item"]),
    ("grid key", STUDY.replace("n_episodes = [20]", "n_episode = [20]"), ["grid.n_episode"]),
    ("grid value", STUDY.replace("n_episodes = [20]", "n_episodes = [20, -5]"), ["n_episodes=-5"]),
    ("priors", STUDY.replace("concentration = 5.0", "concentratoin = 5.0"), ["[priors] concentratoin"]),
    ("inference", STUDY.replace("num_steps = 20", "num_step = 20"), ["[inference] num_step", "num_steps"]),
    ("inference value", STUDY.replace("num_draws = 10", "num_draws = 0"), ["[inference] num_draws", ">= 1"]),
]


@pytest.mark.parametrize("name, text, needles", TYPOS, ids=[t[0] for t in TYPOS])
def test_study_spec_checked_completely_before_anything_is_written(work, capsys, name, text, needles):
    """(9) A typo anywhere in the study file fails before study.json (or anything) is written."""
    io.prepare_output_dir(work / "out", command="study")
    io.save_json({"earlier": "study"}, work / "out" / "study.json", kind="study")
    (work / "s.toml").write_text(text)
    before = snapshot(work)
    rc, _, err = cli(capsys, "study", "s.toml", "--out", "out", "--no-progress")
    assert_user_error(rc, err, *needles)
    assert snapshot(work) == before


def test_nc_and_zarr_data_get_their_own_truth(work, capsys):
    """(9) data.nc and data.zarr used to share one data.truth.json."""
    for suffix, seed in ((".nc", "1"), (".zarr", "2")):
        rc, _, err = cli(capsys, "simulate", "--personas", "2", "--episodes", "10", "--seed", seed,
                         "--out", f"new/data{suffix}")
        assert rc == 0, err  # missing folders are created (as by every command)
    a = json.loads((work / "new" / "data.nc.truth.json").read_text())
    b = json.loads((work / "new" / "data.zarr.truth.json").read_text())
    assert a != b and a["psm_bayes_format"] == b["psm_bayes_format"] == "truth"


def test_simulate_checks_every_output_before_writing(work, capsys):
    """(9) --episodes-table x.txt used to fail after the .nc was written."""
    before = snapshot(work)
    rc, _, err = cli(capsys, "simulate", "--personas", "2", "--out", "d.nc", "--episodes-table", "x.txt")
    assert_user_error(rc, err, "--episodes-table", "extension '.txt'")
    assert snapshot(work) == before


def test_score_accepts_a_new_folder_like_every_command(work, capsys):
    """(9) --out in a missing folder passes the output check (the error is the trait, not the folder)."""
    rc, _, err = cli(capsys, "score", "--out", "new/sub/t.nc", "--traits", "nope", "--quiet")
    line = assert_user_error(rc, err, "trait")
    assert "--out" not in line and not (work / "new").exists()


def test_a_target_that_appears_during_a_write_is_kept(tmp_path):
    """A file created by someone else while psm-bayes writes the same path is not replaced."""
    target = tmp_path / "t.json"

    def writer(tmp: Path) -> None:
        tmp.write_text("{}")
        target.write_text("theirs")  # another program creates the target meanwhile

    with pytest.raises(io.OutputError, match="t.json"):
        io.atomic_write(target, writer)
    assert target.read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]
    io.atomic_write(tmp_path / "new.json", lambda tmp: tmp.write_text("{}"))
    assert (tmp_path / "new.json").read_text() == "{}" and len(list(tmp_path.iterdir())) == 2


# ------------------------------------------------------------------ fault injection
_WRITER = """
import sys
from psm_bayes import io
dt = io.load_datatree(sys.argv[1])
a, b = dt.copy(), dt.copy()
a.attrs["version"], b.attrs["version"] = "old", "new"
io.save_datatree(a, sys.argv[3], overwrite=True)  # warm up: every import done before the first kill
print("ready", flush=True)
while True:
    for v in (b, a):
        io.save_datatree(v, sys.argv[2], overwrite=True)
"""


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_sigkill_during_fit_writes_leaves_old_or_new(work, capsys, suffix):
    """SIGKILL at random instants of a process rewriting a fit: the target is always a whole old or new fit.

    The writer rewrites the real fit in a loop, so most kills land inside a write
    (asserted below: temp files were left behind); the next write -- a real
    ``psm-bayes fit --overwrite`` -- cleans them.
    """
    target = work / f"f{suffix}"
    dt = io.load_datatree(work / "fit.nc")
    dt.attrs["version"] = "old"
    io.save_datatree(dt, target)
    rng = random.Random(11)
    strays = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(work / "fit.nc"), str(target),
                                 str(work / f"warm{suffix}")], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        back = io.load_datatree(target)  # whole and readable
        assert back.attrs["version"] in ("old", "new")
        np.testing.assert_array_equal(back["posterior"]["w"].values, dt["posterior"]["w"].values)
        strays += any(".psm-tmp-" in p.name or ".psm-old-" in p.name for p in work.iterdir())
    assert strays >= 1, "no kill landed inside a write; the test did not exercise the writer"
    rc, _, err = cli(capsys, "fit", "sim.nc", "--model", "persona_mixture", "--method", "svi-normal", "--steps",
                     "20", "--draws", "10", "--out", target.name, "--overwrite")
    assert rc == 0, err
    assert not [p.name for p in work.iterdir() if ".psm-" in p.name]
    assert "version" not in io.load_datatree(target).attrs  # the rerun's fit replaced it


@pytest.mark.slow  # ~55 s; a killed study resuming is also tested in test_study.py::test_killed_process_resumes
def test_sigkill_during_a_study_then_rerun(work):
    """SIGKILL a study at random instants; every file is whole, and a rerun finishes with no temp files."""
    (work / "s.toml").write_text(STUDY.replace("seeds = [0]", "seeds = [0, 1, 2]"))
    rng = random.Random(5)

    def parquet_files():
        return [p for p in (work / "out").rglob("*.parquet")]

    for _ in range(2):
        proc = subprocess.Popen(PY + ["study", "s.toml", "--out", "out", "--no-progress"], cwd=work, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for p in parquet_files():  # never partial
            assert len(pd.read_parquet(p)) >= 1
    done = subprocess.run(PY + ["study", "s.toml", "--out", "out", "--no-progress"], cwd=work, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_parquet(work / "out" / "results.parquet")) == 3
    assert not [p for p in (work / "out").rglob("*") if ".psm-tmp-" in p.name or p.name.endswith(".tmp")]

"""Strict inputs and one-line errors: the probe-file, flag and diagnose cases of issue 21, reproduced.

Each case runs the real loader, the real CLI (``main([...])`` in-process) or
the real design on real files in ``tmp_path`` and asserts the one line naming
the file, line and field (or the flag), the exit status, and that nothing was
left behind. Issue 21 lists what used to happen instead (an AttributeError,
a codec error naming no file, a 50 MB statement chosen, a leak between roles,
rc 0 on half-NaN draws, ...).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from psm_bayes import io
from psm_bayes.cli import main
from psm_bayes.data import DataError
from psm_bayes.probes import MAX_STATEMENT_CHARS, load_anthropic_persona, load_probes

ANTHROPIC_DIR = Path(__file__).parents[2] / "shared/data/anthropic-persona"


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(rc: int, err: str, *needles: str, status: int = 2) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == status, err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


# ------------------------------------------------------------------ probe files (shipped format)
def _probe(statement: str, trait: str = "kind", matches: bool = True) -> str:
    return json.dumps({"trait": trait, "statement": statement, "matches": matches})


GOOD = [_probe("I help people.", matches=True), _probe("I ignore people.", matches=False)]

PROBE_CASES = [
    ("a JSON list", GOOD + ['["I help", "people"]'], "p.jsonl:3", "expected a JSON object"),
    ("a JSON string", GOOD + ['"I help people."'], "p.jsonl:3", "got a JSON str"),
    ("too long", GOOD + [_probe("x" * (MAX_STATEMENT_CHARS + 1))], "p.jsonl:3.statement", "2,001 characters"),
    ("exact duplicate", GOOD + [_probe("I help people.")], "p.jsonl:3.statement",
     "duplicates the statement at p.jsonl:1"),
    ("same after normalising", GOOD + [_probe("i  HELP people!")], "p.jsonl:3.statement", "p.jsonl:1"),
    ("in two traits", GOOD + [_probe("I help people.", trait="bold")], "p.jsonl:3.statement",
     "of trait 'kind' at p.jsonl:1 again, under trait 'bold'"),
    ("missing matches", GOOD + [json.dumps({"trait": "kind", "statement": "I share."})], "p.jsonl:3.matches",
     "true or false"),
]


@pytest.mark.parametrize("name, lines, where, needle", PROBE_CASES, ids=[c[0] for c in PROBE_CASES])
def test_probe_file_is_refused_in_one_line_naming_file_line_and_field(tmp_path, name, lines, where, needle):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_probes(path=path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(where) and needle in msg, msg
    path.write_text("\n".join(GOOD) + "\n", encoding="utf-8")     # the same file without the bad line loads
    assert load_probes(path=path).statements == ("I help people.", "I ignore people.")


def test_non_utf8_byte_names_file_line_and_column(tmp_path):
    path = tmp_path / "p.jsonl"
    bad = b'{"trait": "kind", "statement": "caf\xe9", "matches": true}\n'     # latin-1, not UTF-8
    path.write_bytes(("\n".join(GOOD) + "\n").encode() + bad)
    with pytest.raises(DataError, match=r"^p\.jsonl:3: not valid UTF-8 \(byte 0xe9 at column 36\)"):
        load_probes(path=path)


def test_a_50_mb_statement_is_refused_not_chosen(tmp_path):
    """Issue 21: a 50 MB statement was accepted and chosen; now the bound of 2,000 characters refuses it."""
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(GOOD + [_probe("I " + "really " * 7_500_000 + "help.")]) + "\n", encoding="utf-8")
    assert path.stat().st_size > 50e6
    with pytest.raises(DataError, match=r"^p\.jsonl:3\.statement: 52,500,007 characters; expected at most 2,000$"):
        load_probes(path=path)


def test_shipped_probes_pass_the_strict_loader():
    probes = load_probes()
    assert len(probes) > 0 and max(len(s) for s in probes.statements) <= MAX_STATEMENT_CHARS


# ------------------------------------------------------------------ Anthropic persona files
def _anthropic(statement: str, match: str = " Yes") -> str:
    return json.dumps({"statement": statement, "answer_matching_behavior": match,
                       "answer_not_matching_behavior": " No" if match == " Yes" else " Yes"})


ANTHROPIC_CASES = [
    ("a JSON list", ["[1, 2]"], "kind.jsonl:3", "expected a JSON object"),
    ("too long", [_anthropic("y" * 2001)], "kind.jsonl:3.statement", "expected at most 2,000"),
    ("exact duplicate in a trait", [_anthropic("I help people.")], "kind.jsonl:3.statement",
     "duplicates the statement at kind.jsonl:1"),
]


@pytest.mark.parametrize("name, extra, where, needle", ANTHROPIC_CASES, ids=[c[0] for c in ANTHROPIC_CASES])
def test_anthropic_file_is_refused_in_one_line(tmp_path, name, extra, where, needle):
    lines = [_anthropic("I help people."), _anthropic("I hurt people.", " No")] + extra
    (tmp_path / "kind.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_anthropic_persona(tmp_path)
    assert str(info.value).startswith(where) and needle in str(info.value), str(info.value)


def test_anthropic_encoding_error_names_the_file(tmp_path):
    (tmp_path / "kind.jsonl").write_bytes(_anthropic("I help people.").encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"^kind\.jsonl:2: not valid UTF-8 \(byte 0xff at column 1\)"):
        load_anthropic_persona(tmp_path)


def test_statement_shared_by_two_traits_is_never_in_both(tmp_path, caplog):
    """Left out of every trait by default (logged), refused with shared="error"; respellings keep the first."""
    (tmp_path / "kind.jsonl").write_text("\n".join([
        _anthropic("I help people."), _anthropic("I hurt people.", " No"), _anthropic("I don't lie."),
        _anthropic("I don’t lie.")]) + "\n", encoding="utf-8")
    (tmp_path / "cold.jsonl").write_text("\n".join([
        _anthropic("I feel nothing."), _anthropic("I hurt people."), _anthropic("I care.", " No")]) + "\n",
        encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="psm_bayes.probes"):
        ps = load_anthropic_persona(tmp_path)
    assert ps.statements == ("I feel nothing.", "I care.", "I help people.", "I don't lie.")
    lines = [r.getMessage() for r in caplog.records if r.name == "psm_bayes.probes"]
    assert len(lines) == 1 and "left out 3 statements" in lines[0] and "cold.jsonl:2 = kind.jsonl:2" in lines[0], lines
    with pytest.raises(DataError, match=r"^kind\.jsonl:2\.statement: the statement of trait 'cold' at cold\.jsonl:2"):
        load_anthropic_persona(tmp_path, shared="error")
    assert len(load_anthropic_persona(tmp_path, traits=["cold"])) == 3    # one trait alone shares nothing


@pytest.mark.skipif(not ANTHROPIC_DIR.is_dir(), reason=f"{ANTHROPIC_DIR} not present")
def test_public_anthropic_files_load_without_repeats():
    from psm_bayes.probes.quality import normalise

    ps = load_anthropic_persona(ANTHROPIC_DIR)
    texts = [normalise(s) for s in ps.statements]
    assert len(texts) == len(set(texts)) and 23_000 < len(texts) < 24_000


# ------------------------------------------------------------------ the design: no text in two roles
def test_design_refuses_one_text_in_two_roles():
    """Two probes with the same words (ids differ, so the index checks pass) cannot take two roles."""
    from psm_bayes.experiments.config import TINY, ExperimentConfig
    from psm_bayes.experiments.design import make_design
    from psm_bayes.probes import _to_probeset

    cfg = ExperimentConfig.quick(**TINY, traits=("kind",), multi_trait_personas=())
    rows = [{"trait": "kind", "statement": f"I help {'people' if j % 2 else 'PEOPLE'}.", "matching_option": j % 2}
            for j in range(40)]
    with pytest.raises(DataError, match=r"design: the statement 'i help people' is both .* \(leakage\)"):
        make_design(cfg, _to_probeset(rows), ("kind",))
    rows = [dict(r, statement=f"Statement number {j}.") for j, r in enumerate(rows)]
    assert make_design(cfg, _to_probeset(rows), ("kind",)).traits == ("kind",)     # distinct texts pass


# ------------------------------------------------------------------ flags: one line, no folder left
FLAG_CASES = [
    ("--traits empty", ["run", "--out", "r", "--traits", ""], ["--traits", "got ''"]),
    ("--traits spaces", ["run", "--out", "r", "--traits", " , "], ["--traits"]),
    ("--traits unknown", ["run", "--out", "r", "--traits", "nonexistent"], ["traits", "nonexistent"]),
    ("--models empty", ["run", "--out", "r", "--models", ""], ["--models"]),
    ("--model missing", ["run", "--out", "r", "--quick", "--model", "nowhere.gguf"], ["models", "'nowhere.gguf'"]),
    ("--sft-lr inf", ["run", "--out", "r", "--sft-lr", "inf"], ["--sft-lr", "finite number > 0", "'inf'"]),
    ("--sft-lr nan", ["run", "--out", "r", "--sft-lr", "nan"], ["--sft-lr"]),
    ("--sft-lr 0", ["run", "--out", "r", "--sft-lr", "0"], ["--sft-lr"]),
    ("--sft-lr -1e-3", ["run", "--out", "r", "--sft-lr=-1e-3"], ["--sft-lr"]),
    ("--sft-steps 0", ["run", "--out", "r", "--sft-steps", "0"], ["--sft-steps"]),
    ("--concentration inf", ["simulate", "--concentration", "inf", "--out", "x.nc"], ["--concentration"]),
    ("--prior scale inf", ["simulate", "--model", "persona_mixture", "--prior", "concentration=inf", "--out", "x.nc"],
     ["--prior", "concentration", "finite", "inf"]),
    ("--prior scale text", ["simulate", "--model", "persona_mixture", "--prior", "concentration=abc", "--out",
                            "x.nc"], ["--prior", "concentration: expected a number, got 'abc'"]),
    ("--size n_items=-5", ["simulate", "--size", "n_items=-5", "--out", "x.nc"], ["--size n_items", ">= 1", "-5"]),
    ("--size n_items=abc", ["simulate", "--size", "n_items=abc", "--out", "x.nc"], ["--size n_items"]),
    ("sbc --size", ["sbc", "--size", "n_episodes=0", "--out", "s"], ["--size n_episodes"]),
    ("fit --steps 0", ["fit", "d.nc", "--steps", "0", "--out", "f.nc"], ["--steps"]),
    ("power --criteria-se inf", ["study", "--power", "p", "--criteria-se", "inf", "--out", "s"], ["--criteria-se"]),
    ("power --target 1", ["study", "--power", "p", "--target", "1", "--out", "s"], ["--target"]),
    ("score --traits empty", ["score", "--out", "t.nc", "--traits", ""], ["--traits"]),
]


@pytest.mark.parametrize("name, args, needles", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_bad_flag_is_one_line_naming_it_and_leaves_nothing(tmp_path, monkeypatch, capsys, name, args, needles):
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli(capsys, *args)
    line = one_line(rc, err, *needles)
    assert "Traceback" not in err and "negative dimensions" not in line
    assert snapshot(tmp_path) == {}, "a refused command left files behind"


def test_traits_nonexistent_leaves_no_output_folder(tmp_path, capsys):
    """Issue 21: the refusal used to leave a folder holding criteria.md."""
    rc, _, err = cli(capsys, "run", "--out", tmp_path / "r", "--traits", "honesty,nonexistent", "--quiet")
    one_line(rc, err, "traits", "nonexistent")
    assert not (tmp_path / "r").exists()


def test_loglik_stored_as_strings_names_the_field(tmp_path, capsys):
    import xarray as xr

    assert main(["simulate", "--model", "persona_mixture", "--personas", "2", "--items", "3", "--episodes", "10",
                 "--out", str(tmp_path / "s.nc")]) == 0
    ds = xr.load_dataset(tmp_path / "s.nc")
    ds["loglik"] = (ds["loglik"].dims, np.full(ds["loglik"].shape, "abc"))
    ds.to_netcdf(tmp_path / "str.nc", engine="h5netcdf")
    capsys.readouterr()
    rc, _, err = cli(capsys, "fit", tmp_path / "str.nc", "--model", "persona_mixture", "--out", tmp_path / "f.nc")
    line = one_line(rc, err, "loglik", "expected numbers")
    assert "could not convert" not in line and not (tmp_path / "f.nc").exists()


@pytest.fixture
def immutable(tmp_path):
    """An empty folder made immutable with ``chattr +i`` (skipped where that is not possible)."""
    ro = tmp_path / "rodir"
    ro.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        yield ro
    finally:
        subprocess.run(["chattr", "-i", str(ro)], check=True)


@pytest.mark.parametrize("command", [["run", "--quick"], ["sbc", "--replicates", "2"]])
def test_out_on_an_immutable_folder_names_the_flag(immutable, capsys, command):
    """Issue 21: "[Errno 1] Operation not permitted: 'rodir/.psm-bayes'" named no flag."""
    before = snapshot(immutable.parent)
    rc, _, err = cli(capsys, *command, "--out", immutable)
    line = one_line(rc, err, "--out", "rodir", "not a writable folder")
    assert "Errno" not in line and snapshot(immutable.parent) == before


# ------------------------------------------------------------------ diagnose sees broken fits
@pytest.fixture(scope="module")
def svi_fit(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    assert main(["simulate", "--model", "persona_mixture", "--personas", "3", "--items", "6", "--episodes", "40",
                 "--seed", "1", "--out", str(d / "sim.nc")]) == 0
    assert main(["fit", str(d / "sim.nc"), "--model", "persona_mixture", "--method", "svi-normal", "--steps", "30",
                 "--draws", "50", "--out", str(d / "fit.nc")]) == 0
    return d / "fit.nc"


def _broken(src: Path, dst: Path, how: str) -> Path:
    dt = io.load_datatree(src)
    post = dt["posterior"].to_dataset()
    w = post["w"].values.copy()
    if how == "half NaN":
        w[:, : w.shape[1] // 2] = np.nan
    elif how == "all inf":
        w[:] = np.inf
    elif how == "constant chain":
        w[:] = w[:, :1]
    if how == "missing group":
        dt = dt.drop_nodes("log_likelihood")
    else:
        dt["posterior"] = post.assign(w=(post["w"].dims, w))
    io.save_datatree(dt, dst)
    return dst


BROKEN = [("half NaN", "posterior 'w': 75 of 150 values are not finite"),
          ("all inf", "posterior 'w': 150 of 150 values are not finite"),
          ("constant chain", "posterior 'w': chain(s) [0] never move"),
          ("missing group", "missing group 'log_likelihood'")]


@pytest.mark.parametrize("how, needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_diagnose_names_a_broken_fit_and_fails(svi_fit, tmp_path, capsys, how, needle):
    """Issue 21: draws half NaN or all inf gave rc 0 and only "min bulk ESS 48 < 400"."""
    bad = _broken(svi_fit, tmp_path / "bad.nc", how)
    capsys.readouterr()
    rc, out, err = cli(capsys, "diagnose", bad, "--out", tmp_path / "diag")
    line = one_line(rc, err, "fit 'bad'", "is broken", needle, status=1)
    assert "min bulk ESS" not in line
    report = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert needle in " ".join(report["bad"]["broken"]) and not report["bad"]["ok"]


def test_diagnose_still_diagnoses_the_usable_fit_beside_a_broken_one(svi_fit, tmp_path, capsys):
    bad = _broken(svi_fit, tmp_path / "bad.nc", "half NaN")
    capsys.readouterr()
    rc, out, err = cli(capsys, "diagnose", bad, svi_fit, "--out", tmp_path / "diag")
    lines = [ln for ln in err.splitlines() if ln.startswith("psm-bayes diagnose:")]  # (library warnings aside)
    assert rc == 1 and len(lines) == 1 and "fit 'bad'" in lines[0], err
    report = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert report["fit"]["broken"] == [] and (tmp_path / "diag" / "fit" / "summary.csv").is_file()
    assert not (tmp_path / "diag" / "bad" / "summary.csv").exists()
    rc, _, err = cli(capsys, "diagnose", svi_fit, "--out", tmp_path / "ok")
    assert rc == 0 and "broken" not in err, err              # a usable fit alone: rc 0 (convergence is reported)


def test_psm_bayes_cache_moves_what_a_command_writes_outside_out(svi_fit, tmp_path):
    """Issue 21: writes outside --out (matplotlib's font cache among them) did not follow PSM_BAYES_CACHE.

    A real ``diagnose`` (which draws plots) in a process whose home folder is empty: afterwards the home
    folder is still empty and matplotlib's cache lies under ``$PSM_BAYES_CACHE``.
    """
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), PSM_BAYES_CACHE=str(cache), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "psm_bayes.cli", "diagnose", str(svi_fit), "--out",
                           str(tmp_path / "diag")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "diag" / "trace.png").is_file()
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert list((cache / "matplotlib").glob("fontlist*.json"))

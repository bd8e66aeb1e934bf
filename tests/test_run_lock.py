"""One run per output folder (issue 21, item 4): the run lock, with real processes.

The holder is a real process that took the lock through
:func:`psm_bayes.runlock.run_lock` (as ``run_experiment`` does); the second
run is the real ``psm-bayes run`` command. A whole run beside another whole
run is the slow test at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psm_bayes.cli import main
from psm_bayes.io import DIR_MARKER, OutputError
from psm_bayes.runlock import LOCK_NAME, holder, run_lock

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

HOLDER = """
import sys
from psm_bayes.runlock import run_lock
with run_lock(sys.argv[1]) as out:
    (out / "first.txt").write_text("the first run's output")
    print("ready", flush=True)
    sys.stdin.readline()
    (out / "first.txt").write_text("the first run's output, finished")
"""


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_run_on_a_folder_in_use_is_refused_and_the_first_is_unharmed(tmp_path, capsys):
    folder = tmp_path / "out"
    first = _holder(folder)
    try:
        before = snapshot(tmp_path)
        assert holder(folder)["pid"] == first.pid
        rc = main(["run", "--out", str(folder), "--quick", "--quiet"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, err
        assert "--out" in lines[0] and str(folder) in lines[0] and f"PID {first.pid}" in lines[0], lines[0]
        assert snapshot(tmp_path) == before                 # the refused run wrote nothing
        from psm_bayes.experiments.config import ExperimentConfig
        from psm_bayes.experiments.pipeline import run_experiment

        with pytest.raises(OutputError, match=f"PID {first.pid}"):   # the library entry point is refused too
            run_experiment(ExperimentConfig.quick(), folder, progress=False)
        assert snapshot(tmp_path) == before
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert (folder / "first.txt").read_text() == "the first run's output, finished"
    assert not (folder / LOCK_NAME).exists()                # released on exit
    with run_lock(folder) as out:                           # and the folder is free again
        assert holder(out)["pid"] == os.getpid()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    first = _holder(folder)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stale = holder(folder)
    assert stale is not None and stale["pid"] == first.pid  # SIGKILL left the lock behind
    with run_lock(folder) as out:
        assert holder(out)["pid"] == os.getpid()
        assert (out / "first.txt").read_text() == "the first run's output"
    assert not (folder / LOCK_NAME).exists()
    assert sorted(p.name for p in folder.iterdir()) == [DIR_MARKER, "first.txt"]   # no temporary files left


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    """A lock naming a live PID that started at another time (the PID was reused) is not a live holder."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / DIR_MARKER).write_text("{}")
    (folder / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "start": "0", "command": "run"}))
    with run_lock(folder) as out:
        assert holder(out)["pid"] == os.getpid()


RACER = """
import os, sys, time
from psm_bayes.io import OutputError
from psm_bayes.runlock import run_lock
while time.time() < float(sys.argv[2]):
    pass
try:
    with run_lock(sys.argv[1]):
        print("got it", flush=True)
        while not os.path.exists(sys.argv[3]):  # hold the folder until the test has seen the others refused
            time.sleep(0.05)
except OutputError as err:
    print("refused", err, flush=True)
"""


def test_of_runs_starting_together_exactly_one_gets_the_folder(tmp_path):
    folder, release = tmp_path / "out", tmp_path / "release"
    start = time.time() + 5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(start), str(release)],
                              stdout=subprocess.PIPE, text=True, env=ENV) for _ in range(4)]
    deadline = time.time() + 120
    while sum(p.poll() is not None for p in procs) < 3 and time.time() < deadline:
        time.sleep(0.1)
    release.write_text("")
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["got", "refused", "refused", "refused"], outs
    assert not (folder / LOCK_NAME).exists() and sorted(p.name for p in folder.iterdir()) == [DIR_MARKER]


# ------------------------------------------------------------------ two whole runs (slow)
RUN = """
import sys
from psm_bayes.experiments.config import TINY, ExperimentConfig
from psm_bayes.experiments.pipeline import run_experiment
run_experiment(ExperimentConfig.quick(**TINY, dtype="float32"), sys.argv[1], progress=False)
"""


@pytest.mark.slow  # two TINY runs of the whole pipeline, ~6 min each on 2 shared cores (fits dominate)
@pytest.mark.llm
def test_two_real_runs_on_one_folder(tmp_path):
    """The second real run is refused while the first runs; the first finishes; a rerun gives equal results.

    The rerun's persona table had one number changed on disk (issue 21: 738 of 2295 numbers of results.json
    changed and a criterion flipped): it is recomputed, and results.json equals the clean run's.
    """
    import numpy as np
    import xarray as xr

    folder = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", RUN, str(folder)], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while holder(folder) is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    second = subprocess.run([sys.executable, "-m", "psm_bayes.cli", "run", "--out", str(folder), "--quick"],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr, second.stderr
    assert first.wait(timeout=3000) == 0, first.stderr.read()
    clean = json.loads((folder / "results.json").read_text())
    (table,) = folder.glob("cache/*/table-fewshot.nc")
    ds = xr.load_dataset(table, engine="h5netcdf")
    ll = ds["loglik"].values.copy()
    ll[0, 0, 0] += 0.7
    ds["loglik"] = (ds["loglik"].dims, ll)                  # same attrs: the stored checksum no longer fits
    table.unlink()
    ds.to_netcdf(table, engine="h5netcdf")
    again = subprocess.run([sys.executable, "-c", RUN, str(folder)], env=ENV, capture_output=True, text=True,
                           timeout=3000)
    assert again.returncode == 0, again.stderr
    assert "table-fewshot.nc" in again.stderr and "does not match its checksum" in again.stderr
    rerun = json.loads((folder / "results.json").read_text())
    differ = _differences(_untimed(clean), _untimed(rerun))
    assert not differ, f"{len(differ)} values of results.json differ, e.g. {differ[:5]}"
    assert np.isfinite(ll).all()


def _differences(a, b, path: str = "") -> list[str]:
    """Paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for j, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{j}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _untimed(obj):
    """``obj`` without what differs between any two runs: timings, and how many LoRA runs were trained or read."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items()
                if not any(w in k for w in ("seconds", "timings", "runs_trained", "runs_cached"))}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj

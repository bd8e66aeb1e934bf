"""Tests of the Parquet score cache, including resuming a SIGKILL-ed scoring run."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from psm_bayes.llm.cache import KEY_COLUMNS, VALUE_COLUMNS, ScoreCache, score_rows


def _scores(values):
    return [SimpleNamespace(logp=v, token_logps=(v / 2, v / 2), token_ids=(7, 8), n_context_tokens=3)
            for v in values]


def _keys(n, persona="p"):
    return [(persona, f"i{k}", " Yes", f"h{k}") for k in range(n)]


# ------------------------------------------------------------ unit tests


def test_append_read_roundtrip_and_dedupe(tmp_path):
    cache = ScoreCache(tmp_path / "c")
    assert cache.read().empty and list(cache.read().columns) == list(KEY_COLUMNS + VALUE_COLUMNS)
    cache.append(score_rows("m1", _keys(3), _scores([-1.0, -2.0, -3.0])))
    cache.append(score_rows("m1", _keys(2), _scores([-10.0, -20.0])))  # newer rows win
    cache.append(score_rows("m2", _keys(1), _scores([-5.0])))
    assert cache.append(score_rows("m1", [], [])) is None
    df = cache.read("m1")
    assert len(df) == 3
    assert df.set_index("item")["logp"].to_dict() == {"i0": -10.0, "i1": -20.0, "i2": -3.0}
    row = df.set_index("item").loc["i0"]
    assert list(row["token_logps"]) == [-5.0, -5.0] and list(row["token_ids"]) == [7, 8]
    assert len(cache.read()) == 4
    assert cache.lookup("m2") == {("p", "i0", " Yes", "h0"): (-5.0, 2)}
    assert len(cache.parts()) == 3
    cache.compact()
    assert len(cache.parts()) == 1 and len(cache.read()) == 4


def test_temp_and_foreign_files_are_never_read(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.append(score_rows("m", _keys(2), _scores([-1.0, -2.0])))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a part cut short by a crash (garbage bytes) under the temporary name
    (tmp_path / f".tmp-part-x.parquet.{dead.pid}.tmp").write_bytes(b"PAR1 truncated")
    (tmp_path / f".tmp-part-y.parquet.{os.getpid()}.tmp").write_bytes(b"in progress")
    (tmp_path / "notes.txt").write_text("not a part")
    assert len(cache.read()) == 2
    assert cache.clean() == 1  # the live writer's file is kept
    assert (tmp_path / f".tmp-part-y.parquet.{os.getpid()}.tmp").exists()


def test_bad_cache_input(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="cache"):
        ScoreCache(tmp_path / "file")
    cache = ScoreCache(tmp_path / "c")
    with pytest.raises(ValueError, match="missing column"):
        cache.append(pd.DataFrame({"model": ["m"]}))
    with pytest.raises(ValueError, match="scores"):
        score_rows("m", _keys(2), _scores([-1.0]))


# ------------------------------------------------------- resume after kill

SETUP = textwrap.dedent('''
    from psm_bayes.data import ItemSet, PersonaSet

    PERSONAS = PersonaSet(["hon", "dis", "kind"], descriptions=[
        "I am an honest person. I always tell the truth.",
        "I am a dishonest person. I lie all the time.",
        "I am a kind person. I love helping others."])
    ITEMS = ItemSet(["a", "b", "c", "d"],
                    ["I always tell the truth.", "I often lie.", "I like to help people.",
                     "Once upon a time there was a very long question, was there not?"],
                    [(" Yes", " No")] * 4)
    CHUNK = 6
    BATCH = 4
''')

SCRIPT = SETUP + textwrap.dedent('''
    import sys
    import time

    from psm_bayes.llm.cache import ScoreCache
    from psm_bayes.llm.loading import load_model
    from psm_bayes.llm.scorer import Scorer


    class SlowCache(ScoreCache):
        """Announce each written part, then pause so the test can kill us mid-run."""

        def append(self, rows):
            out = super().append(rows)
            print("PART", out, flush=True)
            time.sleep(float(sys.argv[2]))
            return out


    scorer = Scorer(load_model(None, dtype="float32", threads=1), batch_size=BATCH)
    scorer.score_table(PERSONAS, ITEMS, cache=SlowCache(sys.argv[1]), progress=False, chunk_size=CHUNK)
    print("DONE", flush=True)
''')


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(prefix):
                return line
            if not line:
                break
    raise AssertionError(f"no {prefix!r} line from the scoring subprocess (rc={proc.poll()})")


@pytest.mark.llm
def test_resume_after_sigkill_gives_identical_table(gemma, tmp_path):
    from psm_bayes.llm.scorer import Scorer

    ns: dict = {}
    exec(SETUP, ns)
    cache_dir = tmp_path / "cache"
    script = tmp_path / "score_script.py"
    script.write_text(SCRIPT)
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(cache_dir), "60"], stdout=subprocess.PIPE,
                                stderr=err, text=True, bufsize=1)
        try:
            _wait_for_line(proc, "PART", timeout=240)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cache = ScoreCache(cache_dir)
    assert len(cache.parts()) == 1
    first = pd.read_parquet(cache.parts()[0])
    assert len(first) == ns["CHUNK"]
    assert not [p for p in cache_dir.iterdir() if not p.name.startswith("part-")]

    total = (len(ns["PERSONAS"]) + 1) * len(ns["ITEMS"]) * 2  # + neutral
    resumed_scorer = Scorer(gemma, batch_size=ns["BATCH"])
    resumed = resumed_scorer.score_table(ns["PERSONAS"], ns["ITEMS"], cache=cache, progress=False,
                                         chunk_size=ns["CHUNK"])
    assert resumed_scorer.stats.pairs == total - ns["CHUNK"]  # finished rows were not recomputed
    pd.testing.assert_frame_equal(pd.read_parquet(cache.parts()[0]), first)  # and not touched
    assert len(cache.read(gemma.key)) == total

    scratch = Scorer(gemma, batch_size=ns["BATCH"]).score_table(
        ns["PERSONAS"], ns["ITEMS"], cache=None, progress=False, chunk_size=ns["CHUNK"])
    # Same chunks and batches in both runs, so the scores agree to float precision
    # (the first chunk came from another process).
    for var in ("loglik", "neutral_loglik", "n_tokens"):
        np.testing.assert_allclose(resumed[var].values, scratch[var].values, rtol=0, atol=1e-6)
    assert resumed.attrs == scratch.attrs

    # a third run is served entirely from the cache
    again_scorer = Scorer(gemma, batch_size=ns["BATCH"])
    again = again_scorer.score_table(ns["PERSONAS"], ns["ITEMS"], cache=cache_dir, progress=False)
    assert again_scorer.stats.pairs == 0
    np.testing.assert_array_equal(again["loglik"].values, resumed["loglik"].values)
    # a changed persona description is a different context: it is re-scored, not reused
    changed = ns["PERSONAS"].__class__(ns["PERSONAS"].ids, descriptions=["I am honest."] + list(
        ns["PERSONAS"].descriptions[1:]))
    again_scorer.score_table(changed, ns["ITEMS"], cache=cache_dir, progress=False, neutral=False)
    assert again_scorer.stats.pairs == len(ns["ITEMS"]) * 2

"""Measurement caches verified on every read (issue 21, item 1): each kind tampered four ways.

One clean run of each measuring stage (ICL, persona table, LoRA SFT,
screening) on the real default model and the tiniest design fills a cache
folder per stage. Each test copies a folder, damages entries in each of the
four ways of the issue -- a changed number, truncation, a NaN (with a
checksum forged to match, so only the finiteness check can catch it) and an
unreadable file -- reruns the stage on the copy and asserts: one log line
naming each damaged file, the entry recomputed and stored again, and a stage
output identical (exactly) to the clean run's. Downstream of the stages
everything is a deterministic function of their outputs, so identical stage
outputs give an identical ``results.json``; the slow test in
``test_run_lock.py`` checks that end to end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from psm_bayes.integrity import array_digest
from psm_bayes.experiments.measure.scoring import ArrayCache, read_table_cache

WAYS = ("changed number", "truncation", "NaN", "unreadable")
LOGGER = "psm_bayes.cache"
BOOKKEEPING = ("seconds", "timings", "runs_trained", "runs_cached")
"""Keys of what a call did (its timings, how many LoRA runs it trained or read), not of what it measured."""


# ------------------------------------------------------------------ damage
def damage_entry(path: Path, way: str) -> None:
    """Damage an ArrayCache entry (``.npz``) in one of :data:`WAYS`."""
    if way == "truncation":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return
    if way == "unreadable":
        path.write_bytes(b"\x00not a cache entry\xff" * 8)
        return
    with np.load(path) as z:
        value, meta = z["value"].copy(), json.loads(str(z["meta"][()]))
    flat = value.reshape(-1)
    if way == "changed number":
        flat[0] = flat[0] + 1                    # the stored checksum no longer fits
    else:
        flat[0] = np.nan
        meta["sha256"] = array_digest(value)     # a forged, matching checksum: only finiteness catches it
    with open(path, "wb") as fh:
        np.savez(fh, value=value, meta=np.array(json.dumps(meta)))


def damage_table(path: Path, way: str) -> None:
    """Damage a persona-table cache (``table-<form>.nc``) in one of :data:`WAYS`."""
    if way in ("truncation", "unreadable"):
        damage_entry(path, way)
        return
    ds = xr.load_dataset(path, engine="h5netcdf")
    ll = ds["loglik"].values.copy()
    ll[0, 0, 0] = ll[0, 0, 0] + 0.7 if way == "changed number" else np.nan
    ds["loglik"] = (ds["loglik"].dims, ll)
    if way == "NaN":
        ds.attrs["content_sha256"] = array_digest(ds["loglik"].values, ds["neutral_loglik"].values)
    path.unlink()
    ds.to_netcdf(path, engine="h5netcdf")


def four_entries(folder: Path) -> list[tuple[Path, str]]:
    """Four entries of ``folder``, each with a way to damage it (the NaN goes to a float entry).

    Entries named ``<key>-<part>`` belong to one LoRA run; the four are taken from one run where one has
    four parts, so the rerun retrains one run only.
    """
    files = sorted(folder.glob("*.npz"))
    runs: dict[str, list[Path]] = {}
    for f in files:
        runs.setdefault(f.stem.split("-")[0], []).append(f)
    biggest = max(runs.values(), key=len)
    chosen = (biggest + [f for f in files if f not in biggest])[:4]
    assert len(chosen) == 4, f"{folder} holds fewer than 4 entries"

    def is_float(f: Path) -> bool:
        with np.load(f) as z:
            return z["value"].dtype.kind == "f"

    nan_at = next(i for i, f in enumerate(chosen) if is_float(f))
    chosen.insert(2, chosen.pop(nan_at))
    return list(zip(chosen, WAYS))


def assert_same(a, b, where: str = "stage") -> None:
    """Exactly equal stage outputs (data frames, xarray objects, arrays, nested dataclasses and dicts)."""
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, (xr.Dataset, xr.DataArray)):
        xr.testing.assert_identical(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if not (isinstance(k, str) and any(w in k for w in BOOKKEEPING)):
                assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for j, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{j}]")
    else:
        assert a == b, where


def one_line_each(caplog, damaged: list[Path]) -> None:
    """Exactly one cache log line per damaged file, naming it, and no other."""
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == len(damaged), lines
    for path in damaged:
        mine = [ln for ln in lines if str(path) in ln]
        assert len(mine) == 1 and "\n" not in mine[0] and "recomputing" in mine[0], (path, lines)


# ------------------------------------------------------------------ the clean run
@pytest.fixture(scope="module")
def clean(gemma, tmp_path_factory):
    """Each stage once on the tiniest design (:data:`~psm_bayes.experiments.config.TINY`), with its cache folder."""
    from psm_bayes.experiments.measure import persona_table, screening
    from psm_bayes.experiments.config import TINY, ExperimentConfig
    from psm_bayes.experiments.design import make_design

    cfg = ExperimentConfig.quick(**TINY, dtype="float32")
    source = screening.probe_source(None, cfg.traits)
    design = make_design(cfg, source.probes, cfg.traits)
    spec = persona_table.with_multi_trait(source.spec, cfg.multi_trait_groups(cfg.traits))
    root = tmp_path_factory.mktemp("clean")

    def run(kind: str, cache: Path):
        from psm_bayes.experiments.measure import finetune, icl

        if kind == "icl":
            return icl.run_icl(gemma, design, cache_dir=cache, batch_size=cfg.batch_size, progress=False)
        if kind == "table":
            return persona_table.measure_personas(gemma, design, spec, context=cfg.persona_context,
                                                  compare_contexts=False, cache_dir=cache,
                                                  batch_size=cfg.batch_size, progress=False)
        if kind == "sft":
            return finetune.run_sft(gemma, design, cfg.sft, cfg.sft_checkpoints, cache_dir=cache,
                                    batch_size=cfg.batch_size, progress=False)
        return screening.screen_traits(gemma, source, n_items=2, n_examples=2, keep=1, threshold=-100.0,
                                       n_se=-100.0, seed=0, cache_dir=cache, batch_size=cfg.batch_size)

    outputs = {kind: run(kind, root / kind) for kind in ("icl", "table", "sft", "screening")}
    return {"run": run, "root": root, "outputs": outputs}


def _copy(clean, kind: str, dst: Path) -> Path:
    shutil.copytree(clean["root"] / kind, dst)
    return dst


# ------------------------------------------------------------------ the tests
@pytest.mark.llm
@pytest.mark.parametrize("kind", ["icl", "sft", "screening"])
def test_array_cache_tampered_four_ways_gives_the_clean_result(clean, tmp_path, caplog, kind):
    cache = _copy(clean, kind, tmp_path / kind)
    damaged = four_entries(cache)
    keep = {p.name for p in cache.glob("*.npz")}
    for path, way in damaged:
        damage_entry(path, way)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = clean["run"](kind, cache)
    assert_same(again, clean["outputs"][kind], kind)
    one_line_each(caplog, [p for p, _ in damaged])
    assert {p.name for p in cache.glob("*.npz")} == keep       # recomputed in place, nothing else written
    store = ArrayCache(cache)
    for path, _ in damaged:                                    # stored again, and sound
        with np.load(clean["root"] / kind / path.name) as z:
            np.testing.assert_array_equal(store.get(path.stem), z["value"])


@pytest.mark.llm
@pytest.mark.parametrize("way", WAYS)
def test_persona_table_tampered_gives_the_clean_result(clean, tmp_path, caplog, way):
    cache = _copy(clean, "table", tmp_path / "table")
    (table,) = cache.glob("table-*.nc")
    fingerprint = xr.load_dataset(table, engine="h5netcdf").attrs["fingerprint"]
    damage_table(table, way)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = clean["run"]("table", cache)
    assert_same(again, clean["outputs"]["table"], "table")
    one_line_each(caplog, [table])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        xr.testing.assert_identical(read_table_cache(table, fingerprint), clean["outputs"]["table"].table)
    assert not caplog.records                                   # the rewritten table verifies


def test_array_cache_entry_checks(tmp_path, caplog):
    """Without a model: every damage and a renamed entry are caught; non-finite values are never stored."""
    store = ArrayCache(tmp_path / "c")
    rng = np.random.default_rng(0)
    value = rng.normal(size=(5, 2))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for way in WAYS:
            store.put("k" + way[0], value, producer="test")
            damage_entry(store.path("k" + way[0]), way)
            assert store.get("k" + way[0]) is None
        store.put("a", value)
        os.replace(store.path("a"), store.path("b"))            # an entry under another key's name
        assert store.get("b") is None
        store.put("n", np.array([1.0, np.inf]))                 # not stored
        assert not store.path("n").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and all("cache entry" in ln for ln in lines), lines
    assert "content does not match its checksum" in lines[0] and "unreadable" in lines[1]
    assert "non-finite" in lines[2] and "unreadable" in lines[3] and "another key" in lines[4]
    store.put("kc", value)                                      # a damaged entry is replaced by a sound one
    np.testing.assert_array_equal(store.get("kc"), value)


def test_score_cache_parts_are_verified(tmp_path, caplog):
    """The resumable Parquet score cache: a damaged part is logged, left out, and its rows count as unscored."""
    import pyarrow.parquet as pq

    from psm_bayes.llm.cache import ScoreCache, _digest, score_rows
    from psm_bayes.llm.scorer import PairScore

    def rows(n: int, first: int):
        keys = [("p", f"i{first + j}", " Yes", f"h{first + j}") for j in range(n)]
        scores = [PairScore(logp=-0.5 - j, token_logps=np.array([-0.5 - j]), token_ids=np.array([7]),
                            n_context_tokens=3) for j in range(n)]
        return score_rows("m@1/float32", keys, scores)

    for way in WAYS:
        cache = ScoreCache(tmp_path / way)
        good, bad = cache.append(rows(3, 0)), cache.append(rows(2, 3))
        if way in ("truncation", "unreadable"):
            damage_entry(bad, way)
        else:
            table = pq.read_table(bad)
            df = table.to_pandas()
            df.loc[0, "logp"] = df.loc[0, "logp"] + 1 if way == "changed number" else np.nan
            meta = dict(table.schema.metadata)
            if way == "NaN":
                meta[b"psm_bayes_sha256"] = _digest(df).encode()
            import pyarrow as pa

            pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(meta), bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            got = cache.read()
        assert sorted(got["item"]) == ["i0", "i1", "i2"], way
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and bad.name in lines[0], (way, lines)
        assert len(pq.read_table(good)) == 3

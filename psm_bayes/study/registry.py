"""Models known to simulation studies and the ``sbc`` command, by name.

Each entry names (as ``"module:attribute"`` strings, imported lazily) the
model function per backend, the priors class and either a simulator
``simulate(seed=..., priors=..., **sizes) -> Simulation`` (``.data``,
``.truth``) or a ``design(seed=..., **sizes) -> data`` (observed fields
ignored), in which case the truth and the observations are drawn from the
model's own prior predictive (:func:`prior_simulation`). New models register
themselves with :func:`register_model`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelEntry:
    """How to build, simulate and fit one model.

    Attributes
    ----------
    name : str
    models : mapping
        ``{backend: "module:function"}``.
    priors : str
        ``"module:Class"`` of the priors (called with keyword arguments).
    simulate : str, optional
        ``"module:function"``: ``simulate(seed=, priors=, **sizes)`` returning
        an object with ``.data`` and ``.truth``.
    sbc_sizes : mapping
        Small default sizes for a data template in ``psm-bayes sbc``.
    design : str, optional
        ``"module:function"``: ``design(seed=, **sizes)`` returning a data
        template (or a tuple whose first item is one); used when
        ``simulate`` is empty.
    """

    name: str
    models: Mapping[str, str]
    priors: str
    simulate: str = ""
    sbc_sizes: Mapping[str, Any] = field(default_factory=dict)
    design: str = ""

    def __post_init__(self) -> None:
        if not (self.simulate or self.design):
            raise ValueError(f"model entry {self.name!r}: give simulate or design")

    def model(self, backend: str = "numpyro") -> Callable:
        """The model function of ``backend``."""
        if backend not in self.models:
            raise ValueError(f"backend: model {self.name!r} has backends {sorted(self.models)}, not {backend!r}")
        return _load(self.models[backend])

    def make_priors(self, values: Mapping[str, Any] | None = None) -> Any:
        """The priors object with ``values`` overriding its defaults."""
        return _load(self.priors)(**dict(values or {}))

    def simulator(self) -> Callable:
        """``simulate(seed=, priors=, **sizes) -> Simulation`` (own simulator, or the prior predictive)."""
        if self.simulate:
            return _load(self.simulate)
        return partial(prior_simulation, self)


def prior_simulation(entry: ModelEntry, *, seed: int, priors: Any = None, backend: str = "numpyro", **sizes):
    """A data set with known truth drawn from the model's own prior predictive on ``entry``'s design.

    Returns
    -------
    psm_bayes.simulate.Simulation
        ``data`` (design with the drawn observations), ``truth`` (the drawn
        latents), no held-out items.
    """
    from psm_bayes.models.base import spec_of
    from psm_bayes.sbc import draw_prior
    from psm_bayes.simulate import Simulation

    design = _load(entry.design)(seed=seed, **sizes)
    design = design[0] if isinstance(design, tuple) else design
    model = entry.model(backend)
    latents, obs = draw_prior(model, design, 1, seed=seed, priors=priors)
    data = spec_of(model).with_observed(design, {k: v[0] for k, v in obs.items()})
    return Simulation(data, {k: v[0] for k, v in latents.items()}, ())


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> None:
    """Add (or replace) a model entry."""
    _REGISTRY[entry.name] = entry


def get_model(name: str) -> ModelEntry:
    """The entry named ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(f"model: unknown model {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def model_names() -> list[str]:
    return sorted(_REGISTRY)


register_model(ModelEntry(
    "persona_mixture",
    {"numpyro": "psm_bayes.models.persona_mixture_numpyro:persona_mixture",
     "pyro": "psm_bayes.models.persona_mixture_pyro:persona_mixture"},
    "psm_bayes.models.persona_mixture:Priors",
    "psm_bayes.simulate:simulate",
    {"n_personas": 3, "n_items": 4, "n_options": 2, "n_episodes": 20},
))
register_model(ModelEntry(
    "persona_space",
    {"numpyro": "psm_bayes.models.persona_space_numpyro:persona_space",
     "pyro": "psm_bayes.models.persona_space_pyro:persona_space"},
    "psm_bayes.models.persona_space:PersonaSpacePriors",
    "psm_bayes.models.persona_space:simulate",
    {"n_items": 6, "n_dims": 2, "n_episodes": 20},
))


# ---------------------------------------------------------------- ICL-curve, SFT-shift and joint models
def joint_design(seed: int = 0, n_personas: int = 4, n_items: int = 20, n_curves: int = 4,
                 n_values: tuple[int, ...] = (0, 1, 2, 4, 8), n_train: int = 6):
    """A ``psm_joint`` design: an ICL and an SFT design sharing personas and prior weights."""
    import numpy as np

    from psm_bayes.models.icl_curves import make_icl_design
    from psm_bayes.models.psm_joint import JointData
    from psm_bayes.models.sft_shift import make_sft_design

    pi = np.random.default_rng([seed, 7]).dirichlet(np.full(n_personas, 2.0))
    icl, _ = make_icl_design(n_personas, n_items, n_curves, n_values, seed=seed, prior_weights=pi)
    sft, _ = make_sft_design(n_personas, n_items, n_train, seed=seed, prior_weights=pi)
    return JointData(icl, sft)


def joint_priors(icl: Mapping[str, Any] | None = None, sft: Mapping[str, Any] | None = None):
    """``JointPriors`` from two dicts of ICL / SFT hyperparameters."""
    from psm_bayes.models.icl_curves import ICLPriors
    from psm_bayes.models.psm_joint import JointPriors
    from psm_bayes.models.sft_shift import SFTPriors

    return JointPriors(ICLPriors(**dict(icl or {})), SFTPriors(**dict(sft or {})))


_ICL_SIZES = {"n_personas": 4, "n_items": 20, "n_curves": 4, "n_values": [0, 1, 2, 4, 8]}
for _name in ("psm_icl", "bayesian_icl_law", "power_law", "bounded_power_law"):
    register_model(ModelEntry(_name, {"numpyro": f"psm_bayes.models.icl_curves_numpyro:{_name}"},
                              "psm_bayes.models.icl_curves:ICLPriors", sbc_sizes=_ICL_SIZES,
                              design="psm_bayes.models.icl_curves:make_icl_design"))
for _name in ("psm_sft", "null_sft"):
    register_model(ModelEntry(_name, {"numpyro": f"psm_bayes.models.sft_shift_numpyro:{_name}"},
                              "psm_bayes.models.sft_shift:SFTPriors",
                              sbc_sizes={"n_personas": 4, "n_items": 20, "n_train": 6},
                              design="psm_bayes.models.sft_shift:make_sft_design"))
register_model(ModelEntry("psm_joint", {"numpyro": "psm_bayes.models.psm_joint_numpyro:psm_joint"},
                          "psm_bayes.study.registry:joint_priors", sbc_sizes={},
                          design="psm_bayes.study.registry:joint_design"))

"""Configuration of the real-model experiment (``psm-bayes run``).

:class:`ExperimentConfig` holds every setting: the design and scoring
settings flat, the LoRA settings as ``sft`` (:class:`~psm_bayes.experiments.finetune.SFTSettings`)
and the NUTS settings as ``fit`` (:class:`~psm_bayes.experiments.fits.FitSettings`),
so each stage gets only what it uses.
Defaults are sized for about a quarter of an hour on 2 busy CPU cores;
:meth:`ExperimentConfig.quick` is a tiny setting for tests,
:meth:`ExperimentConfig.small` a notebook-sized one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from psm_bayes.experiments.finetune import SFTSettings
from psm_bayes.experiments.fits import FitSettings

DEFAULT_TRAITS: tuple[str, ...] = ("honesty", "sycophancy", "power-seeking", "humour", "empathy")
"""Traits of the default run (the first is also the default SFT trait)."""


_ROUTED: dict[str, tuple[str, str]] = {
    "sft_steps": ("sft", "steps"), "sft_batch_size": ("sft", "batch_size"), "sft_lr": ("sft", "lr"),
    "lora_rank": ("sft", "rank"), "sft_seeds": ("sft", "seeds"),
    "num_warmup": ("fit", "num_warmup"), "num_samples": ("fit", "num_samples"), "num_chains": ("fit", "num_chains"),
    "target_accept": ("fit", "target_accept"), "refit_unconverged": ("fit", "refit_unconverged"),
    "extrapolation_fraction": ("fit", "extrapolation_fraction"),
    "saved_loglik_draws": ("fit", "saved_loglik_draws"), "saved_predictive_draws": ("fit", "saved_predictive_draws"),
}
"""Flat setting names (CLI flags, :meth:`ExperimentConfig.build`) -> (group, field) of the nested settings."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of :func:`~psm_bayes.experiments.pipeline.run_experiment`.

    Build one from flat names (``num_warmup=200, sft_steps=12``, as the CLI
    flags are named) with :meth:`build`, :meth:`quick` or :meth:`small`.

    Parameters
    ----------
    traits : tuple of str
        Probe traits (personas: both poles of each).
    probes_per_trait : int
        Held-out evaluation statements per trait (the rest is the training pool).
    max_shots : int
        Largest number of in-context examples; counts 0, 1, 2, 4, ... up to it.
    orderings : int
        Shot orderings (seeded sequences) per trait.
    sft_trait : str, optional
        Trait whose positive pole is fine-tuned (default: the first trait).
    sft_examples : int
        Training episodes (at most the trait's training pool).
    sft_probe_trained : int
        Training items also measured (rows with ``trained=True``).
    persona_examples : int
        ``k``: statements per trait reserved from the training pool as the
        few-shot personas' examples (never ICL shots, SFT episodes, held-out
        or table items), in every persona form.
    seed : int
        Seed of splits, shot sequences and fits.
    persona_context : {"fewshot", "description", "both"}
        How a persona conditions the model in the persona table
        (:func:`psm_bayes.experiments.persona_table.persona_contexts`).
    compare_persona_contexts : bool
        Also score the persona table under the other context forms (cheap)
        and report the persona separation of each.
    description_index : int
        Which persona description to use.
    prior_pseudo_count : float
        EM pseudo-count (keeps every prior weight positive).
    table_method : {"fast", "scorer"}
        Persona-table scorer (:func:`psm_bayes.experiments.persona_table.score_persona_table`).
    model : str, optional
        Model name or path (default: the embedded Gemma 3 270M base).
    dtype : str
        Scoring dtype (``bfloat16`` or ``float32``); SFT always trains a
        float32 copy under bf16 autocast.
    threads : int
        Torch threads.
    batch_size : int
        Prompts per forward pass.
    sft : SFTSettings
        LoRA settings (flat names ``sft_steps``, ``sft_batch_size``, ``sft_lr``,
        ``lora_rank``, ``sft_seeds``).
    fit : FitSettings
        NUTS settings (flat names ``num_warmup``, ``num_samples``, ...).
    """

    traits: tuple[str, ...] = DEFAULT_TRAITS
    probes_per_trait: int = 8
    max_shots: int = 8
    orderings: int = 2
    sft_trait: str | None = None
    sft_examples: int = 24
    sft_probe_trained: int = 8
    persona_examples: int = 8
    seed: int = 0
    persona_context: str = "fewshot"
    compare_persona_contexts: bool = True
    description_index: int = 0
    prior_pseudo_count: float = 1.0
    table_method: str = "fast"
    model: str | None = None
    dtype: str = "bfloat16"
    threads: int = 1
    batch_size: int = 16
    sft: SFTSettings = SFTSettings(steps=24)
    fit: FitSettings = FitSettings()

    def __post_init__(self) -> None:
        from psm_bayes.experiments.persona_table import PERSONA_CONTEXTS

        object.__setattr__(self, "traits", tuple(self.traits))
        if not self.traits:
            raise ValueError("traits: expected at least one trait")
        if self.sft_trait is not None and self.sft_trait not in self.traits:
            raise ValueError(f"sft_trait: {self.sft_trait!r} is not one of traits {self.traits}")
        for name in ("probes_per_trait", "max_shots", "orderings", "sft_examples", "threads", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        if self.persona_context not in PERSONA_CONTEXTS:
            raise ValueError(f"persona_context: expected one of {PERSONA_CONTEXTS}, got {self.persona_context!r}")
        if self.persona_examples < 0 or (self.persona_examples == 0 and self.persona_context != "description"):
            raise ValueError(f"persona_examples: expected >= 1 for persona_context={self.persona_context!r}, "
                             f"got {self.persona_examples}")
        if self.sft_probe_trained < 0:
            raise ValueError(f"sft_probe_trained: expected >= 0, got {self.sft_probe_trained}")

    @property
    def trained_trait(self) -> str:
        """The SFT trait (``sft_trait`` or the first trait)."""
        return self.sft_trait or self.traits[0]

    @classmethod
    def build(cls, **settings: Any) -> "ExperimentConfig":
        """A config from flat setting names (the CLI's), routing SFT and NUTS names into ``sft`` / ``fit``.

        ``sft_seeds=n`` means seeds ``0 .. n-1``; ``lora_rank=r`` sets LoRA alpha ``2 r``.
        """
        own = {k: v for k, v in settings.items() if k not in _ROUTED}
        groups: dict[str, dict] = {"sft": {}, "fit": {}}
        for k, v in settings.items():
            if k in _ROUTED:
                group, name = _ROUTED[k]
                if k == "sft_seeds":
                    if int(v) < 1:
                        raise ValueError(f"sft_seeds: expected >= 1, got {v!r}")
                    v = tuple(range(int(v)))
                groups[group][name] = v
                if k == "lora_rank":
                    groups["sft"]["alpha"] = 2 * int(v)
        base = cls()
        return cls(**own, sft=replace(own.get("sft", base.sft), **groups["sft"]),
                   fit=replace(own.get("fit", base.fit), **groups["fit"]))

    @classmethod
    def quick(cls, **overrides: Any) -> "ExperimentConfig":
        """A tiny setting for tests (a couple of minutes on one core); flat names as in :meth:`build`."""
        base = dict(traits=("honesty", "humour"), probes_per_trait=4, max_shots=2, orderings=1, sft_examples=8,
                    sft_steps=8, sft_seeds=1, sft_probe_trained=2, persona_examples=4, num_warmup=150,
                    num_samples=150, num_chains=2, refit_unconverged=False)
        return cls.build(**{**base, **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> "ExperimentConfig":
        """A notebook-sized setting (a few minutes); flat names as in :meth:`build`."""
        base = dict(traits=("honesty", "sycophancy", "humour"), probes_per_trait=6, max_shots=4, orderings=2,
                    sft_examples=16, sft_steps=12, sft_seeds=1, sft_probe_trained=4, num_warmup=300,
                    num_samples=300, refit_unconverged=False)
        return cls.build(**{**base, **overrides})

    def to_dict(self) -> dict:
        """Flat JSON-ready dict (the names :meth:`build` takes; ``sft_trait`` resolved)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sft", "fit")}
        d["traits"] = list(self.traits)
        d["sft_trait"] = self.trained_trait
        for flat, (group, name) in _ROUTED.items():
            v = getattr(getattr(self, group), name)
            d[flat] = len(v) if flat == "sft_seeds" else v
        return d

def config_from_env(**overrides: Any) -> ExperimentConfig:
    """Notebook settings: ``ExperimentConfig.quick()`` (tiny) when ``PSM_BAYES_SMALL=1``, else ``small()``."""
    if os.environ.get("PSM_BAYES_SMALL", "") not in ("", "0"):
        return ExperimentConfig.quick(**overrides)
    return ExperimentConfig.small(**overrides)

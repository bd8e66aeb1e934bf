"""Configuration of the real-model experiment (``psm-bayes run``).

:class:`ExperimentConfig` holds every setting: the design and scoring
settings flat, the LoRA settings as ``sft`` (:class:`~psm_bayes.experiments.measure.lora.SFTSettings`)
and the NUTS settings as ``fit`` (:class:`~psm_bayes.experiments.analysis.fitting.FitSettings`),
so each stage gets only what it uses.
Defaults are the smallest design that has every condition (4 traits and a
multi-trait persona, 16 evaluation items per trait, shots up to 64 in 2 orderings, 2 SFT
traits x 2 poles x 3 LoRA seeds x 4 checkpoints) on the embedded default model, Gemma 3 270M (add the second
with ``models=DEFAULT_MODELS + ("smollm2-135m-instruct",)``); its wall time at 64 shots is ~44 minutes
on 2 cores with ``exact_refits=False, joint_fits=False`` (``benchmarks/README.md``), over the 20-minute
budget.  The power analysis on a pilot
(``benchmarks/power_results.md``) found this size NOT powered for the
comparison criterion (about 20 items per trait would be), so the default run
is a demonstration of every stage and check, not a powered test;
measured wall time in ``benchmarks/README.md``;
:meth:`ExperimentConfig.quick` is a tiny setting for tests,
:meth:`ExperimentConfig.small` a notebook-sized one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from psm_bayes.experiments.measure.lora import SFTSettings
from psm_bayes.experiments.measure.screening import default_traits
from psm_bayes.experiments.analysis.fitting import FitSettings, NULLS

DEFAULT_TRAITS: tuple[str, ...] = default_traits()
"""Traits of the default run on the shipped probes, applied by code from the shipped screening table
(:func:`psm_bayes.experiments.measure.screening.default_traits`: > 1 nat and > 4 se on Gemma 3 270M at 64
shots, the 4 largest in z); the first two are the default SFT traits."""

DEFAULT_MULTI_TRAIT: tuple[tuple[str, ...], ...] = (("sycophancy", "power-seeking"), ("power-seeking", "risk-taking"),
                                                    ("machiavellianism", "narcissism", "psychopathy"))
"""Multi-trait personas used by default wherever all of a group's traits are in the run: a misaligned
Assistant and a reckless power-seeker (the shipped probes) and the dark triad (Anthropic's persona files)."""

DEFAULT_MODELS: tuple[str, ...] = ("gemma3-270m",)
"""Models of the default run (:mod:`psm_bayes.llm.registry`): the embedded base model.  The post-trained
Assistant ``smollm2-135m-instruct`` joins with ``--models gemma3-270m,smollm2-135m-instruct`` (the run then
takes about twice as long)."""


_ROUTED: dict[str, tuple[str, str]] = {
    "sft_batch_size": ("sft", "batch_size"), "sft_lr": ("sft", "lr"), "sft_warmup": ("sft", "warmup"),
    "sft_schedule": ("sft", "schedule"), "sft_loss": ("sft", "loss"),
    "lora_rank": ("sft", "rank"), "sft_seeds": ("sft", "seeds"),
    "num_warmup": ("fit", "num_warmup"), "num_samples": ("fit", "num_samples"), "num_chains": ("fit", "num_chains"),
    "target_accept": ("fit", "target_accept"), "nuts_init": ("fit", "init"), "joint_fits": ("fit", "joint"), "refit_unconverged": ("fit", "refit_unconverged"),
    "logodds_df": ("fit", "logodds_df"), "exact_refits": ("fit", "exact_refits"),
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
    traits : tuple of str, optional
        Probe traits (personas: both poles of each).  Default: the shipped
        :data:`DEFAULT_TRAITS`; with ``probes_dir``, the traits the screening
        stage picks.
    probes_dir : str, optional
        Folder of Anthropic model-written-evals persona JSONL files to use
        instead of the shipped probes (few-shot personas only).
    screen_traits : int
        With ``probes_dir`` and no ``traits``: how many traits the screening
        stage keeps (the best-separating ones that pass its threshold).
    screen_items : int
        Statements per trait scored by the screening stage (never used again).
    screen_threshold : float
        A trait passes screening when its bias-cancelled separation (mean
        t+ minus t- log-odds of the matching answer, nats) exceeds both this
        and 2 standard errors.
    probes_per_trait : int
        Held-out evaluation statements per trait.
    prior_items : int
        Statements per trait whose neutral answers fit the pre-training prior
        (EM); used for nothing else.
    max_shots : int
        Largest number of in-context examples (even; up to what the model's
        context holds); counts 0, 1, 2, 4, 8, ... up to it, every even prefix
        label-balanced, all counts of a sequence measured from one forward
        pass (default 64: where these small models' personas separate).
    orderings : int
        Shot sequences per trait, each with its own statements (drawn from
        the trait's shot pool) and order.
    sft_traits : tuple of str, optional
        Traits fine-tuned, each once per pole and seed (default: the first two
        traits, or the only one); the SFT data then hold cross-trait contrasts
        (trained on A, measured on B) for every pair.
    sft_examples : int
        SFT episodes per SFT trait (even; half the matching answers Yes;
        default 16, the sweep's choice, ``benchmarks/sft_sweep.md``).
    sft_checkpoints : tuple of int
        Optimiser steps at which the fine-tuned models are measured (the
        dose-response grid from onset to saturation; the last is the number
        of steps trained; default 4 checkpoints of 12 steps).
    persona_examples : int
        ``k`` (even): statements per trait that define the few-shot personas
        (half the matching answers Yes), never scored anywhere; default 64 =
        ``max_shots``, so the persona table is measured at the evidence
        strength the ICL conditions reach (PSM's predicted shift is bounded
        by the table's separation).
    seed : int
        Seed of splits, shot sequences and fits.
    persona_context : {"fewshot", "description", "both"}
        How a persona conditions the model in the persona table
        (:func:`psm_bayes.experiments.measure.persona_table.persona_contexts`).
    compare_persona_contexts : bool
        Also score the persona table under the other context forms (two more
        table passes per model; off by default) and report the persona
        separation of each.
    description_index : int
        Which persona description to use.
    prior_pseudo_count : float
        EM pseudo-count (keeps every prior weight positive).
    models : tuple of str
        Models to run, each a registry name, a ``.gguf`` or a model directory
        (default :data:`DEFAULT_MODELS`); the report compares them.
    dtype : str or None
        Scoring dtype (``bfloat16`` or ``float32``); ``None`` picks the
        device's default (float32 on the CPU, bfloat16 on a GPU). SFT trains
        a float32 copy, under bf16 autocast only where bf16 is native (a GPU,
        or a CPU with AVX-512 BF16/AMX; elsewhere torch emulates bf16 ~40x
        slower than float32).
    device : str
        ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or
        ``cuda:N``: where scoring and LoRA run.
    threads : int
        Torch threads.
    schedule : {"auto", "serial", "parallel"}
        ``parallel``: LoRA SFT runs in a second process while this one
        scores (identical results, :mod:`psm_bayes.experiments.schedule`);
        ``auto``: parallel on a CPU with >= 2 usable cores.
    batch_size : int
        Prompts per forward pass.
    criteria_se : float
        How many standard errors a pre-stated comparison criterion needs.
    null_models : tuple of str
        Catalogued nulls fitted and compared with ``persona_selection``.
    sft : SFTSettings
        LoRA settings (flat names ``sft_steps``, ``sft_batch_size``, ``sft_lr``,
        ``lora_rank``, ``sft_seeds``); ``steps`` is set to the last checkpoint.
    fit : FitSettings
        NUTS settings (flat names ``num_warmup``, ``num_samples``, ...).
    multi_trait_personas : tuple of tuple of str, optional
        Groups of traits, each adding one persona per pole whose examples
        span all its traits (:func:`psm_bayes.experiments.measure.persona_table.with_multi_trait`).
        ``None``: the groups of :data:`DEFAULT_MULTI_TRAIT` whose traits are
        all in the run; ``()``: none.
    """

    traits: tuple[str, ...] | None = None
    probes_dir: str | None = None
    screen_traits: int = 5
    screen_items: int = 8
    screen_threshold: float = 0.1
    probes_per_trait: int = 16
    prior_items: int = 4
    max_shots: int = 64
    orderings: int = 2
    sft_traits: tuple[str, ...] | None = None
    sft_examples: int = 16
    sft_checkpoints: tuple[int, ...] = (3, 6, 9, 12)
    persona_examples: int = 64
    seed: int = 0
    persona_context: str = "fewshot"
    compare_persona_contexts: bool = False
    description_index: int = 0
    prior_pseudo_count: float = 1.0
    models: tuple[str, ...] = DEFAULT_MODELS
    dtype: str | None = None
    device: str = "auto"
    threads: int = 1
    schedule: str = "auto"
    batch_size: int = 16
    criteria_se: float = 2.0
    null_models: tuple[str, ...] = NULLS
    # chosen by the documented sweep on trained-statement shift and loss alone (benchmarks/sft_sweep.md)
    sft: SFTSettings = SFTSettings(steps=12, lr=5e-4, seeds=(0, 1, 2))
    # Laplace start + 300 warm-up + 1500 draws per chain, measured on the many-shot default run's real ICL data
    # (2026-12-03, benchmarks/README.md). The chains start at draws from the Laplace approximation and keep
    # its covariance as a fixed dense mass matrix (FitSettings.init): 15 leapfrog steps per draw from the
    # first warm-up iteration, against 73 per warm-up iteration when 1000 warm-up iterations adapted a dense
    # block (models.selection.DENSE_MASS; at 500: 74 steps per draw and R-hat 1.015 on SFT). 1500 draws per
    # chain: with 1000, bulk ESS was 1600-2300 but the max rank R-hat over ~200 parameters with 2 chains
    # sat at 1.010-1.011 (the policy's bar), so fits went to a refit on noise.
    fit: FitSettings = FitSettings(num_warmup=300, num_samples=1500)
    multi_trait_personas: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        from psm_bayes.experiments.measure.persona_table import PERSONA_CONTEXTS

        if self.traits is None and self.probes_dir is None:
            object.__setattr__(self, "traits", DEFAULT_TRAITS)
        if self.traits is not None:
            object.__setattr__(self, "traits", tuple(self.traits))
            if not self.traits:
                raise ValueError("traits: expected at least one trait")
            if self.sft_traits is not None and not set(self.sft_traits) <= set(self.traits):
                raise ValueError(f"sft_traits: {sorted(set(self.sft_traits) - set(self.traits))} are not among "
                                 f"the traits {list(self.traits)}")
        if self.sft_traits is not None:
            object.__setattr__(self, "sft_traits", tuple(str(t) for t in self.sft_traits))
            if not self.sft_traits or len(set(self.sft_traits)) < len(self.sft_traits):
                raise ValueError(f"sft_traits: expected one or more distinct traits, got {list(self.sft_traits)}")
        object.__setattr__(self, "models", tuple(self.models))
        if self.multi_trait_personas is not None:
            groups = tuple(tuple(str(t) for t in g) for g in self.multi_trait_personas)
            for g in groups:
                if len(g) < 2 or len(set(g)) < len(g):
                    raise ValueError(f"multi_trait_personas: expected groups of >= 2 distinct traits, got {list(g)}")
                if self.traits is not None and not set(g) <= set(self.traits):
                    raise ValueError(f"multi_trait_personas: {sorted(set(g) - set(self.traits))} are not among the "
                                     f"traits {list(self.traits)}")
            object.__setattr__(self, "multi_trait_personas", groups)
        object.__setattr__(self, "null_models", tuple(self.null_models))
        unknown = sorted(set(self.null_models) - set(NULLS))
        if unknown:
            raise ValueError(f"null_models: unknown {unknown}; expected some of {NULLS}")
        if not self.models:
            raise ValueError("models: expected at least one model")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device).strip().lower()):
            raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("probes_per_trait", "prior_items", "max_shots", "orderings", "sft_examples", "threads",
                     "batch_size", "screen_traits", "screen_items"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        for name in ("max_shots", "sft_examples", "screen_items", "probes_per_trait"):
            if int(getattr(self, name)) % 2:
                raise ValueError(f"{name}: expected an even number (label balance: half the matching answers "
                                 f"Yes), got {getattr(self, name)!r}")
        cps = tuple(int(c) for c in self.sft_checkpoints)
        if not cps or min(cps) < 1 or list(cps) != sorted(set(cps)):
            raise ValueError(f"sft_checkpoints: expected increasing positive step counts, got {self.sft_checkpoints!r}")
        object.__setattr__(self, "sft_checkpoints", cps)
        if self.sft.steps != cps[-1]:
            object.__setattr__(self, "sft", replace(self.sft, steps=cps[-1]))
        if self.probes_dir is not None and self.persona_context != "fewshot":
            raise ValueError(f"persona_context: probes_dir has no persona descriptions; expected 'fewshot', "
                             f"got {self.persona_context!r}")
        for name, value in (("criteria_se", self.criteria_se), ("prior_pseudo_count", self.prior_pseudo_count),
                            ("sft_lr", self.sft.lr), ("screen_threshold", self.screen_threshold)):
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or (name != "screen_threshold" and not value > 0):
                raise ValueError(f"{name}: expected a finite number{' > 0' if name != 'screen_threshold' else ''}, "
                                 f"got {value!r}")
        if self.persona_context not in PERSONA_CONTEXTS:
            raise ValueError(f"persona_context: expected one of {PERSONA_CONTEXTS}, got {self.persona_context!r}")
        if self.schedule not in ("auto", "serial", "parallel"):
            raise ValueError(f"schedule: expected one of auto, serial, parallel, got {self.schedule!r}")
        if self.persona_examples < 2 or self.persona_examples % 2:
            raise ValueError(f"persona_examples: expected an even number >= 2 (label balance), "
                             f"got {self.persona_examples}")

    def multi_trait_groups(self, traits: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        """The multi-trait persona groups of a run on ``traits`` (explicit, else the applicable defaults)."""
        if self.multi_trait_personas is not None:
            missing = sorted({t for g in self.multi_trait_personas for t in g} - set(traits))
            if missing:
                raise ValueError(f"multi_trait_personas: {missing} are not among the traits {list(traits)}")
            return self.multi_trait_personas
        return tuple(g for g in DEFAULT_MULTI_TRAIT if set(g) <= set(traits))

    def trained_traits(self, traits: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The SFT traits: ``sft_traits``, else the first two of ``traits`` (default the configured traits)."""
        traits = traits or self.traits
        if self.sft_traits is not None:
            return self.sft_traits
        if not traits:
            raise ValueError("traits: not known before screening")
        return tuple(traits[:2])

    @classmethod
    def build(cls, **settings: Any) -> "ExperimentConfig":
        """A config from flat setting names (the CLI's), routing SFT and NUTS names into ``sft`` / ``fit``.

        ``sft_seeds=n`` means seeds ``0 .. n-1``; ``lora_rank=r`` sets LoRA alpha ``2 r``;
        ``sft_steps=s`` (without ``sft_checkpoints``) measures at ``s/4, s/2, 3s/4, s``; ``model=m`` means
        ``models=(m,)``.
        """
        settings = dict(settings)
        for k, v in settings.items():  # inf / NaN reach no int() or comparison below
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{k}: expected a finite number, got {v!r}")
        steps = settings.pop("sft_steps", None)
        if steps is not None and "sft_checkpoints" not in settings:
            settings["sft_checkpoints"] = tuple(sorted({max(1, int(steps) * q // 4) for q in (1, 2, 3, 4)}))
        model = settings.pop("model", None)
        if model is not None:
            settings["models"] = (model,)
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
        base = dict(traits=("honesty", "humour"), probes_per_trait=4, prior_items=2, max_shots=4, orderings=1,
                    sft_examples=8, sft_checkpoints=(4, 8), sft_seeds=1, persona_examples=4, screen_traits=2,
                    screen_items=4, compare_persona_contexts=False, num_warmup=150, num_samples=150, num_chains=2,
                    refit_unconverged=False)
        return cls._over(base, overrides)

    @classmethod
    def small(cls, **overrides: Any) -> "ExperimentConfig":
        """A notebook-sized setting (a few minutes); flat names as in :meth:`build`."""
        base = dict(traits=("honesty", "sycophancy", "humour"), probes_per_trait=6, max_shots=4, orderings=1,
                    persona_examples=8, sft_examples=8,
                    sft_checkpoints=(4, 8), sft_seeds=2, models=DEFAULT_MODELS[:1], num_warmup=300,
                    num_samples=300, refit_unconverged=False)
        return cls._over(base, overrides)

    @classmethod
    def _over(cls, base: dict, overrides: dict) -> "ExperimentConfig":
        if "sft_steps" in overrides:          # the steps flag sets the checkpoints unless they are given
            base = {k: v for k, v in base.items() if k != "sft_checkpoints"}
        return cls.build(**{**base, **overrides})

    def to_dict(self) -> dict:
        """Flat JSON-ready dict (the names :meth:`build` takes)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sft", "fit")}
        d["traits"] = None if self.traits is None else list(self.traits)
        d["models"] = list(self.models)
        d["sft_checkpoints"] = list(self.sft_checkpoints)
        d["sft_traits"] = None if self.sft_traits is None else list(self.sft_traits)
        d["null_models"] = list(self.null_models)
        d["multi_trait_personas"] = (None if self.multi_trait_personas is None
                                     else [list(g) for g in self.multi_trait_personas])
        d["sft_steps"] = self.sft.steps
        for flat, (group, name) in _ROUTED.items():
            v = getattr(getattr(self, group), name)
            d[flat] = len(v) if flat == "sft_seeds" else v
        return d

TINY: dict[str, Any] = dict(probes_per_trait=2, prior_items=2, persona_examples=2, max_shots=2, sft_examples=2,
                            sft_checkpoints=(1, 2), sft_batch_size=2, null_models=("response_bias",),
                            num_warmup=60, num_samples=60, num_chains=1, models=DEFAULT_MODELS[:1])
"""Overrides of :meth:`ExperimentConfig.quick` for the smallest real run (tests, ``PSM_BAYES_SMALL=1``)."""


def config_from_env(**overrides: Any) -> ExperimentConfig:
    """Notebook settings: the tiny setting (:data:`TINY`) when ``PSM_BAYES_SMALL=1``, else ``small()``."""
    if os.environ.get("PSM_BAYES_SMALL", "") not in ("", "0"):
        return ExperimentConfig.quick(**{**TINY, **overrides})
    return ExperimentConfig.small(**overrides)

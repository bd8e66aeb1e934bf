"""End-to-end PSM experiment on real language models, as a short chain of stages.

:func:`run_experiment` writes the pre-stated criteria (``criteria.md``,
from the configuration alone), then runs (each LLM stage cached under
``out_dir/cache/<model>`` so an interrupted run resumes):

0. **source + screening** -- :mod:`psm_bayes.experiments.measure.screening`: the
   shipped probes or an Anthropic persona folder; with a folder and no
   traits, the traits the first model separates;
1. **design** -- :func:`psm_bayes.experiments.design.make_design`: disjoint,
   label-balanced roles;

and for each language model (``cfg.models``):

2. **persona table + prior** -- :func:`psm_bayes.experiments.measure.persona_table.measure_personas`;
3. **ICL** -- :func:`psm_bayes.experiments.measure.icl.run_icl` (both poles, contrasts);
4. **SFT** -- :func:`psm_bayes.experiments.measure.finetune.run_sft` (both poles, seeds, checkpoints, cross conditions);
5. **fits** -- :func:`psm_bayes.experiments.analysis.evidence.build_datasets` then
   :func:`psm_bayes.experiments.analysis.fits.fit_models` (PSM and nulls, grouped CV);
6. **summary** -- :func:`psm_bayes.experiments.analysis.summary.model_summary` and the verdicts
   (:mod:`psm_bayes.experiments.analysis.criteria`);

then the report (:mod:`psm_bayes.experiments.output.report`) and ``results.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psm_bayes.experiments.config import ExperimentConfig
from psm_bayes.experiments.design import Design
from psm_bayes.experiments.schedule import BackgroundSFT, resolve_schedule
from psm_bayes.experiments.stagelog import StageLog

__all__ = ["ExperimentConfig", "ExperimentResult", "ModelRun", "run_experiment"]


@dataclass(frozen=True)
class ModelRun:
    """Every stage output of one language model."""

    name: str
    personas: Any
    icl: Any
    sft: Any
    datasets: Any
    fitted: Any
    schedule: str = "serial"
    """``serial`` or ``parallel`` (LoRA SFT in a second process, :mod:`psm_bayes.experiments.schedule`)."""


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` produced (also on disk under ``out_dir``).

    Attributes
    ----------
    out_dir : pathlib.Path
    config : ExperimentConfig
    results : dict
        ``results.json``.
    design : Design
    screening : Screening or None
    runs : dict of str to ModelRun
        By model name, in ``config.models`` order.
    """

    out_dir: Path
    config: ExperimentConfig
    results: dict
    design: Design
    screening: Any
    runs: dict


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"


def run_model(name: str, cfg: ExperimentConfig, design: Design, spec: Any, cache: Path, log: StageLog, *,
              progress: bool, loaded: Any = None, loaded_fp32: Any = None) -> ModelRun:
    """Stages 2-5 for one language model."""
    from psm_bayes.experiments.analysis import evidence
    from psm_bayes.experiments.measure import finetune
    from psm_bayes.experiments.analysis.fits import fit_models
    from psm_bayes.llm import load_model

    tag = f"[{name}] "
    parallel = resolve_schedule(cfg.schedule, str(cfg.device), own_models=loaded is None and loaded_fp32 is None)
    log.stage(tag + "load model")
    if loaded is None:
        loaded = load_model(name, dtype=cfg.dtype, threads=cfg.threads, device=cfg.device)
    log.done(tag + "load model")
    sft_cache = cache / "sft"
    background = None
    if parallel == "parallel":
        background = BackgroundSFT(name, cfg.threads, cfg.device, design, cfg.sft, cfg.sft_checkpoints,
                                   sft_cache, cfg.batch_size)      # the model cache is on disk by now
        log.note(tag + "LoRA SFT runs in a second process while this one scores")
    try:
        personas, icl_stage, surface_stage = _score_base(loaded, cfg, design, spec, cache, log, tag, progress)
        log.stage(tag + "LoRA SFT")
        if background is not None:
            sft_stage, worker_s = background.result()
            background = None
            log.note(tag + f"LoRA SFT worker: {worker_s:.0f} s (load + train + measure)")
        else:
            if loaded_fp32 is None:
                loaded_fp32 = (loaded if loaded.dtype == "float32"
                               else load_model(name, dtype="float32", threads=cfg.threads, device=cfg.device))
            sft_stage = finetune.run_sft(loaded_fp32, design, cfg.sft, cfg.sft_checkpoints, cache_dir=sft_cache,
                                         batch_size=cfg.batch_size, progress=progress)
        log.done(tag + "LoRA SFT")
    finally:
        if background is not None:
            background.cancel()
    del loaded_fp32, loaded
    data = evidence.build_datasets(design, personas, icl_stage, sft_stage, cfg.sft_checkpoints,
                                   surface=surface_stage)
    fitted = fit_models(data, cfg.fit, ("persona_selection",) + cfg.null_models, cfg.seed, log, prefix=tag)
    return ModelRun(name, personas, icl_stage, sft_stage, data, fitted, parallel)


def _score_base(loaded: Any, cfg: ExperimentConfig, design: Design, spec: Any, cache: Path, log: StageLog,
                tag: str, progress: bool) -> tuple[Any, Any, Any]:
    """The base model's stages: persona table, ICL curves, statement features."""
    from psm_bayes.experiments.measure import icl, persona_table, surface

    log.stage(tag + "persona table")
    personas = persona_table.measure_personas(
        loaded, design, spec, context=cfg.persona_context, compare_contexts=cfg.compare_persona_contexts,
        pseudo_count=cfg.prior_pseudo_count, cache_dir=cache, batch_size=cfg.batch_size, progress=progress)
    log.done(tag + "persona table")
    log.stage(tag + "ICL")
    icl_stage = icl.run_icl(loaded, design, cache_dir=cache / "icl", batch_size=cfg.batch_size, progress=progress)
    log.done(tag + "ICL")
    log.stage(tag + "statement features")           # base model, before any fine-tuning
    surface_stage = surface.measure_surface(loaded, design, cache_dir=cache / "surface", batch_size=cfg.batch_size)
    log.done(tag + "statement features")
    return personas, icl_stage, surface_stage


def run_experiment(config: ExperimentConfig | None = None, out_dir: str | os.PathLike = "report", *,
                   progress: bool = True, loaded: dict | None = None, loaded_fp32: dict | None = None
                   ) -> ExperimentResult:
    """Run the whole experiment and write the report.

    Parameters
    ----------
    config : ExperimentConfig, optional
        Default: ``ExperimentConfig()``.
    out_dir : path
        Output folder (created; new, empty or made by psm-bayes), held by a run lock
        (:func:`psm_bayes.runlock.run_lock`: a second run on it is refused); LLM
        measurements are cached in ``out_dir/cache``.
    progress : bool
        Stage log on stderr and progress bars.
    loaded, loaded_fp32 : dict of str to LoadedModel, optional
        Already-loaded models by name (scoring dtype and float32 for SFT), e.g. test fixtures.

    Returns
    -------
    ExperimentResult
    """
    from psm_bayes.experiments.measure import screening
    from psm_bayes.experiments.design import make_design
    from psm_bayes.integrity import use_cache_root
    from psm_bayes.llm.registry import check_model
    from psm_bayes.runlock import run_lock

    cfg = config or ExperimentConfig()
    use_cache_root()                                 # matplotlib's cache follows $PSM_BAYES_CACHE too
    for name in cfg.models:                          # a model that is nowhere fails before any file exists
        check_model(name)
    source = screening.probe_source(cfg.probes_dir, cfg.traits, cfg.description_index)
    if cfg.traits is not None:                       # nor does a design that cannot be made
        make_design(cfg, source.probes, cfg.traits)
    with run_lock(out_dir, command="run") as out:    # one run per folder; a refused run writes nothing
        return _run(cfg, out, source, progress, dict(loaded or {}), dict(loaded_fp32 or {}))


def _run(cfg: ExperimentConfig, out: Path, source: Any, progress: bool, loaded: dict, loaded_fp32: dict
         ) -> ExperimentResult:
    """The stages of :func:`run_experiment` in output folder ``out`` (held by the run lock)."""
    from psm_bayes.experiments.analysis import criteria, summary
    from psm_bayes.experiments.measure import persona_table, screening
    from psm_bayes.experiments.output import report
    from psm_bayes.experiments.design import make_design
    from psm_bayes.experiments.output.outputs import write_json, write_text
    from psm_bayes.inference import configure_jax
    from psm_bayes.llm import load_model

    (out / "cache").mkdir(parents=True, exist_ok=True)
    configure_jax(cache_dir=out / "cache" / "jax")  # compiled NUTS programs, reused by a rerun and power workers
    log = StageLog(progress)
    stated = criteria.stated_criteria(cfg)
    write_text(out / "criteria.md", "# Pre-stated criteria (written before any measurement)\n\n"
               + criteria.criteria_markdown(stated) + "\n")
    screened, probes, traits = None, source.probes, cfg.traits
    if traits is None:
        first = cfg.models[0]
        log.stage(f"screening {len(source.probes.traits)} traits")
        model = loaded.get(first) or load_model(first, dtype=cfg.dtype, threads=cfg.threads, device=cfg.device)
        screened = screening.screen_traits(model, source, n_items=cfg.screen_items, n_examples=cfg.persona_examples,
                                           keep=cfg.screen_traits, threshold=cfg.screen_threshold, seed=cfg.seed,
                                           cache_dir=out / "cache" / _safe(first) / "screen", batch_size=cfg.batch_size)
        probes, traits = screened.probes, screened.traits
        loaded[first] = model                      # reused by the first model's stages
        log.done(f"screening {len(source.probes.traits)} traits")
    design = make_design(cfg, probes, traits)
    groups = cfg.multi_trait_groups(traits)
    spec = persona_table.with_multi_trait(source.spec, groups)
    runs, blocks = {}, {}
    for name in cfg.models:
        runs[name] = run_model(name, cfg, design, spec, out / "cache" / _safe(name), log, progress=progress,
                               loaded=loaded.pop(name, None), loaded_fp32=loaded_fp32.pop(name, None))
        log.stage(f"[{name}] summary")
        r = runs[name]
        info = {"name": name, "prompt_format": r.personas.table.attrs.get("prompt_format", ""),
                "model_key": r.personas.table.attrs.get("model_key", "")}
        blocks[name] = summary.model_summary(cfg, info, design, r.personas, r.icl, r.sft, r.datasets, r.fitted)
        log.done(f"[{name}] summary")
    criteria.judge_runs(stated, blocks)             # after every model: base_vs_instruct compares two
    primary = blocks[cfg.models[0]]
    results: dict[str, Any] = {
        "config": cfg.to_dict(), "traits": list(traits), "probe_source": source.name,
        "multi_trait_personas": [list(g) for g in groups],
        "screening": None if screened is None else {
            "threshold": screened.threshold, "rule": "separation > threshold and > 2 se; largest kept",
            "table": {t: {k: (bool(v) if isinstance(v, (bool,)) else v) for k, v in row.items()}
                      for t, row in screened.table.to_dict("index").items()}},
        "criteria": [c for b in blocks.values() for c in b["criteria"]],
        "design": primary["design"],
        **{k: primary[k] for k in ("icl", "sft", "cross_prediction", "prior_data_conflict", "diagnostics")},
        "models": blocks,
    }
    results["schedule"] = {name: r.schedule for name, r in runs.items()}
    res = ExperimentResult(out, cfg, results, design, screened, runs)
    log.stage("report")
    results["timings"] = dict(log.stages)
    report.write_report(res)
    log.done("report")
    results["timings"] = dict(log.stages) | {"total": log.total()}
    write_json(out / "results.json", results)
    return res

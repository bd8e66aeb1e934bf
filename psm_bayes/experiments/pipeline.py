"""End-to-end PSM experiment on a real language model, as a short chain of stages.

:func:`run_experiment` runs, in order (each LLM stage cached under
``out_dir/cache`` so an interrupted run resumes where it stopped):

1. **design** -- :func:`psm_bayes.experiments.design.make_design`: which
   statement is an evaluation item, a persona example, an ICL shot or an SFT
   episode (disjoint roles, asserted);
2. **persona table + prior** -- :func:`psm_bayes.experiments.persona_table.measure_personas`:
   every persona scores every table item, the neutral context too, EM gives
   the pre-training prior ``pi``
   (:mod:`psm_bayes.experiments.pretraining_prior`);
3. **ICL** -- :func:`psm_bayes.experiments.icl.run_icl`: n-shot curves ->
   :class:`~psm_bayes.models.icl_curves.ICLData`;
4. **SFT** -- :func:`psm_bayes.experiments.finetune.run_sft`: LoRA shifts ->
   :class:`~psm_bayes.models.sft_shift.SFTShiftData`;
5. **fits** -- :func:`psm_bayes.experiments.fits.fit_models` (NumPyro NUTS);
6. **report** -- statistics (:mod:`psm_bayes.experiments.summary`), then
   plots and files (:mod:`psm_bayes.experiments.report`) and ``results.json``.

Each stage is a function of typed (frozen) inputs returning a frozen output;
the settings are :class:`~psm_bayes.experiments.config.ExperimentConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psm_bayes.experiments.config import ExperimentConfig
from psm_bayes.experiments.design import Design
from psm_bayes.experiments.finetune import SFTStage
from psm_bayes.experiments.fits import FitStage
from psm_bayes.experiments.icl import ICLStage
from psm_bayes.experiments.persona_table import PersonaStage
from psm_bayes.experiments.stagelog import StageLog

__all__ = ["ExperimentConfig", "ExperimentResult", "run_experiment"]


@dataclass(frozen=True)
class ExperimentResult:
    """What :func:`run_experiment` produced (also on disk under ``out_dir``).

    Attributes
    ----------
    out_dir : pathlib.Path
    config : ExperimentConfig
    results : dict
        The headline numbers (``results.json``).
    design : Design
    personas : PersonaStage
    icl : ICLStage
    sft : SFTStage
    fitted : FitStage
    compare : dict of str to pandas.DataFrame
        PSIS-LOO tables (``"icl"``, ``"sft"``).
    """

    out_dir: Path
    config: ExperimentConfig
    results: dict
    design: Design
    personas: PersonaStage
    icl: ICLStage
    sft: SFTStage
    fitted: FitStage
    compare: dict

    @property
    def fits(self) -> dict:
        """Every fit (xarray.DataTree) by model name."""
        return self.fitted.fits


def run_experiment(config: ExperimentConfig | None = None, out_dir: str | os.PathLike = "report", *,
                   progress: bool = True, loaded: Any = None, loaded_fp32: Any = None) -> ExperimentResult:
    """Run the whole experiment and write the report.

    Parameters
    ----------
    config : ExperimentConfig, optional
        Default: ``ExperimentConfig()``.
    out_dir : path
        Output folder (created); LLM measurements are cached in
        ``out_dir/cache``, so rerunning the same config resumes.
    progress : bool
        Stage log on stderr and progress bars.
    loaded, loaded_fp32 : LoadedModel, optional
        Already-loaded models (scoring dtype and float32 for SFT) to reuse,
        e.g. a test-session fixture; loaded on demand otherwise.

    Returns
    -------
    ExperimentResult
    """
    from psm_bayes.experiments import finetune, icl, persona_table, report, summary
    from psm_bayes.experiments.design import make_design
    from psm_bayes.experiments.fits import fit_models
    from psm_bayes.experiments.outputs import write_json
    from psm_bayes.llm import load_model

    cfg = config or ExperimentConfig()
    out = Path(out_dir)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    log = StageLog(progress)

    design = make_design(cfg)
    log.stage("load model")
    if loaded is None:
        loaded = load_model(cfg.model, dtype=cfg.dtype, threads=cfg.threads)
    log.done("load model")

    name = f"persona table ({2 * len(cfg.traits)} personas x {len(design.table_idx)} items)"
    log.stage(name)
    personas = persona_table.measure_personas(
        loaded, design, context=cfg.persona_context, compare_contexts=cfg.compare_persona_contexts,
        method=cfg.table_method, description_index=cfg.description_index, pseudo_count=cfg.prior_pseudo_count,
        cache_dir=cache, batch_size=cfg.batch_size, progress=progress)
    log.done(name)

    log.stage("ICL measurements")
    icl_stage = icl.run_icl(loaded, design, personas, cache_dir=cache / "icl", batch_size=cfg.batch_size,
                            progress=progress)
    log.done("ICL measurements")

    log.stage("LoRA SFT")
    if loaded_fp32 is None:
        loaded_fp32 = loaded if loaded.dtype == "float32" else load_model(cfg.model, dtype="float32",
                                                                        threads=cfg.threads)
    sft_stage = finetune.run_sft(loaded_fp32, design, personas, cfg.sft, cache_dir=cache / "sft",
                                 adapter_dir=out / "adapters", batch_size=cfg.batch_size, progress=progress)
    log.done("LoRA SFT")
    del loaded_fp32

    fitted = fit_models(icl_stage.data, sft_stage.data, cfg.fit, cfg.seed, log)

    log.stage("report")
    tables = summary.compare_tables(fitted)
    results = summary.summarise(cfg, {"key": loaded.key, "model_id": loaded.model_id}, design, personas, icl_stage,
                                sft_stage, fitted, tables)
    results["timings"] = dict(log.stages)
    res = ExperimentResult(out, cfg, results, design, personas, icl_stage, sft_stage, fitted, tables)
    report.write_report(res)
    log.done("report")
    results["timings"] = dict(log.stages)
    results["timings"]["total"] = log.total()
    write_json(out / "results.json", results)
    return res

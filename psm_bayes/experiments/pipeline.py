"""End-to-end PSM experiment on a real language model: measure, fit, report.

:func:`run_experiment` does, in order (each LLM stage cached under
``out_dir/cache`` so an interrupted run resumes where it stopped):

1. **Persona table and prior** (:mod:`psm_bayes.experiments.prior`): the
   personas of the chosen traits (both poles) score every probe used
   (held-out items, ICL shots, SFT episodes); the neutral context scores them
   too; EM gives the pre-training prior ``pi``.  A persona is, by default,
   ``persona_examples`` in-context answers by it to statements of its trait
   reserved for that purpose (never scored anywhere); its description, or
   both, are the alternatives (``persona_context``).  On Gemma 3 270M base
   the description barely moves the answers (persona separation ~0), the
   few-shot personas do (see the report's persona separation table).
2. **ICL** (:mod:`psm_bayes.experiments.icl`): n-shot curves per trait and
   ordering, measured on held-out items of every chosen trait ->
   :class:`~psm_bayes.models.icl_curves.ICLData`.
3. **SFT** (:mod:`psm_bayes.experiments.finetune`): LoRA on one trait pole,
   log-odds shifts on held-out items of every trait (plus a few trained
   items) -> :class:`~psm_bayes.models.sft_shift.SFTShiftData`.
4. **Fits** (NumPyro NUTS): ``psm_icl``, ``bayesian_icl_law``,
   ``power_law``, ``bounded_power_law`` (PSIS-LOO and extrapolation NRMSE:
   fit on small n, predict large n); ``psm_sft`` vs ``null_sft`` (LOO,
   predicted-vs-observed correlation with a credible interval); ``psm_joint``
   (``beta_sft`` vs ``beta_icl``, ``authorial_bias``).
5. **Report** (:mod:`psm_bayes.experiments.report`): ``report.md`` with PNG
   plots, every fit as ``fits/<name>.nc`` and ``results.json`` with the
   headline numbers (all written atomically).

:class:`ExperimentConfig` defaults are sized for about a quarter of an hour
on 2 busy CPU cores; :meth:`ExperimentConfig.quick` is a tiny setting for
tests, :meth:`ExperimentConfig.small` a notebook-sized one.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_TRAITS: tuple[str, ...] = ("honesty", "sycophancy", "power-seeking", "humour", "empathy")
"""Traits of the default run (the first is also the default SFT trait)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of :func:`run_experiment`.

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
    sft_steps, sft_batch_size, sft_lr, lora_rank : SFT hyper-parameters.
    sft_seeds : int
        LoRA runs (seeds 0 .. sft_seeds-1); shifts are averaged.
    sft_probe_trained : int
        Training items also measured (rows with ``trained=True``).
    model : str, optional
        Model name or path (default: the embedded Gemma 3 270M base).
    dtype : str
        Scoring dtype (``bfloat16`` or ``float32``); SFT always trains a
        float32 copy under bf16 autocast.
    threads : int
        Torch threads.
    seed : int
        Seed of splits, shot sequences and fits.
    description_index : int
        Which persona description to use.
    persona_context : {"fewshot", "description", "both"}
        How a persona conditions the model in the persona table: ``k``
        in-context example answers by the persona (``fewshot``: the positive
        pole gives each statement's matching answer, the negative pole the
        other one), its description as a preamble, or both
        (:func:`psm_bayes.experiments.prior.persona_contexts`).
    persona_examples : int
        ``k``: statements per trait reserved from the training pool as the
        few-shot personas' examples (never ICL shots, SFT episodes, held-out
        or table items).  Reserved in every mode, so the design does not
        depend on ``persona_context``.
    compare_persona_contexts : bool
        Also score the persona table under the other context forms (cheap)
        and report the persona separation of each.
    prior_pseudo_count : float
        EM pseudo-count (keeps every prior weight positive).
    table_method : {"fast", "scorer"}
        Persona-table scorer (:func:`psm_bayes.experiments.prior.score_persona_table`).
    batch_size : int
        Prompts per forward pass.
    num_warmup, num_samples, num_chains : int
        NUTS settings of every fit.
    target_accept : float
        NUTS target acceptance probability.
    refit_unconverged : bool
        Refit a fit whose max R-hat >= 1.01 or min bulk ESS < 400 once, with
        twice the warm-up and draws and ``target_accept`` 0.95.
    saved_loglik_draws, saved_predictive_draws : int
        Draws (all chains together) kept in the saved ``fits/*.nc`` for the
        pointwise log-likelihood and the posterior predictive (thinned evenly,
        float32); per-row deterministic means are not saved (see
        :func:`psm_bayes.experiments.report.compact_fit`).  The report's numbers use every draw.
    extrapolation_fraction : float
        Share of the distinct shot counts used to fit before extrapolating.
    """

    traits: tuple[str, ...] = DEFAULT_TRAITS
    probes_per_trait: int = 8
    max_shots: int = 8
    orderings: int = 2
    sft_trait: str | None = None
    sft_examples: int = 24
    sft_steps: int = 24
    sft_batch_size: int = 8
    sft_lr: float = 1e-3
    lora_rank: int = 8
    sft_seeds: int = 2
    sft_probe_trained: int = 8
    model: str | None = None
    dtype: str = "bfloat16"
    threads: int = 1
    seed: int = 0
    description_index: int = 0
    persona_context: str = "fewshot"
    persona_examples: int = 8
    compare_persona_contexts: bool = True
    prior_pseudo_count: float = 1.0
    table_method: str = "fast"
    batch_size: int = 16
    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 2
    target_accept: float = 0.9
    refit_unconverged: bool = True
    saved_loglik_draws: int = 500
    saved_predictive_draws: int = 100
    extrapolation_fraction: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "traits", tuple(self.traits))
        if not self.traits:
            raise ValueError("traits: expected at least one trait")
        if self.sft_trait is not None and self.sft_trait not in self.traits:
            raise ValueError(f"sft_trait: {self.sft_trait!r} is not one of traits {self.traits}")
        for name in ("probes_per_trait", "max_shots", "orderings", "sft_examples", "sft_steps", "sft_seeds",
                     "sft_batch_size", "lora_rank", "threads", "batch_size", "num_samples", "num_chains"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        from psm_bayes.experiments.prior import PERSONA_CONTEXTS

        if self.persona_context not in PERSONA_CONTEXTS:
            raise ValueError(f"persona_context: expected one of {PERSONA_CONTEXTS}, got {self.persona_context!r}")
        if self.persona_examples < 0 or (self.persona_examples == 0 and self.persona_context != "description"):
            raise ValueError(f"persona_examples: expected >= 1 for persona_context={self.persona_context!r}, "
                             f"got {self.persona_examples}")
        if not 0.5 <= float(self.target_accept) < 1:
            raise ValueError(f"target_accept: expected in [0.5, 1), got {self.target_accept!r}")
        for name in ("saved_loglik_draws", "saved_predictive_draws"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)!r}")
        if self.sft_probe_trained < 0:
            raise ValueError(f"sft_probe_trained: expected >= 0, got {self.sft_probe_trained}")

    @property
    def trained_trait(self) -> str:
        """The SFT trait (``sft_trait`` or the first trait)."""
        return self.sft_trait or self.traits[0]

    @classmethod
    def quick(cls, **overrides: Any) -> "ExperimentConfig":
        """A tiny setting for tests (a couple of minutes on one core)."""
        base = dict(traits=("honesty", "humour"), probes_per_trait=4, max_shots=2, orderings=1, sft_examples=8,
                    sft_steps=8, sft_seeds=1, sft_probe_trained=2, persona_examples=4, num_warmup=150,
                    num_samples=150, num_chains=2, refit_unconverged=False)
        return cls(**{**base, **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> "ExperimentConfig":
        """A notebook-sized setting (a few minutes)."""
        base = dict(traits=("honesty", "sycophancy", "humour"), probes_per_trait=6, max_shots=4, orderings=2,
                    sft_examples=16, sft_steps=12, sft_seeds=1, sft_probe_trained=4, num_warmup=300,
                    num_samples=300, refit_unconverged=False)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["traits"] = list(self.traits)
        d["sft_trait"] = self.trained_trait
        return d


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` produced (also on disk under ``out_dir``).

    Attributes
    ----------
    out_dir : pathlib.Path
    results : dict
        The headline numbers (``results.json``).
    fits : dict of str to xarray.DataTree
    icl_data : ICLData
    sft_data : SFTShiftData
    table : xarray.Dataset
        Persona table (``loglik``, ``neutral_loglik``).
    prior_weights : numpy.ndarray
    icl_measurements, sft_measurements : pandas.DataFrame
    """

    out_dir: Path
    results: dict
    fits: dict
    icl_data: Any
    sft_data: Any
    table: Any
    prior_weights: np.ndarray
    icl_measurements: Any
    sft_measurements: Any
    extra: dict = field(default_factory=dict)


class _Log:
    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._start = self.t0

    def stage(self, name: str) -> None:
        self._start = time.perf_counter()
        if self.progress:
            print(f"[psm-bayes run {time.perf_counter() - self.t0:7.1f}s] {name} ...", file=sys.stderr, flush=True)

    def done(self, name: str) -> None:
        self.stages[name] = round(time.perf_counter() - self._start, 2)
        if self.progress:
            print(f"[psm-bayes run {time.perf_counter() - self.t0:7.1f}s] {name}: {self.stages[name]:.1f}s",
                  file=sys.stderr, flush=True)


def _fit(model: Any, data: Any, cfg: ExperimentConfig, seed_offset: int = 0, **kw: Any) -> Any:
    """NUTS with the config's settings; one refit (2x warm-up and draws, target_accept 0.95) if unconverged."""
    from psm_bayes.inference import fit_nuts

    dt = fit_nuts(model, data, seed=cfg.seed + seed_offset, num_warmup=cfg.num_warmup,
                  num_samples=cfg.num_samples, num_chains=cfg.num_chains, target_accept=cfg.target_accept, **kw)
    if cfg.refit_unconverged:
        d = fit_diagnostics(dt)
        if d["max_rhat"] >= 1.01 or d["min_ess_bulk"] < 400:
            first = {k: d[k] for k in ("max_rhat", "min_ess_bulk", "divergences")}
            dt = fit_nuts(model, data, seed=cfg.seed + seed_offset + 1000, num_warmup=2 * cfg.num_warmup,
                          num_samples=2 * cfg.num_samples, num_chains=cfg.num_chains,
                          target_accept=max(cfg.target_accept, 0.95), **kw)
            dt.attrs["refit"] = 1
            dt.attrs["first_fit"] = str(first)
    return dt


def fit_diagnostics(dt: Any) -> dict:
    """``max_rhat``, ``min_ess_bulk``, ``divergences`` and ``ok`` of a fit (latent sites)."""
    from psm_bayes.diagnostics import check

    v = check(dt)
    post = dt["posterior"]
    return {"max_rhat": float(v.max_rhat), "min_ess_bulk": float(v.min_ess_bulk), "divergences": int(v.divergences),
            "ok": bool(v.ok), "problems": list(v.problems),
            "chains": int(post.sizes.get("chain", 1)), "draws": int(post.sizes.get("draw", 0)),
            "refit": bool(dt.attrs.get("refit", 0)), "first_fit": str(dt.attrs.get("first_fit", ""))}


def posterior_summary(dt: Any, name: str, prob: float = 0.9) -> dict:
    """Mean, sd and central ``prob`` interval of a scalar posterior variable."""
    x = np.asarray(dt["posterior"][name].values).ravel()
    lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": float(x.mean()), "sd": float(x.std()), "lo": float(lo), "hi": float(hi), "prob": prob}


def _compare_table(fits: dict, var_name: str | None = None) -> Any:
    import arviz as az

    if var_name is None:
        return az.compare(fits)
    return az.compare(fits, var_name=var_name)


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
    from psm_bayes.data import DataError
    from psm_bayes.experiments import finetune, icl, prior, report
    from psm_bayes.probes import load_personas, load_probes

    cfg = config or ExperimentConfig()
    out = Path(out_dir)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    log = _Log(progress)
    t_start = time.perf_counter()

    # ------------------------------------------------------------ design
    probes = load_probes(cfg.traits)
    eval_idx, train_all = icl.split_probes(probes, cfg.traits, cfg.probes_per_trait, cfg.seed)
    # persona examples: reserved before anything else uses the training pool (never scored in the table)
    persona_idx, train_idx = prior.reserve_persona_examples(probes, train_all, cfg.traits, cfg.persona_examples,
                                                            cfg.seed)
    sequences = icl.shot_sequences(probes, train_idx, cfg.traits, cfg.max_shots, cfg.orderings, cfg.seed)
    n_values = icl.shot_counts(cfg.max_shots)
    sft_train = finetune.sft_examples(probes, train_idx, cfg.trained_trait, cfg.sft_examples, cfg.seed)
    n_tr = min(cfg.sft_probe_trained, len(sft_train))
    sft_probe = np.concatenate([eval_idx, sft_train[np.linspace(0, len(sft_train) - 1, n_tr).astype(int)]
                                if n_tr else np.zeros(0, int)])
    used = np.unique(np.concatenate([eval_idx, sft_train] + [s.items for s in sequences]))
    if np.intersect1d(used, persona_idx).size:
        raise DataError("persona_examples: reserved persona examples are also scored items (leakage)")
    table_items = probes.subset(used)
    spec = load_personas(description_index=cfg.description_index)
    personas = prior.select_personas(spec, cfg.traits)

    # ------------------------------------------------------------ models
    from psm_bayes.llm import load_model

    log.stage("load model")
    if loaded is None:
        loaded = load_model(cfg.model, dtype=cfg.dtype, threads=cfg.threads)
    log.done("load model")

    # ------------------------------------------------------------ persona table + prior
    log.stage(f"persona table ({len(personas)} personas x {len(table_items)} items)")
    modes = [cfg.persona_context] + ([m for m in prior.PERSONA_CONTEXTS if m != cfg.persona_context]
                                     if cfg.compare_persona_contexts else [])
    if cfg.table_method == "scorer" and cfg.persona_context != "description":
        raise DataError("table_method: 'scorer' supports persona_context='description' only")
    tables, separation, mode_priors = {}, {}, {}
    for mode in modes:
        if mode != "description" and cfg.table_method == "scorer":
            continue
        ctx = None if mode == "description" else prior.persona_contexts(spec, personas, probes, persona_idx, mode)
        name = "table.nc" if mode == "description" else f"table-{mode}.nc"
        cache_path = out / "cache" / (name if cfg.table_method == "fast" else "scores")
        tables[mode] = prior.score_persona_table(loaded, personas, table_items.items, method=cfg.table_method,
                                                 cache_path=cache_path, batch_size=cfg.batch_size,
                                                 progress=progress, contexts=ctx)
        separation[mode] = prior.persona_separation(tables[mode], probes, spec)
        mode_priors[mode] = prior.prior_from_table(tables[mode], pseudo_count=cfg.prior_pseudo_count).weights
    table = tables[cfg.persona_context]
    em = prior.prior_from_table(table, pseudo_count=cfg.prior_pseudo_count)
    pi = em.weights
    L = prior.normalised_table(table)
    log.done(f"persona table ({len(personas)} personas x {len(table_items)} items)")

    # ------------------------------------------------------------ ICL
    log.stage("ICL measurements")
    icl_meas = icl.measure_icl(loaded, probes, eval_idx, sequences, n_values, cache_dir=out / "cache" / "icl",
                               batch_size=cfg.batch_size, progress=progress)
    icl_data = icl.build_icl_data(icl_meas, sequences, probes, L, pi)
    log.done("ICL measurements")

    # ------------------------------------------------------------ SFT
    log.stage("LoRA SFT")
    if loaded_fp32 is None:
        loaded_fp32 = loaded if loaded.dtype == "float32" else load_model(cfg.model, dtype="float32",
                                                                        threads=cfg.threads)
    settings = finetune.SFTSettings(steps=cfg.sft_steps, batch_size=cfg.sft_batch_size, lr=cfg.sft_lr,
                                    rank=cfg.lora_rank, alpha=2 * cfg.lora_rank, seeds=tuple(range(cfg.sft_seeds)))
    sft_meas, sft_info = finetune.measure_sft(loaded_fp32, probes, sft_train, sft_probe, settings,
                                              cache_dir=out / "cache" / "sft", adapter_dir=out / "adapters",
                                              batch_size=cfg.batch_size, progress=progress)
    sft_data = finetune.build_sft_data(sft_meas, probes, sft_train, L, pi)
    log.done("LoRA SFT")
    if loaded_fp32 is not loaded:
        del loaded_fp32

    # ------------------------------------------------------------ fits
    from psm_bayes.models import icl_curves
    from psm_bayes.models.icl_curves_numpyro import ICL_MODELS, extrapolation_error
    from psm_bayes.models.psm_joint import JointData
    from psm_bayes.models.psm_joint_numpyro import psm_joint
    from psm_bayes.models.sft_shift import shift_correlation
    from psm_bayes.models.sft_shift_numpyro import SFT_MODELS

    fits: dict[str, Any] = {}
    extrap: dict[str, dict] = {}
    train_d, test_d = icl_curves.extrapolation_split(icl_data, cfg.extrapolation_fraction)
    for j, (name, model) in enumerate(ICL_MODELS.items()):
        log.stage(f"NUTS {name}")
        fits[name] = _fit(model, icl_data, cfg, j)
        extrap[name] = extrapolation_error(model, train_d, test_d, cfg.seed + j, num_warmup=cfg.num_warmup,
                                           num_samples=cfg.num_samples, num_chains=cfg.num_chains,
                                           target_accept=cfg.target_accept)
        log.done(f"NUTS {name}")
    for j, (name, model) in enumerate(SFT_MODELS.items()):
        log.stage(f"NUTS {name}")
        fits[name] = _fit(model, sft_data, cfg, 10 + j)
        log.done(f"NUTS {name}")
    log.stage("NUTS psm_joint")
    joint_data = JointData(icl_data, sft_data)
    fits["psm_joint"] = _fit(psm_joint, joint_data, cfg, 20)
    log.done("NUTS psm_joint")

    # ------------------------------------------------------------ numbers
    log.stage("report")
    icl_cmp = _compare_table({n: fits[n] for n in ICL_MODELS})
    sft_cmp = _compare_table({n: fits[n] for n in SFT_MODELS})
    corr = {n: shift_correlation(fits[n], sft_data) for n in SFT_MODELS}
    results: dict[str, Any] = {
        "config": cfg.to_dict(),
        "model": {"key": loaded.key, "model_id": loaded.model_id},
        "sizes": {"personas": len(personas), "table_items": len(table_items), "icl_rows": len(icl_data),
                  "icl_curves": icl_data.n_curves, "sft_items": len(sft_data), "sft_train_examples": len(sft_train)},
        "prior": {"weights": dict(zip(personas.ids, map(float, pi))), "em_iterations": em.n_iter,
                  "em_converged": em.converged, "em_objective": float(em.loglik[-1]),
                  "persona_context": cfg.persona_context,
                  "persona_examples": {t: [probes.items.ids[i] for i in persona_idx[probes.trait[persona_idx] == t]]
                                       for t in cfg.traits}},
        "persona_separation": {
            mode: {"by_trait": {t: {k: float(v) for k, v in row.items()} for t, row in sep.iterrows()},
                   "mean_plus": float(sep["plus"].mean()), "mean_minus": float(sep["minus"].mean()),
                   "mean_separation": float(sep["separation"].mean()),
                   "prior": dict(zip(personas.ids, map(float, mode_priors[mode]))),
                   "prior_max_over_min": float(np.max(mode_priors[mode]) / np.min(mode_priors[mode]))}
            for mode, sep in separation.items()},
        "diagnostics": {n: fit_diagnostics(dt) for n, dt in fits.items()},
        "icl": {"loo": _cmp_records(icl_cmp),
                "extrapolation": {n: {k: float(v) for k, v in m.items()} for n, m in extrap.items()},
                "extrapolation_split": {"train_max_shots": int(train_d.n_shots.max()),
                                        "test_shots": sorted(map(int, np.unique(test_d.n_shots)))},
                "beta_icl": posterior_summary(fits["psm_icl"], "beta_icl"),
                "authorial_bias": posterior_summary(fits["psm_icl"], "authorial_bias")},
        "sft": {"loo": _cmp_records(sft_cmp),
                "correlation": {n: {"mean": c[0], "lo": c[1][0], "hi": c[1][1], "prob": 0.9} for n, c in corr.items()},
                "beta_sft": posterior_summary(fits["psm_sft"], "beta_sft"),
                "mean_shift": _shift_means(sft_meas, cfg.trained_trait),
                "losses": {str(k): v for k, v in sft_info["losses"].items()}},
        "joint": {n: posterior_summary(fits["psm_joint"], n) for n in ("beta_icl", "beta_sft", "authorial_bias")},
    }
    jb = fits["psm_joint"]["posterior"]
    ratio = np.asarray(jb["beta_sft"].values).ravel() / np.asarray(jb["beta_icl"].values).ravel()
    results["joint"]["p_beta_sft_gt_beta_icl"] = float(np.mean(ratio > 1))
    results["joint"]["beta_sft_over_beta_icl"] = {"median": float(np.median(ratio)),
                                                  "lo": float(np.quantile(ratio, 0.05)),
                                                  "hi": float(np.quantile(ratio, 0.95))}
    results["timings"] = dict(log.stages)
    res = ExperimentResult(out, results, fits, icl_data, sft_data, table, pi, icl_meas, sft_meas,
                           extra={"icl_compare": icl_cmp, "sft_compare": sft_cmp, "em": em, "sft_info": sft_info,
                                  "personas": personas, "config": cfg, "separation": separation,
                                  "tables": tables})
    report.write_report(res)
    log.done("report")
    results["timings"] = dict(log.stages)
    results["timings"]["total"] = round(time.perf_counter() - t_start, 2)
    report.write_json(out / "results.json", results)
    return res


def _cmp_records(table: Any) -> dict:
    cols = [c for c in ("rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "warning") if c in table.columns]
    out = {}
    for name, row in table[cols].iterrows():
        out[str(name)] = {c: (bool(row[c]) if c == "warning" else float(row[c])) for c in cols}
    return out


def _shift_means(meas: Any, trait: str) -> dict:
    m = meas.assign(group=np.where(meas["trained"], "trained items",
                                   np.where(meas["item_trait"] == trait, "held-out, same trait",
                                            "held-out, other traits")))
    g = m.groupby("group")["shift"].agg(["mean", "std", "count"])
    return {k: {"mean": float(r["mean"]), "sd": float(r["std"]) if np.isfinite(r["std"]) else 0.0,
                "n": int(r["count"])} for k, r in g.iterrows()}


def config_from_env(**overrides: Any) -> ExperimentConfig:
    """Notebook settings: ``ExperimentConfig.quick()`` (tiny) when ``PSM_BAYES_SMALL=1``, else ``small()``."""
    if os.environ.get("PSM_BAYES_SMALL", "") not in ("", "0"):
        return ExperimentConfig.quick(**overrides)
    return ExperimentConfig.small(**overrides)

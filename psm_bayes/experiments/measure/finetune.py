"""Stage 4 of the experiment: LoRA SFT on each pole of each SFT trait, as a dose-response.

Design
------
* **Episodes**: the design's SFT statements of each SFT trait
  (:meth:`~psm_bayes.experiments.design.Design.sft_episodes`, label-balanced,
  disjoint from every other role), formatted exactly as the probes are scored
  (``neutral context + fmt.item_text(prompt) + answer``) and answered as pole
  ``+`` (the matching answers) or pole ``-`` (the other answers on the
  identical statements).
* **Training** (:func:`lora_finetune`): rank ``r`` LoRA on every attention
  and MLP projection of a deep copy of a float32 model (the caller's model is
  never changed); AdamW with linear warm-up then cosine decay
  (:meth:`SFTSettings.lr_at`); every batch holds as many matching-Yes as
  matching-No statements (:func:`balanced_batches`), so no batch pushes a
  Yes/No drift; the loss is the cross-entropy of the answer token only (the
  output layer runs at the answer position only); bf16 autocast where bf16 is
  native, else float32.  One run per (SFT trait, pole, seed); both poles of a
  trait and seed see the same statements in the same order.
* **Dose-response**: at each step count in ``checkpoints`` the adapted model
  scores every evaluation item of every trait (condition
  ``sft:<trait><pole>:s<seed>:k<step>``): items of the SFT trait give the
  same-trait held-out contrast, items of the other traits the cross-trait
  contrasts (trained on A, measured on B).  The exact number of times each
  episode has been trained on is recorded (the SFT evidence counts).  The
  trained statements are measured too, separately (``trained_measurements``):
  they never enter a generalisation comparison.
* **Cross-prediction conditions**: after the last step, the fine-tuned model
  also answers its SFT trait's evaluation items after ``n`` shots of that
  trait's *opposite* pole (condition
  ``sft:<trait><pole>+icl<other>:s<seed>:o<o>:n<n>``): how many shots undo the
  fine-tune.  Every count of one ordering comes from one pass of its longest
  context (:func:`psm_bayes.llm.manyshot.score_nested`).

Each run is cached as ``.npy`` arrays keyed by the model, the episodes, the
settings and every prompt, so a rerun resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from psm_bayes.data import DataError
from psm_bayes.experiments.design import Design
from psm_bayes.experiments.measure.icl import POLES, measurement_rows
from psm_bayes.experiments.measure.lora import SFTSettings, lora_finetune
from psm_bayes.probes import OPTIONS


def sft_condition(trait: str, pole: str, seed: int, step: int) -> str:
    """The id of an SFT condition, e.g. ``sft:honesty+:s0:k16``."""
    return f"sft:{trait}{pole}:s{seed}:k{step}"


def cross_condition(trait: str, pole: str, seed: int, ordering: int, n: int) -> str:
    """The id of a fine-tune-then-opposite-shots condition, e.g. ``sft:honesty+icl-:s0:o0:n8``."""
    return f"sft:{trait}{pole}+icl{'-' if pole == '+' else '+'}:s{seed}:o{ordering}:n{n}"


@dataclass(frozen=True)
class SFTStage:
    """Output of :func:`run_sft`.

    Attributes
    ----------
    measurements : pandas.DataFrame
        Evaluation items under every SFT and cross condition, one row per
        (condition, item): ``condition``, ``kind`` (``sft``/``cross``),
        ``sft_trait`` (the trait fine-tuned), ``pole``, ``seed``, ``step``,
        ``n_shots``, ``ordering`` (``-1`` for ``sft``), ``item``, ``item_id``,
        ``item_trait``, ``matching``, ``logodds`` (of the matching answer).
    trained_measurements : pandas.DataFrame
        The same columns for each SFT trait's trained statements under its own
        runs (descriptive only), plus ``before`` (neutral log-odds before any
        fine-tuning), ``trained_answer_matches`` and ``toward_pole``
        (``logodds - before``, sign-flipped for pole ``-``: > 0 is a move toward the pole).
    evidence : dict
        ``(sft_trait, pole, seed, step) -> seen``: times each of
        ``design.sft_episodes(sft_trait)`` was trained on.
    losses : dict
        ``"<trait><pole>:s<seed>" -> [loss per step]``.
    info : dict
        ``autocast_bf16`` (whether training ran under bf16 autocast),
        ``seconds_per_step`` and ``measure_seconds`` (training seconds per
        step and measuring seconds per run, means over the runs, as timed when
        each was trained: a cached run keeps its time), ``cross_seconds`` (the
        part of the measuring spent on the cross conditions), the same in
        process CPU seconds (``cpu_...``: with one torch thread, close to the
        time on an idle core), ``runs_trained`` (by this call), ``runs_cached``.
    """

    measurements: pd.DataFrame
    trained_measurements: pd.DataFrame
    evidence: dict
    losses: dict
    info: dict = field(default_factory=dict)


def run_sft(loaded_fp32: Any, design: Design, settings: SFTSettings, checkpoints: Sequence[int], *,
            cache_dir: str | Path | None = None, batch_size: int = 16, progress: bool = True) -> SFTStage:
    """Fine-tune each pole of each SFT trait with each seed and measure at every checkpoint (module docstring).

    Parameters
    ----------
    loaded_fp32 : psm_bayes.llm.LoadedModel
        Float32 model (trained under bf16 autocast where that is native).
    design : Design
    settings : SFTSettings
        ``steps`` must equal the last checkpoint.
    checkpoints : sequence of int
    cache_dir : path, optional
    batch_size : int
        Prompts per scoring pass.
    progress : bool
    """
    from psm_bayes.experiments.measure.scoring import (ArrayCache, fewshot, matching_logodds, option_scorer, prompts_for,
                                               score_cached)
    from psm_bayes.llm.forward import model_device
    from psm_bayes.llm.loading import bf16_native

    if list(checkpoints) != sorted(set(checkpoints)) or checkpoints[-1] != settings.steps:
        raise DataError(f"sft_checkpoints: expected increasing steps ending at {settings.steps}, got {checkpoints}")
    fmt, probes = loaded_fp32.format, design.probes
    cache = ArrayCache(cache_dir)
    ev, m = design.eval_idx, probes.matching_option
    eval_texts = prompts_for(fmt, fmt.neutral_context(), probes, ev)
    neutral = option_scorer(loaded_fp32, autocast=True, batch_size=batch_size)
    rows, trained_rows, evidence, losses, timings, trained = [], [], {}, {}, [], 0
    for trait in design.sft_traits:
        tr = design.sft_episodes(trait)
        tr_texts = prompts_for(fmt, fmt.neutral_context(), probes, tr)   # the episodes, as the probes are scored
        before = matching_logodds(score_cached(neutral, cache, "sft-before-v2", loaded_fp32.key, tr_texts), m[tr])
        cross_items = ev[probes.trait[ev] == trait]
        cross_texts = [fmt.item_text(probes.items.prompts[i]) for i in cross_items]
        seqs = [s for s in design.sequences if s.trait == trait]
        counts = [n for n in design.n_values if n > 0]
        groups = [(s, n) for s in seqs for n in counts]
        for pole in POLES:
            answers = m[tr] if pole == "+" else 1 - m[tr]
            other = "-" if pole == "+" else "+"
            # per ordering, the nested opposite-pole contexts of every count (scored in one pass each)
            cross_contexts = [[fewshot(fmt, probes, s.items[:n], s.answers(other)[:n]) for n in counts]
                              for s in seqs]
            for seed in settings.seeds:
                key = cache.key("sft-v4", loaded_fp32.key, answers.tolist(), m[tr].tolist(),
                                asdict(settings) | {"seeds": None}, seed, list(checkpoints), eval_texts, tr_texts,
                                cross_contexts, cross_texts)
                names = ("eval", "trained", "seen", "loss", "cross", "time")
                got = {name: cache.get(f"{key}-{name}") for name in names}
                if any(v is None for v in got.values()):
                    got = _train_and_measure(loaded_fp32, tr_texts, answers, m[tr], seed, settings, checkpoints,
                                             eval_texts, (cross_contexts, cross_texts), batch_size, progress)
                    trained += 1
                    for name in names:
                        cache.put(f"{key}-{name}", got[name], "finetune.run_sft")
                timings.append(got["time"])
                losses[f"{trait}{pole}:s{seed}"] = [float(x) for x in got["loss"]]
                sign = 1.0 if pole == "+" else -1.0
                for j, step in enumerate(checkpoints):
                    evidence[(trait, pole, seed, step)] = got["seen"][j]
                    cond = sft_condition(trait, pole, seed, step)
                    extra = {"sft_trait": trait, "pole": pole, "seed": seed, "step": step, "n_shots": 0,
                             "ordering": -1}
                    rows += measurement_rows(cond, "sft", design, ev, matching_logodds(got["eval"][j], m[ev]),
                                             **extra)
                    lo = matching_logodds(got["trained"][j], m[tr])
                    trained_rows += [r | {"before": float(b), "trained_answer_matches": pole == "+",
                                          "toward_pole": sign * (float(x) - float(b))}
                                     for r, b, x in zip(measurement_rows(cond, "sft", design, tr, lo, **extra),
                                                        before, lo)]
                for g, (s, n) in enumerate(groups):
                    lp = got["cross"][g * len(cross_items):(g + 1) * len(cross_items)]
                    rows += measurement_rows(cross_condition(trait, pole, seed, s.ordering, n), "cross", design,
                                             cross_items, matching_logodds(lp, m[cross_items]), sft_trait=trait,
                                             pole=pole, seed=seed, step=checkpoints[-1], n_shots=n,
                                             ordering=s.ordering)
    t = np.asarray(timings).reshape(-1, 6).mean(0) if timings else np.full(6, np.nan)
    info = {"autocast_bf16": bool(bf16_native(model_device(loaded_fp32.model).type)),
            "seconds_per_step": float(t[0] / settings.steps), "measure_seconds": float(t[1]),
            "cpu_seconds_per_step": float(t[2] / settings.steps), "cpu_measure_seconds": float(t[3]),
            "cross_seconds": float(t[4]), "cpu_cross_seconds": float(t[5]),
            "runs_trained": trained, "runs_cached": len(losses) - trained}
    return SFTStage(pd.DataFrame(rows), pd.DataFrame(trained_rows), evidence, losses, info)


def _train_and_measure(loaded: Any, texts: list[str], answers: np.ndarray, strata: np.ndarray, seed: int,
                       settings: SFTSettings, checkpoints: Sequence[int], eval_texts: list[str],
                       cross: tuple[list[list[str]], list[str]], batch_size: int,
                       progress: bool) -> dict[str, np.ndarray]:
    """One LoRA run: Yes/No log-probabilities of the evaluation items and the episodes (``texts``) at every
    checkpoint and, at the end, of the cross items after each ordering's nested opposite-pole contexts
    (``cross = (contexts per ordering, item texts)``, every count of an ordering from one pass,
    :func:`psm_bayes.llm.manyshot.score_nested`), flattened ordering- then count-major."""
    from psm_bayes.experiments.measure.scoring import option_scorer
    from psm_bayes.llm.manyshot import score_nested

    out: dict[str, list] = {"eval": [], "trained": [], "seen": []}
    spent = np.zeros(4)                 # measuring (all, of which the cross conditions): wall and CPU seconds

    def measure(pm: Any, step: int, seen: np.ndarray) -> None:
        t0 = np.array([time.perf_counter(), time.process_time()])
        nts = option_scorer(loaded, model=pm, autocast=True, batch_size=batch_size)
        lp = nts.score(eval_texts + list(texts))          # one call: one shared prefix, full batches
        out["eval"].append(lp[:len(eval_texts)])
        out["trained"].append(lp[len(eval_texts):])
        out["seen"].append(seen)
        if step == checkpoints[-1]:
            contexts, items = cross
            t1 = np.array([time.perf_counter(), time.process_time()])
            out["cross"] = np.concatenate([np.zeros((0, 2))] + [score_nested(nts, c, items).reshape(-1, 2)
                                                                for c in contexts if c and items])
            spent[2:] += np.array([time.perf_counter(), time.process_time()]) - t1
        spent[:2] += np.array([time.perf_counter(), time.process_time()]) - t0

    t0 = np.array([time.perf_counter(), time.process_time()])
    options = tuple(loaded.format.option(o) for o in OPTIONS)
    pm, loss = lora_finetune(loaded.model, loaded.tokenizer, texts, answers, seed=seed, settings=settings,
                             options=options, strata=strata, checkpoints=checkpoints, on_checkpoint=measure,
                             progress=progress)
    total = np.array([time.perf_counter(), time.process_time()]) - t0
    del pm
    return {"eval": np.stack(out["eval"]), "trained": np.stack(out["trained"]), "seen": np.stack(out["seen"]),
            "loss": np.asarray(loss), "cross": np.asarray(out["cross"]),
            "time": np.array([total[0] - spent[0], spent[0], total[1] - spent[1], spent[1], spent[2], spent[3]])}

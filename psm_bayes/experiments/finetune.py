"""Stage 4 of the experiment: LoRA SFT on each pole of one trait, as a dose-response.

Design
------
* **Episodes**: the design's SFT statements (label-balanced), formatted
  exactly as the probes are scored (``neutral context + fmt.item_text(prompt) + answer``) and
  answered as pole ``+`` (the matching answers) or pole ``-`` (the other
  answers on the identical statements).  The loss is the cross-entropy of the
  answer token only.
* **LoRA**: rank ``r`` on every attention and MLP projection, AdamW, bf16
  autocast on a deep copy of a float32 model (the caller's model is never
  changed), one run per (pole, seed).
* **Dose-response**: at each step count in ``checkpoints`` the adapted model
  scores every evaluation item (condition ``sft<pole>:s<seed>:k<step>``), and
  the exact number of times each episode has been trained on is recorded
  (the SFT evidence counts).  Trained items are measured too, separately
  (``trained_measurements``): they never enter a generalisation comparison.
* **Cross-prediction conditions**: after the last step, the fine-tuned model
  also answers the SFT trait's evaluation items after ``n`` shots of the
  *opposite* pole (condition ``sft<pole>+icl<other>:s<seed>:o<o>:n<n>``):
  how many shots undo the fine-tune.

Each (pole, seed) run is cached as ``.npy`` arrays keyed by the model, the
episodes, the settings and every prompt, so a rerun resumes.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from psm_bayes.data import DataError
from psm_bayes.experiments.design import Design
from psm_bayes.experiments.icl import POLES, measurement_rows
from psm_bayes.probes import OPTIONS

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections that receive LoRA adapters."""


@dataclass(frozen=True)
class SFTSettings:
    """LoRA SFT hyper-parameters.

    Parameters
    ----------
    steps : int
        Optimiser steps per seed.
    batch_size : int
        Examples per step.
    lr : float
        AdamW learning rate.
    rank, alpha : int
        LoRA rank and scaling numerator (``alpha / rank``).
    dropout : float
        LoRA dropout.
    seeds : tuple of int
        One LoRA run per seed (adapter init and example order).
    """

    steps: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    seeds: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.rank < 1 or not self.seeds:
            raise ValueError(f"SFTSettings: steps, batch_size, rank >= 1 and at least one seed expected, got {self}")
        if not self.lr > 0:
            raise ValueError(f"SFTSettings.lr: expected > 0, got {self.lr}")


def _encode_examples(tokenizer: Any, texts: Sequence[str], answers: Sequence[str]) -> list[tuple[list[int], int]]:
    """Token ids of ``text + answer`` (with BOS) and the answer token's position."""
    out = []
    for text, ans in zip(texts, answers):
        ctx = list(tokenizer(text)["input_ids"])
        full = list(tokenizer(text + ans)["input_ids"])
        if full[:len(ctx)] != ctx or len(full) != len(ctx) + 1:
            raise DataError(f"answers: {ans!r} is not a single token after {text[-20:]!r}")
        out.append((full, len(ctx)))
    return out


def lora_finetune(model: Any, tokenizer: Any, texts: Sequence[str], answers: Sequence[str], *, seed: int,
                  settings: SFTSettings, checkpoints: Sequence[int] = (),
                  on_checkpoint: Callable[[Any, int, np.ndarray], None] | None = None,
                  progress: bool = False) -> tuple[Any, list[float]]:
    """LoRA-fine-tune a deep copy of ``model`` on ``text + answer`` episodes (loss on the answer token).

    At each step count in ``checkpoints``, ``on_checkpoint(model, step, seen)`` is called with the
    adapted model in eval mode and ``seen[e]``, how many times episode ``e`` has been trained on.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Float32 causal LM (not modified).
    tokenizer
    texts, answers : sequence of str
        Prompt (``item_text(...)``) and answer option text per episode.
    seed : int
    settings : SFTSettings
    checkpoints : sequence of int
        Steps at which ``on_checkpoint`` runs.
    on_checkpoint : callable, optional
    progress : bool

    Returns
    -------
    (peft.PeftModel, list of float)
        The adapted copy (eval mode) and the loss per step.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from psm_bayes.llm.forward import model_device, model_parts, pad_right
    from psm_bayes.llm.loading import bf16_native

    torch.manual_seed(seed)
    base = copy.deepcopy(model)
    if getattr(base, "hf_quantizer", None) is not None:  # GGUF loads: the loader should have done this
        base.hf_quantizer = None
    if hasattr(base.config, "quantization_config"):
        delattr(base.config, "quantization_config")
    cfg = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    pm = get_peft_model(base, cfg)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    data = _encode_examples(tokenizer, texts, answers)
    body, head, softcap = model_parts(pm)
    device = model_device(pm)  # LoRA trains where the model lives (load_model(device=...))
    # bf16 autocast only where bf16 is native: emulated bf16 on a CPU is ~40x slower than float32
    autocast = bf16_native(device.type)
    pad = int(tokenizer.pad_token_id or 0)
    rng = np.random.default_rng([seed, 4])
    order: list[int] = []
    losses = []
    seen = np.zeros(len(data), dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc=f"LoRA seed {seed}")
    try:
        for _ in range(settings.steps):
            while len(order) < settings.batch_size:
                order.extend(rng.permutation(len(data)).tolist())
            picked, order = order[:settings.batch_size], order[settings.batch_size:]
            np.add.at(seen, picked, 1)
            batch = [data[i] for i in picked]
            ids, mask = pad_right([seq for seq, _ in batch], pad, device)
            pos = torch.tensor([p - 1 for _, p in batch], device=device)
            tgt = torch.tensor([seq[p] for seq, p in batch], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                logits = head(hidden[torch.arange(len(batch), device=device), pos])
                if softcap is not None:
                    logits = torch.tanh(logits / softcap) * softcap
            loss = torch.nn.functional.cross_entropy(logits.float(), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) in checkpoints and on_checkpoint is not None:
                pm.eval()
                on_checkpoint(pm, len(losses), seen.copy())
                pm.train()
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
    pm.eval()
    return pm, losses


def sft_condition(pole: str, seed: int, step: int) -> str:
    """The id of an SFT condition."""
    return f"sft{pole}:s{seed}:k{step}"


def cross_condition(pole: str, seed: int, ordering: int, n: int) -> str:
    """The id of a fine-tune-then-opposite-shots condition."""
    return f"sft{pole}+icl{'-' if pole == '+' else '+'}:s{seed}:o{ordering}:n{n}"


@dataclass(frozen=True)
class SFTStage:
    """Output of :func:`run_sft`.

    Attributes
    ----------
    measurements : pandas.DataFrame
        Evaluation items under every SFT and cross condition: ``condition``,
        ``kind`` (``sft``/``cross``), ``pole``, ``seed``, ``step``,
        ``n_shots``, ``ordering``, ``item``, ..., ``logodds``.
    trained_measurements : pandas.DataFrame
        The same for the trained statements (descriptive only), with ``before``.
    evidence : dict
        ``(pole, seed, step) -> seen`` (times each episode was trained on).
    losses : dict
        ``"<pole>:s<seed>" -> [loss per step]``.
    """

    measurements: pd.DataFrame
    trained_measurements: pd.DataFrame
    evidence: dict
    losses: dict


def run_sft(loaded_fp32: Any, design: Design, settings: SFTSettings, checkpoints: Sequence[int], *,
            cache_dir: str | Path | None = None, batch_size: int = 16, progress: bool = True) -> SFTStage:
    """Fine-tune each pole with each seed and measure at every checkpoint (see the module docstring).

    Parameters
    ----------
    loaded_fp32 : psm_bayes.llm.LoadedModel
        Float32 model (trained under bf16 autocast).
    design : Design
    settings : SFTSettings
        ``steps`` must equal the last checkpoint.
    checkpoints : sequence of int
    cache_dir : path, optional
    batch_size : int
    progress : bool
    """
    from psm_bayes.experiments.scoring import (ArrayCache, fewshot, matching_logodds, option_scorer, prompts_for,
                                               score_cached)

    if list(checkpoints) != sorted(set(checkpoints)) or checkpoints[-1] != settings.steps:
        raise DataError(f"sft_checkpoints: expected increasing steps ending at {settings.steps}, got {checkpoints}")
    fmt, probes = loaded_fp32.format, design.probes
    cache = ArrayCache(cache_dir)
    ev, tr = design.eval_idx, design.sft_train
    m = probes.matching_option
    eval_texts = prompts_for(fmt, fmt.neutral_context(), probes, ev)
    tr_texts = prompts_for(fmt, fmt.neutral_context(), probes, tr)     # the episodes, as the probes are scored
    cross_items = ev[probes.trait[ev] == design.sft_trait]
    seqs = [s for s in design.sequences if s.trait == design.sft_trait]
    ns = [n for n in design.n_values if n > 0]
    before = matching_logodds(score_cached(option_scorer(loaded_fp32, autocast=True, batch_size=batch_size), cache,
                                           "sft-before-v2", loaded_fp32.key, tr_texts), m[tr])
    rows, trained_rows, evidence, losses = [], [], {}, {}
    for pole in POLES:
        answers = m[tr] if pole == "+" else 1 - m[tr]
        other = "-" if pole == "+" else "+"
        cross_texts = [prompts_for(fmt, fewshot(fmt, probes, s.items[:n], s.answers(other)[:n]), probes, cross_items)
                       for s in seqs for n in ns]
        for seed in settings.seeds:
            key = cache.key("sft-v2", loaded_fp32.key, answers.tolist(), asdict(settings) | {"seeds": None},
                            seed, list(checkpoints), eval_texts, tr_texts, cross_texts)
            got = {name: cache.get(f"{key}-{name}") for name in ("eval", "trained", "seen", "loss", "cross")}
            if any(v is None for v in got.values()):
                got = _train_and_measure(loaded_fp32, tr_texts, [fmt.option(OPTIONS[a]) for a in answers], seed,
                                         settings, checkpoints, eval_texts, tr_texts, cross_texts, batch_size,
                                         progress)
                for name, v in got.items():
                    cache.put(f"{key}-{name}", v)
            losses[f"{pole}:s{seed}"] = [float(x) for x in got["loss"]]
            for j, step in enumerate(checkpoints):
                evidence[(pole, seed, step)] = got["seen"][j]
                extra = {"pole": pole, "seed": seed, "step": step, "n_shots": 0, "ordering": -1}
                rows += measurement_rows(sft_condition(pole, seed, step), "sft", design, ev,
                                         matching_logodds(got["eval"][j], m[ev]), **extra)
                trained_rows += [r | {"before": float(b), "trained_answer_matches": pole == "+"} for r, b in
                                 zip(measurement_rows(sft_condition(pole, seed, step), "sft", design, tr,
                                                      matching_logodds(got["trained"][j], m[tr]), **extra), before)]
            for g, (s, n) in enumerate((s, n) for s in seqs for n in ns):
                lp = got["cross"][g * len(cross_items):(g + 1) * len(cross_items)]
                rows += measurement_rows(cross_condition(pole, seed, s.ordering, n), "cross", design, cross_items,
                                         matching_logodds(lp, m[cross_items]), pole=pole, seed=seed,
                                         step=checkpoints[-1], n_shots=n, ordering=s.ordering)
    return SFTStage(pd.DataFrame(rows), pd.DataFrame(trained_rows), evidence, losses)


def _train_and_measure(loaded: Any, texts: list[str], answers: list[str], seed: int, settings: SFTSettings,
                       checkpoints: Sequence[int], eval_texts: list[str], tr_texts: list[str],
                       cross_texts: list[list[str]], batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    """One LoRA run; Yes/No log-probabilities at every checkpoint and, at the end, under opposite shots."""
    from psm_bayes.experiments.scoring import option_scorer

    out: dict[str, list] = {"eval": [], "trained": [], "seen": []}

    def measure(pm: Any, step: int, seen: np.ndarray) -> None:
        nts = option_scorer(loaded, model=pm, autocast=True, batch_size=batch_size)
        out["eval"].append(nts.score(eval_texts))
        out["trained"].append(nts.score(tr_texts))
        out["seen"].append(seen)
        if step == checkpoints[-1]:
            flat = [t for group in cross_texts for t in group]
            out["cross"] = nts.score(flat) if flat else np.zeros((0, 2))

    pm, loss = lora_finetune(loaded.model, loaded.tokenizer, texts, answers, seed=seed, settings=settings,
                             checkpoints=checkpoints, on_checkpoint=measure, progress=progress)
    del pm
    return {"eval": np.stack(out["eval"]), "trained": np.stack(out["trained"]), "seen": np.stack(out["seen"]),
            "loss": np.asarray(loss), "cross": np.asarray(out["cross"])}

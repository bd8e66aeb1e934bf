"""Fine-tuning experiment: LoRA SFT on one trait pole, and the shift it causes everywhere.

Design
------
* **Episodes**: ``n_examples`` training statements of one trait (the SFT
  trait's training pool, see :func:`psm_bayes.experiments.design.sft_examples`),
  each formatted exactly as the probes are scored --
  ``item_text(prompt) + answer`` -- and answered with the positive pole's
  matching answer.  The loss is the cross-entropy of the answer token only
  (a response-only SFT loss; the output layer runs at those positions only).
* **LoRA**: rank ``r`` (default 8) on every attention and MLP projection,
  AdamW, bf16 autocast on a float32 copy of the model, ``steps`` steps of
  ``batch_size`` examples (reshuffled every epoch), one run per seed.  The
  base model is deep-copied before the adapter is injected, so the caller's
  model (and the dequantized model cached on disk) is never changed.
* **Measurement**: log-odds of the matching answer,
  ``logit p(match) = log p(match) - log p(other)`` (Yes/No), on the
  held-out items of every chosen trait plus a few training items (marked
  ``trained``), before (adapter off) and after SFT, with the same code path
  (:class:`~psm_bayes.llm.nexttoken.NextTokenScorer`, bf16
  autocast).  ``shift = after - before``, averaged over seeds.

Results are cached per seed (``.npy``, keyed by the model, the episodes, the
hyper-parameters and the probe prompts) so a rerun resumes.

:func:`build_sft_data` assembles
:class:`psm_bayes.models.sft_shift.SFTShiftData`: ``train_loglik[k]`` sums
the persona table's ``L[k, train item, trained answer]`` (renormalised over
Yes/No) once per training episode.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from psm_bayes.data import DataError
from psm_bayes.experiments.persona_table import table_lookup
from psm_bayes.probes import OPTIONS, ProbeSet

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
                  settings: SFTSettings, progress: bool = False) -> tuple[Any, list[float]]:
    """LoRA-fine-tune a deep copy of ``model`` on ``text + answer`` episodes (loss on the answer token).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Float32 causal LM (not modified).
    tokenizer
    texts, answers : sequence of str
        Prompt (``item_text(...)``) and answer option text per episode.
    seed : int
    settings : SFTSettings
    progress : bool

    Returns
    -------
    (peft.PeftModel, list of float)
        The adapted copy (eval mode) and the loss per step.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from psm_bayes.llm.forward import model_parts

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
    pad = int(tokenizer.pad_token_id or 0)
    rng = np.random.default_rng([seed, 4])
    order: list[int] = []
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc=f"LoRA seed {seed}")
    try:
        for _ in range(settings.steps):
            while len(order) < settings.batch_size:
                order.extend(rng.permutation(len(data)).tolist())
            batch, order = [data[i] for i in order[:settings.batch_size]], order[settings.batch_size:]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (seq, _) in enumerate(batch):
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
            pos = torch.tensor([p - 1 for _, p in batch])
            tgt = torch.tensor([seq[p] for seq, p in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                logits = head(hidden[torch.arange(len(batch)), pos])
                if softcap is not None:
                    logits = torch.tanh(logits / softcap) * softcap
            loss = torch.nn.functional.cross_entropy(logits.float(), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.close()
    pm.eval()
    return pm, losses


def _logodds(lp: np.ndarray, target: np.ndarray) -> np.ndarray:
    rows = np.arange(lp.shape[0])
    return lp[rows, target] - lp[rows, 1 - target]


def measure_sft(loaded: Any, probes: ProbeSet, train_items: np.ndarray, probe_idx: np.ndarray,
                settings: SFTSettings, *, cache_dir: str | Path | None = None, adapter_dir: str | Path | None = None,
                batch_size: int = 16, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run LoRA SFT per seed and measure the log-odds shift of every probe item.

    Parameters
    ----------
    loaded : psm_bayes.llm.LoadedModel
        Float32 model (trained under bf16 autocast).
    probes : ProbeSet
    train_items : array of int
        Training episodes (probe indices), answered with the matching answer.
    probe_idx : array of int
        Measured items (held-out items of every trait, plus some training items).
    settings : SFTSettings
    cache_dir : path, optional
        Per-seed result cache (resume).
    adapter_dir : path, optional
        Save each seed's adapter under ``adapter_dir/seed<k>`` (adapter weights only).
    batch_size : int
        Scoring batch.
    progress : bool

    Returns
    -------
    (pandas.DataFrame, dict)
        Per (seed, item): ``seed``, ``item`` (probe index), ``item_id``,
        ``item_trait``, ``trained``, ``target_option``, ``before``, ``after``,
        ``shift``; and ``{"losses": {seed: [...]}, "seconds": {seed: s}}``.
    """
    from psm_bayes.experiments.icl import ArrayCache
    from psm_bayes.llm.nexttoken import NextTokenScorer
    from psm_bayes.llm import prompts

    cache = ArrayCache(cache_dir)
    texts = [prompts.item_text(probes.items.prompts[i]) for i in train_items]
    answers = [OPTIONS[probes.matching_option[i]] for i in train_items]
    probe_texts = [prompts.item_text(probes.items.prompts[i]) for i in probe_idx]
    target = probes.matching_option[probe_idx].astype(int)
    base_key = cache.key("sft-before-v1", loaded.key, probe_texts)
    before_lp = cache.get(base_key)
    if before_lp is None:
        before_lp = NextTokenScorer(loaded.model, loaded.tokenizer, OPTIONS, batch_size=batch_size,
                                    autocast=True).score(probe_texts)
        cache.put(base_key, before_lp)
    before = _logodds(before_lp, target)
    trained_set = set(int(i) for i in train_items)
    rows, info = [], {"losses": {}, "seconds": {}}
    for seed in settings.seeds:
        key = cache.key("sft-after-v1", loaded.key, texts, answers, asdict(settings) | {"seeds": None}, seed,
                        probe_texts)
        loss_key = key + "-loss"
        after_lp, losses = cache.get(key), cache.get(loss_key)
        if after_lp is None or losses is None:
            t0 = time.perf_counter()
            pm, loss_list = lora_finetune(loaded.model, loaded.tokenizer, texts, answers, seed=seed,
                                          settings=settings, progress=progress)
            after_lp = NextTokenScorer(pm, loaded.tokenizer, OPTIONS, batch_size=batch_size,
                                       autocast=True).score(probe_texts)
            if adapter_dir is not None:
                pm.save_pretrained(str(Path(adapter_dir) / f"seed{seed}"))
            del pm
            losses = np.asarray(loss_list)
            cache.put(key, after_lp)
            cache.put(loss_key, losses)
            info["seconds"][seed] = time.perf_counter() - t0
        info["losses"][seed] = [float(x) for x in losses]
        after = _logodds(after_lp, target)
        for j, i in enumerate(probe_idx):
            rows.append({"seed": seed, "item": int(i), "item_id": probes.items.ids[i],
                         "item_trait": str(probes.trait[i]), "trained": int(i) in trained_set,
                         "target_option": int(target[j]), "before": float(before[j]), "after": float(after[j]),
                         "shift": float(after[j] - before[j])})
    return pd.DataFrame(rows), info


def build_sft_data(measurements: pd.DataFrame, probes: ProbeSet, train_items: np.ndarray, loglik: Any,
                   prior_weights: np.ndarray) -> Any:
    """:class:`~psm_bayes.models.sft_shift.SFTShiftData` from :func:`measure_sft` output (shift averaged over seeds).

    Parameters
    ----------
    measurements : pandas.DataFrame
    probes : ProbeSet
    train_items : array of int
        The training episodes.
    loglik : xarray.DataArray (persona, item, option)
        Persona table renormalised over options, covering the probe and training items.
    prior_weights : array (persona,)
    """
    from psm_bayes.models.sft_shift import SFTShiftData

    Lv, col = table_lookup(loglik, probes)

    agg = (measurements.groupby("item", sort=False)
           .agg(item_id=("item_id", "first"), item_trait=("item_trait", "first"), trained=("trained", "first"),
                target_option=("target_option", "first"), shift=("shift", "mean"))
           .reset_index())
    train_ll = sum(Lv[:, col(int(i)), int(probes.matching_option[i])] for i in train_items)
    return SFTShiftData(item=tuple(agg["item_id"]), trait=tuple(agg["item_trait"]),
                        target_loglik=np.stack([Lv[:, col(int(i)), :] for i in agg["item"]]),
                        target_option=agg["target_option"].to_numpy(), train_loglik=np.asarray(train_ll),
                        trained=agg["trained"].to_numpy(bool), prior_weights=np.asarray(prior_weights),
                        shift=agg["shift"].to_numpy(float),
                        personas=tuple(str(p) for p in loglik.coords["persona"].values))


# ---------------------------------------------------------------- the stage
@dataclass(frozen=True)
class SFTStage:
    """Output of :func:`run_sft`.

    Attributes
    ----------
    measurements : pandas.DataFrame
        :func:`measure_sft` rows (per seed and item).
    info : dict
        ``losses`` and ``seconds`` per seed.
    data : SFTShiftData
        :func:`build_sft_data` of the measurements.
    """

    measurements: pd.DataFrame
    info: dict
    data: Any


def run_sft(loaded_fp32: Any, design: Any, personas: Any, settings: SFTSettings, *,
            cache_dir: str | Path | None = None, adapter_dir: str | Path | None = None, batch_size: int = 16,
            progress: bool = True) -> SFTStage:
    """LoRA-fine-tune on the design's SFT episodes, measure the shifts and build the SFT data.

    Parameters
    ----------
    loaded_fp32 : psm_bayes.llm.LoadedModel
        Float32 model.
    design : Design
    personas : PersonaStage
    settings : SFTSettings
    cache_dir, adapter_dir : path, optional
    batch_size : int
    progress : bool
    """
    meas, info = measure_sft(loaded_fp32, design.probes, design.sft_train, design.sft_probe, settings,
                             cache_dir=cache_dir, adapter_dir=adapter_dir, batch_size=batch_size, progress=progress)
    data = build_sft_data(meas, design.probes, design.sft_train, personas.loglik, personas.prior_weights)
    return SFTStage(meas, info, data)

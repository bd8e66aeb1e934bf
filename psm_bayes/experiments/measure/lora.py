"""LoRA fine-tuning of a causal LM on answer-token episodes (the training half of the SFT stage).

* :class:`SFTSettings` -- steps, label-balanced batch size, AdamW peak learning rate with a linear
  warm-up then cosine (or linear) decay (:meth:`SFTSettings.lr_at`), LoRA rank / alpha / dropout,
  the answer loss and the seeds.  Defaults chosen by the documented sweep
  (``benchmarks/bench_sft_sweep.py``, ``benchmarks/sft_sweep.md``).
* :func:`balanced_batches` -- every batch holds as many episodes of each label (the stage balances
  the matching option: half the matching answers Yes), so no batch can push a Yes/No drift.
* :func:`lora_finetune` -- trains a LoRA-wrapped deep copy (the caller's model is never changed),
  calling back at checkpoints with the adapted model and the exact per-episode training counts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from psm_bayes.data import DataError

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections that receive LoRA adapters."""

SCHEDULES: tuple[str, ...] = ("cosine", "linear", "constant")
"""Learning-rate decay after the warm-up (to 0 at the last step; ``constant``: none)."""

LOSSES: tuple[str, ...] = ("options", "vocab")
"""Answer-token losses: cross-entropy over the two options (exactly minus the log-sigmoid of the trained
answer's log-odds, the quantity measured; needs two rows of the output layer) or over the full vocabulary."""


@dataclass(frozen=True)
class SFTSettings:
    """LoRA SFT hyper-parameters.

    Parameters
    ----------
    steps : int
        Optimiser steps per run (the last checkpoint).
    batch_size : int
        Episodes per step (even: every batch holds as many matching-Yes as matching-No statements).
    lr : float
        Peak AdamW learning rate (0: the untrained control, every step leaves the model as it was).
    warmup : float
        Fraction of the steps (rounded up) of linear warm-up to ``lr`` (0: none).
    schedule : {"cosine", "linear", "constant"}
        Decay after the warm-up (cosine and linear reach 0 one step after the last).
    loss : {"options", "vocab"}
        Cross-entropy of the answer over the two options or over the vocabulary (:data:`LOSSES`).
    rank, alpha : int
        LoRA rank and scaling numerator (``alpha / rank``).
    dropout : float
        LoRA dropout.
    seeds : tuple of int
        One LoRA run per seed (adapter init and batch order) for each SFT trait and pole.
    """

    steps: int = 12
    batch_size: int = 8
    lr: float = 5e-4
    warmup: float = 0.25
    schedule: str = "cosine"
    loss: str = "options"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rank < 1 or not self.seeds:
            raise ValueError(f"SFTSettings: steps, rank >= 1 and at least one seed expected, got {self}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"sft_batch_size: expected an even number >= 2 (label-balanced batches), "
                             f"got {self.batch_size}")
        if not self.lr >= 0:
            raise ValueError(f"sft_lr: expected >= 0 (0: the untrained control), got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"sft_warmup: expected a fraction of the steps in [0, 1), got {self.warmup}")
        if self.loss not in LOSSES:
            raise ValueError(f"sft_loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"sft_schedule: expected one of {SCHEDULES}, got {self.schedule!r}")

    @property
    def warmup_steps(self) -> int:
        """Steps of warm-up: ``ceil(warmup * steps)``."""
        return int(np.ceil(self.warmup * self.steps - 1e-9))

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        w = self.warmup_steps
        if step < w:
            return float(self.lr * (step + 1) / w)
        if self.schedule == "constant":
            return float(self.lr)
        p = (step - w) / (self.steps - w)        # 0 at the first decayed step, < 1 at the last
        return float(self.lr * (0.5 * (1 + np.cos(np.pi * p)) if self.schedule == "cosine" else 1 - p))


def balanced_batches(labels: Sequence[int], batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch_size)`` episode indices, each batch half of label 0 and half of label 1.

    Each label's episodes are cycled through in a fresh seeded permutation per
    pass, so after ``j`` full passes every episode of a label has been seen
    ``j`` times; the two halves of a batch are interleaved.

    Raises
    ------
    DataError
        If ``batch_size`` is odd or a label has no episode.
    """
    labels = np.asarray(labels, dtype=int)
    if batch_size % 2:
        raise DataError(f"sft_batch_size: expected an even number (label-balanced batches), got {batch_size}")
    rng = np.random.default_rng([seed, 4])
    half, streams = batch_size // 2, []
    for lab in (0, 1):
        pool = np.flatnonzero(labels == lab)
        if pool.size == 0:
            raise DataError(f"answers: label-balanced batches need episodes of both labels; none has label {lab}")
        need = steps * half
        order = np.concatenate([rng.permutation(pool) for _ in range(-(-need // pool.size))])[:need]
        streams.append(order.reshape(steps, half))
    out = np.empty((steps, batch_size), dtype=np.int64)
    out[:, 0::2], out[:, 1::2] = streams
    return out


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


def _peft_copy(model: Any, settings: SFTSettings) -> Any:
    """A LoRA-wrapped deep copy of ``model`` (the caller's model is never changed)."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(model)
    if getattr(base, "hf_quantizer", None) is not None:  # GGUF loads: the loader should have done this
        base.hf_quantizer = None
    if hasattr(base.config, "quantization_config"):
        delattr(base.config, "quantization_config")
    cfg = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    return get_peft_model(base, cfg)


def lora_finetune(model: Any, tokenizer: Any, texts: Sequence[str], answers: Sequence[int], *, seed: int,
                  settings: SFTSettings, options: Sequence[str] = (" Yes", " No"),
                  strata: Sequence[int] | None = None, checkpoints: Sequence[int] = (),
                  on_checkpoint: Callable[[Any, int, np.ndarray], None] | None = None,
                  progress: bool = False) -> tuple[Any, list[float]]:
    """LoRA-fine-tune a deep copy of ``model`` on ``text + options[answer]`` episodes.

    Every batch is label-balanced on ``strata`` (:func:`balanced_batches`);
    the learning rate follows :meth:`SFTSettings.lr_at` (AdamW, no weight decay).
    The loss is the cross-entropy of the answer token (``settings.loss``): the
    body runs on the whole episode, the output layer only at the answer
    position, and there only for the two options (``options``, in float32) or
    for the whole vocabulary (``vocab``).  The body runs under bf16 autocast
    where bf16 is native (:func:`psm_bayes.llm.loading.bf16_native`), else in float32.
    At each step count in ``checkpoints``, ``on_checkpoint(model, step, seen)``
    is called with the adapted model in eval mode and ``seen[e]``, how many
    times episode ``e`` has been trained on.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Float32 causal LM (not modified).
    tokenizer
    texts : sequence of str
        Prompt (``context + item_text(...)``) per episode.
    answers : sequence of int
        Option index answered per episode.
    seed : int
    settings : SFTSettings
    options : sequence of str
        Option texts (``fmt.option(o)``), each a single token after the prompts.
    strata : sequence of int, optional
        The 0/1 label each batch balances (default ``answers``; :func:`run_sft` passes the
        matching option, so both poles train on the identical statements in the identical order).
    checkpoints : sequence of int
    on_checkpoint : callable, optional
    progress : bool

    Returns
    -------
    (peft.PeftModel, list of float)
        The adapted copy (eval mode) and the loss per step.
    """
    import torch

    from psm_bayes.llm.forward import model_device, model_parts, pad_right
    from psm_bayes.llm.loading import bf16_native

    answers = np.asarray(answers, dtype=int)
    data = _encode_examples(tokenizer, texts, [options[a] for a in answers])
    option_ids = [_encode_examples(tokenizer, texts[:1], [o])[0][0][-1] for o in options]
    batches = balanced_batches(answers if strata is None else strata, settings.batch_size, settings.steps, seed)
    torch.manual_seed(seed)
    pm = _peft_copy(model, settings)
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: settings.lr_at(s) / settings.lr if settings.lr else 0.0)
    body, head, softcap = model_parts(pm)
    device = model_device(pm)  # LoRA trains where the model lives (load_model(device=...))
    autocast = bf16_native(device.type)   # emulated bf16 on a CPU is ~40x slower than float32
    pad = int(tokenizer.pad_token_id or 0)
    opt_rows = torch.tensor(option_ids, device=device)
    losses: list[float] = []
    seen = np.zeros(len(data), dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, unit="step", desc=f"LoRA seed {seed}")
    try:
        for picked in batches:
            np.add.at(seen, picked, 1)
            batch = [data[i] for i in picked]
            ids, mask = pad_right([seq for seq, _ in batch], pad, device)
            pos = torch.tensor([p - 1 for _, p in batch], device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
                h = hidden[torch.arange(len(batch), device=device), pos]
                if settings.loss == "vocab":
                    logits, tgt = head(h).float(), torch.tensor([seq[p] for seq, p in batch], device=device)
            if settings.loss == "options":
                logits = h.float() @ head.weight[opt_rows].float().T
                if getattr(head, "bias", None) is not None:
                    logits = logits + head.bias[opt_rows].float()
                tgt = torch.as_tensor(answers[picked], device=device)
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            loss = torch.nn.functional.cross_entropy(logits, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
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

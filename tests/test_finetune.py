"""LoRA SFT (psm_bayes.experiments.measure.lora): label-balanced batches, the schedule, and a real run that learns."""

from __future__ import annotations

import numpy as np
import pytest

from psm_bayes.data import DataError
from psm_bayes.experiments.measure.lora import SFTSettings, balanced_batches


def test_balanced_batches_half_each_label_and_equal_exposure():
    labels = np.array([0, 1] * 6 + [0, 0])               # 8 of label 0, 6 of label 1
    b = balanced_batches(labels, 4, 12, seed=3)
    assert b.shape == (12, 4)
    assert ((labels[b] == 0).sum(1) == 2).all()          # every batch: half label 0, half label 1
    # each label is cycled through in full passes: after 12 steps (24 draws per label) label 0's 8
    # episodes are seen 3 times each, label 1's 6 episodes 4 times each
    seen = np.bincount(b.ravel(), minlength=labels.size)
    assert set(seen[labels == 0]) == {3} and set(seen[labels == 1]) == {4}
    assert not np.array_equal(b, balanced_batches(labels, 4, 12, seed=4))      # seeded
    np.testing.assert_array_equal(b, balanced_batches(labels, 4, 12, seed=3))
    # the check can fail: batches of a plain seeded permutation are not all balanced
    perm = np.random.default_rng(0).permutation(labels.size)[:12].reshape(3, 4)
    assert not ((labels[perm] == 0).sum(1) == 2).all()
    with pytest.raises(DataError, match="sft_batch_size"):
        balanced_batches(labels, 3, 2, seed=0)
    with pytest.raises(DataError, match="label 1"):
        balanced_batches(np.zeros(4, int), 2, 2, seed=0)


def test_schedule_warms_up_then_decays_and_settings_name_fields():
    s = SFTSettings(steps=20, lr=2e-3, warmup=0.1, schedule="cosine")
    lrs = np.array([s.lr_at(k) for k in range(20)])
    assert s.warmup_steps == 2 and lrs[0] == pytest.approx(1e-3) and lrs[1] == lrs[2] == pytest.approx(2e-3)
    assert (np.diff(lrs[2:]) < 0).all() and 0 < lrs[-1] < 0.02 * s.lr           # decays to near 0
    lin = SFTSettings(steps=20, lr=2e-3, warmup=0.1, schedule="linear")
    assert lin.lr_at(11) == pytest.approx(1e-3)                                # halfway through the decay
    assert SFTSettings(steps=20, schedule="constant").lr_at(19) == SFTSettings().lr
    for kw, field in ((dict(batch_size=3), "sft_batch_size"), (dict(lr=-1.0), "sft_lr"),
                      (dict(warmup=1.0), "sft_warmup"), (dict(schedule="step"), "sft_schedule"),
                      (dict(loss="mse"), "sft_loss")):
        with pytest.raises(ValueError, match=f"^{field}"):
            SFTSettings(**kw)


@pytest.mark.llm
def test_lora_batches_are_label_balanced_and_training_beats_a_zero_learning_rate_run(gemma):
    """A real LoRA run on 8 statements: every batch half matching-Yes, trained statements move >= 1 nat
    toward the pole, and the same check fails for the zero-learning-rate control."""
    from psm_bayes.experiments.measure.lora import lora_finetune
    from psm_bayes.experiments.measure.scoring import matching_logodds, option_scorer
    from psm_bayes.probes import load_probes

    probes = load_probes(["honesty"], n_per_trait=8)
    m = probes.matching_option
    assert (m == 0).sum() == 4
    texts = [gemma.format.item_text(p) for p in probes.items.prompts]
    options = tuple(gemma.format.option(o) for o in ("Yes", "No"))
    before = matching_logodds(option_scorer(gemma, autocast=True).score(texts), m)
    params = {n: p.detach().clone() for n, p in list(gemma.model.named_parameters())[:3]}
    steps = 8

    def run(lr: float) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        seen, after = [], {}

        def record(pm, step, counts):
            seen.append(counts)
            if step == steps:
                after["lo"] = matching_logodds(option_scorer(gemma, model=pm, autocast=True).score(texts), m)

        settings = SFTSettings(steps=steps, batch_size=4, lr=lr, warmup=0.25, seeds=(0,))
        _, losses = lora_finetune(gemma.model, gemma.tokenizer, texts, m, seed=0, settings=settings,
                                  options=options, strata=m, checkpoints=range(1, steps + 1),
                                  on_checkpoint=record)
        return after["lo"] - before, seen, losses

    def learned(shift: np.ndarray) -> bool:
        return bool(shift.mean() >= 1.0 and (shift > 0).mean() >= 0.75)

    shift, seen, losses = run(1e-3)          # 4 passes over the 8 statements: measured +1.0 .. +4.9 nats
    batches = np.diff(np.stack([np.zeros(m.size, int)] + seen), axis=0)        # what each step trained on
    assert (batches.sum(1) == 4).all() and batches.max() == 1
    assert all((m[b == 1] == 0).sum() == 2 for b in batches)                  # half the matching answers Yes
    assert learned(shift), shift
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    zero, _, zero_losses = run(0.0)
    assert not learned(zero) and np.abs(zero).max() < 1e-6, zero               # the control fails the check
    assert shift.mean() > zero.mean() + 1.0
    for n, p in list(gemma.model.named_parameters())[:3]:
        assert bool((p == params[n]).all())                                   # the shared model is untouched

"""Plots of the experiment report (matplotlib, Agg backend; each written atomically as PNG).

Plots only: the numbers come from :mod:`psm_bayes.experiments.summary` and
the fits; the files are written through :func:`psm_bayes.io.atomic_path`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from psm_bayes.io import atomic_path


def _savefig(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _plt():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- plots
def _panels(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Any, Any]:
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def _errorbars(ax: Any, rows: list[dict], x: str, split: str, labels: dict) -> None:
    for key, label in labels.items():
        sel = sorted((r for r in rows if r[split] == key), key=lambda r: r[x])
        if sel:
            ax.errorbar([r[x] for r in sel], [r["mean"] for r in sel], yerr=[r["se"] for r in sel], marker="o",
                        capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.6)


def plot_contrasts(blocks: dict, path: Path) -> Path:
    """ICL contrast (t+ minus t- log-odds of the matching answer) vs shots, and the SFT dose-response, per model."""
    fig, axes = _panels(2 * len(blocks))
    labels = {True: "same trait", False: "other traits"}
    for j, (name, b) in enumerate(blocks.items()):
        ax = axes[2 * j]
        _errorbars(ax, b["icl"]["contrast"], "n_shots", "same_trait", labels)
        ax.set_xlabel("shots per pole")
        ax.set_ylabel("contrast (nats)")
        ax.set_title(f"{name}: ICL")
        ax.legend(fontsize=7)
        ax = axes[2 * j + 1]
        _errorbars(ax, b["sft"]["contrast"], "step", "same_trait", labels)
        ax.set_xlabel("LoRA steps")
        ax.set_title(f"{name}: SFT (+ minus - fine-tune)")
    fig.suptitle("Bias-cancelling contrasts (mean over items, +/- 1 se)")
    fig.tight_layout()
    return _savefig(fig, path)


def plot_cross(blocks: dict, path: Path) -> Path:
    """Fine-tuned model under opposite-pole shots: observed vs out-of-sample predictions."""
    have = {n: b["cross_prediction"] for n, b in blocks.items() if b.get("cross_prediction")}
    fig, axes = _panels(max(1, len(have)))
    for ax, (name, cp) in zip(axes, have.items()):
        for pole, color in (("+", "tab:blue"), ("-", "tab:orange")):
            rows = sorted((r for r in cp["by_pole_and_shots"] if r["fine_tuned_pole"] == pole),
                          key=lambda r: r["shots_of_other_pole"])
            x = [r["shots_of_other_pole"] for r in rows]
            ax.plot(x, [r["observed"] for r in rows], "o", color=color, label=f"observed (SFT {pole})")
            for m, style in (("persona_selection", "-"), ("response_bias", ":")):
                if rows and m in rows[0]:
                    ax.plot(x, [r[m] for r in rows], style, color=color, label=f"{m} (SFT {pole})")
                    ax.fill_between(x, [r[f"{m}_lo"] for r in rows], [r[f"{m}_hi"] for r in rows], color=color,
                                    alpha=0.1)
        ax.set_xlabel("shots of the opposite pole")
        ax.set_ylabel("log-odds of the matching answer")
        ax.set_title(name)
        ax.legend(fontsize=6)
    fig.suptitle("Cross-prediction: fine-tuned model under opposite-pole shots (90% intervals)")
    fig.tight_layout()
    return _savefig(fig, path)


def plot_losses(blocks: dict, path: Path) -> Path:
    """LoRA training loss per step, per model, pole and seed."""
    fig, axes = _panels(len(blocks), 4.0, 3.0)
    for ax, (name, b) in zip(axes, blocks.items()):
        for run, ls in b["sft"]["losses"].items():
            ax.plot(np.arange(1, len(ls) + 1), ls, marker=".", label=run)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.set_title(f"{name}: LoRA loss")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _savefig(fig, path)

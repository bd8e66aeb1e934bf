"""Plots of the experiment report (matplotlib, Agg backend; each written atomically as PNG).

Plots only: the numbers come from :mod:`psm_bayes.experiments.analysis.summary` and
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


def plot_sft_pairs(blocks: dict, path: Path) -> Path:
    """SFT dose-response per trait pair: rows the trait fine-tuned, columns the trait measured, one line per model.

    Each line is the mean over held-out items of (log-odds after the ``+`` fine-tune minus after the ``-``
    one) at each checkpoint, with its 90% interval (condition x item bootstrap) as a band.
    """
    rows_by = {n: b["sft"].get("by_trait_pair", []) for n, b in blocks.items()}
    trained = sorted({r["sft_trait"] for rs in rows_by.values() for r in rs})
    measured = sorted({r["item_trait"] for rs in rows_by.values() for r in rs})
    fig, axes = _grid(max(1, len(trained)), max(1, len(measured)), 2.8, 2.3)
    for i, t in enumerate(trained):
        for j, m in enumerate(measured):
            ax = axes[i, j]
            for k, (name, rs) in enumerate(rows_by.items()):
                pts = sorted((r for r in rs if r["sft_trait"] == t and r["item_trait"] == m), key=lambda r: r["step"])
                if not pts:
                    continue
                x = [r["step"] for r in pts]
                line, = ax.plot(x, [r["mean"] for r in pts], marker="o", ms=3, ls=MODEL_STYLES[k % len(MODEL_STYLES)],
                                label=name)
                ax.fill_between(x, [r["lo"] for r in pts], [r["hi"] for r in pts], color=line.get_color(), alpha=0.15)
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set_title(f"trained {t}\nmeasured {m}" + (" (same)" if t == m else ""), fontsize=7)
            ax.tick_params(labelsize=6)
            if i == len(trained) - 1:
                ax.set_xlabel("LoRA steps", fontsize=7)
            if j == 0:
                ax.set_ylabel("+ minus - fine-tune (nats)", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("SFT dose-response per trait pair (held-out items; band: 90% interval)", fontsize=9)
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


# ---------------------------------------------------------------- ICL curves and persona posteriors
POLE_COLORS = {"+": "tab:blue", "-": "tab:orange"}
MODEL_STYLES = ("-", "--", ":", "-.", (0, (1, 3)), (0, (5, 2, 1, 2)))


def shot_axis(n: Any) -> np.ndarray:
    """Shot counts on a log2 axis that keeps 0: ``0 -> 0``, ``n -> 1 + log2 n``."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 0, 1 + np.log2(np.maximum(n, 1)), 0.0)


def _shot_ticks(ax: Any, counts: list[int]) -> None:
    ax.set_xticks(shot_axis(counts))
    ax.set_xticklabels([str(c) for c in counts], fontsize=7)
    ax.set_xlabel("shots")


def _grid(rows: int, cols: int, width: float = 3.4, height: float = 2.8) -> tuple[Any, Any]:
    plt = _plt()
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes


def plot_icl_curves(blocks: dict, path: Path) -> Path:
    """Per model and trait: log-odds of the matching answer vs shots, both poles, observed and fitted.

    Observed: mean over the trait's evaluation items (after averaging orderings), a band of +/- 1 se
    over items, thin lines per ordering; fitted: each model's posterior mean of the same rows.
    """
    names = list(blocks)
    traits = sorted({r["trait"] for b in blocks.values() for r in b["icl"]["curves"]})
    fig, axes = _grid(len(names), max(1, len(traits)))
    for i, name in enumerate(names):
        curves = blocks[name]["icl"]["curves"]
        models = list(curves[0]["predicted"]) if curves else []
        for j, trait in enumerate(traits):
            ax = axes[i, j]
            counts: list[int] = []
            for pole, color in POLE_COLORS.items():
                rs = sorted((r for r in curves if r["trait"] == trait and r["pole"] == pole),
                            key=lambda r: r["n_shots"])
                if not rs:
                    continue
                n = [r["n_shots"] for r in rs]
                counts = sorted(set(counts) | set(n))
                x, y = shot_axis(n), np.array([r["mean"] for r in rs])
                se = np.nan_to_num(np.array([r["se"] for r in rs]))
                ax.fill_between(x, y - se, y + se, color=color, alpha=0.2, lw=0)
                ax.plot(x, y, "o", color=color, ms=3.5, label=f"observed t{pole}")
                n_ord = max(len(r["ordering_means"]) for r in rs)
                for o in range(n_ord if n_ord > 1 else 0):
                    pts = [(xx, r["ordering_means"][o]) for xx, r in zip(x, rs) if len(r["ordering_means"]) > o]
                    ax.plot(*zip(*pts), color=color, lw=0.6, alpha=0.5)
                for m, style in zip(models, MODEL_STYLES):
                    ax.plot(x, [r["predicted"][m] for r in rs], linestyle=style, color=color, lw=1.2,
                            label=m if pole == "+" else None)
            _shot_ticks(ax, counts)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{name}: {trait}", fontsize=9)
            if j == 0:
                ax.set_ylabel("log-odds of matching answer")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle("ICL curves on the shot trait's own evaluation items\ndots and band: mean +/- 1 se over items; "
                 "thin: orderings; lines: fitted models' posterior means", fontsize=9)
    fig.tight_layout()
    return _savefig(fig, path)


def plot_persona_posterior(blocks: dict, path: Path) -> Path:
    """PSM persona posterior ``q(k | context)`` vs shots, per model, pole (rows) and shot trait (columns), stacked."""
    plt = _plt()
    have = {n: b["icl"]["persona_posterior"] for n, b in blocks.items() if b["icl"].get("persona_posterior")}
    traits = sorted({r["trait"] for rows in have.values() for r in rows}) or [""]
    personas = list(dict.fromkeys(k for rows in have.values() for r in rows for k in r["q"]))
    cmap = plt.get_cmap("tab20")
    colors = {k: cmap(j % 20) for j, k in enumerate(personas)}
    keys = [(n, pole) for n in have for pole in POLE_COLORS] or [("", "+")]
    fig, axes = _grid(len(keys), len(traits))
    for i, (name, pole) in enumerate(keys):
        for j, trait in enumerate(traits):
            ax = axes[i, j]
            rs = sorted((r for r in have.get(name, []) if r["trait"] == trait and r["pole"] == pole),
                        key=lambda r: r["n_shots"])
            if rs:
                n = [r["n_shots"] for r in rs]
                ax.stackplot(shot_axis(n), *[[r["q"][k] for r in rs] for k in personas],
                             colors=[colors[k] for k in personas], labels=personas)
                _shot_ticks(ax, n)
            ax.set_ylim(0, 1)
            ax.set_title(f"{name}: {trait} shots, pole {pole}", fontsize=8)
            if j == 0:
                ax.set_ylabel("q(persona | context)")
    if personas:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle("Persona posterior q(k | context) of the fitted PSM\n(posterior mean over draws; mean over "
                 "orderings)", fontsize=9)
    fig.tight_layout()
    return _savefig(fig, path)

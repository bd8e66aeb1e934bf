"""Plots of the experiment report (matplotlib, Agg backend; each written atomically as PNG).

Plots only: the numbers come from :mod:`psm_bayes.experiments.summary` and
the fits; the files are written through :func:`psm_bayes.io.atomic_path`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

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
def plot_prior(personas: Sequence[str], weights: np.ndarray, path: Path) -> Path:
    """Bar chart of the EM pre-training prior."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(personas) + 1), 3))
    ax.bar(range(len(personas)), weights, color=["tab:blue" if p.endswith("+") else "tab:orange" for p in personas])
    ax.set_xticks(range(len(personas)), personas, rotation=60, ha="right")
    ax.set_ylabel("prior weight $\\pi_k$")
    ax.set_title("Pre-training prior (EM on neutral answers)")
    return _savefig(fig, path)


def _icl_groups(data: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Group rows by (shot trait, same/other trait, n): table of groups and a row -> group index."""
    shot = [c.split("->")[0] for c in data.curve]
    tgt = [c.split("->")[1] for c in data.curve]
    kind = np.where(np.array(shot) == np.array(tgt), "same trait", "other traits")
    df = pd.DataFrame({"shot_trait": shot, "target": kind, "n": data.n_shots})
    keys = list(dict.fromkeys(zip(df["shot_trait"], df["target"], df["n"])))
    lookup = {k: j for j, k in enumerate(keys)}
    gidx = np.array([lookup[k] for k in zip(df["shot_trait"], df["target"], df["n"])])
    groups = pd.DataFrame(keys, columns=["shot_trait", "target", "n"])
    return groups, gidx


def icl_group_bands(dt: Any, data: Any, groups: pd.DataFrame, gidx: np.ndarray, prob: float = 0.9,
                    max_draws: int = 400) -> pd.DataFrame:
    """Posterior mean and central interval of the group-averaged ``nll_mean``."""
    v = dt["posterior"]["nll_mean"]
    draws = np.asarray(v.values).reshape(-1, v.shape[-1])
    if draws.shape[0] > max_draws:
        draws = draws[np.linspace(0, draws.shape[0] - 1, max_draws).astype(int)]
    G = len(groups)
    M = np.zeros((draws.shape[1], G))
    M[np.arange(draws.shape[1]), gidx] = 1.0
    gm = draws @ M / M.sum(0, keepdims=True)
    lo, hi = np.quantile(gm, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return groups.assign(mean=gm.mean(0), lo=lo, hi=hi)


def plot_icl_curves(fits: dict, data: Any, path: Path, models: Sequence[str] = ("psm_icl", "bounded_power_law"),
                    split_n: float | None = None) -> Path:
    """Observed mean ``nll`` per (shot trait, same/other trait, n) with posterior bands of ``models``."""
    plt = _plt()
    groups, gidx = _icl_groups(data)
    obs = groups.copy()
    obs["mean"] = [data.nll[gidx == g].mean() for g in range(len(groups))]
    obs["sem"] = [data.nll[gidx == g].std() / max(1, np.sqrt((gidx == g).sum())) for g in range(len(groups))]
    traits = list(dict.fromkeys(groups["shot_trait"]))
    ncol = min(3, len(traits))
    nrow = int(np.ceil(len(traits) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False, sharey=True)
    colors = {"same trait": "tab:blue", "other traits": "tab:gray"}
    styles = {m: s for m, s in zip(models, ("-", "--", ":", "-."))}
    bands = {m: icl_group_bands(fits[m], data, groups, gidx) for m in models if m in fits}
    for ax, t in zip(axes.ravel(), traits):
        for kind, col in colors.items():
            o = obs[(obs.shot_trait == t) & (obs.target == kind)].sort_values("n")
            x = o["n"].to_numpy() + 0.5
            ax.errorbar(x, o["mean"], yerr=o["sem"], fmt="o", color=col, ms=4, capsize=2,
                        label=f"observed ({kind})")
            for m, b in bands.items():
                bb = b[(b.shot_trait == t) & (b.target == kind)].sort_values("n")
                xb = bb["n"].to_numpy() + 0.5
                ax.plot(xb, bb["mean"], styles[m], color=col, lw=1.2, label=f"{m} ({kind})")
                ax.fill_between(xb, bb["lo"], bb["hi"], color=col, alpha=0.15 if m == models[0] else 0.07)
        if split_n is not None:
            ax.axvline(split_n + 0.5, color="k", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"shots: {t}")
        ax.set_xlabel("n shots (+0.5, log scale)")
    for ax in axes[:, 0]:
        ax.set_ylabel("nll of matching answer")
    for ax in axes.ravel()[len(traits):]:
        ax.axis("off")
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("ICL curves: observed means (±SEM) and 90% posterior bands of the group mean")
    fig.tight_layout()
    fig.legend(h, lab, loc="center left", fontsize=7, bbox_to_anchor=(1.0, 0.5))
    return _savefig(fig, path)


def plot_sft_shifts(fits: dict, data: Any, path: Path, models: Sequence[str] = ("psm_sft", "null_sft")) -> Path:
    """Predicted (posterior mean, 90% interval of ``shift_mean``) vs observed shift per item."""
    from psm_bayes.posterior import predicted_vs_observed

    plt = _plt()
    ms = [m for m in models if m in fits]
    fig, axes = plt.subplots(1, len(ms), figsize=(4.4 * len(ms), 4), squeeze=False)
    traits = list(dict.fromkeys(data.trait))
    cmap = plt.get_cmap("tab10")
    for ax, m in zip(axes[0], ms):
        pv = predicted_vs_observed(fits[m], data)
        for j, t in enumerate(traits):
            for trained, marker in ((False, "o"), (True, "*")):
                sel = (pv["trait"] == t) & (pv["trained"] == trained)
                if not sel.any():
                    continue
                p = pv[sel]
                ax.errorbar(p["observed"], p["predicted"],
                            yerr=[p["predicted"] - p["mean_lo"], p["mean_hi"] - p["predicted"]],
                            fmt=marker, color=cmap(j % 10), ms=6 if trained else 4, alpha=0.8, capsize=1,
                            label=f"{t}{' (trained)' if trained else ''}")
        lim = [min(pv["observed"].min(), pv["mean_lo"].min()), max(pv["observed"].max(), pv["mean_hi"].max())]
        pad = 0.05 * (lim[1] - lim[0] + 1e-9)
        ax.plot([lim[0] - pad, lim[1] + pad], [lim[0] - pad, lim[1] + pad], "k:", lw=0.8)
        ax.set_xlabel("observed shift (log-odds of matching answer)")
        ax.set_ylabel("predicted shift")
        ax.set_title(m)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("SFT: predicted vs observed log-odds shifts (90% intervals of the mean)")
    fig.tight_layout()
    return _savefig(fig, path)


def plot_joint(dt: Any, path: Path) -> Path:
    """Posterior histograms of ``beta_icl``, ``beta_sft`` and ``authorial_bias`` (joint model)."""
    plt = _plt()
    post = dt["posterior"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, col in (("beta_icl", "tab:blue"), ("beta_sft", "tab:red")):
        x = np.asarray(post[name].values).ravel()
        axes[0].hist(x, bins=40, alpha=0.5, color=col, density=True, label=name)
    axes[0].set_xscale("log")
    axes[0].set_title("evidence strengths")
    axes[0].legend()
    axes[1].hist(np.asarray(post["authorial_bias"].values).ravel(), bins=40, color="tab:green", alpha=0.7,
                 density=True)
    axes[1].axvline(0, color="k", lw=0.6)
    axes[1].set_title("authorial_bias (toward Yes)")
    fig.suptitle("psm_joint posteriors")
    return _savefig(fig, path)


def plot_losses(losses: dict, path: Path) -> Path:
    """LoRA training loss per step and seed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for seed, ls in losses.items():
        ax.plot(np.arange(1, len(ls) + 1), ls, marker=".", label=f"seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("LoRA SFT loss")
    return _savefig(fig, path)

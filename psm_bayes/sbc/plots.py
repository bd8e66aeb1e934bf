"""SBC figures: rank histograms and ECDF-difference plots with the simultaneous band (matplotlib).

Each function returns a matplotlib Figure; :mod:`psm_bayes.sbc.store` writes them.
"""

from __future__ import annotations

import math

import numpy as np

from psm_bayes.sbc.ranks import ecdf_band
from psm_bayes.sbc.result import SBCResult


def _grid(n: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_ranks(result: SBCResult, bins: int | None = None, band: float = 0.99):
    """Rank histograms with a pointwise ``band`` binomial interval per bin."""
    from scipy.stats import binom

    L, R = result.num_draws, result.n_replicates
    bins = bins or int(max(2, min(20, R // 10, L + 1)))
    groups = np.array_split(np.arange(L + 1), bins)
    edges = np.array([g[0] for g in groups] + [L + 1])
    width = np.diff(edges) / (L + 1)
    lo = binom.ppf((1 - band) / 2, R, width)
    hi = binom.ppf(1 - (1 - band) / 2, R, width)
    fig, axes = _grid(len(result.params))
    for j, (ax, name) in enumerate(zip(axes, result.params)):
        counts = np.histogram(result.ranks[:, j], bins=edges)[0]
        ax.fill_between(edges[:-1], lo, hi, step="post", color="0.85", lw=0)
        ax.stairs(counts, edges, color="C0", lw=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
    fig.suptitle(f"SBC rank histograms: {result.model} ({R} replicates, L={L})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_ecdf(result: SBCResult, alpha: float = 0.01):
    """ECDF minus uniform CDF of the PIT values, with the simultaneous band of the test (arviz_stats)."""
    from arviz_stats.ecdf_utils import compute_ecdf

    pit = result.pit()
    prob = 1 - alpha / pit.shape[1]
    x, lo, hi = ecdf_band(pit.shape[0], round(prob, 12))
    fig, axes = _grid(len(result.params))
    for j, (ax, name) in enumerate(zip(axes, result.params)):
        diff = compute_ecdf(pit[:, j], x) - x
        ax.fill_between(x, lo - x, hi - x, color="0.85", lw=0, step="post")
        ax.step(x, diff, where="post", color="C3" if np.any((diff + x < lo) | (diff + x > hi)) else "C0", lw=1.2)
        ax.axhline(0, color="0.4", lw=0.5)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"SBC ECDF difference: {result.model} (simultaneous band, {prob:.4f} per parameter)",
                 fontsize=10)
    fig.tight_layout()
    return fig

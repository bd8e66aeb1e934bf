"""Rank statistics of SBC and the calibration decision: a simultaneous ECDF band from arviz_stats.

If inference is correct, the rank of each true value among ``L`` posterior
draws is uniform on ``{0, ..., L}``. The ranks become PIT values
``(rank + U) / (L + 1)`` with ``U ~ Uniform(0, 1)`` (a fixed-seed jitter that
makes them exactly continuous-uniform under correct inference), and their
ECDF is compared with the simultaneous band of
:func:`arviz_stats.ecdf_utils.ecdf_pit` (Säilynoja, Bürkner & Vehtari 2022:
the band holds the whole ECDF of a uniform sample with probability
``prob``). A parameter fails when its ECDF leaves the band anywhere. With
``P`` parameters each band has ``prob = 1 - alpha / P`` (Bonferroni), so a
correct sampler fails the whole test with probability at most ``alpha``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

import numpy as np

BAND_SIMULATIONS = 10_000
"""Uniform samples simulated for the band. Its level is a ``1 - alpha / P`` quantile (0.9983 for alpha
0.01 and 6 parameters), so 10,000 samples put ~17 beyond it. Measured: 2,000 sets of 6 uniform rank
columns (N = 100 and 500, L = 99 and 20) were rejected at alpha = 0.05 in 5.5-6% of sets. The band
costs ~2 s (N = 100) to ~7 s (N = 500) once per process and size."""


def flat_names(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Scalar parameter names: ``beta`` for a scalar site, ``w[0]``, ``w[1]``... for an array site."""
    out = []
    for k, shp in shapes.items():
        out += [k] if not shp else [f"{k}[{','.join(map(str, i))}]" for i in np.ndindex(*shp)]
    return out


def flatten(d: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], lead: int) -> np.ndarray:
    """Concatenate sites along a last axis of scalar parameters (``lead`` leading dims kept)."""
    return np.concatenate([np.asarray(d[k]).reshape(np.shape(d[k])[:lead] + (-1,)) for k in shapes], axis=-1)


def ranks_of(truth: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Rank of each true value among its draws: ``truth (R, P)``, ``draws (R, L, P)`` -> ``(R, P)`` in 0..L."""
    return (np.asarray(draws) < np.asarray(truth)[:, None, :]).sum(1)


def rank_pit(ranks: np.ndarray, num_draws: int, seed: int = 0) -> np.ndarray:
    """PIT values ``(rank + U) / (L + 1)`` of ranks on ``{0, ..., L}`` (``U`` uniform, fixed seed)."""
    ranks = np.asarray(ranks)
    if ranks.size and (ranks.min() < 0 or ranks.max() > num_draws):
        raise ValueError(f"ranks: expected integers in [0, {num_draws}], got [{ranks.min()}, {ranks.max()}]")
    return (ranks + np.random.default_rng(seed).random(ranks.shape)) / (num_draws + 1)


@lru_cache(maxsize=32)
def ecdf_band(n: int, prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simultaneous ``prob`` band of the ECDF of ``n`` uniform values (arviz_stats, fixed seed).

    Returns
    -------
    x, lower, upper : arrays (n - 1,)
        Evaluation points ``1/n, ..., (n-1)/n`` and the band's limits there.
    """
    from arviz_stats.ecdf_utils import ecdf_pit

    x, _, lo, hi = ecdf_pit(np.linspace(0, 1, n), prob, BAND_SIMULATIONS, rng=np.random.default_rng(214))
    return x[1:-1], lo[1:-1], hi[1:-1]


def ecdf_test(pit: np.ndarray, alpha: float = 0.01) -> dict[str, np.ndarray]:
    """Simultaneous-band uniformity test of PIT values, one column per parameter (Bonferroni over columns).

    Parameters
    ----------
    pit : array (replicate, param)
        PIT values in (0, 1).
    alpha : float
        Family-wise level: a correct sampler fails with probability <= ``alpha``.

    Returns
    -------
    dict
        ``reject`` (bool per param); ``excess`` (per param: the largest
        ratio, over the evaluation points, of the ECDF's distance from the
        uniform CDF to the band's half-width on that side; above 1 means
        outside the band); ``band_prob`` (the band probability used).
    """
    from arviz_stats.ecdf_utils import compute_ecdf

    pit = np.asarray(pit, dtype=float)
    if pit.ndim != 2 or pit.shape[0] < 2:
        raise ValueError(f"pit: expected an array (replicate >= 2, param), got shape {pit.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    prob = 1 - alpha / pit.shape[1]
    x, lo, hi = ecdf_band(pit.shape[0], round(prob, 12))
    excess = np.empty(pit.shape[1])
    for j in range(pit.shape[1]):
        dev = compute_ecdf(pit[:, j], x) - x
        room = np.where(dev >= 0, hi - x, x - lo)
        excess[j] = np.max(np.abs(dev) / np.maximum(room, 1e-12))
    # excess > 1 exactly when the ECDF is strictly beyond a band limit somewhere
    reject = excess > 1
    return {"reject": reject, "excess": excess, "band_prob": prob}


def contraction(truth: np.ndarray, post_sd: np.ndarray, log_scale: np.ndarray | None = None) -> np.ndarray:
    """Posterior sd / prior sd per parameter: mean posterior sd over replicates / sd of the true values.

    The true values are prior draws, so their sd estimates the prior sd.
    0 means the data pin the parameter down; 1 means the posterior is the
    prior. Where ``log_scale`` is True (a positive parameter) both sds are
    taken on the log scale: ``post_sd`` must then be the posterior sd of the
    log draws (:func:`contraction_scale`). Returns an array (param,).
    """
    truth = np.asarray(truth, dtype=float)
    if log_scale is not None:
        truth = np.where(log_scale, np.log(np.where(log_scale, truth, 1.0)), truth)
    prior_sd = np.std(truth, axis=0, ddof=1)
    return np.mean(np.asarray(post_sd, dtype=float), axis=0) / np.where(prior_sd > 0, prior_sd, np.nan)


def contraction_scale(truth: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scale on which contraction is measured, and the posterior sd there.

    A parameter whose true values (prior draws) and posterior draws are all
    positive and not all below 1 (LogNormal, HalfNormal, Gamma priors; not
    simplex weights or probabilities, whose sd is bounded) is measured on the
    log scale, where its prior is close to normal: on the natural scale
    the sd of a few hundred LogNormal draws is dominated by the largest ones,
    and a posterior that pins down ``log beta`` to a tenth of its prior sd can
    still report "contraction" above 1. Ranks (and so calibration) do not
    depend on this choice.

    Parameters
    ----------
    truth : array (replicate, param)
    draws : array (replicate, draw, param)

    Returns
    -------
    log_scale : bool array (param,)
    post_sd : array (replicate, param)
        Posterior sd on that scale.
    """
    truth, draws = np.asarray(truth, dtype=float), np.asarray(draws, dtype=float)
    log_scale = (truth > 0).all(0) & (draws > 0).all((0, 1)) & ((truth > 1).any(0) | (draws > 1).any((0, 1)))
    u = np.where(log_scale, np.log(np.where(log_scale, draws, 1.0)), draws)
    return log_scale, u.std(1, ddof=1)

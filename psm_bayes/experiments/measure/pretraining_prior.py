"""The PSM pre-training prior from the persona table (EM on the neutral answers).

The neutral model is read as a mixture of the personas (the PSM's
pre-training prior ``pi``)::

    p_neutral(o | i)  ~=  sum_k pi_k p(o | i, k)

with ``p`` renormalised over each item's options.  :func:`em_prior_weights`
finds the ``pi`` maximising the expected log-likelihood of the neutral
answers,

    F(pi) = sum_i sum_o q_i(o) log sum_k pi_k p(o | i, k),   q_i = p_neutral(. | i),

by EM (a minimum-KL projection of the neutral answer distributions onto the
persona mixtures): E-step ``r_iok = pi_k p(o|i,k) / sum_j pi_j p(o|i,j)``,
M-step ``pi_k = (sum_io q_io r_iok + a) / (I + K a)``, where ``a`` is an
optional pseudo-count (a MAP estimate under ``Dirichlet(1 + a)``) that keeps
every weight positive -- the PSM's ``Dirichlet(concentration * pi)`` needs
``pi_k > 0``.  ``F`` is concave in ``pi``, so EM converges to the global
maximum (monotonically; the log-likelihood trace is returned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax, logsumexp

from psm_bayes.data import DataError


@dataclass(frozen=True)
class EMResult:
    """Result of :func:`em_prior_weights`.

    Attributes
    ----------
    weights : numpy.ndarray
        ``pi`` (persona,), sums to one.
    loglik : numpy.ndarray
        ``F(pi)`` after each iteration (non-decreasing without a pseudo-count).
    n_iter : int
        Iterations run.
    converged : bool
        Whether the largest weight change fell below ``tol``.
    """

    weights: np.ndarray
    loglik: np.ndarray
    n_iter: int
    converged: bool


def em_prior_weights(persona_loglik: np.ndarray, neutral_loglik: np.ndarray, *, n_iter: int = 500,
                     tol: float = 1e-10, pseudo_count: float = 0.0, init: np.ndarray | None = None) -> EMResult:
    """Mixture weights ``pi`` that best explain the neutral answers as a mixture of persona answers.

    Parameters
    ----------
    persona_loglik : array (persona, item, option)
        ``log p(o | i, k)`` (renormalised over options here).
    neutral_loglik : array (item, option)
        ``log p_neutral(o | i)`` (renormalised over options here).
    n_iter : int
        Maximum EM iterations (a few hundred are plenty).
    tol : float
        Stop when ``max |pi_new - pi| < tol``.
    pseudo_count : float
        ``a >= 0`` added to every persona's expected count (MAP under a
        ``Dirichlet(1 + a)`` prior); keeps weights away from zero.
    init : array (persona,), optional
        Starting weights (default uniform).

    Returns
    -------
    EMResult
    """
    L = np.asarray(persona_loglik, dtype=float)
    N = np.asarray(neutral_loglik, dtype=float)
    if L.ndim != 3:
        raise DataError(f"persona_loglik: expected (persona, item, option), got shape {L.shape}")
    K, I, O = L.shape
    if N.shape != (I, O):
        raise DataError(f"neutral_loglik: expected shape {(I, O)} (item, option), got {N.shape}")
    for name, arr in (("persona_loglik", L), ("neutral_loglik", N)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: expected finite log-probabilities")
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count: expected >= 0, got {pseudo_count}")
    logp = log_softmax(L, axis=-1)                  # (K, I, O)
    q = np.exp(log_softmax(N, axis=-1))             # (I, O)
    pi = np.full(K, 1.0 / K) if init is None else np.asarray(init, dtype=float) / np.sum(init)
    trace = []
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        joint = np.log(np.clip(pi, 1e-300, None))[:, None, None] + logp   # (K, I, O)
        mix = logsumexp(joint, axis=0)                                     # (I, O)
        trace.append(float(np.sum(q * mix)))
        resp = np.exp(joint - mix[None])                                   # (K, I, O)
        counts = np.einsum("io,kio->k", q, resp)
        new = (counts + pseudo_count) / (I + K * pseudo_count)
        delta = float(np.max(np.abs(new - pi)))
        pi = new
        if delta < tol:
            converged = True
            break
    mix = logsumexp(np.log(np.clip(pi, 1e-300, None))[:, None, None] + logp, axis=0)
    trace.append(float(np.sum(q * mix)))
    return EMResult(pi / pi.sum(), np.asarray(trace), it, converged)


def prior_from_table(table: Any, *, n_iter: int = 500, pseudo_count: float = 1.0) -> EMResult:
    """:func:`em_prior_weights` on a persona table from :func:`score_persona_table`."""
    L = table["loglik"].transpose("persona", "item", "option").values
    N = table["neutral_loglik"].transpose("item", "option").values
    return em_prior_weights(L, N, n_iter=n_iter, pseudo_count=pseudo_count)

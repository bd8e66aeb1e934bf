"""The persona-selection maths, written once for numpy, JAX and torch.

Every function takes an :class:`Ops` (``NUMPY``, :func:`jax_ops` or
:func:`torch_ops`) so the NumPyro model, the Pyro model and the numpy
simulator evaluate literally the same expressions; the conformance test
checks the resulting log joints agree in float64.

Notation: ``L[k, i, o] = log p(option o | item i, persona k)`` from the base
model; ``w`` the assistant persona weights; ``beta_s`` the evidence strength
(tempering exponent) of source ``s`` (0 = sft, 1 = icl); ``b`` the shared
authorial bias along ``d[i, o]``. A persona answers item ``i`` with

    p_s(o | i, k) = softmax_o(beta_s * L[k, i, o] + b * d[i, o])

and the assistant, marginalising over personas, with

    p_s(o | i) = sum_k w_k p_s(o | i, k)      (logsumexp in log space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Ops:
    """The few array primitives the maths needs, for one array library."""

    name: str
    logsumexp: Callable[[Any, int], Any]
    log_softmax: Callable[[Any, int], Any]
    log: Callable[[Any], Any]
    stack: Callable[[list], Any]
    expm1: Callable[[Any], Any]


def _numpy_ops() -> Ops:
    import numpy as np
    from scipy.special import log_softmax, logsumexp

    return Ops("numpy", lambda x, a: logsumexp(x, axis=a), lambda x, a: log_softmax(x, axis=a), np.log, np.stack,
               np.expm1)


def jax_ops() -> Ops:
    """Ops over ``jax.numpy``."""
    import jax
    import jax.numpy as jnp

    return Ops("jax", lambda x, a: jax.scipy.special.logsumexp(x, axis=a),
               lambda x, a: jax.nn.log_softmax(x, axis=a), jnp.log, jnp.stack, jnp.expm1)


def torch_ops() -> Ops:
    """Ops over ``torch``."""
    import torch

    return Ops("torch", lambda x, a: torch.logsumexp(x, dim=a), lambda x, a: torch.log_softmax(x, dim=a),
               torch.log, torch.stack, torch.expm1)


NUMPY = _numpy_ops()


def persona_log_probs(ops: Ops, loglik, beta, bias=None, bias_direction=None):
    """``log p_beta(o | i, k)``: tempered, biased, renormalised persona answers.

    Parameters
    ----------
    loglik : array (K, I, O)
    beta : scalar or array broadcasting against ``(K, I, O)``
    bias : scalar, optional
        Authorial bias; with ``bias_direction (I, O)``.
    """
    z = beta * loglik
    if bias is not None:
        z = z + bias * bias_direction
    return ops.log_softmax(z, -1)


def assistant_log_probs(ops: Ops, log_w, loglik, beta, bias=None, bias_direction=None):
    """``log p_beta(o | i) = logsumexp_k(log w_k + log p_beta(o | i, k))``, shape ``(I, O)``."""
    lp = persona_log_probs(ops, loglik, beta, bias, bias_direction)
    return ops.logsumexp(log_w[:, None, None] + lp, 0)


def episode_logits(ops: Ops, log_w, loglik, item_index, source_index, beta_sft, beta_icl,
                   bias=None, bias_direction=None):
    """Per-episode log-probabilities of each option, shape ``(N, O)``.

    The (source, item) table is computed once (cost ``O(K I O)``) and then
    gathered per episode (``O(N O)``), so the cost is linear in ``N + K*I``.
    """
    table = ops.stack([
        assistant_log_probs(ops, log_w, loglik, beta_sft, bias, bias_direction),
        assistant_log_probs(ops, log_w, loglik, beta_icl, bias, bias_direction),
    ])
    return table[source_index, item_index]


def episode_responsibilities(ops: Ops, log_w, loglik, item_index, source_index, option, beta_sft, beta_icl,
                             bias=None, bias_direction=None):
    """``p(persona k | episode e)``, shape ``(N, K)``, for observed options."""
    lp = ops.stack([
        persona_log_probs(ops, loglik, beta_sft, bias, bias_direction),
        persona_log_probs(ops, loglik, beta_icl, bias, bias_direction),
    ])  # (2, K, I, O)
    per = lp[source_index, :, item_index, option]  # (N, K)
    joint = log_w[None, :] + per
    return joint - ops.logsumexp(joint, 1)[:, None]

"""The persona-selection family's generative model, written once for NumPyro, Pyro and numpy.

:func:`model_body` takes a :class:`PPL` (the few primitives of one
probabilistic-programming library: ``sample``, ``plate``, ``deterministic``,
distributions and array maths), so the NumPyro model, the Pyro model and the
numpy simulator run literally the same code with the same site names. All
maths is in log space (``logsumexp`` over personas; no discrete latent sites).

Per condition ``c`` every model builds logits ``eta[c, i, o]`` and answers
``log p(o | i, c) = log_softmax_o(eta[c, i, o])``:

* ``persona_selection`` / ``permuted_personas``:
  ``eta = log sum_k q(k | c) p(o | i, k) + authorial_bias * bias_direction[i, o]``
  with ``log q(. | c) = log_softmax(log pi + beta_sft <S_c, L> + beta_icl <E_c, L>)``
  (``permuted_personas`` uses the persona table permuted within traits);
* nulls: ``eta = log sum_k pi_k p(o | i, k) + shift[c, i] * [o matches]``, the
  item's zero-shot (no-evidence) answers plus a shift of the matching answer:
  none (``response_bias``), ``(same_trait_shift * net_same + other_trait_shift
  * net_other) / (n_c + half_dose)`` (``trait_indicator``) or
  ``similarity_shift * (similarity @ net) / (n_c + half_dose)`` (``similarity``),
  where ``net`` counts matching minus other evidence answers per item and
  ``n_c`` all evidence of the condition;
* every model adds ``response_bias[type(c)] * [o is Yes]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from psm_bayes.models import maths
from psm_bayes.models.selection import MODELS, PERSONA_MODELS, Priors, SelectionData

NULL_SHIFTS: dict[str, tuple[str, ...]] = {
    "trait_indicator": ("same_trait_shift", "other_trait_shift"),
    "similarity": ("similarity_shift",),
}


@dataclass(frozen=True)
class PPL:
    """What :func:`model_body` needs from one library.

    ``sample(name, dist, obs=None)``, ``plate(name, size)`` (context manager),
    ``deterministic(name, value)``, ``dist`` (namespace with ``Dirichlet``,
    ``LogNormal``, ``Normal``, ``HalfNormal``, ``StudentT``, ``Categorical``),
    ``ops`` (:class:`psm_bayes.models.maths.Ops`), ``einsum``, ``asarray``
    (float64 array) and ``index`` (integer array).
    """

    ops: maths.Ops
    einsum: Callable
    asarray: Callable
    index: Callable
    dist: Any
    sample: Callable
    plate: Callable
    deterministic: Callable


# ----------------------------------------------------------------- maths
def persona_posterior(P: PPL, log_pi, L, sft, icl, beta_sft, beta_icl):
    """``log q(k | c)``, shape ``(condition or 1, persona)``: prior times evidence^beta, normalised."""
    z = log_pi[None, :]
    if beta_sft is not None:
        z = z + beta_sft * P.einsum("cio,kio->ck", sft, L)
    if beta_icl is not None:
        z = z + beta_icl * P.einsum("cio,kio->ck", icl, L)
    return z - P.ops.logsumexp(z, 1)[:, None]


def mixture_log_probs(P: PPL, log_q, L):
    """``log sum_k q(k | c) p(o | i, k)``, shape ``(condition, item, option)``."""
    return P.ops.logsumexp(log_q[:, :, None, None] + L[None], 1)


def option_log_probs(P: PPL, eta, yes, type_matrix, response_bias=None, bias=None, bias_direction=None):
    """``log_softmax_o`` of ``eta`` plus the Yes offset of each condition's type and the authorial bias."""
    if response_bias is not None:
        eta = eta + P.einsum("cg,g->c", type_matrix, response_bias)[:, None, None] * yes[None]
    if bias is not None:
        eta = eta + bias * bias_direction[None]
    return P.ops.log_softmax(eta, -1)


def matching_logodds(P: PPL, logp, match, other_mask):
    """Log-odds of the matching option, shape ``(condition, item)``.

    ``match`` is the ``(item, option)`` one-hot of the matching option and
    ``other_mask`` is ``0`` on the other options and ``-inf`` on it.
    """
    return (logp * match[None]).sum(-1) - P.ops.logsumexp(logp + other_mask[None], -1)


# ----------------------------------------------------------------- model
def _persona_core(P: PPL, pr: Priors, data: SelectionData, log_pi, L):
    d, t = P.dist, P.asarray
    beta = {}
    for src in ("sft", "icl"):
        if getattr(data, f"has_{src}"):
            beta[src] = P.sample(f"beta_{src}", d.LogNormal(t(pr.beta_loc), t(pr.beta_scale)))
    log_q = persona_posterior(P, log_pi, L, t(data.sft_evidence), t(data.icl_evidence),
                              beta.get("sft"), beta.get("icl"))
    return mixture_log_probs(P, log_q, L)


def _null_core(P: PPL, pr: Priors, name: str, data: SelectionData, log_pi, L):
    d, t = P.dist, P.asarray
    base = mixture_log_probs(P, log_pi[None, :], L)
    if name not in NULL_SHIFTS:
        return base
    half = P.sample("half_dose", d.LogNormal(t(pr.half_dose_loc), t(pr.half_dose_scale)))
    coef = P.ops.stack([P.sample(n, d.Normal(t(0.0), t(pr.shift_scale))) for n in NULL_SHIFTS[name]])
    total = t(data.evidence_net[1])
    shift = P.einsum("f,fci->ci", coef, t(data.null_features(name))) / (total + half)[:, None]
    return base + shift[:, :, None] * t(data.onehot(data.matching_option))[None]


def log_probs(P: PPL, name: str, data: SelectionData, priors: Priors | None):
    """Sample every latent site of model ``name``; return ``log p(o | i, c)``, shape ``(condition, item, option)``."""
    if name not in MODELS:
        raise ValueError(f"name: unknown persona-selection family model {name!r}; expected one of {MODELS}")
    pr = priors or Priors()
    d, t = P.dist, P.asarray
    K = data.n_personas
    L = t(data.permuted_loglik(pr.permutation_seed) if name == "permuted_personas" else data.loglik)
    if data.prior_weights is None:
        pi = P.sample("prior_weights", d.Dirichlet(t(np.full(K, pr.prior_weights_concentration))))
    else:
        pi = t(data.prior_weights)
    log_pi = P.ops.log(pi)
    bias = None
    if name in PERSONA_MODELS:
        eta = _persona_core(P, pr, data, log_pi, L)
        if data.bias_direction is not None:
            bias = P.sample("authorial_bias", d.Normal(t(0.0), t(pr.bias_scale)))
    else:
        eta = _null_core(P, pr, name, data, log_pi, L)
    eta = eta + t(np.zeros((data.n_conditions, 1, 1)))
    rb = None
    if data.bias_types:
        with P.plate("condition_type", len(data.bias_types)):
            rb = P.sample("response_bias", d.Normal(t(0.0), t(pr.response_bias_scale)))
    return option_log_probs(P, eta, t(data.onehot(data.yes_option)), t(data.type_matrix), rb, bias,
                            None if bias is None else t(data.bias_direction))


def observe(P: PPL, data: SelectionData, priors: Priors | None, logp) -> None:
    """The observation sites: ``y`` (plate ``episode``) and ``logodds`` (plate ``measurement``)."""
    pr = priors or Priors()
    d, t, ix = P.dist, P.asarray, P.index
    if data.has_episodes:
        cond, item, opt = data.episodes
        with P.plate("episode", len(cond)):
            P.sample("y", d.Categorical(logits=logp[ix(cond), ix(item)]), obs=None if opt is None else ix(opt))
    if data.has_measurements:
        uniq, pos = data.measured_items
        item_sd = P.sample("item_sd", d.HalfNormal(t(pr.item_sd_scale)))
        with P.plate("measured_item", len(uniq)):
            z = P.sample("item_z", d.Normal(t(0.0), t(1.0)))
        match = data.onehot(data.matching_option)
        lo = matching_logodds(P, logp, t(match), t(np.where(match > 0, -np.inf, 0.0)))
        mean = lo[ix(data.measurement_condition), ix(data.measurement_item)] + item_sd * z[ix(pos)]
        P.deterministic("logodds_mean", mean)
        sd = P.sample("logodds_sd", d.HalfNormal(t(pr.logodds_sd_scale)))
        noise = d.Normal(mean, sd) if pr.logodds_df is None else d.StudentT(t(pr.logodds_df), mean, sd)
        with P.plate("measurement", len(data.measurement_condition)):
            P.sample("logodds", noise, obs=None if data.logodds is None else t(data.logodds))


def model_body(P: PPL, name: str, data: SelectionData, priors: Priors | None = None) -> None:
    """Model ``name`` of the family in the library of ``P`` (see the module docstring)."""
    observe(P, data, priors, log_probs(P, name, data, priors))


def make_model(P: PPL, backend: str, name: str) -> Callable:
    """The model function ``name(data, priors=None)`` of the family in one backend, with its ModelSpec."""
    from psm_bayes.models import selection as sel
    from psm_bayes.models.base import ModelSpec, psm_model

    spec = ModelSpec(name=name, backend=backend, observed=sel.OBSERVED, dims=sel.DIMS, coords=SelectionData.coords,
                     unobserve=SelectionData.unobserve, observed_values=SelectionData.observed_values,
                     deterministic=sel.DETERMINISTIC, with_observed=SelectionData.with_observed)

    def model(data: SelectionData, priors: Priors | None = None) -> None:
        model_body(P, name, data, priors)

    model.__name__ = model.__qualname__ = name
    model.__doc__ = f"{sel.DESCRIPTIONS[name]} ({backend}); see :mod:`psm_bayes.models.selection`."
    return psm_model(spec)(model)

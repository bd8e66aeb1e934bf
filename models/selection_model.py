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
  * net_other) / (n_c + half_dose)`` (``trait_indicator``),
  ``profile_shift * (profile_similarity @ net) / (n_c + half_dose)``
  (``profile_similarity``), ``surface_shift * (surface_similarity @ net) /
  (n_c + half_dose)`` (``surface_similarity``) or ``generic_shift * sum(net) /
  (n_c + half_dose)`` (``generic_shift``: every item alike), where ``net``
  counts matching minus other evidence answers per item and ``n_c`` all
  evidence of the condition;
* ``encompassing``: the PSM's ``eta`` plus the ``surface_similarity`` shift
  (see :func:`persona_share` for its ``persona_weight``);
* every model adds ``drift[c] * [o is Yes]``, the per-condition Yes offset
  ``drift[c] ~ Normal(response_bias[type(c)], drift_sd[type(c)])``
  (:func:`drift_offsets`; none on ``base`` conditions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from psm_bayes.models import maths
from psm_bayes.models.selection import ENCOMPASSING, MODELS, PERSONA_MODELS, Priors, SelectionData

NULL_SHIFTS: dict[str, tuple[str, ...]] = {
    "trait_indicator": ("same_trait_shift", "other_trait_shift"),
    "profile_similarity": ("profile_shift",),
    "surface_similarity": ("surface_shift",),
    "generic_shift": ("generic_shift",),
}
"""Null model (evidence features of :meth:`SelectionData.null_features`) -> its shift coefficient sites."""


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


def option_log_probs(P: PPL, eta, yes, drift=None, bias=None, bias_direction=None):
    """``log_softmax_o`` of ``eta`` plus each condition's Yes offset ``drift[c]`` and the authorial bias."""
    if drift is not None:
        eta = eta + drift[:, None, None] * yes[None]
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
def _persona_core(P: PPL, pr: Priors, data: SelectionData, log_pi, L, cols=None):
    d, t = P.dist, P.asarray
    beta = {}
    for src in ("sft", "icl"):
        if getattr(data, f"has_{src}"):
            beta[src] = P.sample(f"beta_{src}", d.LogNormal(t(pr.beta_loc), t(pr.beta_scale)))
    log_q = persona_posterior(P, log_pi, L, t(data.sft_evidence), t(data.icl_evidence),
                              beta.get("sft"), beta.get("icl"))
    return mixture_log_probs(P, log_q, L if cols is None else L[:, P.index(cols)])


def evidence_shift(P: PPL, pr: Priors, name: str, data: SelectionData):
    """``shift[c, i]`` of the matching answer of null ``name`` (sampling ``half_dose`` and its coefficients)."""
    d, t = P.dist, P.asarray
    half = P.sample("half_dose", d.LogNormal(t(pr.half_dose_loc), t(pr.half_dose_scale)))
    coef = P.ops.stack([P.sample(n, d.Normal(t(0.0), t(pr.shift_scale))) for n in NULL_SHIFTS[name]])
    total = t(data.evidence_net[1])
    return P.einsum("f,fci->ci", coef, t(data.null_features(name))) / (total + half)[:, None]


def drift_offsets(P: PPL, pr: Priors, data: SelectionData):
    """``drift[c]``, the Yes offset of each condition, shape ``(condition,)`` (``None`` when all are ``base``).

    ``drift ~ Normal(response_bias[g], drift_sd[g])`` with ``g = type(c)``, one per condition other than
    ``base`` (plate ``drift_condition``), written centred: each condition is measured on every evaluation
    item, so its offset is well identified by the data, where a centred hierarchy mixes well (the
    non-centred form took NUTS from 15 to 203 leapfrog steps per iteration on data of the default ICL design,
    ``benchmarks/README.md``). The offsets and the item effects share one weakly pinned direction, so
    NUTS gives them a dense mass-matrix block (:data:`psm_bayes.models.selection.DENSE_MASS`). Zero on
    ``base`` conditions. With ``pr.condition_drift`` off: ``response_bias[g]`` alone (no ``drift_sd`` or
    ``drift`` sites).
    """
    if not data.bias_types:
        return None
    d, t = P.dist, P.asarray
    T = data.type_matrix
    with P.plate("condition_type", len(data.bias_types)):
        rb = P.sample("response_bias", d.Normal(t(0.0), t(pr.response_bias_scale)))
        sd = P.sample("drift_sd", d.HalfNormal(t(pr.drift_sd_scale))) if pr.condition_drift else None
    if sd is None:
        return P.einsum("cg,g->c", t(T), rb)
    idx = data.drift_conditions
    Td = t(T[idx])
    with P.plate("drift_condition", len(idx)):
        drift = P.sample("drift", d.Normal(P.einsum("cg,g->c", Td, rb), P.einsum("cg,g->c", Td, sd)))
    scatter = np.zeros((data.n_conditions, len(idx)))
    scatter[idx, np.arange(len(idx))] = 1.0
    return P.einsum("cd,d->c", t(scatter), drift)


def persona_share(P: PPL, data: SelectionData, base, persona, surface, match, other_mask, cols=None):
    """``persona_weight``: the persona term's share of the evidence-driven change of the matching log-odds.

    Over every observed (condition, item) pair, ``d_p`` is the change the
    persona term makes (PSM's mixture minus the zero-shot answers ``base``)
    and ``d_s`` the change the surface term adds on top of it; the weight is
    ``sum d_p^2 / (sum d_p^2 + sum d_s^2)`` in ``[0, 1]``.

    Why a share and not a sampled mixing weight: in ``w * persona + (1 - w)
    * surface_shift * features`` only the product ``(1 - w) * surface_shift``
    enters the likelihood, and ``w`` trades off against ``beta`` along the
    persona term's saturating dose-response, so a sampled ``w`` is not
    identified. The share is a deterministic function of ``beta_sft``,
    ``beta_icl``, ``surface_shift`` and ``half_dose``, which the label-balanced
    design identifies (the persona term moves items by the persona table,
    the surface term by text similarity), so it inherits their calibration:
    the SBC of ``encompassing`` ranks it like any other parameter.
    """
    cond, item = data.observed_pairs
    if not len(cond):
        cond, item = (a.ravel() for a in np.indices((data.n_conditions, data.n_items)))
    if cols is not None:                                  # the arrays hold the columns ``cols`` only
        item = np.searchsorted(cols, item)
    lo = lambda eta: matching_logodds(P, eta, match, other_mask)  # noqa: E731  (normalising cancels)
    with_persona = lo(persona)
    d_p = (with_persona - lo(base))[P.index(cond), P.index(item)]
    d_s = (lo(persona + surface) - with_persona)[P.index(cond), P.index(item)]
    ss_p, ss_s = (d_p ** 2).sum(), (d_s ** 2).sum()
    return P.deterministic("persona_weight", ss_p / (ss_p + ss_s + 1e-12))


def log_probs(P: PPL, name: str, data: SelectionData, priors: Priors | None, items: np.ndarray | None = None):
    """Sample every latent site of model ``name``; return ``log p(o | i, c)``, shape ``(condition, item, option)``.

    ``items`` (increasing item indices): compute these columns only, shape ``(condition, len(items), option)``.
    The persona posterior still weighs every evidence item; the fits pass the observed items
    (:attr:`SelectionData.observed_items`), since the mixture over personas is the model's largest term
    and a real design has far more evidence items (shots, SFT episodes) than measured ones.
    """
    if name not in MODELS:
        raise ValueError(f"name: unknown persona-selection family model {name!r}; expected one of {MODELS}")
    pr = priors or Priors()
    d, t = P.dist, P.asarray
    K = data.n_personas
    cols = None if items is None else np.asarray(items, dtype=np.int64)
    sub = (lambda a: a) if cols is None else (lambda a: a[cols])           # numpy (item, ...) arrays
    L = t(data.permuted_loglik(pr.permutation_seed) if name == "permuted_personas" else data.loglik)
    L_out = L if cols is None else L[:, P.index(cols)]
    if data.prior_weights is None:
        pi = P.sample("prior_weights", d.Dirichlet(t(np.full(K, pr.prior_weights_concentration))))
    else:
        pi = t(data.prior_weights)
    log_pi = P.ops.log(pi)
    base = mixture_log_probs(P, log_pi[None, :], L_out)
    match = sub(data.onehot(data.matching_option))
    bias = None
    if name in PERSONA_MODELS or name == ENCOMPASSING:
        eta = _persona_core(P, pr, data, log_pi, L, cols)
        if data.bias_direction is not None:
            bias = P.sample("authorial_bias", d.Normal(t(0.0), t(pr.bias_scale)))
        if name == ENCOMPASSING:
            shift = evidence_shift(P, pr, "surface_similarity", data)
            shift = shift if cols is None else shift[:, P.index(cols)]
            surface = shift[:, :, None] * t(match)[None]
            persona_share(P, data, base, eta, surface, t(match), t(np.where(match > 0, -np.inf, 0.0)), cols)
            eta = eta + surface
    elif name in NULL_SHIFTS:
        shift = evidence_shift(P, pr, name, data)
        shift = shift if cols is None else shift[:, P.index(cols)]
        eta = base + shift[:, :, None] * t(match)[None]
    else:
        eta = base
    eta = eta + t(np.zeros((data.n_conditions, 1, 1)))
    return option_log_probs(P, eta, t(sub(data.onehot(data.yes_option))), drift_offsets(P, pr, data), bias,
                            None if bias is None else t(sub(data.bias_direction)))


def observe(P: PPL, data: SelectionData, priors: Priors | None, logp, items: np.ndarray | None = None) -> None:
    """The observation sites: ``y`` (plate ``episode``) and ``logodds`` (plate ``measurement``).

    ``items``: the item columns ``logp`` holds (:func:`log_probs`), default every item.
    """
    pr = priors or Priors()
    d, t, ix = P.dist, P.asarray, P.index
    col = (lambda i: i) if items is None else (lambda i: np.searchsorted(items, i))
    if data.has_episodes:
        cond, item, opt = data.episodes
        with P.plate("episode", len(cond)):
            P.sample("y", d.Categorical(logits=logp[ix(cond), ix(col(item))]), obs=None if opt is None else ix(opt))
    if data.has_measurements:
        uniq, pos = data.measured_items
        item_sd = P.sample("item_sd", d.HalfNormal(t(pr.item_sd_scale)))
        with P.plate("measured_item", len(uniq)):             # centred: each item is in every condition
            effect = P.sample("item_effect", d.Normal(t(0.0), item_sd))
        match = data.onehot(data.matching_option)
        match = match if items is None else match[items]
        lo = matching_logodds(P, logp, t(match), t(np.where(match > 0, -np.inf, 0.0)))
        mean = lo[ix(data.measurement_condition), ix(col(data.measurement_item))] + effect[ix(pos)]
        P.deterministic("logodds_mean", mean)
        sd = P.sample("logodds_sd", d.HalfNormal(t(pr.logodds_sd_scale)))
        noise = d.Normal(mean, sd) if pr.logodds_df is None else d.StudentT(t(pr.logodds_df), mean, sd)
        with P.plate("measurement", len(data.measurement_condition)):
            P.sample("logodds", noise, obs=None if data.logodds is None else t(data.logodds))


def model_body(P: PPL, name: str, data: SelectionData, priors: Priors | None = None) -> None:
    """Model ``name`` of the family in the library of ``P`` (see the module docstring)."""
    items = data.observed_items
    observe(P, data, priors, log_probs(P, name, data, priors, items), items)


def make_model(P: PPL, backend: str, name: str) -> Callable:
    """The model function ``name(data, priors=None)`` of the family in one backend, with its ModelSpec."""
    from psm_bayes.models import selection as sel
    from psm_bayes.models.base import ModelSpec, psm_model

    spec = ModelSpec(name=name, backend=backend, observed=sel.OBSERVED, dims=sel.DIMS, coords=SelectionData.coords,
                     unobserve=SelectionData.unobserve, observed_values=SelectionData.observed_values,
                     deterministic=sel.DETERMINISTIC, with_observed=SelectionData.with_observed,
                     dense_mass=sel.DENSE_MASS)

    def model(data: SelectionData, priors: Priors | None = None) -> None:
        model_body(P, name, data, priors)

    model.__name__ = model.__qualname__ = name
    model.__doc__ = f"{sel.DESCRIPTIONS[name]} ({backend}); see :mod:`psm_bayes.models.selection`."
    return psm_model(spec)(model)

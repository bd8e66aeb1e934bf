"""In-context learning (ICL) curves: data, shared maths and extrapolation helpers.

One row of :class:`ICLData` is one measurement: a prompt holding ``n_shots``
demonstrations (Yes/No answers to other probe items, all consistent with one
trait), followed by a held-out probe item. The observation is

    nll_r = -log p(matching answer | n shots, held-out item),

with ``p`` renormalised over the item's options (Yes/No), so ``nll > 0``.

Four models explain these curves (NumPyro backend in
:mod:`psm_bayes.models.icl_curves_numpyro`; all observe ``nll`` in plate
``measurement`` with the positive ``nll ~ LogNormal(log nll_mean, sigma)``
(multiplicative noise, median ``nll_mean``), so every prior-predictive draw is
a valid measurement, and record the deterministic ``nll_mean``). The curve
laws also carry a response bias when the data names each row's matching
answer (``target_option``): ``response_bias`` shifts the log-odds of "Yes"
(see :func:`with_response_bias`); ``psm_icl`` has it inside the personas'
answers (``authorial_bias``):

* ``psm_icl`` -- the persona selection model. With ``L[k, i, o]`` the base
  model's ``log p(option o | item i, persona k)`` and ``pi`` the
  pre-training prior over personas, the shots re-weight personas by Bayes'
  rule tempered by ``beta_icl``::

      w_rk = softmax_k(log pi_k + beta_icl * shot_loglik[r, k])
      p_r(o) = sum_k w_rk softmax_o(L[k, i_r, o] + authorial_bias * d_o)
      nll_mean_r = -log p_r(target_option_r)

  where ``d`` is one-hot on the Yes option (``o = 0``, :data:`YES_OPTION`):
  ``authorial_bias`` is one logit offset towards "Yes" shared by every
  persona and item (an acquiescence bias of the assistant "author"), not an
  offset towards the matching answer (which would be unidentifiable from
  the persona terms).
* ``bayesian_icl_law`` -- Arora et al. (2024), "Bayesian scaling laws for
  in-context learning" (arXiv:2410.16531), with M = 2 latent tasks per curve
  (the target task, prior ``rho_c``; one other task)::

      p_c(n) = [rho_c P_c^(K n) p_c + (1 - rho_c) Q_c^(K n) q_c]
               / [rho_c P_c^(K n) + (1 - rho_c) Q_c^(K n)]

  ``P_c > Q_c`` are the per-shot probabilities of the demonstrations under
  the two tasks (``Q_c = P_c u_c``, ``u_c in (0, 1)``), ``K`` the shared ICL
  efficiency, ``p_c, q_c`` the probabilities of the held-out answer under
  each task. The paper's law (their eq. for the expected probability of the
  next example, ``sum_m rho_m P_m^(Kn+1) / sum_m rho_m P_m^(Kn)``) scores the
  next example with the same per-example probabilities, i.e. ``p_c = P_c``
  and ``q_c = Q_c``: that is the default here
  (``ICLPriors.separate_target=False``); ``separate_target=True`` frees
  ``p_target`` and ``q`` (then ``K`` is identified only through its prior).
  Computed in log space with ``logsumexp``.
* ``power_law`` -- ``nll_c(n) = C_c (n + 1)^(-alpha_c)``.
* ``bounded_power_law`` -- Anil et al. (2024), many-shot jailbreaking:
  ``nll_c(n) = C_c (1 + n / n_inf_c)^(-alpha_c) + K_c``.

Maths functions take an :class:`~psm_bayes.models.maths.Ops` so the NumPyro
model and numpy checks evaluate the same expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace as dc_replace
from typing import Sequence

import numpy as np

from psm_bayes.validation import (DataError, as_str_tuple, check_finite, check_int_array, check_logprob, check_option,
                                  check_personas, check_priors, check_prior_weights, check_unique, fail)
from psm_bayes.models.maths import Ops

YES_OPTION = 0
"""Index of the "Yes" option, the direction of ``authorial_bias``."""

DIMS: dict[str, list[str]] = {
    "nll": ["measurement"],
    "nll_mean": ["measurement"],
    "C": ["curve"],
    "alpha": ["curve"],
    "n_inf": ["curve"],
    "K_floor": ["curve"],
    "rho": ["curve"],
    "P": ["curve"],
    "u": ["curve"],
    "Q": ["curve"],
    "p_target": ["curve"],
    "q": ["curve"],
}
"""ArviZ dims of every site of the ICL models (a model uses a subset)."""

PSM_FIELDS = ("shot_loglik", "target_loglik", "target_option", "prior_weights")


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class ICLData:
    """ICL-curve measurements, validated at construction.

    Parameters
    ----------
    curve : sequence of str
        Curve id of each row (e.g. ``"trait/held-out item"``).
    n_shots : array of int
        Number of demonstrations in the prompt of each row (``>= 0``).
    nll : array of float, optional
        Observed ``-log p(matching answer)``, renormalised over the item's
        options (``> 0``); ``None`` asks a model for its prior predictive.
    shot_loglik : array (row, persona), optional
        ``sum`` over the row's shots of ``L[k, shot item, shot answer]``;
        exactly 0 on rows with ``n_shots == 0``.
    target_loglik : array (row, persona, option), optional
        ``L[k, held-out item, :]`` of each row.
    target_option : array of int (row,), optional
        Index of the matching answer of the held-out item.
    prior_weights : array (persona,), optional
        Pre-training prior over personas ``pi``.
    curves : sequence of str, optional
        Order of the ``curve`` coordinate (default: order of first
        appearance). Give the parent's order to subsets (:meth:`subset`
        does) so per-curve parameters line up between fit and prediction.
    personas : sequence of str, optional
        Persona ids (default ``p0 .. p{K-1}``).

    Notes
    -----
    The four PSM fields (:data:`PSM_FIELDS`) are given together or not at
    all; only ``psm_icl`` (and the joint model) needs them.
    """

    curve: tuple[str, ...]
    n_shots: np.ndarray
    nll: np.ndarray | None = None
    shot_loglik: np.ndarray | None = None
    target_loglik: np.ndarray | None = None
    target_option: np.ndarray | None = None
    prior_weights: np.ndarray | None = None
    curves: tuple[str, ...] = ()
    personas: tuple[str, ...] = ()
    curve_index: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.curve, str):
            fail("curve", "expected a sequence of curve ids, got one str")
        curve = tuple(str(c) for c in as_str_tuple(list(self.curve), "curve"))
        if not curve:
            fail("curve", "expected at least one row")
        n = len(curve)
        shots = check_int_array(self.n_shots, "n_shots", n, what="shot counts", match="curve")
        curves = as_str_tuple(self.curves, "curves") or tuple(dict.fromkeys(curve))
        check_unique(curves, "curves")
        lookup = {c: j for j, c in enumerate(curves)}
        unknown = sorted({c for c in curve if c not in lookup})
        if unknown:
            fail("curve", f"id(s) {unknown[:5]} not in curves")
        nll = self.nll
        if nll is not None:
            nll = np.asarray(nll, dtype=float)
            if nll.shape != (n,):
                fail("nll", f"expected shape ({n},) (one per row), got {nll.shape}")
            check_finite(nll, "nll")
            if (nll <= 0).any():
                fail("nll", f"expected -log p > 0 (p < 1), found {nll.min():.4g} at row {int(nll.argmin())}")
        object.__setattr__(self, "curve", curve)
        object.__setattr__(self, "n_shots", shots)
        object.__setattr__(self, "nll", nll)
        object.__setattr__(self, "curves", curves)
        object.__setattr__(self, "curve_index", np.array([lookup[c] for c in curve], dtype=np.int64))
        given = [f for f in PSM_FIELDS if getattr(self, f) is not None]
        if given and len(given) < len(PSM_FIELDS):
            missing = [f for f in PSM_FIELDS if getattr(self, f) is None]
            fail(missing[0], f"expected together with {given} (the PSM fields come as a set)")
        if given:
            self._validate_psm(n)
        elif self.personas:
            fail("personas", "persona ids given without the PSM fields")

    def _validate_psm(self, n: int) -> None:
        tl = np.asarray(self.target_loglik, dtype=float)
        if tl.ndim != 3 or tl.shape[0] != n or tl.shape[1] < 1 or tl.shape[2] < 2:
            fail("target_loglik", f"expected shape ({n}, persona, option>=2), got {tl.shape}")
        _, K, O = tl.shape
        tl = check_logprob(tl, (n, K, O), "target_loglik", "row, persona, option")
        sl = check_logprob(self.shot_loglik, (n, K), "shot_loglik", "row, persona")
        zero = self.n_shots == 0
        if zero.any() and np.abs(sl[zero]).max() > 1e-9:
            r = int(np.argwhere(zero & (np.abs(sl).max(1) > 1e-9))[0, 0])
            fail("shot_loglik", f"expected 0 on rows with n_shots == 0, row {r} has {sl[r].tolist()}")
        object.__setattr__(self, "target_loglik", tl)
        object.__setattr__(self, "shot_loglik", sl)
        object.__setattr__(self, "target_option", check_option(self.target_option, n, O, "target_option"))
        object.__setattr__(self, "prior_weights", check_prior_weights(self.prior_weights, K))
        object.__setattr__(self, "personas", check_personas(self.personas, K))

    # ------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.curve)

    @property
    def has_psm(self) -> bool:
        """Whether the PSM fields (persona log-likelihoods, prior) are present."""
        return self.target_loglik is not None

    @property
    def n_curves(self) -> int:
        return len(self.curves)

    @property
    def n_personas(self) -> int:
        return 0 if not self.has_psm else int(self.target_loglik.shape[1])

    @property
    def n_options(self) -> int:
        return 2 if not self.has_psm else int(self.target_loglik.shape[2])

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for the dims this data defines."""
        out: dict[str, list] = {"measurement": list(range(len(self))), "curve": list(self.curves)}
        if self.has_psm:
            out["persona"] = list(self.personas)
            out["option"] = list(range(self.n_options))
        return out

    def replace(self, **changes) -> "ICLData":
        """A copy with some fields replaced (re-validated)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        kw.update(changes)
        return ICLData(**kw)

    def subset(self, rows) -> "ICLData":
        """The rows ``rows`` (boolean mask or indices), keeping the ``curves`` order and personas."""
        idx = np.arange(len(self))[np.asarray(rows)]
        if idx.size == 0:
            fail("rows", "subset would be empty")
        pick = (lambda a: None if a is None else np.asarray(a)[idx])
        return dc_replace(self, curve=tuple(self.curve[i] for i in idx), n_shots=self.n_shots[idx],
                          nll=pick(self.nll), shot_loglik=pick(self.shot_loglik),
                          target_loglik=pick(self.target_loglik), target_option=pick(self.target_option))


def require_psm(data: ICLData, model: str) -> None:
    """Raise :class:`DataError` if ``data`` lacks the PSM fields ``model`` needs."""
    if not data.has_psm:
        fail("target_loglik", f"{model} needs the PSM fields {PSM_FIELDS}; got None")


# ---------------------------------------------------------------- priors
@dataclass(frozen=True)
class ICLPriors:
    """Hyperparameters of the ICL models (each model reads its own).

    Parameters
    ----------
    beta_loc, beta_scale : float
        ``beta_icl ~ LogNormal(beta_loc, beta_scale)`` (psm_icl).
    bias_scale : float
        ``authorial_bias ~ Normal(0, bias_scale)`` (psm_icl); ``response_bias
        ~ Normal(0, bias_scale)`` (the curve laws, when rows name their
        matching answer).
    sigma_scale : float
        ``sigma ~ HalfNormal(sigma_scale)`` (all models).
    C_loc, C_scale, alpha_loc, alpha_scale : float
        ``C_c ~ LogNormal(C_loc, C_scale)``, ``alpha_c ~ LogNormal(alpha_loc,
        alpha_scale)`` (power laws; median exponent ``e^-1 = 0.37``).
    n_inf_loc, n_inf_scale : float
        ``n_inf_c ~ LogNormal`` (bounded power law; median 5 shots).
    floor_scale : float
        ``K_c ~ HalfNormal(floor_scale)``, the bounded law's floor.
    efficiency_loc, efficiency_scale : float
        ``K ~ LogNormal`` (Bayesian law's ICL efficiency).
    rho_a, rho_b, P_a, P_b, u_a, u_b : float
        Beta priors of ``rho_c``, ``P_c`` and ``u_c = Q_c / P_c``.
    separate_target : bool
        Bayesian law: free ``p_target_c, q_c ~ Beta(1, 1)`` instead of the
        paper's ``p = P, q = Q``.
    """

    beta_loc: float = 0.0
    beta_scale: float = 1.0
    bias_scale: float = 1.0
    sigma_scale: float = 1.0
    C_loc: float = 0.0
    C_scale: float = 1.0
    alpha_loc: float = -1.0
    alpha_scale: float = 1.0
    n_inf_loc: float = float(np.log(5.0))
    n_inf_scale: float = 1.5
    floor_scale: float = 1.0
    efficiency_loc: float = 0.0
    efficiency_scale: float = 1.0
    rho_a: float = 1.0
    rho_b: float = 1.0
    P_a: float = 2.0
    P_b: float = 1.0
    u_a: float = 1.0
    u_b: float = 1.0
    separate_target: bool = False

    def __post_init__(self) -> None:
        check_priors(self, real=tuple(f.name for f in fields(self) if f.name.endswith("_loc")),
                     flags=("separate_target",))


# ---------------------------------------------------------------- maths (numpy / JAX)
def yes_direction(n_options: int) -> np.ndarray:
    """One-hot ``d`` on :data:`YES_OPTION`, the direction of ``authorial_bias``."""
    d = np.zeros(n_options)
    d[YES_OPTION] = 1.0
    return d


def psm_icl_nll(ops: Ops, log_pi, shot_loglik, target_loglik, target_option, beta, bias):
    """Predicted ``nll`` of ``psm_icl``, shape ``(R,)``; see the module docstring.

    Parameters
    ----------
    log_pi : array (K,)
    shot_loglik : array (R, K)
    target_loglik : array (R, K, O)
    target_option : int array (R,)
    beta, bias : scalars
    """
    z = log_pi[None, :] + beta * shot_loglik
    log_w = z - ops.logsumexp(z, 1)[:, None]
    lp = ops.log_softmax(target_loglik + bias * yes_direction(target_loglik.shape[-1]), -1)
    la = ops.logsumexp(log_w[:, :, None] + lp, 1)
    return -la[np.arange(la.shape[0]), target_option]


def bayesian_law_nll(ops: Ops, n, K, log_rho, log1m_rho, log_P, log_Q, log_p, log_q):
    """``-log p_c(n)`` of the Bayesian ICL law (arrays broadcast per row).

    ``log p(n) = logsumexp(log rho + K n log P + log p, log(1-rho) + K n log Q + log q)
    - logsumexp(log rho + K n log P, log(1-rho) + K n log Q)``.
    """
    a = log_rho + K * n * log_P
    b = log1m_rho + K * n * log_Q
    num = ops.logsumexp(ops.stack([a + log_p, b + log_q]), 0)
    den = ops.logsumexp(ops.stack([a, b]), 0)
    return den - num


def power_law_nll(n, C, alpha):
    """``C (n + 1)^(-alpha)``."""
    return C * (n + 1.0) ** (-alpha)


def bounded_power_law_nll(n, C, alpha, n_inf, K_floor):
    """``C (1 + n / n_inf)^(-alpha) + K``."""
    return C * (1.0 + n / n_inf) ** (-alpha) + K_floor


def yes_sign(target_option) -> np.ndarray:
    """``+1`` where the matching answer is Yes (:data:`YES_OPTION`), ``-1`` elsewhere."""
    return np.where(np.asarray(target_option) == YES_OPTION, 1.0, -1.0)


def with_response_bias(ops: Ops, nll, bias, sign):
    """``nll`` after shifting the log-odds of "Yes" by ``bias`` (binary items).

    The matching answer's log-odds ``l = log p - log(1 - p)`` (``p =
    exp(-nll)``) moves by ``bias * sign`` (``sign`` from :func:`yes_sign`);
    returns ``-log sigmoid(l + bias * sign) = log(1 + exp(-(l + bias * sign)))``.
    """
    logodds = -nll - ops.log(-ops.expm1(-nll))
    x = -(logodds + bias * sign)
    return ops.logsumexp(ops.stack([x * 0.0, x]), 0)


# ---------------------------------------------------------------- design / extrapolation
def make_icl_design(n_personas: int = 6, n_items: int = 40, n_curves: int = 8,
                    n_values: Sequence[int] = (0, 1, 2, 4, 8, 16), *, seed: int = 0,
                    loglik_scale: float = 2.0, prior_weights: np.ndarray | None = None) -> tuple[ICLData, dict]:
    """A synthetic ICL design (no ``nll``) with a random persona table.

    Curve ``c`` demonstrates persona ``k_c``: its shots are the first ``n``
    items of a fixed random sequence (nested prefixes across ``n``), each
    answered with ``k_c``'s most likely option; its held-out item is scored
    against ``k_c``'s most likely answer.

    Returns
    -------
    (ICLData, dict)
        The design and ``{"loglik": L (K, I, O), "demo_persona": (n_curves,)}``.
    """
    from scipy.special import log_softmax

    rng = np.random.default_rng(seed)
    n_values = sorted(int(v) for v in n_values)
    if n_values[-1] + 1 > n_items:
        raise ValueError(f"n_items: need more than max(n_values)={n_values[-1]} items, got {n_items}")
    L = log_softmax(rng.normal(0.0, loglik_scale, size=(n_personas, n_items, 2)), axis=-1)
    pi = rng.dirichlet(np.full(n_personas, 2.0)) if prior_weights is None else np.asarray(prior_weights, float)
    demo = rng.integers(0, n_personas, n_curves)
    rows: dict[str, list] = {"curve": [], "n": [], "shot": [], "target": [], "opt": []}
    for c in range(n_curves):
        order = rng.permutation(n_items)
        target, seq = order[0], order[1:]
        answers = L[demo[c], seq].argmax(-1)
        cum = np.concatenate([np.zeros((n_personas, 1)), np.cumsum(L[:, seq, answers], axis=1)], axis=1)
        for n in n_values:
            rows["curve"].append(f"c{c}")
            rows["n"].append(n)
            rows["shot"].append(cum[:, n])
            rows["target"].append(L[:, target, :])
            rows["opt"].append(int(L[demo[c], target].argmax()))
    data = ICLData(curve=tuple(rows["curve"]), n_shots=np.array(rows["n"]), shot_loglik=np.array(rows["shot"]),
                   target_loglik=np.array(rows["target"]), target_option=np.array(rows["opt"]),
                   prior_weights=pi / pi.sum())
    return data, {"loglik": L, "demo_persona": demo}


def extrapolation_split(data: ICLData, fraction: float = 0.5) -> tuple[ICLData, ICLData]:
    """Split rows by shot count: fit on small ``n``, predict large ``n``.

    The distinct ``n_shots`` values are sorted; the first
    ``ceil(fraction * n_distinct)`` of them (at least one, at most all but
    one) form the training set, the rest the test set. Both keep the
    parent's ``curves`` order.

    Returns
    -------
    (ICLData, ICLData)
        ``(train, test)``.
    """
    if not 0 < fraction < 1:
        raise DataError(f"fraction: expected a number in (0, 1), got {fraction!r}")
    distinct = np.unique(data.n_shots)
    if distinct.size < 2:
        raise DataError(f"n_shots: need at least 2 distinct shot counts to extrapolate, got {distinct.tolist()}")
    n_train = min(max(int(np.ceil(fraction * distinct.size)), 1), distinct.size - 1)
    cut = distinct[n_train - 1]
    return data.subset(data.n_shots <= cut), data.subset(data.n_shots > cut)


def extrapolation_metrics(observed, predicted) -> dict[str, float]:
    """RMSE and NRMSE of predictions.

    ``nrmse = rmse / sd(observed)``, with the population standard deviation
    (``ddof=0``) of the observed test values: 1 means no better than
    predicting the test mean, < 1 better. ``nan`` when the observed values
    are constant.
    """
    obs = np.asarray(observed, dtype=float)
    pred = np.asarray(predicted, dtype=float)
    if obs.shape != pred.shape or obs.ndim != 1 or obs.size == 0:
        raise DataError(f"predicted: expected a non-empty 1-d array shaped like observed {obs.shape}, "
                        f"got {pred.shape}")
    rmse = float(np.sqrt(np.mean((pred - obs) ** 2)))
    sd = float(obs.std())
    return {"rmse": rmse, "nrmse": rmse / sd if sd > 0 else float("nan")}

"""Fine-tuning (LoRA SFT) shifts: data, shared maths and posterior summaries.

One row of :class:`SFTShiftData` is one held-out probe item ``i``. The
observation is

    shift_i = logit p_after(matching answer | i) - logit p_before(matching answer | i),

the change in log-odds of the trait-matching answer caused by SFT on a set
of training episodes (averaged over seeds), where ``logit p = log p - log(1
- p)`` over the item's options.

Models (NumPyro backend in :mod:`psm_bayes.models.sft_shift_numpyro`; both
observe ``shift`` in plate ``item`` as ``Normal(shift_mean, sigma)`` and
record the deterministic ``shift_mean``):

* ``psm_sft`` -- the persona selection model: SFT is Bayesian evidence on
  personas, tempered by ``beta_sft``::

      w = softmax(log pi + beta_sft * train_loglik)
      p_x(o | i) = sum_k x_k softmax_o(L[k, i, o] + authorial_bias * d_o)
      shift_mean_i = logit p_w(target_i | i) - logit p_pi(target_i | i)

  ``d`` is one-hot on Yes (:data:`~psm_bayes.models.icl_curves.YES_OPTION`),
  and the same ``authorial_bias`` enters before and after, so it acts only
  through the curvature of the logit (it is weakly identified from SFT
  alone; the joint model shares it with the ICL curves).
* ``null_sft`` -- no persona-level generalisation: ``shift_mean_i = delta *
  trained_i + c + response_bias * s_i`` (only items in the training set move,
  plus a global offset and a change of the Yes offset, ``s_i = +1`` where the
  matching answer is Yes, else ``-1``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import numpy as np

from psm_bayes.models.icl_curves import yes_direction
from psm_bayes.validation import (as_str_tuple, check_finite, check_logprob, check_option, check_personas,
                                  check_prior_weights, check_priors, check_unique, fail)
from psm_bayes.models.maths import Ops

DIMS: dict[str, list[str]] = {
    "shift": ["item"],
    "shift_mean": ["item"],
    "w": ["persona"],
}
"""ArviZ dims of the SFT models' sites."""


@dataclass(frozen=True)
class SFTShiftData:
    """SFT shifts on held-out probe items, validated at construction.

    Parameters
    ----------
    item : sequence of str
        Unique probe item ids (the ``item`` coordinate).
    trait : sequence of str
        Trait label of each item.
    target_loglik : array (item, persona, option)
        ``L[k, i, :]`` from the base model.
    target_option : array of int (item,)
        Index of the trait-matching answer of each item.
    train_loglik : array (persona,)
        ``sum`` over training episodes of ``L[k, train item, trained
        answer]`` (finite, ``<= 0``).
    trained : array of bool (item,)
        Whether the item was in the training set.
    prior_weights : array (persona,)
        Pre-training prior over personas ``pi``.
    shift : array of float (item,), optional
        Observed shift in log-odds; ``None`` asks for the prior predictive.
    personas : sequence of str, optional
        Persona ids (default ``p0 .. p{K-1}``).
    """

    item: tuple[str, ...]
    trait: tuple[str, ...]
    target_loglik: np.ndarray
    target_option: np.ndarray
    train_loglik: np.ndarray
    trained: np.ndarray
    prior_weights: np.ndarray
    shift: np.ndarray | None = None
    personas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("item", "trait"):
            if isinstance(getattr(self, name), str):
                fail(name, "expected a sequence of ids, got one str")
        item = tuple(str(x) for x in as_str_tuple(list(self.item), "item"))
        if not item:
            fail("item", "expected at least one item")
        check_unique(item, "item")
        n = len(item)
        trait = tuple(str(x) for x in as_str_tuple(list(self.trait), "trait"))
        if len(trait) != n:
            fail("trait", f"expected {n} labels (one per item), got {len(trait)}")
        tl = np.asarray(self.target_loglik, dtype=float)
        if tl.ndim != 3 or tl.shape[0] != n or tl.shape[1] < 1 or tl.shape[2] < 2:
            fail("target_loglik", f"expected shape ({n}, persona, option>=2), got {tl.shape}")
        _, K, O = tl.shape
        tl = check_logprob(tl, (n, K, O), "target_loglik", "item, persona, option")
        trained = np.asarray(self.trained)
        if trained.shape != (n,):
            fail("trained", f"expected shape ({n},) (one per item), got {trained.shape}")
        if trained.dtype.kind != "b":
            if trained.dtype.kind not in "iuf" or not np.isin(trained, (0, 1)).all():
                fail("trained", f"expected booleans, got dtype {trained.dtype}")
        shift = self.shift
        if shift is not None:
            shift = np.asarray(shift, dtype=float)
            if shift.shape != (n,):
                fail("shift", f"expected shape ({n},) (one per item), got {shift.shape}")
            check_finite(shift, "shift")
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "trait", trait)
        object.__setattr__(self, "target_loglik", tl)
        object.__setattr__(self, "target_option", check_option(self.target_option, n, O, "target_option"))
        object.__setattr__(self, "train_loglik", check_logprob(self.train_loglik, (K,), "train_loglik", "persona"))
        object.__setattr__(self, "trained", trained.astype(bool))
        object.__setattr__(self, "prior_weights", check_prior_weights(self.prior_weights, K))
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "personas", check_personas(self.personas, K))

    def __len__(self) -> int:
        return len(self.item)

    @property
    def n_personas(self) -> int:
        return int(self.target_loglik.shape[1])

    @property
    def n_options(self) -> int:
        return int(self.target_loglik.shape[2])

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for the dims this data defines."""
        return {"item": list(self.item), "persona": list(self.personas), "option": list(range(self.n_options))}

    def replace(self, **changes) -> "SFTShiftData":
        """A copy with some fields replaced (re-validated)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        kw.update(changes)
        return SFTShiftData(**kw)








@dataclass(frozen=True)
class SFTPriors:
    """Hyperparameters of the SFT models.

    Parameters
    ----------
    beta_loc, beta_scale : float
        ``beta_sft ~ LogNormal(beta_loc, beta_scale)`` (psm_sft).
    bias_scale : float
        ``authorial_bias ~ Normal(0, bias_scale)`` (psm_sft),
        ``response_bias ~ Normal(0, bias_scale)`` (null_sft).
    sigma_scale : float
        ``sigma ~ HalfNormal(sigma_scale)``.
    delta_scale, offset_scale : float
        ``delta ~ Normal(0, delta_scale)``, ``c ~ Normal(0, offset_scale)``
        (null_sft).
    """

    beta_loc: float = 0.0
    beta_scale: float = 1.0
    bias_scale: float = 1.0
    sigma_scale: float = 1.0
    delta_scale: float = 2.0
    offset_scale: float = 1.0

    def __post_init__(self) -> None:
        check_priors(self, real=("beta_loc",))


# ---------------------------------------------------------------- maths (numpy / JAX)
def target_logodds(ops: Ops, log_x, target_loglik, target_option, bias):
    """``logit p_x(target_i | i)`` per item, shape ``(I,)``.

    ``p_x(o | i) = sum_k x_k softmax_o(L[k, i, o] + bias * d_o)``; the logit
    is ``log p(target) - logsumexp`` of the other options.
    """
    n_items, _, n_opt = target_loglik.shape
    lp = ops.log_softmax(target_loglik + bias * yes_direction(n_opt), -1)
    la = ops.logsumexp(log_x[None, :, None] + lp, 1)  # (I, O)
    rows = np.arange(n_items)
    other = np.where(np.arange(n_opt)[None, :] == np.asarray(target_option)[:, None], -np.inf, 0.0)
    return la[rows, target_option] - ops.logsumexp(la + other, 1)


def sft_log_weights(ops: Ops, log_pi, train_loglik, beta):
    """``log w = log_softmax(log pi + beta * train_loglik)``."""
    return ops.log_softmax(log_pi + beta * train_loglik, 0)


def psm_sft_shift(ops: Ops, log_pi, train_loglik, target_loglik, target_option, beta, bias):
    """Predicted shift of ``psm_sft``, shape ``(I,)``."""
    log_w = sft_log_weights(ops, log_pi, train_loglik, beta)
    return (target_logodds(ops, log_w, target_loglik, target_option, bias)
            - target_logodds(ops, log_pi, target_loglik, target_option, bias))


# ---------------------------------------------------------------- design
def make_sft_design(n_personas: int = 6, n_items: int = 40, n_train: int = 12, *, seed: int = 0,
                    loglik_scale: float = 2.0, trained_persona: int = 0, n_probe_trained: int = 4,
                    prior_weights: np.ndarray | None = None) -> tuple[SFTShiftData, dict]:
    """A synthetic SFT design (no ``shift``) with a random persona table.

    The first ``n_train`` items are trained with ``trained_persona``'s most
    likely answers; the probes are ``n_probe_trained`` of those plus every
    untrained item, each scored against ``trained_persona``'s most likely
    answer. Traits: ``"trained"`` / ``"heldout"``.

    Returns
    -------
    (SFTShiftData, dict)
        The design and ``{"loglik": L (K, I, O)}``.
    """
    from scipy.special import log_softmax

    rng = np.random.default_rng(seed)
    L = log_softmax(rng.normal(0.0, loglik_scale, size=(n_personas, n_items, 2)), axis=-1)
    pi = rng.dirichlet(np.full(n_personas, 2.0)) if prior_weights is None else np.asarray(prior_weights, float)
    answers = L[trained_persona].argmax(-1)
    train_ll = L[:, np.arange(n_train), answers[:n_train]].sum(1)
    probes = np.concatenate([np.arange(min(n_probe_trained, n_train)), np.arange(n_train, n_items)])
    trained = probes < n_train
    data = SFTShiftData(item=tuple(f"i{i}" for i in probes), trait=tuple(np.where(trained, "trained", "heldout")),
                        target_loglik=L[:, probes, :].transpose(1, 0, 2), target_option=answers[probes],
                        train_loglik=train_ll, trained=trained, prior_weights=pi / pi.sum())
    return data, {"loglik": L}

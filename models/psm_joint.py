"""Joint persona-selection model of ICL curves and SFT shifts: data and priors.

``psm_joint`` (NumPyro backend in :mod:`psm_bayes.models.psm_joint_numpyro`)
is ``psm_icl`` and ``psm_sft`` fitted together: one ``prior_weights`` (the
pre-training prior ``pi``, from the data) and one ``authorial_bias`` (a Yes
offset shared by every persona), separate evidence strengths ``beta_icl``
and ``beta_sft`` and noise scales ``sigma_nll`` and ``sigma_shift``. Two
observed sites: ``nll`` (plate ``measurement``) and ``shift`` (plate
``item``); LOO needs ``var_name="nll"`` or ``"shift"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psm_bayes.validation import fail
from psm_bayes.models import icl_curves, sft_shift
from psm_bayes.models.icl_curves import ICLData, ICLPriors
from psm_bayes.models.sft_shift import SFTPriors, SFTShiftData

DIMS: dict[str, list[str]] = {**icl_curves.DIMS, **sft_shift.DIMS}
"""ArviZ dims of the joint model's sites."""


@dataclass(frozen=True)
class JointData:
    """ICL curves and SFT shifts measured on the same model and personas.

    Parameters
    ----------
    icl : ICLData
        With the PSM fields.
    sft : SFTShiftData
        Same personas (ids, order) and the same ``prior_weights``.
    """

    icl: ICLData
    sft: SFTShiftData

    def __post_init__(self) -> None:
        if not isinstance(self.icl, ICLData):
            fail("icl", f"expected an ICLData, got {type(self.icl).__name__}")
        if not isinstance(self.sft, SFTShiftData):
            fail("sft", f"expected an SFTShiftData, got {type(self.sft).__name__}")
        icl_curves.require_psm(self.icl, "psm_joint")
        if self.icl.personas != self.sft.personas:
            fail("sft.personas", f"expected the same persona ids as icl.personas, got {self.sft.personas} "
                  f"vs {self.icl.personas}")
        if self.icl.n_options != self.sft.n_options:
            fail("sft.target_loglik", f"expected {self.icl.n_options} options like icl, got {self.sft.n_options}")
        if not np.allclose(self.icl.prior_weights, self.sft.prior_weights, rtol=0, atol=1e-9):
            fail("sft.prior_weights", "expected the same prior over personas as icl.prior_weights")

    @property
    def prior_weights(self) -> np.ndarray:
        return self.icl.prior_weights

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates of both parts."""
        return {**self.icl.coords(), **self.sft.coords()}

    def replace(self, **changes) -> "JointData":
        """A copy with ``icl`` and/or ``sft`` replaced (re-validated)."""
        kw = {"icl": self.icl, "sft": self.sft, **changes}
        return JointData(**kw)








@dataclass(frozen=True)
class JointPriors:
    """Hyperparameters of ``psm_joint``.

    ``beta_icl`` and ``sigma_nll`` read ``icl`` (``beta_*``, ``sigma_scale``),
    ``beta_sft`` and ``sigma_shift`` read ``sft``; the shared
    ``authorial_bias ~ Normal(0, icl.bias_scale)``.
    """

    icl: ICLPriors = field(default_factory=ICLPriors)
    sft: SFTPriors = field(default_factory=SFTPriors)

    def __post_init__(self) -> None:
        for name, cls in (("icl", ICLPriors), ("sft", SFTPriors)):
            value = getattr(self, name)
            if isinstance(value, dict):  # e.g. from a TOML study file
                object.__setattr__(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise ValueError(f"priors.{name}: expected a {cls.__name__} or a dict, got {type(value).__name__}")


def make_joint_design(seed: int = 0, n_personas: int = 4, n_items: int = 20, n_curves: int = 4,
                      n_values: tuple[int, ...] = (0, 1, 2, 4, 8), n_train: int = 6) -> JointData:
    """A ``psm_joint`` design (no observations): an ICL and an SFT design sharing personas and prior."""
    pi = np.random.default_rng([seed, 7]).dirichlet(np.full(n_personas, 2.0))
    icl, _ = icl_curves.make_icl_design(n_personas, n_items, n_curves, n_values, seed=seed, prior_weights=pi)
    sft, _ = sft_shift.make_sft_design(n_personas, n_items, n_train, seed=seed, prior_weights=pi)
    return JointData(icl, sft)

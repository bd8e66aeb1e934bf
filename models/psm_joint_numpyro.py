"""NumPyro joint persona-selection model ``psm_joint``; see :mod:`psm_bayes.models.psm_joint`."""

from __future__ import annotations

import numpyro
import numpyro.distributions as dist

from psm_bayes.models import psm_joint as joint
from psm_bayes.models.base import ModelSpec, psm_model
from psm_bayes.models.icl_curves_numpyro import observe_nll, psm_icl_sites
from psm_bayes.models.numpyro_predict import design_simulator
from psm_bayes.models.psm_joint import JointData, JointPriors
from psm_bayes.models.sft_shift_numpyro import observe_shift, psm_sft_mean


@psm_model(ModelSpec("psm_joint", "numpyro", {"nll": "icl.nll", "shift": "sft.shift"}, joint.DIMS, JointData.coords))
def psm_joint(data: JointData, priors: JointPriors | None = None) -> None:
    """``psm_icl`` and ``psm_sft`` with a shared ``authorial_bias`` and prior ``pi``.

    Sites ``authorial_bias``, ``beta_icl``, ``beta_sft``, ``sigma_nll``,
    ``sigma_shift``; deterministic ``nll_mean``, ``shift_mean``, ``w`` (SFT
    persona weights); observed ``nll`` (plate ``measurement``) and
    ``shift`` (plate ``item``).
    """
    priors = priors or JointPriors()
    bias = numpyro.sample("authorial_bias", dist.Normal(0.0, priors.icl.bias_scale))
    nll_mean = psm_icl_sites(data.icl, priors.icl, bias=bias)
    beta_sft = numpyro.sample("beta_sft", dist.LogNormal(priors.sft.beta_loc, priors.sft.beta_scale))
    shift_mean = psm_sft_mean(data.sft, beta_sft, bias)
    sigma_nll = numpyro.sample("sigma_nll", dist.HalfNormal(priors.icl.sigma_scale))
    sigma_shift = numpyro.sample("sigma_shift", dist.HalfNormal(priors.sft.sigma_scale))
    observe_nll(data.icl, nll_mean, sigma_nll)
    observe_shift(data.sft, shift_mean, sigma_shift)


simulate_psm_joint = design_simulator(psm_joint, joint.make_joint_design)

"""Pyro backend of the persona-selection family (site names as in :mod:`psm_bayes.models.selection_numpyro`).

Tensors are float64 regardless of torch's default dtype. One model function
per catalogued model, all running :func:`psm_bayes.models.selection_model.model_body`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from psm_bayes.models import maths
from psm_bayes.models.selection_model import PPL, make_model

PPL_PYRO = PPL(maths.torch_ops(), torch.einsum, lambda x: torch.as_tensor(x, dtype=torch.float64),
               lambda x: torch.as_tensor(x, dtype=torch.long), dist, pyro.sample, pyro.plate, pyro.deterministic)

persona_selection = make_model(PPL_PYRO, "pyro", "persona_selection")
permuted_personas = make_model(PPL_PYRO, "pyro", "permuted_personas")
response_bias = make_model(PPL_PYRO, "pyro", "response_bias")
trait_indicator = make_model(PPL_PYRO, "pyro", "trait_indicator")
profile_similarity = make_model(PPL_PYRO, "pyro", "profile_similarity")
surface_similarity = make_model(PPL_PYRO, "pyro", "surface_similarity")
generic_shift = make_model(PPL_PYRO, "pyro", "generic_shift")
encompassing = make_model(PPL_PYRO, "pyro", "encompassing")

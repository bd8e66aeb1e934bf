"""NumPyro backend of the persona-selection family (site names as in :mod:`psm_bayes.models.selection_pyro`).

One model function per catalogued model, all running
:func:`psm_bayes.models.selection_model.model_body`. Float64 needs
:func:`psm_bayes.inference.configure_jax` first (the fit functions call it).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from psm_bayes.models import maths
from psm_bayes.models.selection_model import PPL, make_model

PPL_NUMPYRO = PPL(maths.jax_ops(), jnp.einsum, lambda x: jnp.asarray(x, dtype=jnp.float64), jnp.asarray, dist,
                  numpyro.sample, numpyro.plate, numpyro.deterministic)

persona_selection = make_model(PPL_NUMPYRO, "numpyro", "persona_selection")
permuted_personas = make_model(PPL_NUMPYRO, "numpyro", "permuted_personas")
response_bias = make_model(PPL_NUMPYRO, "numpyro", "response_bias")
trait_indicator = make_model(PPL_NUMPYRO, "numpyro", "trait_indicator")
profile_similarity = make_model(PPL_NUMPYRO, "numpyro", "profile_similarity")
surface_similarity = make_model(PPL_NUMPYRO, "numpyro", "surface_similarity")
generic_shift = make_model(PPL_NUMPYRO, "numpyro", "generic_shift")
encompassing = make_model(PPL_NUMPYRO, "numpyro", "encompassing")

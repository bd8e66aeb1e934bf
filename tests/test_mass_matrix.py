"""The selection family's dense NUTS mass-matrix block: which sites it holds on which data (the fits,
``inference.nuts``, the Pyro backend and the SBC kernel all take it from ``ModelSpec.mass_blocks``)."""

from __future__ import annotations

from psm_bayes.models import catalogue
from psm_bayes.models.base import spec_of
from psm_bayes.models.selection import DENSE_MASS, Priors
from psm_bayes.models.selection_simulate import design, forward


def _latents(name: str, data, priors: Priors) -> set[str]:
    draw = forward(name, data, priors, seed=0)
    return set(draw) - {"y", "logodds", "logodds_mean", "persona_weight"}


def test_mass_blocks_follow_the_sites_each_fit_samples():
    spec = spec_of(catalogue.model("persona_selection"))
    assert spec.dense_mass == DENSE_MASS
    measured = design(seed=0, n_traits=2, n_eval=4, n_shot_items=4, shots=(2, 4), observation="measurements")
    episodes = design(seed=0, n_traits=2, n_eval=4, n_shot_items=4, shots=(2, 4), observation="episodes")
    full = _latents("persona_selection", measured, Priors())
    assert spec.mass_blocks(full) == (("response_bias", "drift", "item_effect"),)
    # episodes only: no item effects; one offset per type: no per-condition drift
    assert spec.mass_blocks(_latents("persona_selection", episodes, Priors())) == (("response_bias", "drift"),)
    per_type = _latents("persona_selection", measured, Priors(condition_drift=False))
    assert spec.mass_blocks(per_type) == (("response_bias", "item_effect"),)
    assert spec.mass_blocks({"beta_icl"}) == ()
    # a model without blocks (another family) gets a diagonal mass matrix
    assert spec_of(catalogue.model("persona_mixture")).mass_blocks(full) == ()

"""Simulated data for the persona-selection family: a design, then the model itself run forward in numpy.

:func:`simulate` builds a bias-cancelling design with the real experiment's
condition structure (:func:`psm_bayes.models.selection_design.design`) and runs
:func:`psm_bayes.models.selection_model.model_body` with a numpy :class:`PPL`
whose ``sample`` draws from each site's distribution, so the simulated data
follow exactly the model that is fitted. Prior-predictive draws are always
valid data (categorical options, real log-odds; nothing is clipped).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Iterator

import numpy as np

from psm_bayes.models import maths
from psm_bayes.models.selection import Priors, SelectionData
from psm_bayes.models.selection_design import design
from psm_bayes.models.selection_model import PPL, model_body

__all__ = ["design", "forward", "log_probs_numpy", "numpy_ppl", "simulate"]


class _NumpyDists:
    """Distributions as ``draw(shape)`` callables over one numpy generator (forward simulation only)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def _size(self, shape, *params):
        return np.broadcast_shapes(shape, *(np.shape(p) for p in params))

    def Dirichlet(self, concentration):  # noqa: N802
        return lambda shape: self.rng.dirichlet(concentration, size=shape or None)

    def Normal(self, loc, scale):  # noqa: N802
        return lambda shape: self.rng.normal(loc, scale, self._size(shape, loc, scale))

    def LogNormal(self, loc, scale):  # noqa: N802
        return lambda shape: self.rng.lognormal(loc, scale, self._size(shape, loc, scale))

    def HalfNormal(self, scale):  # noqa: N802
        return lambda shape: np.abs(self.rng.normal(0.0, scale, self._size(shape, scale)))

    def StudentT(self, df, loc, scale):  # noqa: N802
        return lambda shape: loc + scale * self.rng.standard_t(df, self._size(shape, loc, scale))

    def Categorical(self, logits):  # noqa: N802
        return lambda shape: np.argmax(logits + self.rng.gumbel(size=np.shape(logits)), axis=-1)


class _Recorder:
    """``sample`` / ``plate`` / ``deterministic`` that draw with numpy and record every site.

    Sites named in ``fixed`` take the given value instead of a draw.
    """

    def __init__(self, fixed: dict[str, Any] | None = None) -> None:
        self.values: dict[str, np.ndarray] = {}
        self.shape: tuple[int, ...] = ()
        self.fixed = dict(fixed or {})

    def sample(self, name: str, draw, obs=None):
        if obs is None and name in self.fixed:
            obs = self.fixed[name]
        value = np.asarray(obs if obs is not None else draw(self.shape))
        self.values[name] = value
        return value

    @contextlib.contextmanager
    def plate(self, name: str, size: int) -> Iterator[None]:
        self.shape = (size,)
        try:
            yield
        finally:
            self.shape = ()

    def deterministic(self, name: str, value):
        self.values[name] = np.asarray(value)
        return value


def numpy_ppl(rng: np.random.Generator, fixed: dict[str, Any] | None = None) -> tuple[PPL, _Recorder]:
    """A numpy :class:`PPL` drawing with ``rng`` (sites in ``fixed`` take those values), and its recorder."""
    rec = _Recorder(fixed)
    return PPL(maths.NUMPY, np.einsum, lambda x: np.asarray(x, dtype=float), lambda x: np.asarray(x, dtype=np.int64),
               _NumpyDists(rng), rec.sample, rec.plate, rec.deterministic), rec


def forward(name: str, data: SelectionData, priors: Priors | None = None, *, seed: int,
            fixed: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """One draw of every site of model ``name`` (latents and observations), by running the model in numpy.

    ``fixed`` gives latent sites a value instead of a prior draw (e.g. a
    posterior draw of a pilot fit: effect sizes measured on real data);
    every other site is drawn from the model.
    """
    P, rec = numpy_ppl(np.random.default_rng(seed), fixed)
    model_body(P, name, data.unobserve(), priors)
    return rec.values


def simulate(name: str, priors: Priors | None = None, *, seed: int, **sizes) -> tuple[SelectionData, dict]:
    """Data simulated from model ``name`` on :func:`design` ``(seed=seed, **sizes)``.

    Returns
    -------
    data : SelectionData
        The design with its observed sites filled in (one row per episode).
    truth : dict
        The true value of every latent site.
    """
    data = design(seed=seed, **sizes)
    draw = forward(name, data, priors, seed=seed + 1)
    obs = {k: draw[k] for k in ("y", "logodds") if k in draw}
    truth = {k: v for k, v in draw.items() if k not in obs and k != "logodds_mean"}
    return data.with_observed(obs), truth


def log_probs_numpy(name: str, data: SelectionData, values: dict[str, Any], priors: Priors | None = None) -> np.ndarray:
    """``log p(o | i, c)`` of model ``name`` at latent ``values`` (e.g. a posterior draw), shape (condition, item, option)."""
    from psm_bayes.models.selection_model import log_probs

    P, _ = numpy_ppl(np.random.default_rng(0))
    P = PPL(P.ops, P.einsum, P.asarray, P.index, P.dist, lambda n, d, obs=None: np.asarray(values[n]),
            P.plate, P.deterministic)
    return log_probs(P, name, data, priors)


# simulate_<model>(priors=None, *, seed, **sizes) -> (data, truth), as the catalogue expects
simulate_persona_selection = partial(simulate, "persona_selection")
simulate_permuted_personas = partial(simulate, "permuted_personas")
simulate_response_bias = partial(simulate, "response_bias")
simulate_trait_indicator = partial(simulate, "trait_indicator")
simulate_profile_similarity = partial(simulate, "profile_similarity")
simulate_surface_similarity = partial(simulate, "surface_similarity")
simulate_generic_shift = partial(simulate, "generic_shift")
simulate_encompassing = partial(simulate, "encompassing")

"""Simulated data for the persona-selection family: a design, then the model itself run forward in numpy.

:func:`simulate` builds a bias-cancelling design (:func:`design`) and runs
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
from scipy.special import log_softmax

from psm_bayes.models import maths
from psm_bayes.models.selection import BASE_TYPE, Priors, SelectionData
from psm_bayes.models.selection_model import PPL, model_body


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


def design(*, seed: int, n_personas: int = 3, n_traits: int = 2, n_eval: int = 4, n_shot_items: int = 4,
           shots: tuple[int, ...] = (2, 4), sft_episodes: int = 0, observation: str = "episodes",
           n_episodes: int = 10, latent_prior: bool = False, authorial: bool = False,
           trait_sd: float = 2.0) -> SelectionData:
    """A bias-cancelling design with binary Yes/No items and no observations yet.

    Each persona has a disposition per trait (``Normal(0, trait_sd)`` log-odds
    of the matching answer, plus item noise); half of each trait's items match
    with "Yes" (option 0), half with "No". Conditions: ``base`` (no evidence);
    per trait and pole (``+`` matching answers, ``-`` the opposite) and shot
    count, in-context shots on the trait's shot items (type ``icl``); with
    ``sft_episodes > 0`` also SFT on those items (type ``sft``) and SFT
    followed by opposite-pole shots (type ``sft_icl``). Evaluation items are
    disjoint from shot items. ``observation`` is ``"episodes"`` (``n_episodes``
    sampled answers per condition and evaluation item), ``"measurements"``
    (one log-odds per condition and evaluation item) or ``"both"``.
    """
    if observation not in ("episodes", "measurements", "both"):
        raise ValueError(f"observation: expected 'episodes', 'measurements' or 'both', got {observation!r}")
    rng = np.random.default_rng(seed)
    per = n_eval + n_shot_items
    trait = np.repeat(np.arange(n_traits), per)
    match = np.tile(np.arange(per) % 2, n_traits)  # balanced: matching option 0 (Yes) or 1 (No)
    is_shot = np.tile(np.arange(per) >= n_eval, n_traits)
    theta = rng.normal(0.0, trait_sd, (n_personas, n_traits))
    lo = theta[:, trait] + rng.normal(0.0, 0.5, (n_personas, trait.size))  # matching log-odds
    logits = np.zeros((n_personas, trait.size, 2))
    logits[:, np.arange(trait.size), match] = lo
    L = log_softmax(logits, -1)
    I = trait.size
    none = np.zeros((I, 2), np.int64)
    conds: list[tuple[str, str, np.ndarray, np.ndarray]] = [("base", BASE_TYPE, none, none)]  # id, type, S, E

    def answers(t: int, pole: int, n: int) -> np.ndarray:
        items = np.flatnonzero((trait == t) & is_shot)
        ev = none.copy()
        for j in range(n):
            i = items[j % items.size]
            ev[i, match[i] if pole > 0 else 1 - match[i]] += 1
        return ev

    for t in range(n_traits):
        for pole, sign in ((1, "+"), (-1, "-")):
            conds += [(f"icl:t{t}{sign}:{n}", "icl", none, answers(t, pole, n)) for n in shots]
            if sft_episodes:
                sft = answers(t, pole, sft_episodes)
                conds.append((f"sft:t{t}{sign}", "sft", sft, none))
                conds += [(f"sft:t{t}{sign}+icl:{n}", "sft_icl", sft, answers(t, -pole, n)) for n in shots]
    emb = np.eye(n_traits)[trait] + rng.normal(0.0, 0.5, (I, n_traits))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rows = [(c, i) for c in range(len(conds)) for i in np.flatnonzero(~is_shot)]
    rc, ri = (np.array(x, dtype=np.int64) for x in zip(*rows))
    kw: dict[str, Any] = {}
    if observation in ("episodes", "both"):
        kw.update(episode_condition=rc, episode_item=ri, episode_count=np.full(rc.size, n_episodes))
    if observation in ("measurements", "both"):
        kw.update(measurement_condition=rc, measurement_item=ri)
    return SelectionData(
        L, yes_option=np.zeros(I, np.int64), matching_option=match, conditions=tuple(c[0] for c in conds),
        condition_type=tuple(c[1] for c in conds), sft_evidence=np.stack([c[2] for c in conds]),
        icl_evidence=np.stack([c[3] for c in conds]),
        items=tuple(f"t{t}:{'shot' if s else 'eval'}{i}" for i, (t, s) in enumerate(zip(trait, is_shot))),
        options=("Yes", "No"), prior_weights=None if latent_prior else rng.dirichlet(np.full(n_personas, 5.0)),
        bias_direction=np.eye(2)[match] if authorial else None, item_trait=tuple(f"t{t}" for t in trait),
        similarity=emb @ emb.T, **kw)


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
simulate_similarity = partial(simulate, "similarity")

"""The continuous persona-space model: backend-independent parts.

Instead of a mixture over a finite persona set, the assistant is a point
``z`` in a ``d``-dimensional persona space (e.g. the top principal components
of persona embeddings taken from a language model's hidden states).

Generative story (maths written once, below, for numpy, JAX and torch):

* ``z ~ MultivariateNormal(prior_mean, prior_scale**2 * prior_cov)``: the
  pre-training prior over personas, a Gaussian fitted to persona embeddings
  (:func:`persona_space_prior_from_embeddings`);
* ``beta_sft, beta_icl ~ LogNormal(beta_loc, beta_scale)``: evidence
  strengths of post-training (``sft``) and in-context (``icl``) episodes, as
  in :mod:`psm_bayes.models.persona_mixture`;
* behaviours are logits linear in ``z``: a persona at ``z`` answers "yes" to
  item ``i`` with ``logit p(yes | i, z) = a_i + B_i . z`` (``a`` the
  ``intercepts``, ``B`` the per-item ``loadings``, both given by the data,
  e.g. from linear probes on hidden states);
* ``y[e] ~ Bernoulli(logit = beta_{source[e]} * (a_i + B_i . z) + response_bias)`` in plate
  ``episode`` (tempering a Bernoulli by ``beta`` multiplies its logit by
  ``beta``: the same tempering as the persona-selection model);
* ``response_bias ~ Normal(0, bias_scale)``: a Yes offset added to every
  episode's logit (the answer-format bias, shared by all personas);
* ``p_item`` (deterministic, dims ``item``): ``p(yes | i, z)`` at ``beta = 1``
  with the response bias.

Backends: :mod:`psm_bayes.models.persona_space_numpyro` and
:mod:`psm_bayes.models.persona_space_pyro`, same site names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from psm_bayes.data import Episodes, SOURCES
from psm_bayes.validation import DataError, check_finite, check_priors, fail
from psm_bayes.models import maths
from psm_bayes.models.design import Simulation, check_fractions, episode_design

NAME = "persona_space"
DIMS: dict[str, list[str]] = {"z": ["latent_dim"], "y": ["episode"], "p_item": ["item"]}
LATENTS: tuple[str, ...] = ("z", "beta_sft", "beta_icl", "response_bias")
OBSERVED: dict[str, str] = {"y": "episodes.option"}
"""Observed site -> data field (rows aggregated by ``episodes.count``)."""


# ---------------------------------------------------------------- shared maths
def item_logits(loadings, intercepts, z):
    """``a_i + B_i . z`` for every item, shape ``(item,)`` (any array library)."""
    return intercepts + loadings @ z


def episode_logits(ops: maths.Ops, loadings, intercepts, z, item_index, source_index, beta_sft, beta_icl,
                   response_bias=0.0):
    """Per-episode logits ``beta_{source[e]} * (a_i + B_i . z) + response_bias``, shape ``(episode,)``."""
    beta = ops.stack([beta_sft, beta_icl])[source_index]
    return beta * item_logits(loadings, intercepts, z)[item_index] + response_bias


# ---------------------------------------------------------------- data & priors
def _float_array(x, field_name: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(f"{field_name}: expected a numeric array ({err})") from None
    if arr.ndim != ndim:
        fail(field_name, f"expected a {ndim}-d array, got shape {arr.shape}")
    check_finite(arr, field_name)
    return arr


@dataclass(frozen=True)
class PersonaSpaceData:
    """Everything the persona-space model conditions on.

    Parameters
    ----------
    loadings : array (item, dim)
        ``B``: how each latent dimension moves the logit of "yes" on each item.
    intercepts : array (item,)
        ``a``: logit of "yes" at ``z = 0``.
    prior_mean : array (dim,)
        Mean of the pre-training prior over ``z``.
    prior_cov : array (dim, dim)
        Covariance of that prior (symmetric positive definite).
    episodes : Episodes
        Binary answers: ``option`` 1 = yes, 0 = no (``None`` for the prior
        predictive); items named by id from ``items``.
    items : sequence of str, optional
        Item ids, one per row of ``loadings``; default ``"i0", "i1", ...``.
    latent_names : sequence of str, optional
        Names of the latent dimensions; default ``"pc1", "pc2", ...``.
    """

    loadings: np.ndarray
    intercepts: np.ndarray
    prior_mean: np.ndarray
    prior_cov: np.ndarray
    episodes: Episodes
    items: tuple[str, ...] = ()
    latent_names: tuple[str, ...] = ()
    item_index: np.ndarray = field(init=False, repr=False)
    prior_chol: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        B = _float_array(self.loadings, "loadings", 2)
        n_item, d = B.shape
        if n_item < 1 or d < 1:
            fail("loadings", f"expected at least one item and one dimension, got shape {B.shape}")
        a = _float_array(self.intercepts, "intercepts", 1)
        if a.shape != (n_item,):
            fail("intercepts", f"expected shape ({n_item},) (one per item), got {a.shape}")
        mu = _float_array(self.prior_mean, "prior_mean", 1)
        if mu.shape != (d,):
            fail("prior_mean", f"expected shape ({d},) (one per latent dimension), got {mu.shape}")
        cov = _float_array(self.prior_cov, "prior_cov", 2)
        if cov.shape != (d, d):
            fail("prior_cov", f"expected shape ({d}, {d}), got {cov.shape}")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-10):
            fail("prior_cov", "expected a symmetric matrix")
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            fail("prior_cov", "expected a positive definite matrix (Cholesky failed)")
        items = tuple(self.items) or tuple(f"i{i}" for i in range(n_item))
        if len(items) != n_item or not all(isinstance(x, str) for x in items):
            fail("items", f"expected {n_item} string ids (one per row of loadings), got {len(items)}")
        if len(set(items)) != n_item:
            fail("items", "duplicate item id; ids must be unique")
        names = tuple(self.latent_names) or tuple(f"pc{k + 1}" for k in range(d))
        if len(names) != d or len(set(names)) != d:
            fail("latent_names", f"expected {d} unique names (one per latent dimension), got {names!r}")
        if not isinstance(self.episodes, Episodes):
            fail("episodes", f"expected an Episodes, got {type(self.episodes).__name__}")
        lookup = {k: i for i, k in enumerate(items)}
        unknown = sorted({str(x) for x in self.episodes.item.tolist() if x not in lookup})
        if unknown:
            fail("episodes.item", f"unknown item id(s) {unknown[:5]}; expected ids from items")
        opt = self.episodes.option
        if opt is not None and len(opt) and opt.max() > 1:
            fail("episodes.option", f"expected binary answers (0 = no, 1 = yes), found {int(opt.max())}")
        for name, value in (("loadings", B), ("intercepts", a), ("prior_mean", mu), ("prior_cov", cov),
                            ("items", items), ("latent_names", names), ("prior_chol", chol),
                            ("item_index", np.array([lookup[x] for x in self.episodes.item.tolist()],
                                                    dtype=np.int64))):
            object.__setattr__(self, name, value)

    @classmethod
    def from_arrays(cls, loadings, intercepts, prior_mean, prior_cov, item_index, option=None, source=None,
                    count=None, **kw) -> "PersonaSpaceData":
        """Build from integer item indices instead of item ids (other fields as the constructor)."""
        B = np.asarray(loadings)
        items = tuple(kw.pop("items", ())) or tuple(f"i{i}" for i in range(B.shape[0] if B.ndim == 2 else 0))
        idx = np.asarray(item_index)
        if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(items))):
            fail("item_index", f"expected 1-d integer indices in [0, {len(items)})")
        ids = np.array(items, dtype=object)[idx] if idx.size else np.array([], dtype=object)
        return cls(loadings, intercepts, prior_mean, prior_cov, Episodes(ids, option, source, count), items=items,
                   **kw)

    @property
    def n_items(self) -> int:
        return int(self.loadings.shape[0])

    @property
    def n_dims(self) -> int:
        return int(self.loadings.shape[1])

    def replace(self, **changes) -> "PersonaSpaceData":
        """A copy with some fields replaced (re-validated)."""
        kw = dict(loadings=self.loadings, intercepts=self.intercepts, prior_mean=self.prior_mean,
                  prior_cov=self.prior_cov, episodes=self.episodes, items=self.items,
                  latent_names=self.latent_names)
        kw.update(changes)
        return PersonaSpaceData(**kw)

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for the dims this data defines."""
        return {"latent_dim": list(self.latent_names), "item": list(self.items),
                "episode": list(range(len(self.episodes)))}


@dataclass(frozen=True)
class PersonaSpacePriors:
    """Hyperparameters of the persona-space model.

    Parameters
    ----------
    prior_scale : float
        Multiplies the prior standard deviations of ``z`` (covariance times
        ``prior_scale**2``); 1 uses the data's prior as is.
    beta_loc, beta_scale : float
        LogNormal prior of ``beta_sft`` and ``beta_icl``.
    bias_scale : float
        Normal prior scale of ``response_bias``.
    """

    prior_scale: float = 1.0
    beta_loc: float = 0.0
    beta_scale: float = 0.5
    bias_scale: float = 1.0

    def __post_init__(self) -> None:
        check_priors(self, real=("beta_loc",))








# ---------------------------------------------------------------- PCA prior
@dataclass(frozen=True)
class PersonaSpacePrior:
    """A Gaussian prior over persona space from persona embeddings (see :func:`persona_space_prior_from_embeddings`).

    Attributes
    ----------
    mean : array (dim,)
        Mean of the persona embeddings in PC coordinates.
    cov : array (dim, dim)
        Their covariance in PC coordinates (diagonal up to ``ridge``).
    components : array (dim, hidden)
        Orthonormal principal axes; PC coordinates are ``components @ h``.
    center : array (hidden,)
        Mean embedding.
    explained_variance : array (dim,)
        Variance along each axis; ``explained_variance_ratio`` as a fraction.
    assistant_axis : array (hidden,)
        The first principal axis (unit norm), the "assistant axis".
    """

    mean: np.ndarray
    cov: np.ndarray
    components: np.ndarray
    center: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    assistant_axis: np.ndarray

    def project(self, hidden) -> np.ndarray:
        """PC coordinates ``components @ h`` of hidden states ``(..., hidden)``."""
        return np.asarray(hidden, dtype=float) @ self.components.T

    def readout(self, weights, bias) -> tuple[np.ndarray, np.ndarray]:
        """Turn linear probes on hidden states into model ``(loadings, intercepts)``.

        A probe ``logit = bias_i + weights_i . h`` evaluated at the
        reconstruction ``h = center + components.T @ (z - components @ center)``
        is ``intercepts_i + loadings_i . z``.

        Parameters
        ----------
        weights : array (item, hidden)
        bias : array (item,)
        """
        W = np.asarray(weights, dtype=float)
        b = np.asarray(bias, dtype=float)
        V = self.components
        loadings = W @ V.T
        intercepts = b + W @ self.center - loadings @ (V @ self.center)
        return loadings, intercepts


def persona_space_prior_from_embeddings(embeddings, n_components: int = 2, *, assistant: int | None = None,
                                        ridge: float = 1e-6) -> PersonaSpacePrior:
    """PCA of persona embeddings -> Gaussian prior over the top principal components.

    Parameters
    ----------
    embeddings : array (n_personas, hidden)
        One embedding (e.g. mean hidden state) per persona.
    n_components : int
        ``d``, the number of principal components kept.
    assistant : int, optional
        Row of the assistant persona: the axes' signs are chosen so that it
        has a non-negative score on each (in particular on the assistant
        axis). Default: the largest-magnitude entry of each axis is positive.
    ridge : float
        Added to the covariance diagonal so it stays positive definite.

    Returns
    -------
    PersonaSpacePrior
        ``mean``/``cov`` of the embeddings in PC coordinates, the axes, and
        the assistant axis (first PC).
    """
    X = np.asarray(embeddings, dtype=float)
    if X.ndim != 2:
        raise DataError(f"embeddings: expected a 2-d array (persona, hidden), got shape {X.shape}")
    check_finite(X, "embeddings")
    n, h = X.shape
    if not 1 <= n_components <= min(n - 1, h):
        raise DataError(f"n_components: expected 1 <= d <= min(n_personas - 1, hidden) = {min(n - 1, h)}, "
                        f"got {n_components}")
    if assistant is not None and not 0 <= assistant < n:
        raise DataError(f"assistant: expected a row index in [0, {n}), got {assistant}")
    center = X.mean(0)
    _, s, vt = np.linalg.svd(X - center, full_matrices=False)
    V = vt[:n_components].copy()
    for k in range(n_components):
        ref = ((X[assistant] - center) @ V[k]) if assistant is not None else V[k, np.argmax(np.abs(V[k]))]
        if ref < 0:
            V[k] = -V[k]
    var = s ** 2 / (n - 1)
    scores = X @ V.T
    cov = np.cov(scores, rowvar=False).reshape(n_components, n_components)
    cov = 0.5 * (cov + cov.T) + ridge * np.eye(n_components)
    return PersonaSpacePrior(mean=scores.mean(0), cov=cov, components=V, center=center,
                             explained_variance=var[:n_components],
                             explained_variance_ratio=var[:n_components] / var.sum(),
                             assistant_axis=V[0].copy())


# ---------------------------------------------------------------- simulation
def simulate(n_items: int = 20, n_dims: int = 2, n_episodes: int = 200, *, seed: int = 0,
             priors: PersonaSpacePriors | None = None, icl_fraction: float = 0.3, heldout_fraction: float = 0.2,
             loading_scale: float = 1.0, intercept_scale: float = 0.5, truth: dict | None = None):
    """Draw a data set from the persona-space model, with its truth.

    Loadings are ``Normal(0, loading_scale)``, intercepts
    ``Normal(0, intercept_scale)``, the prior mean ``Normal(0, 1)`` and the
    prior covariance ``A A^T / d + 0.5 I`` with standard-normal ``A``; then
    ``z``, ``beta_*`` and the answers are drawn from the model.

    Returns
    -------
    psm_bayes.models.design.Simulation
        ``data``, ``truth`` (``z``, ``beta_sft``, ``beta_icl``, ``response_bias``, ``p_item``)
        and the held-out items (no episodes).
    """
    check_fractions(icl_fraction, heldout_fraction)
    priors = priors or PersonaSpacePriors()
    rng = np.random.default_rng(seed)
    B = rng.normal(0.0, loading_scale, (n_items, n_dims))
    a = rng.normal(0.0, intercept_scale, n_items)
    mu = rng.normal(0.0, 1.0, n_dims)
    A = rng.normal(size=(n_dims, n_dims))
    cov = A @ A.T / n_dims + 0.5 * np.eye(n_dims)
    fixed = dict(truth or {})
    z = np.asarray(fixed.get("z", mu + priors.prior_scale * np.linalg.cholesky(cov) @ rng.normal(size=n_dims)))
    beta = [float(fixed.get(f"beta_{s}", rng.lognormal(priors.beta_loc, priors.beta_scale))) for s in SOURCES]
    held, item_idx, source_idx = episode_design(rng, n_items, n_episodes, icl_fraction, heldout_fraction)
    bias = float(fixed.get("response_bias", rng.normal(0.0, priors.bias_scale)))
    eta = episode_logits(maths.NUMPY, B, a, z, item_idx, source_idx, beta[0], beta[1], bias)
    y = (rng.random(n_episodes) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    data = PersonaSpaceData.from_arrays(B, a, mu, cov, item_idx, y, np.array(SOURCES, dtype=object)[source_idx])
    true = {"z": z, "beta_sft": beta[0], "beta_icl": beta[1], "response_bias": bias,
            "p_item": 1.0 / (1.0 + np.exp(-(item_logits(B, a, z) + bias)))}
    return Simulation(data, true, tuple(data.items[i] for i in held))


def simulate_data(priors: PersonaSpacePriors | None = None, *, seed: int, **sizes) -> tuple[PersonaSpaceData, dict]:
    """Catalogue simulator: ``(data, truth)`` from :func:`simulate` (``sizes`` as its keywords)."""
    sim = simulate(seed=seed, priors=priors, **sizes)
    return sim.data, sim.truth


__all__ = ["NAME", "DIMS", "LATENTS", "PersonaSpaceData", "PersonaSpacePriors", "PersonaSpacePrior",
           "persona_space_prior_from_embeddings", "simulate", "item_logits", "episode_logits",
           "simulate_data"]

"""NUTS fits under the convergence policy: settings, refits of unconverged fits, diagnostics.

The names every analysis module shares (:data:`PSM`, :data:`NULLS`, :data:`ENCOMPASSING`) and
:class:`FitSettings` / :func:`fit_with_refit` live here, below both :mod:`~psm_bayes.experiments.analysis.fits`
(fits and comparison of the run) and :mod:`~psm_bayes.experiments.analysis.refits` (exact
leave-one-item-out refits), so neither imports the other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


PSM = "persona_selection"
NULLS: tuple[str, ...] = ("response_bias", "trait_indicator", "profile_similarity", "surface_similarity",
                          "generic_shift", "permuted_personas")
"""The nulls a run compares the PSM with (every one, :func:`psm_bayes.experiments.analysis.criteria.psm_beats_nulls`)."""
ENCOMPASSING = "encompassing"
"""PSM + surface similarity: fitted beside the nulls for its ``persona_weight`` (a secondary estimate)."""
PARETO_K_BAD = 0.7
CV_METHOD = ("leave-one-item-out cross-validation: log-likelihood of all conditions of an evaluation item with "
             "the item's random effect integrated out (adaptive Gauss-Hermite); PSIS-LOO, with an exact refit "
             f"without the item wherever Pareto k > {PARETO_K_BAD} (pareto_k_bad counts those items, "
             "exact_refits the refits made); stacking weights from the same item terms")


REFIT_SCHEDULE: tuple[dict, ...] = ({"target_accept": 0.95, "warmup": 2, "min_warmup": 200, "samples": 1},
                                    {"target_accept": 0.99, "warmup": 4, "min_warmup": 500, "samples": 2})
"""Convergence policy: the settings of refit 1 and 2 (``target_accept`` at least this; warm-up multiplied
by ``warmup`` and at least ``min_warmup``; draws multiplied by ``samples``; a new seed each).  A Laplace-started
fit with divergences, a broken chain or R-hat >= :data:`LAPLACE_GIVE_UP_RHAT` is refitted with the adapted
mass matrix (``init="median"``, at least :data:`ADAPTED_MIN_WARMUP` warm-up): a fixed mass matrix cannot
follow a funnel (a hierarchical scale near 0; on simulated data with a true drift_sd of 0.01, R-hat 2.7
and bulk ESS 2). Milder failures (R-hat 1.01-1.05, low ESS) are refitted from the Laplace start again."""
LAPLACE_GIVE_UP_RHAT = 1.05
ADAPTED_MIN_WARMUP = 1000
"""Warm-up of a refit that adapts the mass matrix (measured on the default run's data: 500 left 74 leapfrog
steps per draw and R-hat 1.015; 1000 gave 23-26 and R-hat <= 1.009)."""


@dataclass(frozen=True)
class FitSettings:
    """NUTS settings of every fit.

    Parameters
    ----------
    num_warmup, num_samples, num_chains : int
    target_accept : float
    refit_unconverged : bool
        The convergence policy (:func:`fit_with_refit`): refit a fit with
        divergences, max R-hat >= 1.01 or min bulk ESS < 100 per chain, with
        a higher ``target_accept`` and more warm-up (and draws), at most
        ``max_refits`` times, each attempt recorded.
    max_refits : int
        Refits the policy may make (0, 1 or 2).
    saved_loglik_draws, saved_predictive_draws : int
        Draws (all chains together) kept in the saved ``fits/*.nc`` for the
        pointwise log-likelihood and the posterior predictive
        (:func:`psm_bayes.experiments.output.outputs.compact_fit`); the report's
        numbers use every draw.
    logodds_df : float, optional
        Student-t degrees of freedom of the observed log-odds (``None``: Normal).
    exact_refits : bool
        Refit without each item whose Pareto ``k`` exceeds 0.7 in the
        grouped cross-validation (:mod:`psm_bayes.experiments.analysis.refits`).
    joint : bool
        Also fit the joint data (ICL + SFT + cross) for the cross-prediction criterion
        (``--no-joint-fits`` skips them: that criterion is then not assessed).
    init : {"laplace", "median"}
        Chain start and mass matrix (:func:`psm_bayes.inference.fit_nuts`):
        ``"laplace"`` (default) starts at draws from the Laplace approximation
        and keeps its covariance as the mass matrix, so a short warm-up
        (step size only) suffices; ``"median"`` adapts the mass matrix.
    """

    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 2
    target_accept: float = 0.9
    refit_unconverged: bool = True
    max_refits: int = 2
    saved_loglik_draws: int = 500
    saved_predictive_draws: int = 100
    logodds_df: float | None = 5.0
    exact_refits: bool = True
    init: str = "laplace"
    joint: bool = True

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_chains"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        for name in ("num_warmup", "saved_loglik_draws", "saved_predictive_draws"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)!r}")
        if not 0 <= int(self.max_refits) <= len(REFIT_SCHEDULE):
            raise ValueError(f"max_refits: expected 0 .. {len(REFIT_SCHEDULE)}, got {self.max_refits!r}")
        if not 0.5 <= float(self.target_accept) < 1:
            raise ValueError(f"target_accept: expected in [0.5, 1), got {self.target_accept!r}")
        from psm_bayes.inference import NUTS_INITS

        if self.init not in NUTS_INITS:
            raise ValueError(f"init: expected one of {NUTS_INITS}, got {self.init!r}")
        if self.logodds_df is not None and not self.logodds_df > 0:
            raise ValueError(f"logodds_df: expected > 0 or None, got {self.logodds_df!r}")

    @property
    def nuts(self) -> dict:
        """Keyword arguments of :func:`psm_bayes.inference.fit_nuts` (without the seed)."""
        return {"num_warmup": self.num_warmup, "num_samples": self.num_samples, "num_chains": self.num_chains,
                "target_accept": self.target_accept, "init": self.init}

    def priors(self) -> Any:
        """The family's :class:`~psm_bayes.models.selection.Priors` (Student-t observations)."""
        from psm_bayes.models.selection import Priors

        return Priors(logodds_df=self.logodds_df)


def policy_problems(d: dict, num_chains: int) -> list[str]:
    """Why a fit fails the convergence policy (empty: it passes).

    A fit fails with any divergent transition, max R-hat >= 1.01 or not computable (with >= 2 chains),
    min bulk ESS < 100 per chain or not computable (R-hat is not trustworthy on fewer), or a broken fit
    (non-finite draws, a chain that never moves: :func:`psm_bayes.diagnostics.broken_fit`).
    """
    broken = list(d.get("broken", []))
    out = [f"broken fit: {broken[0]}" + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else "")] if broken else []
    if d["divergences"] > 0:
        out.append(f"{d['divergences']} divergences")
    if num_chains > 1 and not d["max_rhat"] < 1.01:
        out.append(f"max R-hat {d['max_rhat']:.3f}")
    if not d["min_ess_bulk"] >= 100 * num_chains:
        out.append(f"min bulk ESS {d['min_ess_bulk']:.0f}")
    return out


def fit_with_refit(model: Any, data: Any, settings: FitSettings, seed: int,
                   on_refit: Callable[[str], None] | None = None, **kw: Any) -> Any:
    """NUTS with ``settings``, refitted (at most twice, :data:`REFIT_SCHEDULE`) while it fails the policy.

    Every attempt (seed, settings, R-hat, ESS, divergences, problems) is recorded as JSON in the returned
    fit's ``attrs["fit_attempts"]`` (read by :func:`fit_diagnostics`, so it reaches ``results.json``);
    ``on_refit(message)`` is called before each refit (the stage log).  The last attempt is returned,
    converged or not: the ``fits_converged`` criterion reports a fit that still fails.
    """
    import json

    from psm_bayes.inference import fit_nuts

    if not kw.get("predictive", True):
        raise ValueError("predictive: fit_with_refit needs predictive=True (the convergence check reads every group)")
    nuts = settings.nuts
    attempts: list[dict] = []
    schedule = REFIT_SCHEDULE[:settings.max_refits] if settings.refit_unconverged else ()
    init = settings.init
    for k in range(len(schedule) + 1):
        dt = fit_nuts(model, data, seed=seed + 1000 * k, **nuts, **kw)
        d = fit_diagnostics(dt)
        problems = policy_problems(d, settings.num_chains)
        ran = dt["posterior"].attrs.get("init", nuts["init"])   # "median" where no Laplace mode was found
        attempts.append({"attempt": k, "seed": seed + 1000 * k, **nuts, "init": ran,
                         **{key: d[key] for key in ("max_rhat", "min_ess_bulk", "divergences")},
                         "problems": problems})
        if not problems or k == len(schedule):
            break
        step = schedule[k]
        if init == "laplace" and (d["divergences"] > 0 or d.get("broken") or not d["max_rhat"] < LAPLACE_GIVE_UP_RHAT):
            init = "median"
        warmup = max(step["warmup"] * settings.num_warmup, step["min_warmup"])
        adapted_after_laplace = init == "median" and settings.init == "laplace"
        nuts = {"num_warmup": max(warmup, ADAPTED_MIN_WARMUP) if adapted_after_laplace else warmup,
                "num_samples": step["samples"] * settings.num_samples, "num_chains": settings.num_chains,
                "target_accept": max(settings.target_accept, step["target_accept"]), "init": init}
        if on_refit is not None:
            on_refit(f"refit {k + 1} ({', '.join(problems)}): warm-up {nuts['num_warmup']}, draws "
                     f"{nuts['num_samples']}, target_accept {nuts['target_accept']}, start {init}")
    dt.attrs["fit_attempts"] = json.dumps(attempts)
    return dt


def fit_diagnostics(dt: Any) -> dict:
    """``max_rhat``, ``min_ess_bulk``, ``divergences``, ``ok``, and the refits of a fit (latent sites)."""
    import json

    from psm_bayes.diagnostics import check

    v = check(dt)
    post = dt["posterior"]
    attempts = json.loads(dt.attrs.get("fit_attempts", "[]"))
    return {"max_rhat": float(v.max_rhat), "min_ess_bulk": float(v.min_ess_bulk), "divergences": int(v.divergences),
            "ok": bool(v.ok), "problems": list(v.problems), "broken": list(getattr(v, "broken", ())),
            "chains": int(post.sizes.get("chain", 1)), "draws": int(post.sizes.get("draw", 0)),
            "refits": max(len(attempts) - 1, 0), "attempts": attempts}


def posterior_summary(dt: Any, name: str, prob: float = 0.9) -> dict:
    """Mean, sd and central ``prob`` interval of a scalar posterior variable."""
    x = np.asarray(dt["posterior"][name].values).ravel()
    lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": float(x.mean()), "sd": float(x.std()), "lo": float(lo), "hi": float(hi), "prob": prob}

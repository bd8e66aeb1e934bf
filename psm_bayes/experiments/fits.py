"""Stage 5 of the experiment: NUTS fits of every model and null on the measured data.

:func:`fit_models` fits the ICL-curve laws (``psm_icl``, ``bayesian_icl_law``,
``power_law``, ``bounded_power_law``) on the ICL data, with an extrapolation
check (fit on small n, predict large n), the SFT models (``psm_sft``,
``null_sft``) on the SFT shifts and ``psm_joint`` on both, and returns a
frozen :class:`FitStage`.  :func:`fit_with_refit` is the one NUTS call (one
refit with more warm-up when a fit misses R-hat/ESS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from psm_bayes.experiments.stagelog import StageLog


@dataclass(frozen=True)
class FitSettings:
    """NUTS settings of every fit.

    Parameters
    ----------
    num_warmup, num_samples, num_chains : int
    target_accept : float
    refit_unconverged : bool
        Refit once (2x warm-up and draws, ``target_accept`` 0.95) when max
        R-hat >= 1.01 or min bulk ESS < 400.
    extrapolation_fraction : float
        Share of the distinct shot counts used to fit before extrapolating.
    saved_loglik_draws, saved_predictive_draws : int
        Draws (all chains together) kept in the saved ``fits/*.nc`` for the
        pointwise log-likelihood and the posterior predictive
        (:func:`psm_bayes.experiments.outputs.compact_fit`); the report's
        numbers use every draw.
    """

    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 2
    target_accept: float = 0.9
    refit_unconverged: bool = True
    extrapolation_fraction: float = 0.5
    saved_loglik_draws: int = 500
    saved_predictive_draws: int = 100

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_chains"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)!r}")
        for name in ("num_warmup", "saved_loglik_draws", "saved_predictive_draws"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)!r}")
        if not 0.5 <= float(self.target_accept) < 1:
            raise ValueError(f"target_accept: expected in [0.5, 1), got {self.target_accept!r}")
        if not 0 < float(self.extrapolation_fraction) < 1:
            raise ValueError(f"extrapolation_fraction: expected in (0, 1), got {self.extrapolation_fraction!r}")

    @property
    def nuts(self) -> dict:
        """Keyword arguments of :func:`psm_bayes.inference.fit_nuts` (without the seed)."""
        return {"num_warmup": self.num_warmup, "num_samples": self.num_samples, "num_chains": self.num_chains,
                "target_accept": self.target_accept}


def fit_with_refit(model: Any, data: Any, settings: FitSettings, seed: int, **kw: Any) -> Any:
    """NUTS with ``settings``; one refit (seed + 1000, 2x warm-up and draws, target_accept 0.95) if unconverged."""
    from psm_bayes.inference import fit_nuts

    dt = fit_nuts(model, data, seed=seed, **settings.nuts, **kw)
    if settings.refit_unconverged:
        d = fit_diagnostics(dt)
        if d["max_rhat"] >= 1.01 or d["min_ess_bulk"] < 400:
            first = {k: d[k] for k in ("max_rhat", "min_ess_bulk", "divergences")}
            dt = fit_nuts(model, data, seed=seed + 1000, num_warmup=2 * settings.num_warmup,
                          num_samples=2 * settings.num_samples, num_chains=settings.num_chains,
                          target_accept=max(settings.target_accept, 0.95), **kw)
            dt.attrs["refit"] = 1
            dt.attrs["first_fit"] = str(first)
    return dt


def fit_diagnostics(dt: Any) -> dict:
    """``max_rhat``, ``min_ess_bulk``, ``divergences`` and ``ok`` of a fit (latent sites)."""
    from psm_bayes.diagnostics import check

    v = check(dt)
    post = dt["posterior"]
    return {"max_rhat": float(v.max_rhat), "min_ess_bulk": float(v.min_ess_bulk), "divergences": int(v.divergences),
            "ok": bool(v.ok), "problems": list(v.problems),
            "chains": int(post.sizes.get("chain", 1)), "draws": int(post.sizes.get("draw", 0)),
            "refit": bool(dt.attrs.get("refit", 0)), "first_fit": str(dt.attrs.get("first_fit", ""))}


def posterior_summary(dt: Any, name: str, prob: float = 0.9) -> dict:
    """Mean, sd and central ``prob`` interval of a scalar posterior variable."""
    x = np.asarray(dt["posterior"][name].values).ravel()
    lo, hi = np.quantile(x, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": float(x.mean()), "sd": float(x.std()), "lo": float(lo), "hi": float(hi), "prob": prob}


@dataclass(frozen=True)
class FitStage:
    """Output of :func:`fit_models`.

    Attributes
    ----------
    fits : dict of str to xarray.DataTree
        Every fit, by model name.
    icl_models, sft_models : tuple of str
        Names of the ICL laws and the SFT models compared.
    extrapolation : dict
        Per ICL law: ``rmse``, ``nrmse``, ... of predicting large-n nll from a small-n fit.
    train_max_shots : int
        Largest shot count in the extrapolation fit.
    test_shots : tuple of int
        Shot counts predicted.
    """

    fits: dict
    icl_models: tuple[str, ...]
    sft_models: tuple[str, ...]
    extrapolation: dict
    train_max_shots: int
    test_shots: tuple[int, ...]


def fit_models(icl_data: Any, sft_data: Any, settings: FitSettings, seed: int = 0,
               log: StageLog | None = None) -> FitStage:
    """Fit the ICL laws, the SFT models and the joint model (see the module docstring).

    Parameters
    ----------
    icl_data : ICLData
    sft_data : SFTShiftData
    settings : FitSettings
    seed : int
        Base seed; fit ``j`` of the ICL laws uses ``seed + j``, the SFT models ``seed + 10 + j``, the joint
        model ``seed + 20``.
    log : StageLog, optional
        Times each fit (progress lines when it was made with ``progress=True``).
    """
    from psm_bayes.models import icl_curves
    from psm_bayes.comparison import extrapolation_error
    from psm_bayes.models.icl_curves_numpyro import ICL_MODELS
    from psm_bayes.models.psm_joint import JointData
    from psm_bayes.models.psm_joint_numpyro import psm_joint
    from psm_bayes.models.sft_shift_numpyro import SFT_MODELS

    log = log or StageLog()
    fits: dict[str, Any] = {}
    extrap: dict[str, dict] = {}
    train_d, test_d = icl_curves.extrapolation_split(icl_data, settings.extrapolation_fraction)
    for j, (name, model) in enumerate(ICL_MODELS.items()):
        log.stage(f"NUTS {name}")
        fits[name] = fit_with_refit(model, icl_data, settings, seed + j)
        extrap[name] = extrapolation_error(model, train_d, test_d, seed + j, **settings.nuts)
        log.done(f"NUTS {name}")
    for j, (name, model) in enumerate(SFT_MODELS.items()):
        log.stage(f"NUTS {name}")
        fits[name] = fit_with_refit(model, sft_data, settings, seed + 10 + j)
        log.done(f"NUTS {name}")
    log.stage("NUTS psm_joint")
    fits["psm_joint"] = fit_with_refit(psm_joint, JointData(icl_data, sft_data), settings, seed + 20)
    log.done("NUTS psm_joint")
    return FitStage(fits=fits, icl_models=tuple(ICL_MODELS), sft_models=tuple(SFT_MODELS), extrapolation=extrap,
                    train_max_shots=int(train_d.n_shots.max()),
                    test_shots=tuple(sorted(map(int, np.unique(test_d.n_shots)))))

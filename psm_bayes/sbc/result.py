"""The result of an SBC run: ranks, posterior summaries, the calibration verdict and the contraction."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from psm_bayes.sbc.config import SBCConfig
from psm_bayes.sbc.ranks import contraction, ecdf_test, rank_pit


@dataclass
class SBCResult:
    """Ranks and diagnostics of an SBC run.

    Attributes
    ----------
    model : str
    params : list of str
        Scalar parameters (``w[0]``, ``beta_sft``, ...).
    ranks : array (replicate, param)
        Rank of the true value among ``num_draws`` posterior draws.
    truth, post_mean, post_sd, ess_bulk : arrays (replicate, param)
    divergences : array (replicate,)
        Post-warm-up divergent transitions (all chains, thinned-out draws included).
    accept_prob : array (replicate,)
        Mean post-warm-up acceptance probability (NaN where the backend does not report it).
    config : SBCConfig
    method : str
    wall_time : float
        Seconds spent (prior draws and compilation included).
    seed : int
    meta : dict
        Free-form run facts (backend, chunk size, data sizes...).
    log_scale : bool array (param,), optional
        Parameters whose contraction is measured on the log scale
        (:func:`psm_bayes.sbc.ranks.contraction_scale`); None: all natural.
    post_sd_scale : array (replicate, param), optional
        Posterior sd on the contraction scale (default ``post_sd``).
    """

    model: str
    params: list[str]
    ranks: np.ndarray
    truth: np.ndarray
    post_mean: np.ndarray
    post_sd: np.ndarray
    ess_bulk: np.ndarray
    divergences: np.ndarray
    accept_prob: np.ndarray
    config: SBCConfig
    method: str
    wall_time: float
    seed: int = 0
    meta: dict = field(default_factory=dict)
    log_scale: np.ndarray | None = None
    post_sd_scale: np.ndarray | None = None

    @property
    def num_draws(self) -> int:
        """``L``: ranks take the values ``0..L``."""
        return self.config.num_draws

    @property
    def n_replicates(self) -> int:
        return int(self.ranks.shape[0])

    @property
    def contraction(self) -> np.ndarray:
        """Posterior sd / prior sd per parameter, positive ones on the log scale (:func:`~psm_bayes.sbc.ranks.contraction`)."""
        if self.log_scale is None or self.post_sd_scale is None:
            return contraction(self.truth, self.post_sd)
        return contraction(self.truth, self.post_sd_scale, self.log_scale)

    def pit(self) -> np.ndarray:
        """PIT values of the ranks, (replicate, param) (:func:`psm_bayes.sbc.ranks.rank_pit`, seed 0)."""
        return rank_pit(self.ranks, self.num_draws)

    def calibration(self, alpha: float = 0.01):
        """Per-parameter verdict of the simultaneous ECDF band test (Bonferroni over parameters).

        Returns
        -------
        pandas.DataFrame
            Index ``param``; columns ``reject``, ``excess`` (above 1: outside
            the band), ``contraction``, ``rank_mean`` (0.5 expected),
            ``ess_bulk_mean``.
        """
        import pandas as pd

        test = ecdf_test(self.pit(), alpha)
        return pd.DataFrame({"reject": test["reject"], "excess": test["excess"], "contraction": self.contraction,
                             "rank_mean": self.ranks.mean(0) / self.num_draws,
                             "ess_bulk_mean": np.nanmean(self.ess_bulk, 0)},
                            index=pd.Index(self.params, name="param"))

    def passed(self, alpha: float = 0.01) -> bool:
        """True when no parameter's ECDF leaves its simultaneous band."""
        return not bool(self.calibration(alpha)["reject"].any())

    def to_frame(self):
        """Long table: one row per (replicate, param) with rank, truth, posterior mean/sd, ESS."""
        import pandas as pd

        R, P = self.ranks.shape
        return pd.DataFrame({
            "replicate": np.repeat(np.arange(R), P), "param": np.tile(self.params, R),
            "rank": self.ranks.ravel(), "truth": self.truth.ravel(), "post_mean": self.post_mean.ravel(),
            "post_sd": self.post_sd.ravel(), "ess_bulk": self.ess_bulk.ravel(),
            "post_sd_scale": (self.post_sd if self.post_sd_scale is None else self.post_sd_scale).ravel(),
            "log_scale": np.tile(np.zeros(P, bool) if self.log_scale is None else self.log_scale, R),
            "divergences": np.repeat(self.divergences, P), "accept_prob": np.repeat(self.accept_prob, P)})

    def summary(self, alpha: float = 0.01) -> dict:
        """JSON-friendly summary: verdict, worst band excess, contraction per parameter, timing."""
        cal = self.calibration(alpha)
        return {"model": self.model, "method": self.method, "replicates": self.n_replicates,
                "num_draws": self.num_draws, "alpha": alpha, "passed": not bool(cal["reject"].any()),
                "max_excess": float(cal["excess"].max()),
                "excess": {k: float(v) for k, v in cal["excess"].items()},
                "contraction": {k: float(v) for k, v in cal["contraction"].items()},
                "max_contraction": float(cal["contraction"].max()),
                "contraction_log_scale": [p for p, lg in zip(self.params, self.log_scale if self.log_scale is not None
                                                                  else [False] * len(self.params)) if lg],
                "divergences": int(self.divergences.sum()), "wall_time_s": self.wall_time, "seed": self.seed,
                "config": asdict(self.config), "meta": dict(self.meta)}

    def save(self, out_dir: str | os.PathLike, alpha: float = 0.01, *, overwrite: bool = False) -> dict[str, str]:
        """Write the result files to ``out_dir`` (:func:`psm_bayes.sbc.store.save_result`)."""
        from psm_bayes.sbc.store import save_result

        return save_result(self, out_dir, alpha, overwrite=overwrite)

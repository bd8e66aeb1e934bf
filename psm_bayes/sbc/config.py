"""Settings of an SBC run: the sampler configuration, the drivers, the documented data sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from psm_bayes.models.selection import MODELS as SELECTION_FAMILY

METHODS = ("vmap", "loop", "fit", "simuk")
"""Drivers of :func:`psm_bayes.sbc.run_sbc` (see :mod:`psm_bayes.sbc.driver`)."""

VMAP_CHUNK = 50
"""Default replicates per vectorised call: a batched NUTS step lasts as long as the longest tree in the
batch, so very large batches waste work (measured: 50 per call ran 200 replicates 2.3x faster than 200)."""

FITTED_SIZES: Mapping[str, Any] = {
    "n_personas": 3, "n_traits": 2, "n_eval": 4, "n_shot_items": 8, "shots": (1, 4, 16, 64), "orderings": 2,
    "sft_episodes": (8, 24), "sft_seeds": 2, "sft_traits": 1, "cross_shots": (4, 16), "observation": "measurements"}
"""The SBC design of the persona-selection family: the fitted observation model on the real design's structure
(:func:`psm_bayes.models.selection_design.design`). Measured log-odds only (Student-t, item effects,
per-condition drift), one row per (condition, evaluation item); ``base``; ICL for 2 traits x 2 poles x 2
orderings x 4 shot counts (4 types of 8 conditions); SFT on one trait, 2 poles x 2 LoRA seeds x 2
checkpoints (2 types of 4); cross, 2 poles x 2 seeds x 2 orderings x 2 counts (1 type of 16): 57
conditions, 7 types, 392 rows. The real default run has more of each (4 traits, 3 seeds, 2 SFT traits);
this size keeps a 200-replicate run under 20 minutes on 2 shared cores."""
SBC_PRIORS: Mapping[str, Mapping[str, Any]] = {name: {"logodds_df": 5.0} for name in SELECTION_FAMILY}
"""Prior values of the documented SBC runs, over the catalogue's defaults: the family is validated with the
observation model it is fitted with (Student-t(5) log-odds, ``experiments.analysis.fitting.FitSettings.logodds_df``)."""
_ICL_LAW_SIZES = {"n_personas": 4, "n_items": 40, "n_curves": 16, "n_values": (0, 1, 2, 4, 8)}
SBC_SIZES: Mapping[str, Mapping[str, Any]] = {
    **{name: FITTED_SIZES for name in SELECTION_FAMILY},
    # 30-replicate probes of the contraction (log scale for positive parameters) at these sizes vs the
    # catalogue's quick sizes: persona_mixture 0.31 (w) vs 1.10; persona_space 0.47 at 600 episodes
    # (0.94 at 20); power laws 0.36 (response_bias, identified across curves with Yes and No targets)
    # vs 0.63 at 4 curves; psm_sft 0.31 with 3 trained items (beta_sft saturates with 12: 0.51 at any
    # number of items); psm_joint 0.22 vs 0.55.
    "persona_mixture": {"n_personas": 3, "n_items": 20, "n_options": 2, "n_episodes": 2000},
    "persona_space": {"n_items": 20, "n_dims": 2, "n_episodes": 800},
    "power_law": _ICL_LAW_SIZES,
    "bounded_power_law": _ICL_LAW_SIZES,
    # K (ICL efficiency) enters only as K log P_c with a free P_c per curve, so it needs many curves:
    # 0.84 (4 curves), 0.67 (16), 0.56 (32), 0.53 (32 curves, shots up to 64), 0.39 (64 curves)
    "bayesian_icl_law": {"n_personas": 4, "n_items": 40, "n_curves": 64, "n_values": (0, 1, 2, 4, 8, 16)},
    "psm_sft": {"n_personas": 4, "n_items": 80, "n_train": 3},
    "psm_joint": {"n_personas": 4, "n_items": 60, "n_curves": 8, "n_train": 3},
}
"""Data sizes (simulator keyword arguments) of the documented SBC run of each catalogued model.

They update the catalogue's small ``sizes`` of the model (given in full here, so
that a change of the catalogue's quick sizes does not move the documented run). The sizes are chosen
so that the posterior contracts to at most half the prior sd on the model's
main parameters (:attr:`SBCResult.contraction <psm_bayes.sbc.result.SBCResult.contraction>`
<= 0.5); ``benchmarks/sbc_table.py`` prints the table that shows it.
"""


def default_method(backend: str) -> str:
    """``"fit"`` for Pyro; for NumPyro ``"vmap"`` on an accelerator and ``"loop"`` on CPU.

    On CPU (2 cores, tiny models, a few hundred replicates) compiling the
    vectorised kernel cost ~3x the single-replicate one while sampling was
    only ~1.5-2x faster, so the loop finished first; measured again on 20
    replicates of persona_selection: loop 31 s, vmap 373 s, simuk 270 s
    (``benchmarks/bench_sbc.py``, ``benchmarks/sbc_results.md``).
    """
    if backend != "numpyro":
        return "fit"
    import jax

    return "loop" if jax.default_backend() == "cpu" else "vmap"


@dataclass(frozen=True)
class SBCConfig:
    """Sampler settings of an SBC run.

    Parameters
    ----------
    num_draws : int
        ``L``, posterior draws kept per replicate (ranks take ``L + 1`` values).
    thin : int
        Keep every ``thin``-th NUTS draw (reduces autocorrelation, so that the
        ``L`` draws are close to independent as SBC assumes).
    num_warmup : int
        NUTS warm-up (adaptation) iterations per chain.
    num_chains : int
        Chains per replicate; must divide ``num_draws``.
    target_accept : float
        Target acceptance probability of step-size adaptation.
    max_tree_depth : int
        NUTS maximum tree depth.
    step_size : float
        Initial (or, with ``adapt_step_size=False``, fixed) step size.
    adapt_step_size, adapt_mass_matrix : bool
        Turn adaptation off to build deliberately broken samplers.
    init_jitter : float
        Chains start at the prior median plus ``Uniform(-init_jitter,
        init_jitter)`` in unconstrained space (``"vmap"``/``"loop"``).
    init : {"median", "laplace"}
        ``"laplace"``: chains start at draws from the Laplace approximation of
        each replicate's posterior, whose covariance is a fixed dense mass
        matrix (the run's fits, :mod:`psm_bayes.inference.nuts`; warm-up then
        adapts the step size only, and ``init_jitter`` and
        ``adapt_mass_matrix`` are not used).
    """

    num_draws: int = 99
    thin: int = 2
    num_warmup: int = 300
    num_chains: int = 1
    target_accept: float = 0.8
    max_tree_depth: int = 8
    step_size: float = 1.0
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    init_jitter: float = 0.5
    init: str = "median"

    def __post_init__(self) -> None:
        if self.num_draws < 1 or self.thin < 1 or self.num_warmup < 0 or self.num_chains < 1:
            raise ValueError("num_draws >= 1, thin >= 1, num_warmup >= 0 and num_chains >= 1 expected, got "
                             f"{self.num_draws}, {self.thin}, {self.num_warmup}, {self.num_chains}")
        if self.num_draws % self.num_chains:
            raise ValueError(f"num_chains: expected a divisor of num_draws={self.num_draws}, got {self.num_chains}")
        from psm_bayes.inference import NUTS_INITS

        if self.init not in NUTS_INITS:
            raise ValueError(f"init: expected one of {NUTS_INITS}, got {self.init!r}")
        if not 0 < self.target_accept < 1 or self.step_size <= 0 or self.max_tree_depth < 1:
            raise ValueError("target_accept in (0, 1), step_size > 0 and max_tree_depth >= 1 expected")

    @property
    def draws_per_chain(self) -> int:
        """Kept draws per chain."""
        return self.num_draws // self.num_chains

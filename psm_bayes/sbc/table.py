"""The SBC table: calibration verdict and posterior contraction for every catalogued model.

Each model is run at its documented SBC sizes (the catalogue's ``sizes``
updated by :data:`~psm_bayes.sbc.config.SBC_SIZES`) and priors
(:data:`~psm_bayes.sbc.config.SBC_PRIORS`) on its main parameters (the
catalogue's ``latents``). Models listed in :data:`FAULTS` get more rows: the
same run with a SUBTLE :class:`Fault`, which the same test must reject --
the truth drawn with other prior values than the fitted model's, the
fitted model missing a term the data have, or the data simulated with one
scale off.

Why a simulator's prior scale must be the WIDER one: with a posterior at
half the prior sd, a fitted prior 1.5x too wide moves the ranks so little
that the ECDF test rejects it in only ~4% of runs even at N = 500 replicates
(a normal-normal calculation, ``tests/test_sbc.py``); a fitted prior 1.5x too
narrow (equivalently, the simulator's 1.5x wider) is rejected in ~70% of runs
at N = 200 and ~99% at N = 500. A prior fault weakens as the posterior
contracts; a scale error in the simulated data does the opposite.

Command: ``benchmarks/sbc_table.py`` prints the table (markdown), and with
``--parameters`` the per-parameter table (:func:`parameter_table`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from psm_bayes.models import catalogue
from psm_bayes.sbc.config import SBC_PRIORS, SBC_SIZES, SBCConfig
from psm_bayes.sbc.driver import run_sbc
from psm_bayes.sbc.result import SBCResult


@dataclass(frozen=True)
class Fault:
    """A deliberate, subtle error in an SBC run, which the calibration test must reject.

    Attributes
    ----------
    label : str
        One line (the table's ``fault`` column).
    simulator : mapping
        Prior values the truth and data are drawn with (the fitted model keeps the documented priors).
    fit : mapping
        Prior values of the fitted model (the simulator keeps the documented priors).
    data_scale : mapping
        Latent sites multiplied in the simulated data only (the truth is recorded unscaled).
    data_redraw : tuple of str
        Latent sites drawn again, given the scaled ones, in the simulated data (the sites whose
        distribution a scaled site sets).
    """

    label: str
    simulator: Mapping[str, Any] = field(default_factory=dict)
    fit: Mapping[str, Any] = field(default_factory=dict)
    data_scale: Mapping[str, float] = field(default_factory=dict)
    data_redraw: tuple[str, ...] = ()


FAULTS: Mapping[str, tuple[Fault, ...]] = {
    "persona_selection": (
        Fault("per-condition drift in the data, one offset per type in the fit", fit={"condition_drift": False}),
        Fault("drift_sd 1.5x in the simulated data (truth recorded unscaled)", data_scale={"drift_sd": 1.5},
              data_redraw=("drift",)),
    ),
    "persona_mixture": (Fault("beta_scale 0.75 in the simulator (fitted 0.5)", simulator={"beta_scale": 0.75}),),
}
"""Subtle faults per model (see :class:`Fault`)."""

CONTRACTION_TARGET = 0.5
"""Documented sizes must give posterior sd <= this fraction of the prior sd on every main parameter."""


def sizes_of(name: str) -> dict[str, Any]:
    """The documented SBC data sizes of catalogued model ``name``."""
    return {**catalogue.get(name).sizes, **SBC_SIZES.get(name, {})}


def priors_of(name: str) -> Any:
    """The documented SBC priors of catalogued model ``name`` (its defaults updated by ``SBC_PRIORS``)."""
    return dataclasses.replace(catalogue.get(name).priors(), **SBC_PRIORS.get(name, {}))


def model_sbc(name: str, *, replicates: int, seed: int = 0, config: SBCConfig | None = None, method: str = "auto",
              backend: str = "numpyro", sizes: Mapping[str, Any] | None = None,
              fault: Fault | Mapping[str, Any] | None = None, **kwargs) -> SBCResult:
    """SBC of catalogued model ``name`` on its main parameters.

    Parameters
    ----------
    name : str
        Catalogue name.
    replicates, seed, config, method
        As in :func:`psm_bayes.sbc.run_sbc`.
    backend : str
    sizes : mapping, optional
        Simulator sizes of the data template (default :func:`sizes_of`).
    fault : Fault or mapping, optional
        A deliberate fault; a mapping is ``Fault(simulator=mapping)``: prior
        values the truth is drawn with (``{"beta_scale": 1.5}``) while the
        fitted model keeps the documented priors.
    **kwargs
        Passed to :func:`~psm_bayes.sbc.run_sbc` (``chunk_size``, ``ray_address``...).
    """
    entry = catalogue.get(name)
    base = priors_of(name)
    if fault is not None and not isinstance(fault, Fault):
        fault = Fault(", ".join(f"{k}={v:g} in the simulator (fitted {getattr(base, k):g})"
                                for k, v in dict(fault).items()), simulator=dict(fault))
    fault = fault or Fault("")
    priors = dataclasses.replace(base, **dict(fault.simulator)) if fault.simulator else base
    fit_priors = dataclasses.replace(base, **dict(fault.fit)) if fault.fit else base
    sizes = sizes_of(name) if sizes is None else dict(sizes)
    data, _ = entry.simulator()(base, seed=seed, **sizes)
    model = entry.model(backend)
    latents = entry.latents
    if fault.fit:  # rank what both the simulator and the fitted model have
        from psm_bayes.models.base import spec_of
        from psm_bayes.models.numpyro_predict import latent_sites

        have = set(latent_sites(model, data, fit_priors)) | set(spec_of(model).deterministic)
        latents = tuple(k for k in latents if k in have)
    res = run_sbc(model, data, replicates=replicates, seed=seed, priors=priors, fit_priors=fit_priors,
                  config=config, method=method, latents=latents, data_scale=dict(fault.data_scale) or None,
                  data_redraw=fault.data_redraw, **kwargs)
    res.meta.update(sizes=sizes, fault=fault.label or None)
    return res


def parameter_table(res: SBCResult, alpha: float = 0.01):
    """One row per ranked parameter: contraction (and its scale), ECDF band excess, verdict, rank mean, ESS."""
    cal = res.calibration(alpha)
    logs = [bool(x) for x in (res.log_scale if res.log_scale is not None else [False] * len(res.params))]
    return cal.assign(scale=["log" if lg else "natural" for lg in logs],
                      verdict=["REJECT" if r else "pass" for r in cal["reject"]]).reset_index()[
        ["param", "contraction", "scale", "excess", "verdict", "rank_mean", "ess_bulk_mean"]].round(3)


def table_row(res: SBCResult, alpha: float = 0.01) -> dict[str, Any]:
    """One row of the SBC table."""
    cal = res.calibration(alpha)
    worst = cal["contraction"].idxmax()
    logs = set(res.params[i] for i in range(len(res.params)) if res.log_scale is not None and res.log_scale[i])
    worst = f"log {worst}" if worst in logs else worst
    return {"model": res.model, "fault": res.meta.get("fault") or "none", "replicates": res.n_replicates,
            "sizes": ", ".join(f"{k}={v}" for k, v in res.meta.get("sizes", {}).items()),
            "max contraction": f"{cal['contraction'].max():.2f} ({worst})",
            f"contracts <= {CONTRACTION_TARGET}": bool(cal["contraction"].max() <= CONTRACTION_TARGET),
            "max excess": round(float(cal["excess"].max()), 2),
            "rejected": ", ".join(cal.index[cal["reject"]]) or "-",
            "verdict": "REJECT" if cal["reject"].any() else "pass",
            "divergences": int(res.divergences.sum()), "wall s": round(res.wall_time, 1)}


def calibration_table(names: Sequence[str] | None = None, *, replicates: int = 200, seed: int = 0,
                      config: SBCConfig | None = None, alpha: float = 0.01, faults: bool = True,
                      fault_replicates: int | None = None, progress: bool = False,
                      on_result: Callable[[SBCResult], None] | None = None, **kwargs):
    """The SBC table (a pandas DataFrame, one row per model and per fault run).

    Parameters
    ----------
    names : sequence of str, optional
        Catalogued models (default: every model with a simulator).
    replicates, seed, config, alpha
        SBC settings; ``alpha`` is the family-wise level of the ECDF test.
    faults : bool
        Add the :data:`FAULTS` rows.
    fault_replicates : int, optional
        Replicates of the fault rows (default ``replicates``; a subtle fault
        may need more, see the module docstring).
    progress : bool
        Print each row as it finishes.
    on_result : callable, optional
        Called with each run's :class:`SBCResult` (e.g. to print its :func:`parameter_table`).
    **kwargs
        Passed to :func:`model_sbc`.
    """
    import pandas as pd

    names = list(names) if names is not None else [n for n in catalogue.names() if catalogue.get(n).simulate]
    rows = []
    for name in names:
        runs = [None] + (list(FAULTS.get(name, ())) if faults else [])
        for fault in runs:
            n = replicates if fault is None else (fault_replicates or replicates)
            res = model_sbc(name, replicates=n, seed=seed, config=config, fault=fault, **kwargs)
            rows.append(table_row(res, alpha))
            if on_result is not None:
                on_result(res)
            if progress:
                print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    return pd.DataFrame(rows)


def markdown(table) -> str:
    """A pandas table as a markdown table (no extra dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)

"""The SBC table: calibration verdict and posterior contraction for every catalogued model.

Each model is run at its documented SBC sizes (the catalogue's ``sizes``
updated by :data:`~psm_bayes.sbc.config.SBC_SIZES`) on its main parameters (the catalogue's
``latents``). Models listed in :data:`FAULTS` get a second row: the same run
with a SUBTLE fault, the truth drawn with one prior scale ``factor`` times the
fitted model's, which the same test must reject.

Why the simulator's scale is the wider one: with a posterior at half the
prior sd, a fitted prior 1.5x too WIDE moves the ranks so little that the
ECDF test rejects it in only ~4% of runs even at N = 500 replicates (a
normal-normal calculation, ``tests/test_sbc.py``); a fitted prior 1.5x too
NARROW (equivalently, the simulator's 1.5x wider) is rejected in ~70% of runs
at N = 200 and ~99% at N = 500.

Command: ``benchmarks/sbc_table.py`` prints the table (markdown).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from psm_bayes.models import catalogue
from psm_bayes.sbc.config import SBC_SIZES, SBCConfig
from psm_bayes.sbc.driver import run_sbc
from psm_bayes.sbc.result import SBCResult

FAULTS: Mapping[str, Mapping[str, float]] = {
    "persona_selection": {"beta_scale": 1.5},  # fitted: 1.0
    "persona_mixture": {"beta_scale": 0.75},  # fitted: 0.5
}
"""Subtle fault per model: prior values of the SIMULATOR (the fitted model keeps its defaults); here the
beta prior scale 1.5x the fitted one."""

CONTRACTION_TARGET = 0.5
"""Documented sizes must give posterior sd <= this fraction of the prior sd on every main parameter."""


def sizes_of(name: str) -> dict[str, Any]:
    """The documented SBC data sizes of catalogued model ``name``."""
    return {**catalogue.get(name).sizes, **SBC_SIZES.get(name, {})}


def model_sbc(name: str, *, replicates: int, seed: int = 0, config: SBCConfig | None = None, method: str = "auto",
              backend: str = "numpyro", sizes: Mapping[str, Any] | None = None,
              fault: Mapping[str, Any] | None = None, **kwargs) -> SBCResult:
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
    fault : mapping, optional
        Prior values the truth is drawn with (``{"beta_scale": 1.5}``) while
        the fitted model keeps the default priors: a deliberate fault.
    **kwargs
        Passed to :func:`~psm_bayes.sbc.run_sbc` (``chunk_size``, ``ray_address``...).
    """
    entry = catalogue.get(name)
    fit_priors = entry.priors()
    priors = fit_priors
    if fault:
        priors = dataclasses.replace(fit_priors, **dict(fault))
    sizes = sizes_of(name) if sizes is None else dict(sizes)
    data, _ = entry.simulator()(fit_priors, seed=seed, **sizes)
    res = run_sbc(entry.model(backend), data, replicates=replicates, seed=seed, priors=priors, fit_priors=fit_priors,
                  config=config, method=method, latents=entry.latents, **kwargs)
    res.meta.update(sizes=sizes, fault=None if not fault else ", ".join(
        f"{k}={v:g} in the simulator (fitted {getattr(fit_priors, k):g})" for k, v in dict(fault).items()))
    return res


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
                      fault_replicates: int | None = None, progress: bool = False, **kwargs):
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
    **kwargs
        Passed to :func:`model_sbc`.
    """
    import pandas as pd

    names = list(names) if names is not None else [n for n in catalogue.names() if catalogue.get(n).simulate]
    rows = []
    for name in names:
        runs = [None] + ([FAULTS[name]] if faults and name in FAULTS else [])
        for fault in runs:
            n = replicates if fault is None else (fault_replicates or replicates)
            res = model_sbc(name, replicates=n, seed=seed, config=config, fault=fault, **kwargs)
            rows.append(table_row(res, alpha))
            if progress:
                print(" | ".join(str(v) for v in rows[-1].values()), flush=True)
    return pd.DataFrame(rows)


def markdown(table) -> str:
    """A pandas table as a markdown table (no extra dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)

"""``psm-bayes study``: run a declarative simulation study (validated completely before it starts)."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from psm_bayes.cli import options, power

_FIT_ARGS = ("model", "data", "seed", "priors", "progress", "predictive")
_AT_LEAST = {"num_samples": 1, "num_chains": 1, "num_steps": 1, "num_draws": 1, "num_warmup": 0,
             "max_tree_depth": 1}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``study``."""
    p = sub.add_parser("study", help="run a simulation study from a TOML/JSON spec",
                       description="Run every unfinished cell of a simulation study (resumable). The whole "
                                   "spec is checked (every grid cell's simulator, priors and inference "
                                   "options) before anything is written.")
    p.add_argument("spec", nargs="?", default=None, help="study file (.toml or .json); or --power PILOT")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (parts/, results.parquet); rerunning resumes in it")
    p.add_argument("--ray-address", default=None,
                   help="run cells on Ray: 'local' starts a local Ray with --workers CPUs, else a cluster address")
    p.add_argument("--workers", type=options.positive_int, default=1,
                   help="parallel workers (processes, or Ray CPUs)")
    p.add_argument("--seed", type=options.nonneg_int, default=None,
                   help="replace the study's seeds by SEED, SEED+1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    power.add_flags(p)
    p.set_defaults(func=run)


def _where(key: str, grid: set[str], section: str) -> str:
    """Where ``key`` was set: ``grid.KEY`` or ``[section] KEY``."""
    return f"grid.{key}" if key in grid else f"[{section}] {key}"


def check_study(study: Any) -> None:
    """Check every cell's settings without fitting; ``UsageError`` naming the study field otherwise.

    Priors are built, inference options checked against the fit function's
    arguments, and the simulator is run once per grid point (cheap, nothing
    is written), so a typo in ``[simulate]``, ``[priors]``, ``[inference]`` or
    a grid key fails here rather than after the study has started.
    """
    from psm_bayes.cli.errors import UsageError
    from psm_bayes.inference import fit_nuts, fit_svi
    from psm_bayes.models import catalogue

    fit = fit_nuts if study.method == "nuts" else fit_svi
    allowed = [n for n in inspect.signature(fit).parameters if n not in _FIT_ARGS]
    entry = catalogue.get(study.model) if study.model in catalogue.names() else None
    grid = set(study.grid)
    seen: set[str] = set()
    for cell in study.cells():
        key = repr(sorted(cell.params.items()))
        if key in seen:
            continue
        seen.add(key)
        sim_kw, pri_kw, inf_kw = cell.split()
        inference = {**study.inference, **inf_kw}
        for name, value in inference.items():
            where = _where(f"inference.{name}" if f"inference.{name}" in grid else name, grid, "inference")
            if name not in allowed:
                raise UsageError(where, f"unknown {study.method} option; expected one of {allowed}")
            if name in _AT_LEAST and (not isinstance(value, int) or value < _AT_LEAST[name]):
                raise UsageError(where, f"expected an integer >= {_AT_LEAST[name]}, got {value!r}")
        if entry is None:
            continue
        values = {**study.priors, **pri_kw}
        try:
            priors = options.make_priors(entry.priors, list(values.items()), flag="priors")
        except UsageError as err:
            bad = next((k for k in values if str(err).find(repr(k)) >= 0), None)
            where = _where(f"priors.{bad}" if f"priors.{bad}" in grid else str(bad), grid, "priors")
            raise UsageError(where if bad else "[priors]", str(err).partition(": ")[2]) from err
        sizes = {**study.simulate, **sim_kw}
        try:
            entry.simulator()(priors, seed=cell.seed, **sizes)
        except TypeError as err:
            bad = str(err).rsplit(" ", 1)[-1].strip("'\"")
            if "unexpected keyword" not in str(err) or bad not in sizes:
                raise
            raise UsageError(_where(bad, grid, "simulate"),
                             f"not an argument of model {study.model!r}'s simulator") from err
        except ValueError as err:  # a bad size value: name the cell's settings
            shown = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
            raise UsageError("[simulate]/grid", f"model {study.model!r}'s simulator rejects {shown}: {err}") from err


def run(args: argparse.Namespace) -> int:
    """Run ``psm-bayes study``."""
    from psm_bayes import io
    from psm_bayes.study.runner import NON_DETERMINISTIC, run_study
    from psm_bayes.study.spec import Study

    if args.power is not None:
        return power.run(args)
    if args.spec is None:
        from psm_bayes.cli.errors import UsageError

        raise UsageError("spec", "expected a study file (.toml or .json), or --power PILOT")
    study = Study.from_file(args.spec)
    if args.seed is not None:
        study = study.with_seed(args.seed)
    check_study(study)
    out = io.prepare_output_dir(args.out, command="study", resume=True)
    result = run_study(study, out, ray_address=args.ray_address, workers=args.workers,
                       progress=not args.no_progress)
    print(f"{len(result.computed)} cell(s) computed, {len(result.skipped)} already done -> {result.path}")
    cols = [c for c in ("coverage", "rmse", "rhat_max", "ess_bulk_min", "divergences", *NON_DETERMINISTIC)
            if c in result.table]
    if len(result.table) and study.grid:
        print(result.table.groupby(list(study.grid))[cols].mean().to_string(float_format=lambda x: f"{x:.3g}"))
    return 0

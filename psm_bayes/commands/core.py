"""``psm-bayes simulate | fit | diagnose``: the file-based core workflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _model(name: str, backend: str):
    import importlib

    if name != "persona_mixture":
        raise SystemExit(f"--model: unknown model {name!r}; expected 'persona_mixture'")
    return importlib.import_module(f"psm_bayes.models.persona_mixture_{backend}").persona_mixture


def _cmd_simulate(args: argparse.Namespace) -> int:
    from psm_bayes.io import atomic_path, episodes_table, save_data, save_table
    from psm_bayes.models.persona_mixture import Priors
    from psm_bayes.simulate import simulate

    sim = simulate(args.personas, args.items, args.options, args.episodes, seed=args.seed,
                   priors=Priors(concentration=args.concentration), icl_fraction=args.icl_fraction,
                   heldout_fraction=args.heldout_fraction, latent_prior=args.latent_prior,
                   authorial_bias=not args.no_authorial_bias)
    save_data(sim.data, args.out)
    truth = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in sim.truth.items()}
    truth["heldout_items"] = list(sim.heldout_items)
    truth_path = Path(args.out).with_suffix(".truth.json")
    with atomic_path(truth_path) as tmp:
        tmp.write_text(json.dumps(truth, indent=1))
    if args.episodes_table:
        save_table(episodes_table(sim.data), args.episodes_table)
    print(f"wrote {args.out} ({len(sim.data.episodes)} episodes, {sim.data.n_personas} personas) and {truth_path}")
    return 0


def _read_episodes(path: str):
    from psm_bayes.data import DataError, Episodes
    from psm_bayes.io import load_table

    df = load_table(path)
    if "item" not in df.columns:
        raise DataError(f"{path}: missing column 'item'")
    return Episodes(
        item=df["item"].astype(str).to_numpy(dtype=object),
        option=df["option"].to_numpy() if "option" in df.columns else None,
        source=df["source"].astype(str).to_numpy(dtype=object) if "source" in df.columns else None,
        count=df["count"].to_numpy(dtype=float) if "count" in df.columns else None,
    )


def _cmd_fit(args: argparse.Namespace) -> int:
    from psm_bayes.inference import fit_nuts, fit_svi
    from psm_bayes.io import load_data, save_datatree
    from psm_bayes.models.persona_mixture import Priors

    data = load_data(args.data)
    if args.episodes:
        data = data.replace(episodes=_read_episodes(args.episodes))
    model = _model(args.model, args.backend)
    priors = Priors(concentration=args.concentration)
    if args.method == "nuts":
        dt = fit_nuts(model, data, seed=args.seed, priors=priors, num_warmup=args.warmup,
                      num_samples=args.draws, num_chains=args.chains, progress=True)
    else:
        dt = fit_svi(model, data, seed=args.seed, priors=priors, guide=args.method.split("-")[1],
                     num_steps=args.steps, num_draws=args.draws, progress=True)
    save_datatree(dt, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from psm_bayes import diagnostics as diag
    from psm_bayes.io import atomic_path, load_datatree, save_table

    out = Path(args.out)
    var_names = args.var_names.split(",") if args.var_names else None
    fits = {Path(p).stem: load_datatree(p) for p in args.fits}
    report = {}
    for name, dt in fits.items():
        sub = out / name if len(fits) > 1 else out
        table = diag.summary(dt, var_names)
        save_table(table, sub / "summary.csv")
        diag.save_plots(dt, sub, var_names)
        verdict = diag.check(dt, var_names)
        entry = {"ok": verdict.ok, "max_rhat": verdict.max_rhat, "min_ess_bulk": verdict.min_ess_bulk,
                 "divergences": verdict.divergences, "problems": list(verdict.problems)}
        if "log_likelihood" in dt.children:
            lo = diag.loo(dt)
            entry.update(elpd_loo=float(lo.elpd), se=float(lo.se), p_loo=float(lo.p))
        report[name] = entry
        print(f"== {name}\n{table.to_string()}\n{json.dumps(entry)}")
    if len(fits) > 1:
        cmp = diag.compare(fits)
        save_table(cmp, out / "compare.csv")
        print(cmp.to_string())
    with atomic_path(out / "diagnostics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate``, ``fit`` and ``diagnose``."""
    p = sub.add_parser("simulate", help="draw a data set with known truth from the persona-selection model")
    p.add_argument("--personas", type=int, default=8)
    p.add_argument("--items", type=int, default=60)
    p.add_argument("--options", type=int, default=2)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--icl-fraction", type=float, default=0.3)
    p.add_argument("--heldout-fraction", type=float, default=0.2)
    p.add_argument("--concentration", type=float, default=20.0)
    p.add_argument("--latent-prior", action="store_true", help="do not give prior_weights to the model")
    p.add_argument("--no-authorial-bias", action="store_true")
    p.add_argument("--episodes-table", help="also write the episodes as .parquet or .csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="data file (.nc or .zarr); truth goes beside it")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("fit", help="fit a model to a data file, write a DataTree")
    p.add_argument("data", help="data file (.nc or .zarr) from `simulate` or `score`")
    p.add_argument("--episodes", help="replace the episodes by a .parquet/.csv table (item, option, source, count)")
    p.add_argument("--model", default="persona_mixture")
    p.add_argument("--backend", choices=("numpyro", "pyro"), default="numpyro")
    p.add_argument("--method", choices=("nuts", "svi-normal", "svi-mvn"), default="nuts")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2000, help="SVI steps")
    p.add_argument("--concentration", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="DataTree file (.nc or .zarr)")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("diagnose", help="summary, convergence check, LOO and plots of fitted DataTrees")
    p.add_argument("fits", nargs="+", help="DataTree files; several are also compared by LOO")
    p.add_argument("--var-names", help="comma-separated variables (default: all small ones)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_diagnose)

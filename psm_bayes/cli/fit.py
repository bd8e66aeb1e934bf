"""``psm-bayes fit``: fit a catalogued model to a data file, write a DataTree."""

from __future__ import annotations

import argparse

from psm_bayes.cli import options

METHODS = ("nuts", "svi-normal", "svi-mvn")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fit``."""
    p = sub.add_parser("fit", help="fit a model to a data file, write a DataTree",
                       description="Fit a catalogued model with NUTS or SVI. DATA is a file from `psm-bayes "
                                   "simulate`, or from `psm-bayes score` together with --episodes.")
    p.add_argument("data", help="data file (.nc or .zarr) from `simulate`, or a `score` table with --episodes")
    p.add_argument("--episodes", metavar="TABLE",
                   help="episodes table (.parquet/.csv; columns item, option[, source, count]); replaces the "
                        "data file's episodes, required for a `score` table")
    options.add_model(p, options.default_model())
    p.add_argument("--method", choices=METHODS, default="nuts")
    p.add_argument("--chains", type=options.positive_int, default=2, help="NUTS chains")
    p.add_argument("--warmup", type=options.nonneg_int, default=500, help="NUTS warm-up draws per chain")
    p.add_argument("--draws", type=options.positive_int, default=1000, help="kept draws per chain")
    p.add_argument("--steps", type=options.positive_int, default=2000, help="SVI steps")
    p.add_argument("--prior", type=options.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="prior hyperparameter (repeatable)")
    p.add_argument("--concentration", type=options.positive_float, help="same as --prior concentration=X")
    p.add_argument("--seed", type=options.nonneg_int, default=0)
    options.add_out(p, "DataTree file (.nc or .zarr)", "FIT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``psm-bayes fit``."""
    import numpy as np

    from psm_bayes import datafile, io
    from psm_bayes.cli.errors import UsageError
    from psm_bayes.data import DataError
    from psm_bayes.data import PSMData
    from psm_bayes.inference import fit_nuts, fit_svi
    from psm_bayes.models import catalogue
    from psm_bayes.models.base import spec_of

    entry = catalogue.get(args.model)
    inputs = (args.data,) + ((args.episodes,) if args.episodes else ())
    io.check_output(args.out, io.XARRAY_SUFFIXES, overwrite=args.overwrite, inputs=inputs)
    model = entry.model(args.backend)
    pairs = list(args.prior) + ([("concentration", args.concentration)] if args.concentration else [])
    priors = options.make_priors(entry.priors, pairs)
    episodes = io.read_table(args.episodes, io.EPISODES_SCHEMA, flag="--episodes") if args.episodes else None
    kind = io.data_kind(args.data)
    if kind not in ("scores", datafile.kind_of(entry.data)):
        takers = [n for n in catalogue.names() if datafile.kind_of(catalogue.get(n).data) == kind]
        if takers:
            raise UsageError("--model", f"{args.data!r} holds {kind.rsplit(':', 1)[-1]}, data for "
                                        f"{', '.join(takers)}; {args.model!r} takes {entry.data.__name__}")
    if kind == "scores" and entry.data is not PSMData:
        takers = [n for n in catalogue.names() if catalogue.get(n).data is PSMData]
        raise UsageError("--model", f"{args.data!r} is a score table, data for {', '.join(takers)} with "
                                    f"--episodes TABLE (columns {io.EPISODES_SCHEMA.describe()}); {args.model!r} "
                                    f"takes {entry.data.__name__} (use e.g. --model {takers[0]} --episodes TABLE)")
    data = io.load_data(args.data, cls=entry.data, flag="data", episodes=episodes)
    observed = {k: v for k, v in spec_of(model).observed_values(data).items() if v is not None}
    if not observed:
        raise DataError(f"data: {args.data!r} has no observed values; expected observations to fit "
                        "(episodes with options, or measurements)")
    if all(np.size(v) == 0 for v in observed.values()):
        raise DataError(f"data: {args.data!r} has no episodes; expected at least one episode to fit")
    if args.method == "nuts":
        dt = fit_nuts(model, data, seed=args.seed, priors=priors, num_warmup=args.warmup,
                      num_samples=args.draws, num_chains=args.chains, progress=True)
    else:
        dt = fit_svi(model, data, seed=args.seed, priors=priors, guide=args.method.split("-")[1],
                     num_steps=args.steps, num_draws=args.draws, progress=True)
    dt.attrs.update({"model": args.model, "backend": args.backend, "method": args.method, "seed": args.seed})
    io.save_datatree(dt, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return 0

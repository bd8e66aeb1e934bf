"""``psm-bayes simulate``: draw a data set with known truth from a catalogued model."""

from __future__ import annotations

import argparse
from pathlib import Path

from psm_bayes.cli import options

# flag -> simulator size keyword (passed only when given)
_SIZES = {"personas": "n_personas", "items": "n_items", "options": "n_options", "episodes": "n_episodes",
          "icl_fraction": "icl_fraction", "heldout_fraction": "heldout_fraction"}


def truth_path(out: str | Path) -> Path:
    """Where the truth of data file ``out`` goes: ``<out>.truth.json`` (``data.nc`` -> ``data.nc.truth.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".truth.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate``."""
    p = sub.add_parser("simulate", help="draw a data set with known truth from a model",
                       description="Draw a data set with known truth from a catalogued model's simulator; "
                                   "the truth goes to <out>.truth.json.")
    options.add_model(p, options.default_model())
    p.add_argument("--personas", type=options.positive_int, help="simulator size n_personas (default: the model's own)")
    p.add_argument("--items", type=options.positive_int, help="simulator size n_items (default: the model's own)")
    p.add_argument("--options", type=options.at_least_two, help="simulator size n_options (>= 2) (default: the model's own)")
    p.add_argument("--episodes", type=options.positive_int, help="simulator size n_episodes (default: the model's own)")
    p.add_argument("--icl-fraction", type=options.probability, help="simulator size icl_fraction: probability that an episode is in-context")
    p.add_argument("--heldout-fraction", type=options.fraction, help="simulator size heldout_fraction: fraction of items with no episodes")
    p.add_argument("--latent-prior", action="store_true", help="do not give prior_weights to the model")
    p.add_argument("--no-authorial-bias", action="store_true", help="no bias_direction / authorial_bias")
    p.add_argument("--size", type=options.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any other simulator size keyword (repeatable)")
    p.add_argument("--prior", type=options.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="prior hyperparameter the truth is drawn from (repeatable)")
    p.add_argument("--concentration", type=options.positive_float, help="same as --prior concentration=X")
    p.add_argument("--episodes-table", metavar="TABLE", help="also write the episodes as .parquet or .csv")
    p.add_argument("--seed", type=options.nonneg_int, default=0)
    options.add_out(p, "data file (.nc or .zarr); the truth goes to <out>.truth.json", "DATA")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``psm-bayes simulate``."""
    import numpy as np

    from psm_bayes import io
    from psm_bayes.cli.errors import UsageError
    from psm_bayes.data import PSMData
    from psm_bayes.models import catalogue

    entry = catalogue.get(args.model)
    # every output checked before any work
    io.check_output(args.out, io.XARRAY_SUFFIXES, overwrite=args.overwrite)
    io.check_output(truth_path(args.out), (".json",), overwrite=args.overwrite)
    if args.episodes_table:
        io.check_output(args.episodes_table, io.TABLE_SUFFIXES, flag="--episodes-table", overwrite=args.overwrite)
    if args.episodes_table and entry.data is not PSMData:
        raise UsageError("--episodes-table", f"model {args.model!r} has no episodes table (its data is "
                                             f"{entry.data.__name__}, not PSMData)")
    sizes = {key: getattr(args, flag) for flag, key in _SIZES.items() if getattr(args, flag) is not None}
    if args.latent_prior:
        sizes["latent_prior"] = True
    if args.no_authorial_bias:
        sizes["authorial_bias"] = False
    sizes.update(dict(options.check_sizes(args.size)))
    pairs = list(args.prior) + ([("concentration", args.concentration)] if args.concentration else [])
    priors = options.make_priors(entry.priors, pairs)
    try:
        data, truth = entry.simulator()(priors, seed=args.seed, **sizes)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        key = str(err).rsplit(" ", 1)[-1].strip("'")
        flag = next((f"--{f.replace('_', '-')}" for f, k in _SIZES.items() if k == key), f"--size {key}")
        raise UsageError(flag, f"model {args.model!r}'s simulator takes no {key!r}") from err
    io.save_data(data, args.out, overwrite=args.overwrite)
    plain = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in truth.items()}
    tpath = io.save_json(plain, truth_path(args.out), kind="truth", overwrite=args.overwrite)
    written = [str(args.out), str(tpath)]
    if args.episodes_table:
        io.save_table(io.episodes_table(data), args.episodes_table, overwrite=args.overwrite, index=False)
        written.append(args.episodes_table)
    print(f"wrote {', '.join(written)}")
    return 0

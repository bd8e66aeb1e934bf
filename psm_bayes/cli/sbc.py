"""``psm-bayes sbc``: simulation-based calibration of a catalogued model."""

from __future__ import annotations

import argparse
import os

from psm_bayes.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sbc``."""
    s = sub.add_parser("sbc", help="simulation-based calibration of a model",
                       description="Simulation-based calibration (Talts et al. 2018): rank statistics, "
                                   "simultaneous ECDF band test (arviz_stats), posterior contraction, rank "
                                   "histograms and ECDF plots.")
    options.add_model(s, options.default_model())
    s.add_argument("--replicates", type=options.positive_int, default=100, help="prior draws N")
    options.add_out(s, "output folder (new, empty, or from an earlier sbc with --overwrite)", "DIR")
    s.add_argument("--seed", type=options.nonneg_int, default=0)
    s.add_argument("--method", default="auto", choices=("auto", "vmap", "loop", "fit", "simuk"),
                   help="auto: loop for NumPyro on CPU, vmap on an accelerator, fit for Pyro; simuk: the "
                        "simuk library drives NumPyro's MCMC (cross-check, slower)")
    s.add_argument("--draws", type=options.positive_int, default=99, help="posterior draws L per replicate")
    s.add_argument("--thin", type=options.positive_int, default=2)
    s.add_argument("--warmup", type=options.nonneg_int, default=300)
    s.add_argument("--chains", type=options.positive_int, default=1)
    s.add_argument("--size", type=options.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="data template size passed to the model's simulator (repeatable)")
    s.add_argument("--prior", type=options.key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="prior hyperparameter (repeatable)")
    s.add_argument("--ray-address", default=None)
    s.add_argument("--workers", type=options.positive_int, default=None)
    s.add_argument("--chunk-size", type=options.positive_int, default=None)
    s.add_argument("--alpha", type=options.open_unit, default=0.01,
                   help="test level in (0, 1) (Bonferroni over parameters)")
    s.add_argument("--fail-on-reject", action="store_true", help="exit 1 when uniformity is rejected")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``psm-bayes sbc``."""
    from psm_bayes import io
    from psm_bayes.cli.errors import UsageError
    from psm_bayes.models import catalogue
    from psm_bayes.sbc import SBCConfig, run_sbc

    entry = catalogue.get(args.model)
    model = entry.model(args.backend)
    priors = options.make_priors(entry.priors, args.prior)
    sizes = {**entry.sizes, **dict(options.check_sizes(args.size))}
    out = io.prepare_output_dir(args.out, command="sbc", overwrite=args.overwrite)
    try:
        data = entry.simulator()(priors, seed=args.seed, **sizes)[0]
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        raise UsageError("--size", f"model {args.model!r}'s simulator: {err}") from err
    config = SBCConfig(num_draws=args.draws, thin=args.thin, num_warmup=args.warmup, num_chains=args.chains)
    result = run_sbc(model, data, replicates=args.replicates, seed=args.seed, priors=priors, config=config,
                     method=args.method, latents=entry.latents, chunk_size=args.chunk_size,
                     ray_address=args.ray_address, workers=args.workers, progress=True)
    paths = result.save(out, alpha=args.alpha, overwrite=args.overwrite)
    summary = result.summary(args.alpha)
    print(result.calibration(args.alpha).to_string(float_format=lambda x: f"{x:.3g}"))
    verdict = "PASS" if summary["passed"] else "REJECT"
    print(f"{verdict}: max ECDF band excess {summary['max_excess']:.3g} (above 1 = outside the simultaneous band) "
          f"over {len(result.params)} parameters at family-wise alpha={args.alpha}; max contraction "
          f"{summary['max_contraction']:.2f}; {summary['divergences']} divergences; "
          f"{result.wall_time:.1f} s -> {os.path.dirname(paths['summary']) or '.'}")
    return 1 if args.fail_on_reject and not summary["passed"] else 0

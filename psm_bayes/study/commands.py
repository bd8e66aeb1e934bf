"""``psm-bayes study`` and ``psm-bayes sbc`` subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _kv(text: str) -> tuple[str, object]:
    """Parse ``key=value`` with a JSON value when it parses (``n_items=4``, ``icl_fraction=0.5``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(subparsers) -> None:
    """Add the ``study`` and ``sbc`` subcommands."""
    p = subparsers.add_parser("study", help="run a simulation study from a TOML/JSON spec",
                              description="Run every unfinished cell of a simulation study (resumable).")
    p.add_argument("spec", help="study file (.toml or .json)")
    p.add_argument("--out", required=True, help="output folder (parts/, results.parquet)")
    p.add_argument("--ray-address", default=None,
                   help="run cells on Ray: 'local' starts a local Ray with --workers CPUs, else a cluster address")
    p.add_argument("--workers", type=int, default=1, help="parallel workers (processes, or Ray CPUs)")
    p.add_argument("--seed", type=int, default=None, help="replace the study's seeds by SEED, SEED+1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_study)

    from psm_bayes.study.registry import model_names

    s = subparsers.add_parser("sbc", help="simulation-based calibration of a model",
                              description="Simulation-based calibration (Talts et al. 2018): rank statistics, "
                                          "chi-square uniformity test, rank histograms and ECDF plots.")
    s.add_argument("--model", default="persona_mixture", choices=model_names())
    s.add_argument("--backend", default="numpyro", choices=("numpyro", "pyro"))
    s.add_argument("--replicates", type=int, default=100, help="prior draws N")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--method", default="auto", choices=("auto", "vmap", "loop", "fit"),
                   help="auto: loop for NumPyro on CPU, vmap on an accelerator, fit for Pyro")
    s.add_argument("--draws", type=int, default=99, help="posterior draws L per replicate")
    s.add_argument("--thin", type=int, default=2)
    s.add_argument("--warmup", type=int, default=300)
    s.add_argument("--chains", type=int, default=1)
    s.add_argument("--size", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="data template size passed to the model's simulator (repeatable)")
    s.add_argument("--prior", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="prior hyperparameter (repeatable)")
    s.add_argument("--ray-address", default=None)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--chunk-size", type=int, default=None)
    s.add_argument("--alpha", type=float, default=0.01, help="test level (Bonferroni over parameters)")
    s.add_argument("--fail-on-reject", action="store_true", help="exit 1 when uniformity is rejected")
    s.set_defaults(func=_sbc)


def _study(args) -> int:
    from psm_bayes.study.runner import NON_DETERMINISTIC, run_study
    from psm_bayes.study.spec import Study

    study = Study.from_file(args.spec)
    if args.seed is not None:
        study = study.with_seed(args.seed)
    run = run_study(study, args.out, ray_address=args.ray_address, workers=args.workers,
                    progress=not args.no_progress)
    print(f"{len(run.computed)} cell(s) computed, {len(run.skipped)} already done -> {run.path}")
    cols = [c for c in ("coverage", "rmse", "rhat_max", "ess_bulk_min", "divergences", *NON_DETERMINISTIC)
            if c in run.table]
    if len(run.table) and study.grid:
        print(run.table.groupby(list(study.grid))[cols].mean().to_string(float_format=lambda x: f"{x:.3g}"))
    return 0


def _sbc(args) -> int:
    from psm_bayes.sbc import SBCConfig, run_sbc
    from psm_bayes.study.registry import get_model

    entry = get_model(args.model)
    model = entry.model(args.backend)
    priors = entry.make_priors(dict(args.prior))
    sizes = {**entry.sbc_sizes, **dict(args.size)}
    data = entry.simulator()(seed=args.seed, priors=priors, **sizes).data
    config = SBCConfig(num_draws=args.draws, thin=args.thin, num_warmup=args.warmup, num_chains=args.chains)
    result = run_sbc(model, data, replicates=args.replicates, seed=args.seed, priors=priors, config=config,
                     method=args.method, chunk_size=args.chunk_size, ray_address=args.ray_address, workers=args.workers,
                     progress=True)
    paths = result.save(args.out, alpha=args.alpha)
    summary = result.summary(args.alpha)
    print(result.uniformity(args.alpha).to_string(float_format=lambda x: f"{x:.3g}"))
    verdict = "PASS" if summary["passed"] else "REJECT"
    print(f"{verdict}: min p = {summary['min_p']:.3g} over {len(result.params)} parameters "
          f"(Bonferroni at alpha={args.alpha}); {summary['divergences']} divergences; "
          f"{result.wall_time:.1f} s -> {os.path.dirname(paths['summary']) or '.'}")
    return 1 if args.fail_on_reject and not summary["passed"] else 0


if __name__ == "__main__":  # pragma: no cover
    from psm_bayes.cli import main

    sys.exit(main())

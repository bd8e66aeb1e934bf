"""``psm-bayes study --power PILOT``: how often the run's comparison picks the model that generated the data."""

from __future__ import annotations

import argparse

from psm_bayes.cli import options

DEFAULT_TRUTHS = ("persona_selection,response_bias,trait_indicator,profile_similarity,surface_similarity,generic_shift,"
                  "permuted_personas")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in _names(text)]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def add_flags(p: argparse.ArgumentParser) -> None:
    """The power-analysis flags of ``study``."""
    g = p.add_argument_group("power analysis (--power PILOT instead of a spec)")
    g.add_argument("--power", metavar="PILOT", default=None,
                   help="the --out folder of a finished `psm-bayes run`: simulate its design with each model "
                        "true (effect sizes from its fits) and count how often the comparison is right")
    g.add_argument("--llm", default=None, help="which language model of the pilot (default: the first)")
    g.add_argument("--dataset", choices=("icl", "sft"), default="icl", help="which comparison (default icl)")
    g.add_argument("--truths", default=DEFAULT_TRUTHS, help=f"models that generate data (default {DEFAULT_TRUTHS})")
    g.add_argument("--compare", default=None,
                   help="models fitted and compared in each replicate (default: persona_selection and every null "
                        "the pilot fitted, as the run compares them)")
    g.add_argument("--probes-per-trait", type=_sizes, default=[4, 8, 16],
                   help="design sizes: evaluation items per trait (default 4,8,16)")
    g.add_argument("--sft-seeds", type=_sizes, default=None, metavar="S1,S2",
                   help="design sizes: LoRA seeds (with --dataset sft; default the pilot's seeds); a seed beyond "
                        "the pilot's repeats a pilot seed's conditions with fresh simulated noise")
    g.add_argument("--replicates", type=options.positive_int, default=20,
                   help="simulated data sets per truth and size (default 20)")
    g.add_argument("--warmup", type=options.nonneg_int, default=None,
                   help="NUTS warm-up per chain (default: the pilot run's, else 300)")
    g.add_argument("--draws", type=options.positive_int, default=None,
                   help="NUTS draws per chain (default: the pilot run's, else 1000)")
    g.add_argument("--chains", type=options.positive_int, default=None,
                   help="NUTS chains (default: the pilot run's, else 2)")
    g.add_argument("--criteria-se", type=options.positive_float, default=2.0,
                   help="standard errors of the criterion 'PSM beats every null' (default 2, as the run)")
    g.add_argument("--target", type=options.open_unit, default=0.8,
                   help="right-decision rate the chosen size must reach for every truth (default 0.8)")


def run(args: argparse.Namespace) -> int:
    """Run the power analysis of ``study --power``."""
    from psm_bayes import io
    from psm_bayes.cli.errors import UsageError
    from psm_bayes.experiments.analysis import power
    from psm_bayes.experiments.analysis.fitting import FitSettings, NULLS, PSM
    from psm_bayes.inference import configure_jax

    if args.spec is not None:
        raise UsageError("--power", "give either a study spec or --power PILOT, not both")
    if not 0 < args.target <= 1 or not args.criteria_se > 0:
        raise UsageError("--target", "expected --target in (0, 1] and --criteria-se > 0")
    if args.sft_seeds is not None and args.dataset != "sft":
        raise UsageError("--sft-seeds", "LoRA seeds are a design axis of the SFT data; add --dataset sft")
    try:
        pilot = power.load_pilot(args.power, args.llm, args.dataset)
    except FileNotFoundError as err:
        raise UsageError("--power", str(err).partition(": ")[2] or str(err)) from err
    truths = _names(args.truths)
    missing = [t for t in truths if t not in pilot.fits]
    if not truths or missing:
        raise UsageError("--truths", f"no pilot fit of {missing or truths}; the pilot has {sorted(pilot.fits)}")
    models = (PSM,) + tuple(n for n in NULLS if n in pilot.fits)
    if args.compare is not None:
        asked = _names(args.compare)
        bad = [m for m in asked if m not in models]
        if bad or PSM not in asked or len(asked) < 2:
            raise UsageError("--compare", f"expected {PSM} and at least one null the pilot fitted "
                                          f"({list(models)}), got {asked}")
        models = tuple(asked)
    run_fit = {"num_warmup": 300, "num_samples": 1000, "num_chains": 2}
    run_fit.update({k: int(pilot.config[k]) for k in run_fit if k in pilot.config})
    asked = {"num_warmup": args.warmup, "num_samples": args.draws, "num_chains": args.chains}
    settings = FitSettings(**{k: v if asked[k] is None else asked[k] for k, v in run_fit.items()},
                           refit_unconverged=False,
                           logodds_df=pilot.config.get("logodds_df", FitSettings().logodds_df))
    out = io.prepare_output_dir(args.out, command="study", resume=True)
    seed0 = args.seed or 0
    configure_jax(cache_dir=out / "cache" / "jax")  # the workers (spawned) inherit the folder
    rows = power.power_analysis(pilot, truths=truths, models=models, probes_per_trait=args.probes_per_trait,
                                seeds=range(seed0, seed0 + args.replicates), settings=settings,
                                k=args.criteria_se, out_dir=out, workers=args.workers,
                                progress=not args.no_progress, sft_seeds=args.sft_seeds)
    rates = power.pick_rates(rows)
    text = power.power_markdown(rates, pilot, args.target)
    io.save_table(rows, out / "replicates.csv", overwrite=True, index=False)
    io.save_table(rates, out / "rates.csv", overwrite=True, index=False)
    io.save_json({"pilot": pilot.source, "models": list(models), "truths": truths, "settings": settings.nuts,
                  "criteria_se": args.criteria_se, "target": args.target,
                  "chosen_design": power.smallest_powered_design(rates, args.target),
                  "rates": rates.to_dict("records")}, out / "power.json", overwrite=True)
    io.save_text(text + "\n", out / "power.md", overwrite=True)
    print(text)
    return 0

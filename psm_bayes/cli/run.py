"""``psm-bayes run``: the whole PSM experiment on a real language model.

Example::

    psm-bayes run --out report/                 # default size (see benchmarks/README.md for its time)
    psm-bayes run --out /tmp/r --quick          # tiny setting (tests)
    psm-bayes run --out r --traits honesty,humour --max-shots 16 --orderings 3 --sft-seeds 3

measures ICL curves and LoRA SFT shifts, fits the PSM and the baselines with
NUTS and writes ``report.md``, plots, ``fits/*.nc`` and ``results.json``
(see :mod:`psm_bayes.experiments.pipeline`).  LLM measurements are cached
under ``<out>/cache``: rerunning the same command resumes.  One run at a
time per folder: a second ``run`` on a folder in use is refused, naming the
PID holding it (:mod:`psm_bayes.runlock`).
"""

from __future__ import annotations

import argparse
from typing import Any

from psm_bayes.cli import options
from psm_bayes.inference import NUTS_INITS


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "run", help="run the PSM experiment (ICL curves + LoRA SFT) on a real LM and write a report",
        description="Measure in-context and fine-tuning persona shifts with a real causal LM, fit the "
                    "persona-selection model and baselines with NUTS, and write a report.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (report, fits, cache)")
    p.add_argument("--quick", action="store_true", help="tiny setting (for tests; other flags override it)")
    p.add_argument("--traits", default=None, metavar="A,B", help="comma-separated probe traits")
    p.add_argument("--probes-per-trait", type=options.positive_int, default=None, metavar="N", help="held-out statements per trait")
    p.add_argument("--max-shots", type=options.positive_int, default=None, metavar="N", help="largest number of in-context examples")
    p.add_argument("--orderings", type=options.positive_int, default=None, metavar="N", help="shot orderings per trait")
    p.add_argument("--sft-traits", default=None, metavar="A,B",
                   help="comma-separated traits fine-tuned, each once per pole (default: the first two traits)")
    p.add_argument("--sft-examples", type=options.positive_int, default=None, metavar="N", help="SFT training episodes")
    p.add_argument("--sft-steps", type=options.positive_int, default=None, metavar="N", help="LoRA optimiser steps per seed")
    p.add_argument("--sft-seeds", type=options.positive_int, default=None, metavar="N", help="LoRA runs (seeds)")
    p.add_argument("--sft-lr", type=options.positive_float, default=None, metavar="LR", help="LoRA learning rate")
    p.add_argument("--draws", "--num-samples", dest="num_samples", type=options.positive_int, default=None,
                   metavar="N", help="NUTS draws per chain")
    p.add_argument("--warmup", "--num-warmup", dest="num_warmup", type=options.nonneg_int, default=None,
                   metavar="N", help="NUTS warm-up per chain")
    p.add_argument("--chains", "--num-chains", dest="num_chains", type=options.positive_int, default=None,
                   metavar="N", help="NUTS chains")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                   help="model directory, .gguf or locally cached name (default: embedded Gemma 3 270M)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="scoring dtype (default: float32 on the CPU, bfloat16 on a GPU)")
    p.add_argument("--device", default=None, metavar="{auto,cpu,cuda}",
                   help="where scoring and LoRA run (default auto: CUDA when present, else the CPU)")
    p.add_argument("--threads", type=options.positive_int, default=None, help="torch threads (default 1)")
    p.add_argument("--schedule", choices=("auto", "serial", "parallel"), default=None,
                   help="parallel: LoRA SFT in a second process while scoring goes on (identical results); "
                        "default auto: parallel on a CPU with >= 2 cores")
    p.add_argument("--seed", type=options.nonneg_int, default=None, help="seed of splits, shots and fits (default 0)")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="comma-separated models to compare (registry names, .gguf files or model folders; "
                        "default gemma3-270m; add smollm2-135m-instruct to compare a post-trained Assistant)")
    p.add_argument("--probes", dest="probes_dir", default=None, metavar="DIR",
                   help="folder of Anthropic model-written-evals persona *.jsonl files (without --traits: "
                        "the screening stage picks the traits the first model separates)")
    p.add_argument("--screen-traits", type=options.positive_int, default=None, metavar="N",
                   help="traits kept by the screening stage (default 5)")
    p.add_argument("--persona-context", choices=("fewshot", "description", "both"), default=None,
                   help="persona form in the persona table: k example answers by the persona (default "
                        "fewshot), its description preamble, or both")
    p.add_argument("--persona-examples", type=options.positive_int, default=None, metavar="K",
                   help="statements per trait reserved as few-shot persona examples (default 64: as many as "
                        "the largest shot count)")
    p.add_argument("--target-accept", type=options.open_unit, default=None, metavar="P", help="NUTS target acceptance")
    p.add_argument("--nuts-init", dest="nuts_init", choices=NUTS_INITS, default=None,
                   help="NUTS chains start at Laplace draws with its covariance as a fixed mass matrix (default) "
                        "or at the prior median, adapting the mass matrix")
    p.add_argument("--compare-persona-contexts", action="store_true", default=None,
                   help="also score the persona table with descriptions and with both forms (2 more passes) and "
                        "report the persona separation of each")
    p.add_argument("--multi-trait", default=None, metavar="A&B,C&D&E",
                   help="multi-trait personas: groups of traits joined by '&', groups separated by ','; 'none' for "
                        "none (default: sycophancy&power-seeking, power-seeking&risk-taking and "
                        "machiavellianism&narcissism&psychopathy "
                        "where all their traits are in the run)")
    p.add_argument("--no-joint-fits", dest="joint_fits", action="store_false", default=None,
                   help="skip the fits of the joint data (ICL + SFT + cross); the cross-prediction criterion is "
                        "then not assessed")
    p.add_argument("--no-exact-refits", dest="exact_refits", action="store_false", default=None,
                   help="keep PSIS values where Pareto k > 0.7 instead of refitting without the item")
    options.add_verify_cache(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_main)


_FLAGS = {"probes_per_trait": "probes_per_trait", "max_shots": "max_shots", "orderings": "orderings",
          "sft_examples": "sft_examples", "sft_steps": "sft_steps",
          "sft_seeds": "sft_seeds", "sft_lr": "sft_lr", "num_samples": "num_samples", "num_warmup": "num_warmup",
          "num_chains": "num_chains", "model": "model", "dtype": "dtype", "device": "device", "threads": "threads", "seed": "seed",
          "schedule": "schedule",
          "probes_dir": "probes_dir", "screen_traits": "screen_traits", "persona_context": "persona_context",
          "persona_examples": "persona_examples", "target_accept": "target_accept", "nuts_init": "nuts_init",
          "exact_refits": "exact_refits", "joint_fits": "joint_fits", "compare_persona_contexts": "compare_persona_contexts"}


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~psm_bayes.experiments.pipeline.ExperimentConfig` the flags ask for."""
    from psm_bayes.experiments.pipeline import ExperimentConfig

    over = {field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag) is not None}
    for flag, field in (("--traits", "traits"), ("--sft-traits", "sft_traits"), ("--models", "models")):
        if getattr(args, field) is not None:
            over[field] = options.name_list(getattr(args, field), flag)
    if args.multi_trait is not None:
        text = args.multi_trait.strip()
        over["multi_trait_personas"] = () if text.lower() == "none" else tuple(
            tuple(t.strip() for t in g.split("&") if t.strip()) for g in text.split(",") if g.strip())
    return ExperimentConfig.quick(**over) if args.quick else ExperimentConfig.build(**over)


def _flag(field: str) -> str:
    """The flag that sets config field ``field``."""
    return {"num_samples": "--draws", "num_warmup": "--warmup", "num_chains": "--chains"}.get(
        field, f"--{field.replace('_', '-')}")


def _main(args: argparse.Namespace) -> int:
    from psm_bayes.cli.errors import UsageError

    try:
        cfg = config_from_args(args)
    except ValueError as err:  # config messages start with the field name: say which flag sets it
        field, sep, rest = str(err).partition(":")
        if field == "multi_trait_personas":
            raise UsageError("--multi-trait", rest.strip()) from err
        if sep and (field in _FLAGS or field in ("traits", "sft_traits", "models")):
            raise UsageError(_flag(field), rest.strip()) from err
        raise
    from psm_bayes.experiments.pipeline import run_experiment
    from psm_bayes.integrity import verifying

    with verifying(args.verify_cache):  # the folder is checked, created and locked by run_experiment
        res = run_experiment(cfg, args.out, progress=not args.quiet)
    r = res.results
    if not args.quiet:
        print(f"report: {res.out_dir / 'report.md'}  ({r['timings'].get('total', float('nan')):.0f} s)")
        for c in r["criteria"]:
            print(f"{c['model']}: {c['name']}: {({True: 'pass', False: 'FAIL', None: 'n/a'})[c['passed']]}")
    return 0

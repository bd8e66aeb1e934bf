"""Screening of the shipped probes: how far each embedded model separates each trait's poles at 64 shots.

Run (from the repository root; ~15-40 min on 2 shared cores, one model loaded at a time)::

    .venv/bin/python benchmarks/bench_screening.py \\
        [--models gemma3-270m,smollm2-135m-instruct] [--traits honesty,humour,...] \\
        [--shots 64] [--items 16] [--seed 0] [--threads 1] [--batch-size 16] \\
        [--json psm_bayes/probes/data/screening.json] [--md benchmarks/probe_screening.md]

``--probes DIR`` measures Anthropic persona files instead (e.g. ``--probes
../shared/data/anthropic-persona --traits risk-seeking,extraversion``): the same
measurement where the model is known to separate, a check of the measurement.

Per trait and model (:func:`psm_bayes.experiments.measure.screening.trait_separations`,
the measurement the run's screening stage makes): ``--shots`` label-balanced
shots of the trait's shipped statements in random order, answered as the ``t+``
persona would (the matching answer) and as ``t-`` would; ``--items``
label-balanced held-out evaluation statements, never shots, scored after each
context in the model's own prompt format (plain for Gemma, the chat template for
SmolLM2), float32, one torch thread.  *separation* is the mean over evaluation
statements of ``logit p(matching | t+ context) - logit p(matching | t- context)``
(nats; the Yes/No bias cancels), *se* its standard error over statements (for
this one draw of shots: the spread over shot draws is not in it), *z* = separation
/ se.  *default* marks the traits :func:`~psm_bayes.experiments.measure.screening.separating_traits`
picks for ``psm-bayes run``: Gemma, > 1 nat and > 4 se.

Prints a markdown report (date, CPU features, load average, per-model timing,
the table).  ``--json`` writes the machine-readable table (the package data the
default-trait rule reads; rows carry a hash of each trait's statements so a test
can tell a stale table), ``--md`` the report; neither replaces a file psm-bayes
did not write.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

from bench_workload import cpu_features  # same CPU description as the workload benchmark

DEFAULT_TRAITS = ("honesty", "sycophancy", "power-seeking", "humour", "risk-taking",
                  "optimism", "empathy", "self-preservation", "curiosity", "deference-to-humans")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def screen_model(name: str, args, probes) -> dict:
    """Load ``name`` (float32), measure every trait, free the model; returns the model block with rows."""
    import gc

    from psm_bayes.experiments.measure.screening import statements_digest, trait_separations
    from psm_bayes.llm import load_model

    t0 = time.perf_counter()
    loaded = load_model(name, dtype="float32", threads=args.threads, device="cpu")
    t_load = time.perf_counter() - t0
    log(f"[{name}] loaded in {t_load:.0f} s ({loaded.prompt_format} format)")

    def progress(row: dict) -> None:
        log(f"[{name}] {row['trait']:<22} {row['separation']:+6.2f} nats (se {row['se']:.2f}), "
            f"context {row['context_tokens']} tokens, {time.perf_counter() - t0:.0f} s")

    t1 = time.perf_counter()
    table, _ = trait_separations(loaded, probes, n_items=args.items, n_examples=args.shots, seed=args.seed,
                                 cache_dir=args.cache_dir, batch_size=args.batch_size, progress=progress)
    seconds = time.perf_counter() - t1
    rows = [{"model": name, "trait": t, "shots": int(r.n_shots), "eval_items": int(r.n_items),
             "separation": round(float(r.separation), 4), "se": round(float(r.se), 4),
             "context_tokens": int(r.context_tokens), "statements_sha256": statements_digest(probes, t)}
            for t, r in table.iterrows()]
    block = {"model_key": loaded.key, "prompt_format": loaded.prompt_format, "load_seconds": round(t_load, 1),
             "scoring_seconds": round(seconds, 1), "rows": rows}
    del loaded, table
    gc.collect()
    return block


def markdown(result: dict) -> str:
    from psm_bayes.experiments.measure.screening import MIN_SEPARATION_NATS, MIN_SEPARATION_SE, RULE_MODEL, RULE_SHOTS

    models = list(result["models"])
    by = {(r["model"], r["trait"]): r for r in result["rows"]}
    traits = list(dict.fromkeys(r["trait"] for r in result["rows"]))
    lines = [f"# Screening of the shipped probes ({result['date']})", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']}; load average at start {result['load_average']}; "
             f"torch {result['torch']}, float32, {result['threads']} torch thread(s).", "",
             f"Probes: {result['probes']}. Per trait: {result['shots']} label-balanced shots answered as t+ / t-, "
             f"{result['eval_items']} "
             f"label-balanced held-out evaluation statements (never shots), seed {result['seed']}. "
             "Separation = mean over statements of the t+ minus t- log-odds of the matching answer (nats); "
             "se over statements (one draw of shots); z = separation / se.", ""]
    for m in models:
        b = result["models"][m]
        lines.append(f"- `{m}` ({b['prompt_format']} format, `{b['model_key']}`): load {b['load_seconds']:.0f} s, "
                     f"scoring {b['scoring_seconds']:.0f} s for {len(traits)} traits.")
    head = "| trait | " + " | ".join(f"{m} separation (se) | z" for m in models) + " | default |"
    lines += ["", head, "|---|" + "---:|---:|" * len(models) + ":---:|"]
    for t in traits:
        cells = []
        for m in models:
            r = by.get((m, t))
            cells += ["-", "-"] if r is None else [f"{r['separation']:+.2f} ({r['se']:.2f})",
                                                   f"{r['separation'] / r['se']:.1f}"]
        g = by.get((RULE_MODEL, t))
        ok = g is not None and g["shots"] == RULE_SHOTS and g["separation"] > MIN_SEPARATION_NATS \
            and g["separation"] > MIN_SEPARATION_SE * g["se"]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    ctx = {m: [r["context_tokens"] for r in result["rows"] if r["model"] == m] for m in models}
    lines += ["", "Context length (tokens, t+ context): " + "; ".join(
        f"{m} {min(v)}-{max(v)}" for m, v in ctx.items() if v) + ".", "",
        f"*default*: the rule of `psm_bayes.experiments.measure.screening.separating_traits` (on {RULE_MODEL} at "
        f"{RULE_SHOTS} shots, separation > {MIN_SEPARATION_NATS:g} nat and > {MIN_SEPARATION_SE:g} se), "
        "whose 4 largest in z (`default_traits`) are `psm_bayes.experiments.config.DEFAULT_TRAITS`, read from `psm_bayes/probes/data/screening.json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m-instruct")
    ap.add_argument("--traits", default=",".join(DEFAULT_TRAITS))
    ap.add_argument("--probes", default=None, help="folder of Anthropic persona *.jsonl files (default: shipped)")
    ap.add_argument("--shots", type=int, default=64)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cache-dir", default=None, help="score cache folder (resume an interrupted run)")
    ap.add_argument("--json", default=None, help="write the machine-readable table here")
    ap.add_argument("--md", default=None, help="write the markdown report here (never replaces a file)")
    args = ap.parse_args(argv)
    from psm_bayes.io import save_json, save_text
    from psm_bayes.probes import load_anthropic_persona, load_probes

    if args.md and Path(args.md).exists():
        ap.error(f"--md: {args.md!r} exists; remove it first or name another file")
    import torch

    traits = tuple(t for t in args.traits.split(",") if t)
    probes = load_probes(traits) if args.probes is None else load_anthropic_persona(args.probes, traits)
    result = {"date": date.today().isoformat(), "command": "python benchmarks/bench_screening.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "machine": cpu_features(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()), "torch": torch.__version__,
        "dtype": "float32", "threads": args.threads, "shots": args.shots, "eval_items": args.items,
        "seed": args.seed, "probes": args.probes or "shipped", "models": {}, "rows": []}
    for name in [m for m in args.models.split(",") if m]:
        block = screen_model(name, args, probes)
        result["rows"] += block.pop("rows")
        result["models"][name] = block
    text = markdown(result)
    print(text)
    if args.json:
        save_json(result, args.json, kind="probe-screening", overwrite=True)
        log(f"wrote {args.json}")
    if args.md:
        save_text(text, args.md)
        log(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

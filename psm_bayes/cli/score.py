"""``psm-bayes score``: build a log-likelihood table with a real language model.

Example::

    psm-bayes score --traits honesty,sycophancy --n-per-trait 10 --out table.nc

scores every (persona, probe, option) with the embedded Gemma 3 270M base
model and writes a NetCDF file whose ``loglik`` variable is a valid
:class:`psm_bayes.data.LogLikTable` (plus ``neutral_loglik`` and probe and
persona metadata).  Scores are cached (``--cache``), so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from psm_bayes.cli import options


def register(subparsers: Any) -> None:
    """Add the ``score`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "score", help="score persona x probe x option log-likelihoods with a causal LM",
        description="Score log p(option | persona context + probe) with a causal language model "
                    "and write the table as NetCDF.")
    p.add_argument("--model", default=None, metavar="PATH_OR_NAME",
                   help="embedded model (gemma3-270m: base, the default; smollm2-135m-instruct: instruct, "
                        "chat template), model directory, .gguf file or locally cached hub name")
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}",
                   help="where to score (default auto: CUDA when available)")
    p.add_argument("--prompt-format", default=None, choices=("plain", "chat", "auto"),
                   help="prompt format (default: the embedded model's; auto = chat if the tokenizer has a template)")
    p.add_argument("--probes", default="builtin", metavar="{builtin|DIR}",
                   help="'builtin' or a directory of Anthropic persona *.jsonl files")
    p.add_argument("--traits", default=None, metavar="A,B",
                   help="comma-separated traits to keep (also restricts personas with a trait)")
    p.add_argument("--n-per-trait", type=options.positive_int, default=None, metavar="N",
                   help="balanced random subset of N probes per trait")
    p.add_argument("--personas", default="builtin", metavar="{builtin|PATH.json}",
                   help="'builtin' or a personas JSON file")
    options.add_out(p, "output NetCDF file (.nc)", "TABLE.nc")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="score cache directory (default: <PSM_BAYES_CACHE or ~/.cache/psm_bayes>/scores)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    p.add_argument("--no-neutral", action="store_true", help="skip the neutral-context scores")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--threads", type=options.positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-size", type=options.positive_int, default=None, help="default: sized to the device")
    p.add_argument("--chunk-size", type=options.positive_int, default=256, help="pairs per cached chunk")
    p.add_argument("--seed", type=options.nonneg_int, default=0, help="seed of the probe subset")
    options.add_verify_cache(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    """Run ``psm-bayes score`` with parsed arguments; returns the exit status."""
    import numpy as np

    from psm_bayes import io
    from psm_bayes.data import DataError, LogLikTable, PersonaSet
    from psm_bayes.integrity import verifying
    from psm_bayes.llm.cache import ScoreCache
    from psm_bayes.llm.loading import cache_root
    from psm_bayes.llm.scorer import load_scorer
    from psm_bayes.probes import load_anthropic_persona, load_personas, load_probes

    out = io.check_output(args.out, (".nc",), overwrite=args.overwrite)
    traits = None if args.traits is None else list(options.name_list(args.traits, "--traits"))
    if args.probes == "builtin":
        probes = load_probes(traits=traits, n_per_trait=args.n_per_trait, seed=args.seed)
    else:
        probes = load_anthropic_persona(args.probes, traits=traits, n_per_trait=args.n_per_trait, seed=args.seed)
    spec = load_personas(None if args.personas == "builtin" else args.personas)
    keep = np.arange(len(spec.personas))
    if traits is not None:
        keep = np.array([i for i, t in enumerate(spec.trait) if t in set(traits)], dtype=int)
        if keep.size == 0:
            raise DataError(f"--traits: no persona in {args.personas!r} has trait(s) {traits}")
    ps = spec.personas
    personas = PersonaSet([ps.ids[i] for i in keep], [ps.names[i] for i in keep],
                          [ps.descriptions[i] for i in keep])

    t0 = time.perf_counter()
    with verifying(args.verify_cache):
        scorer = load_scorer(args.model, device=args.device, dtype=args.dtype, threads=args.threads,
                             batch_size=args.batch_size, prompt_format=args.prompt_format)
    loaded = scorer.loaded
    t_load = time.perf_counter() - t0
    cache = None
    if not args.no_cache:
        cache = ScoreCache(args.cache if args.cache else cache_root() / "scores")
        cache.clean()
    t1 = time.perf_counter()
    ds = scorer.score_table(personas, probes.items, neutral=not args.no_neutral, cache=cache,
                            progress=not args.quiet, chunk_size=args.chunk_size)
    t_score = time.perf_counter() - t1
    LogLikTable(ds["loglik"])  # validate before writing
    ds["trait"] = ("item", np.asarray(probes.trait, dtype=str))
    ds["matching_option"] = ("item", np.asarray(probes.matching_option, dtype=np.int64))
    ds["statement"] = ("item", np.asarray(probes.statements, dtype=str))
    ds["persona_trait"] = ("persona", np.asarray(spec.trait[keep], dtype=str))
    ds["persona_pole"] = ("persona", np.asarray(spec.pole[keep], dtype=str))
    ds["persona_description"] = ("persona", np.asarray(personas.descriptions, dtype=str))
    ds.attrs.update({"probes": str(args.probes), "personas": str(args.personas), "seed": int(args.seed)})
    io.save_xarray(ds, out, kind="scores", overwrite=args.overwrite)
    st = scorer.stats
    rate = st.pair_tokens / st.seconds if st.seconds > 0 else float("nan")
    print(f"wrote {out}: {len(personas)} personas x {len(probes)} items x {probes.items.n_options} options "
          f"({loaded.key}); load {t_load:.1f}s, scoring {t_score:.1f}s, {st.pairs} new pairs"
          + (f" at {rate:.0f} tok/s" if st.pairs else " (all cached)"), file=sys.stderr)
    return 0

"""The measured phenomenon of a run, from its stage caches alone (no fits): ICL and SFT contrasts with their se.

Run::

    .venv/bin/python benchmarks/measurements_summary.py RUN_DIR [--model gemma3-270m] [--json FILE]

Rebuilds the default design (``ExperimentConfig()``; pass the run's settings as flat overrides with
``--set name=value``), loads the model, and runs the persona-table, ICL and SFT stages with
``RUN_DIR/cache/<model>`` as their caches: a finished or interrupted ``psm-bayes run`` has them all, so
nothing is scored again (a missing cache entry IS measured, which takes the stage's full time). Prints the
numbers of issue 17's "What it must show", computed by the run's own summary functions
(``psm_bayes.experiments.analysis.summary``): the same-trait ICL contrast per shot count and at the largest
count (two-way condition x item bootstrap se), per trait at the largest count, the trained-statement shift
per (SFT trait, pole) at the last checkpoint, the SFT dose-response and every trait pair at the last step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="flat ExperimentConfig override, e.g. max_shots=32 (repeatable)")
    ap.add_argument("--json", default=None, help="also write the tables here (atomically)")
    ap.add_argument("--plots", default=None, metavar="DIR",
                    help="also draw the report's SFT trait-pair plot and the ICL contrast curve per trait here")
    args = ap.parse_args(argv)

    from psm_bayes.experiments.analysis.predictive import lora_cluster, sequence_cluster
    from psm_bayes.experiments.analysis.summary import contrast_table, sft_contrasts
    from psm_bayes.experiments.config import ExperimentConfig
    from psm_bayes.experiments.design import make_design
    from psm_bayes.experiments.measure import finetune, icl, persona_table, screening
    from psm_bayes.experiments.output.outputs import write_json
    from psm_bayes.llm import load_model

    over = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        over[k] = json.loads(v) if v[:1] in "[{0123456789-tfn" else v
    cfg = ExperimentConfig.build(**over) if over else ExperimentConfig()
    cache = Path(args.run_dir) / "cache" / args.model
    if not cache.is_dir():
        raise SystemExit(f"run_dir: {str(cache)!r} is not a stage cache folder of a psm-bayes run")
    source = screening.probe_source(cfg.probes_dir, cfg.traits, cfg.description_index)
    design = make_design(cfg, source.probes, cfg.traits)
    spec = persona_table.with_multi_trait(source.spec, cfg.multi_trait_groups(cfg.traits))
    loaded = load_model(args.model, dtype=cfg.dtype, threads=cfg.threads, device=cfg.device)
    personas = persona_table.measure_personas(loaded, design, spec, context=cfg.persona_context,
                                              compare_contexts=cfg.compare_persona_contexts,
                                              pseudo_count=cfg.prior_pseudo_count, cache_dir=cache,
                                              batch_size=cfg.batch_size, progress=False)
    ic_stage = icl.run_icl(loaded, design, cache_dir=cache / "icl", batch_size=cfg.batch_size, progress=False)
    sft = finetune.run_sft(loaded, design, cfg.sft, cfg.sft_checkpoints, cache_dir=cache / "sft",
                           batch_size=cfg.batch_size, progress=False)
    ic = ic_stage.contrasts
    n_max = max(design.n_values)
    same = ic[ic["same_trait"]]
    sc = sft_contrasts(sft.measurements)
    last = max(cfg.sft_checkpoints)
    trained = sft.trained_measurements
    out = {
        "model": args.model, "traits": list(cfg.traits), "sft_traits": list(design.sft_traits),
        "n_values": list(design.n_values), "sft_checkpoints": list(cfg.sft_checkpoints),
        "persona_separation": {t: {k: float(v) for k, v in row.items()}
                               for t, row in personas.separation[cfg.persona_context].iterrows()},
        "icl_same_trait_by_shots": contrast_table(same, ["n_shots"], sequence_cluster, cfg.seed),
        "icl_other_traits_by_shots": contrast_table(ic[~ic["same_trait"]], ["n_shots"], sequence_cluster, cfg.seed),
        "icl_at_max_by_trait": contrast_table(same[same["n_shots"] == n_max], ["shot_trait"], sequence_cluster,
                                              cfg.seed),
        "sft_trained_shift": contrast_table(trained.assign(contrast=trained["toward_pole"]),
                                            ["sft_trait", "pole", "step"], lora_cluster, cfg.seed),
        "sft_dose_response": contrast_table(sc[sc["same_trait"]], ["sft_trait", "step"], lora_cluster, cfg.seed),
        "sft_by_trait_pair": contrast_table(sc, ["sft_trait", "item_trait", "step"], lora_cluster, cfg.seed),
        "icl_same_trait_by_trait_and_shots": contrast_table(same, ["shot_trait", "n_shots"], sequence_cluster,
                                                            cfg.seed),
        "sft_pairs_last_step": contrast_table(sc[sc["step"] == last], ["sft_trait", "item_trait"], lora_cluster,
                                              cfg.seed),
        "sft_losses": {k: [float(x) for x in v] for k, v in sft.losses.items()},
        "sft_info": {k: v for k, v in sft.info.items() if isinstance(v, (int, float, bool, str))},
    }

    def show(title: str, rows: list[dict], keys: list[str]) -> None:
        print(f"\n## {title}\n")
        print("| " + " | ".join(keys) + " | mean | se | 90% interval | z | items | conditions |")
        print("|" + "---|" * (len(keys) + 6))
        for r in rows:
            z = r["mean"] / r["se"] if r["se"] > 0 else float("nan")
            print("| " + " | ".join(str(r[k]) for k in keys)
                  + f" | {r['mean']:+.2f} | {r['se']:.2f} | [{r['lo']:+.2f}, {r['hi']:+.2f}] | {z:.1f} | "
                  f"{r['n_items']} | {r['n_conditions']} |")

    print(f"# Measurements of {args.run_dir} ({args.model}), from the stage caches")
    show("ICL contrast, same trait, by shot count", out["icl_same_trait_by_shots"], ["n_shots"])
    show("ICL contrast, other traits, by shot count", out["icl_other_traits_by_shots"], ["n_shots"])
    show(f"ICL contrast at {n_max} shots, by trait", out["icl_at_max_by_trait"], ["shot_trait"])
    show("SFT trained statements: shift toward the pole", out["sft_trained_shift"], ["sft_trait", "pole", "step"])
    show("SFT held-out same-trait contrast (+ minus - fine-tune)", out["sft_dose_response"], ["sft_trait", "step"])
    show(f"SFT contrast per trait pair at step {last}", out["sft_pairs_last_step"], ["sft_trait", "item_trait"])
    print("\n## LoRA loss (first, last step) per run\n")
    for k, v in out["sft_losses"].items():
        print(f"- {k}: {v[0]:.3f} -> {v[-1]:.3f}")
    if args.json:
        write_json(Path(args.json), out)
    if args.plots:
        _plots(out, Path(args.plots))
    return 0


def _plots(out: dict, folder: Path) -> None:
    """The report's SFT trait-pair plot, and the same-trait ICL contrast vs shots per trait with 90% bands."""
    from psm_bayes.experiments.output.plots import _grid, _savefig, _shot_ticks, plot_sft_pairs, shot_axis

    plot_sft_pairs({out["model"]: {"sft": {"by_trait_pair": out["sft_by_trait_pair"]}}}, folder / "sft_pairs.png")
    rows = out["icl_same_trait_by_trait_and_shots"]
    traits = sorted({r["shot_trait"] for r in rows})
    fig, axes = _grid(1, 1, 5.0, 3.4)
    ax = axes[0, 0]
    for t in traits:
        pts = sorted((r for r in rows if r["shot_trait"] == t), key=lambda r: r["n_shots"])
        x = shot_axis([r["n_shots"] for r in pts])
        line, = ax.plot(x, [r["mean"] for r in pts], marker="o", ms=3, label=t)
        ax.fill_between(x, [r["lo"] for r in pts], [r["hi"] for r in pts], color=line.get_color(), alpha=0.15)
    _shot_ticks(ax, sorted({r["n_shots"] for r in rows}))
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_ylabel("t+ minus t- log-odds (nats)")
    ax.set_title(f"{out['model']}: same-trait ICL contrast (band: 90% interval)", fontsize=9)
    ax.legend(fontsize=7)
    _savefig(fig, folder / "icl_contrast_by_trait.png")


if __name__ == "__main__":
    raise SystemExit(main())

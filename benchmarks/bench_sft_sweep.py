"""The documented LoRA SFT sweep (steps x learning rate x episodes) behind the default ``SFTSettings``.

Command (from the repository root; one torch thread; results in ``benchmarks/sft_sweep.md``)::

    .venv/bin/python benchmarks/bench_sft_sweep.py                     # the grid on Gemma 3 270M
    .venv/bin/python benchmarks/bench_sft_sweep.py --steps 24 --episodes 16 --lrs 1e-3,2e-3   # 2 more rows
    .venv/bin/python benchmarks/bench_sft_sweep.py --model smollm2-135m-instruct --episodes 16 \\
        --steps 12 --lrs 5e-4                                           # the chosen setting on SmolLM2
    .venv/bin/python benchmarks/bench_sft_sweep.py --default-stage      # time the default run's SFT stage

Every setting trains each pole of each trait (default: the first two default traits) with each seed,
through the pipeline's own stage (:func:`psm_bayes.experiments.measure.finetune.run_sft`) on a design of the
shipped probes: ``--eval-items`` held-out evaluation statements per trait and ``--episodes`` SFT
statements per trait (disjoint, label-balanced), four checkpoints at 1/4, 1/2, 3/4 and all of the steps.

The rule, stated before any result and applied by code (:func:`choose`): a setting PASSES when, at
the last checkpoint, the trained statements of every (trait, pole) moved >= 2 nats toward the pole
(mean over statements and seeds) and every run's loss decreased (mean of the last quarter of steps
below half the mean of the first quarter).  Among passing settings the cheapest (fewest steps) is
chosen, then the one with more episodes (more trained statements per trait), then the larger
smallest shift.  The held-out columns (same-trait contrast of the SFT trait's evaluation items,
cross-trait contrast trained on A and measured on B, both ``+`` minus ``-`` fine-tune, mean and se
over items) are reported and never used to choose.

Prints a markdown table (one row per setting) and the chosen setting; ``--json`` also writes the rows.
Runs are cached under ``--cache`` (a rerun of the same setting resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHIFT_TARGET = 2.0
"""Nats toward the pole the trained statements must move (issue: fine-tuning that learns)."""


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


PROBES = Path(__file__).resolve().parents[1] / "psm_bayes" / "probes" / "data" / "probes.jsonl"
"""The shipped probes the designs draw from (their hash is printed with the table)."""


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def checkpoints_for(steps: int) -> tuple[int, ...]:
    """Four checkpoints from onset to the end: 1/4, 1/2, 3/4 and all of ``steps``."""
    return tuple(sorted({max(1, round(steps * f)) for f in (0.25, 0.5, 0.75)} | {steps}))


def decreasing(losses: list[float]) -> bool:
    """Mean loss of the last quarter of steps below half the mean of the first quarter."""
    q = max(1, len(losses) // 4)
    return bool(np.mean(losses[-q:]) < 0.5 * np.mean(losses[:q]))


def _shifts(row: dict) -> list[float]:
    """The last checkpoint's trained-statement shift of every (trait, pole) of a row."""
    return [v for k, v in row.items() if k.startswith("shift ") and k != "shift by checkpoint"]


def setting_row(stage, steps: int, lr: float, episodes: int) -> dict:
    """One table row: trained-statement shifts, losses, held-out contrasts (reported only) and cost."""
    from psm_bayes.experiments.analysis.summary import mean_se, sft_contrasts

    last = max(stage.trained_measurements["step"])
    tm = stage.trained_measurements[stage.trained_measurements["step"] == last]
    row: dict = {"steps": steps, "lr": lr, "episodes": episodes}
    for (trait, pole), g in tm.groupby(["sft_trait", "pole"]):
        row[f"shift {trait}{pole}"] = float(g.groupby("item")["toward_pole"].mean().mean())
    losses = list(stage.losses.values())
    path = stage.trained_measurements.groupby(["step", "sft_trait", "pole"])["toward_pole"].mean()
    row["shift by checkpoint"] = [float(path[k].min()) for k in sorted(stage.trained_measurements["step"].unique())]
    row["loss start"] = float(np.mean([ls[0] for ls in losses]))
    row["loss end"] = float(np.mean([ls[-1] for ls in losses]))
    row["decreasing"] = all(decreasing(ls) for ls in losses)
    sc = sft_contrasts(stage.measurements)
    sc = sc[sc["step"] == last]
    for (a, b), g in sc.groupby(["sft_trait", "item_trait"]):
        ms = mean_se(g.groupby("item")["contrast"].mean().to_numpy())
        kind = "same" if a == b else f"cross {a}->{b}"
        row[f"{kind} {a}" if a == b else kind] = ms["mean"]
        row[f"se {kind} {a}" if a == b else f"se {kind}"] = ms["se"]
    for k in ("seconds_per_step", "cpu_seconds_per_step", "measure_seconds", "cpu_measure_seconds"):
        row[k.replace("seconds_per_step", "s/step").replace("measure_seconds", "measure s/run")] = stage.info[k]
    row["passes"] = bool(row["decreasing"] and min(_shifts(row)) >= SHIFT_TARGET)
    return row


def display(rows: list[dict]) -> pd.DataFrame:
    """The printed table: shifts and losses to 2 decimals, contrasts as ``mean ± se``."""
    out = []
    for r in rows:
        d = {"steps": r["steps"], "lr": f"{r['lr']:.0e}", "episodes": r["episodes"]}
        d |= {k: f"{v:+.2f}" for k, v in r.items() if k.startswith("shift ") and k != "shift by checkpoint"}
        d["min shift by checkpoint"] = " / ".join(f"{v:+.1f}" for v in r["shift by checkpoint"])
        d["loss start -> end"] = f"{r['loss start']:.2f} -> {r['loss end']:.3f}"
        d["decreasing"] = r["decreasing"]
        d |= {k: f"{v:+.2f} ± {r['se ' + k]:.2f}" for k, v in r.items()
              if k.startswith(("same ", "cross "))}
        d["s/step (cpu)"] = f"{r['s/step']:.2f} ({r['cpu_s/step']:.2f})"
        d["measure s/run (cpu)"] = f"{r['measure s/run']:.0f} ({r['cpu_measure s/run']:.0f})"
        d["passes"] = r["passes"]
        out.append(d)
    return pd.DataFrame(out)


def choose(rows: list[dict]) -> dict | None:
    """The chosen setting (module docstring): cheapest passing, then more episodes, then larger smallest shift."""
    ok = [r for r in rows if r["passes"]]
    if not ok:
        return None
    return min(ok, key=lambda r: (r["steps"], -r["episodes"], -min(_shifts(r))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--traits", default=None, help="comma-separated SFT traits (default: first two default traits)")
    p.add_argument("--episodes", type=_ints, default=[16, 24])
    p.add_argument("--steps", type=_ints, default=[8, 12])
    p.add_argument("--lrs", type=_floats, default=[5e-4, 1e-3, 2e-3])
    p.add_argument("--loss", default="options")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--eval-items", type=int, default=10)
    p.add_argument("--cache", default=str(Path(os.environ.get("PSM_BAYES_CACHE", "~/.cache/psm_bayes")).expanduser()
                                          / "sft_sweep"))
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--default-stage", action="store_true",
                   help="instead of the grid: time the whole SFT stage of the default run's design and settings "
                        "(ExperimentConfig(): its SFT traits x 2 poles x its seeds), in a fresh cache folder")
    args = p.parse_args(argv)

    import torch

    from psm_bayes.experiments.config import DEFAULT_TRAITS, ExperimentConfig
    from psm_bayes.experiments.design import make_design
    from psm_bayes.experiments.measure.finetune import run_sft
    from psm_bayes.experiments.output.report import md_table
    from psm_bayes.llm import load_model
    from psm_bayes.llm.loading import bf16_native
    from psm_bayes.probes import load_probes

    torch.set_num_threads(1)
    traits = tuple(args.traits.split(",")) if args.traits else DEFAULT_TRAITS[:2]
    loaded = load_model(args.model, dtype="float32", threads=1)
    probes = load_probes(traits)
    rows = []
    if args.default_stage:
        import tempfile

        cfg = ExperimentConfig(models=(args.model,))
        design = make_design(cfg, load_probes(cfg.traits), cfg.traits)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = np.array([time.perf_counter(), time.process_time()])
            stage = run_sft(loaded, design, cfg.sft, cfg.sft_checkpoints, cache_dir=tmp, batch_size=cfg.batch_size,
                            progress=False)
            wall, cpu = np.array([time.perf_counter(), time.process_time()]) - t0
        print(f"default SFT stage: {len(stage.losses)} runs ({design.sft_traits} x 2 poles x {len(cfg.sft.seeds)} "
              f"seeds), {cfg.sft_examples} episodes, checkpoints {cfg.sft_checkpoints}, {cfg.sft}; "
              f"{wall:.0f} s wall, {cpu:.0f} s CPU; {stage.info}")
        rows.append(setting_row(stage, cfg.sft.steps, cfg.sft.lr, cfg.sft_examples))
        args.episodes = []
    for episodes in args.episodes:
        for steps in args.steps:
            for lr in args.lrs:
                cfg = ExperimentConfig.build(
                    traits=traits, sft_traits=traits, probes_per_trait=args.eval_items, prior_items=2,
                    persona_examples=2, max_shots=2, orderings=1, sft_examples=episodes,
                    sft_checkpoints=checkpoints_for(steps), sft_lr=lr, sft_batch_size=args.batch_size,
                    sft_seeds=args.seeds, sft_loss=args.loss, models=(args.model,))
                design = make_design(cfg, probes, traits)
                stage = run_sft(loaded, design, cfg.sft, cfg.sft_checkpoints, cache_dir=Path(args.cache) / args.model,
                                batch_size=16, progress=False)
                rows.append(setting_row(stage, steps, lr, episodes))
                print(json.dumps(rows[-1]), flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_workload import cpu_features

    print(f"\n{time.strftime('%Y-%m-%d')}  model {args.model}  CPU {cpu_features()}  "
          f"bf16_native(cpu)={bf16_native('cpu')}  autocast bf16 ran: {stage.info['autocast_bf16']}  "
          + ("the default run's design and settings  " if args.default_stage else
             f"loss {args.loss}  batch {args.batch_size}  seeds {args.seeds}  eval items/trait {args.eval_items}  ")
          + f"probes sha256 {_sha256(PROBES)[:12]}  "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(md_table(display(rows), index=False))
    best = choose(rows)
    print("\nchosen:", "none passes: the table is the result" if best is None else
          {k: best[k] for k in ("steps", "lr", "episodes")})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

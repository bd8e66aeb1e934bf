"""The scoring workload of a whole ``psm-bayes run`` (persona table + ICL + SFT probes) on both embedded models.

Run::

    .venv/bin/python benchmarks/bench_workload.py [--traits 2] [--predict-traits 20] \\
        [--probes ../shared/data/anthropic-persona] [--models gemma3-270m,smollm2-135m-instruct] \\
        [--device auto] [--dtype bfloat16] [--threads 1] [--batch-size 16] \\
        [--max-shots 64] [--manyshot-items 16] [--manyshot-only]

**Many-shot curves, one pass vs per count** (first, per model): one nested,
label-balanced shot sequence of ``--max-shots`` shots of the first trait
(:func:`psm_bayes.experiments.design.shot_sequences`), the design's counts
``1, 2, 4, ..., max`` and ``--manyshot-items`` evaluation items, scored (a)
as the ICL stage does, from ONE forward pass of the longest context cut at
each count's boundary (:mod:`psm_bayes.llm.manyshot`), and (b) per count
from scratch (:meth:`NextTokenScorer.score` of each count's prompts, the
former path): wall time, run tokens, tokens/s in prompt tokens (what a
naive scorer runs) and run tokens, their ratios, the largest difference, and
the peak RSS -- of each phase (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``, which resets ``resource.getrusage``'s ``ru_maxrss`` too) and of the
process so far (the largest ``ru_maxrss`` read: before the first reset, it includes the model load).

The workload mirrors the experiment's defaults (``ExperimentConfig``) for N
traits, with ``P`` evaluation probes per trait (label-balanced) and a disjoint
pool of ``k`` example statements per trait:

* **persona table**: each trait pole is a persona, conditioned on its ``k``
  few-shot answers; it answers every evaluation probe of every trait
  (``2N`` contexts x ``N*P`` probes), plus the neutral context;
* **ICL**: for every trait pole and ordering, ``n`` = 1, 2, 4, 8 shots, every
  evaluation probe (``2N x orderings x 4`` contexts x ``N*P`` probes);
* **SFT probes**: every evaluation probe under the neutral context, once
  before and once per (pole, seed, checkpoint) after LoRA (``1 + 2 x 3 x 3``
  passes); scored here with the base weights (same cost; the LoRA training
  steps themselves are not scoring and are not counted).

Every group of prompts sharing a context is one call of
:meth:`psm_bayes.llm.scorer.Scorer.option_logprobs` (the pipeline's path:
the context runs once and its key/value cache is reused across the group's
probes, one output-layer position per probe).  A sample of prompts is also
scored naively (batch 1, each whole prompt, full-vocabulary logits) for the
speed-up and the largest difference.

Columns: *prompt tokens* -- the tokens of all full prompts (what a naive
scorer runs); *run tokens* -- what actually ran through the model body
(shared contexts once, then the probes); tokens/s in both units; GFLOP/s =
``2 x body parameters x run tokens + 2 x output-layer parameters x output
positions`` per second (attention over the cached context not counted), as a
percentage of the ``--dtype`` matmul peak measured here (2048 x 2048
``torch.matmul``, same thread count).  *Predicted 20 traits*: the run tokens
of the same workload built for ``--predict-traits`` traits (tokenizer only,
no forward pass) divided by the measured run-token rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

SHOTS = (1, 2, 4, 8)


def build_workload(probes, traits, fmt, *, per_trait: int, examples: int, orderings: int, sft_passes: int,
                   seed: int) -> list[tuple[str, str, list[str]]]:
    """``(component, context, item prompts)`` groups; each group shares its context."""
    from psm_bayes.probes import balanced_pick

    rng = np.random.default_rng(seed)
    evals, pools = [], {}
    for t in traits:
        idx = np.flatnonzero(probes.trait == t)
        pick = balanced_pick(rng, idx, probes.matching_option, per_trait + examples)
        rng.shuffle(pick)
        pools[t] = pick[:examples]
        evals += list(pick[examples:])
    items = [probes.items.prompts[i] for i in evals]
    options = (" Yes", " No")

    def fewshot(pool, pole: int) -> str:
        return fmt.fewshot_context([(probes.items.prompts[i], options[int(probes.matching_option[i]) ^ pole])
                                    for i in pool])

    groups = [("persona table", fmt.neutral_context(), items)]
    for t in traits:
        for pole in (0, 1):
            groups.append(("persona table", fewshot(pools[t], pole), items))
            for o in range(orderings):
                order = np.random.default_rng([seed, o]).permutation(pools[t])
                for n in SHOTS:
                    if n <= examples:
                        groups.append(("ICL", fewshot(order[:n], pole), items))
    groups.append(("ICL", fmt.neutral_context(), items))  # n = 0
    groups += [("SFT probes", fmt.neutral_context(), items)] * sft_passes
    return groups


def planned_tokens(tokenizer, prefix_ids, groups) -> dict[str, tuple[int, int, int]]:
    """Per component: (prompts, prompt tokens, run tokens) without running the model."""
    def n_tok(text: str) -> int:
        return len(prefix_ids) + len(tokenizer(text, add_special_tokens=False)["input_ids"])

    item_len: dict[str, int] = {}
    out: dict[str, list[int]] = {}
    ctx_len: dict[str, int] = {}
    for comp, ctx, items in groups:
        if ctx not in ctx_len:
            ctx_len[ctx] = n_tok(ctx) if ctx else len(prefix_ids)
        lens = []
        for it in items:
            if it not in item_len:
                item_len[it] = len(tokenizer(it, add_special_tokens=False)["input_ids"])
            lens.append(ctx_len[ctx] + item_len[it])
        lcp = ctx_len[ctx] if len(items) > 1 else 0
        acc = out.setdefault(comp, [0, 0, 0])
        acc[0] += len(items)
        acc[1] += sum(lens)
        acc[2] += lcp + sum(n - lcp for n in lens)
    return {k: tuple(v) for k, v in out.items()}


def matmul_peak(dtype: str, device: str, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an ``n x n`` matmul (best of ``reps``)."""
    import torch

    td = torch.float32 if dtype == "float32" else torch.bfloat16
    a = torch.randn(n, n, dtype=td, device=device)
    b = torch.randn(n, n, dtype=td, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def naive(scorer, texts: list[str], option: str) -> tuple[np.ndarray, int, float]:
    """Batch 1, whole prompt, full-vocabulary logits: log p(option | text), tokens, seconds."""
    import torch

    model, out, n_tok = scorer.model, [], 0
    t = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ctx, cont = scorer.tokenize_pair(text, option)
            ids = torch.tensor([list(ctx + cont)], device=model.device)
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0, len(ctx) - 1, cont[0]]
            out.append(float(logp))
            n_tok += len(ctx)
    return np.array(out), n_tok, time.perf_counter() - t


def cpu_features() -> str:
    """CPU model and the SIMD features that decide bf16 speed (Linux ``/proc/cpuinfo``)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(have) or 'no AVX2'}"


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_gb() -> tuple[float, float]:
    """``(peak RSS since the last reset (VmHWM), process peak (getrusage))`` in GB."""
    import resource

    hwm = float("nan")
    try:
        for ln in Path("/proc/self/status").read_text().splitlines():
            if ln.startswith("VmHWM:"):
                hwm = int(ln.split()[1]) / 1e6
    except OSError:
        pass
    return hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_manyshot(name: str, args, probes, trait: str) -> dict:
    """One-pass vs per-count scoring of a nested ``--max-shots`` sequence (see the module docstring)."""
    from psm_bayes.experiments.design import shot_counts, shot_sequences
    from psm_bayes.experiments.measure.scoring import fewshot, option_scorer
    from psm_bayes.llm import load_model
    from psm_bayes.llm.manyshot import plan_nested, score_plan
    from psm_bayes.probes import balanced_pick

    loaded = load_model(name, device=args.device, dtype=args.dtype, threads=args.threads)
    nts = option_scorer(loaded, batch_size=args.batch_size)
    fmt, match = loaded.format, probes.matching_option
    pool = np.flatnonzero(probes.trait == trait)
    items = balanced_pick(np.random.default_rng(args.seed), pool, match, args.manyshot_items)
    seq = shot_sequences([args.seed, 2], np.setdiff1d(pool, items), match, trait, 1, args.max_shots)[0]
    counts = [n for n in shot_counts(args.max_shots) if n > 0]
    contexts = [fewshot(fmt, probes, seq.items[:n], seq.answers("+")[:n]) for n in counts]
    texts = [fmt.item_text(probes.items.prompts[i]) for i in items]
    nts.score([texts[0]])                                             # warm-up
    out = {"model": name, "fmt": fmt.name, "counts": counts, "items": len(texts), "key": loaded.key,
           "context_tokens": len(nts.encode(contexts[-1])),
           "prompt_tokens": sum(len(nts.encode(c + x)) for c in contexts for x in texts)}
    runs, out["load_peak"] = {}, _peak_gb()[1]          # before any reset: includes loading the model
    for part in ("one pass", "per count"):
        clear = _reset_peak()
        nts.forward_tokens = 0
        t = time.perf_counter()
        if part == "one pass":
            lp = score_plan(nts, plan_nested(nts, contexts, texts))
        else:
            lp = np.stack([nts.score([c + x for x in texts]) for c in contexts])
        secs = time.perf_counter() - t
        hwm, proc = _peak_gb()
        runs[part] = {"seconds": secs, "run_tokens": nts.forward_tokens, "lp": lp,
                      "phase_peak": hwm if clear else float("nan"),
                      "process_peak": max(proc, out["load_peak"], *(r["process_peak"] for r in runs.values()))}
        log(f"{name}: {part}: {secs:.1f} s, {nts.forward_tokens} run tokens, peak RSS {hwm:.2f} / {proc:.2f} GB")
    out["max_diff"] = float(np.abs(runs["one pass"]["lp"] - runs["per count"]["lp"]).max())
    out["runs"] = runs
    del loaded, nts
    return out


def print_manyshot(results: list[dict], args) -> None:
    """The many-shot table (markdown)."""
    print(f"\nMany-shot curves, one pass vs per count: {args.max_shots} shots, counts "
          f"{results[0]['counts']}, {args.manyshot_items} items; {cpu_features()}; {args.dtype}, "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}.\n")
    print(f"| model | format | {args.max_shots}-shot context tokens | path | s | run tokens | prompt tok/s | run tok/s "
          "| wall ratio | token ratio | max diff (nats) | phase peak RSS GB | process peak RSS GB |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        one, per = r["runs"]["one pass"], r["runs"]["per count"]
        for part, x in r["runs"].items():
            ratio = f"{per['seconds'] / one['seconds']:.2f}" if part == "one pass" else ""
            tok = f"{per['run_tokens'] / one['run_tokens']:.2f}" if part == "one pass" else ""
            print(f"| {r['model']} | {r['fmt']} | {r['context_tokens']} | {part} | {x['seconds']:.1f} | "
                  f"{x['run_tokens']} | {r['prompt_tokens'] / x['seconds']:.0f} | {x['run_tokens'] / x['seconds']:.0f} "
                  f"| {ratio} | {tok} | {r['max_diff']:.1e} | {x['phase_peak']:.2f} | {x['process_peak']:.2f} |")


def log(msg: str) -> None:
    """Progress to stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_model(name: str, args, probes_small, traits_small, probes_big, traits_big) -> list[dict]:
    """Measure one model; returns table rows."""
    import torch

    from psm_bayes.llm import load_scorer

    t0 = time.perf_counter()
    sc = load_scorer(name, device=args.device, dtype=args.dtype, threads=args.threads, batch_size=args.batch_size)
    t_load = time.perf_counter() - t0
    log(f"{name}: loaded in {t_load:.0f} s")
    params = sc.loaded.n_parameters()
    kw = dict(per_trait=args.per_trait, examples=args.examples, orderings=args.orderings,
              sft_passes=args.sft_passes, seed=args.seed)
    groups = build_workload(probes_small, traits_small, sc.format, **kw)
    nts = sc.next_token_scorer((" Yes", " No"))
    nts.score([groups[1][1] + sc.format.item_text(groups[1][2][0])])  # warm-up
    rows, first_lp = [], None
    for comp in ("persona table", "ICL", "SFT probes"):
        nts.forward_tokens = nts.prompts_scored = 0
        calls = [[ctx + sc.format.item_text(p) for p in items] for c, ctx, items in groups if c == comp]
        t = time.perf_counter()
        scores = [nts.score(texts) for texts in calls]
        if sc.device.startswith("cuda"):
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
        if first_lp is None:
            first_lp = (calls[1], scores[1])  # the first persona context
        log(f"{name}: {comp}: {sum(map(len, calls))} prompts in {len(calls)} calls, {secs:.1f} s")
        n_prompts = sum(len(texts) for texts in calls)
        n_prompt_tok = sum(len(sc.tokenize_pair(x, sc.format.option(" Yes"))[0]) for texts in calls for x in texts)
        flops = 2 * params["body"] * nts.forward_tokens + 2 * params["head"] * n_prompts
        rows.append(dict(model=name, part=comp, prompts=n_prompts, prompt_tokens=n_prompt_tok,
                         run_tokens=nts.forward_tokens, seconds=secs, flops=flops))
    # naive reference on a sample of persona-table prompts
    texts, lp = first_lp
    sample = texts[:args.naive_sample]
    ref, n_tok, secs = naive(sc, sample, sc.format.option(" Yes"))
    log(f"{name}: naive sample {len(sample)} prompts, {secs:.1f} s")
    max_diff = float(np.max(np.abs(ref - lp[:len(sample), 0])))
    rows.insert(0, dict(model=name, part="naive HF (batch 1, full vocab), persona-table sample", prompts=len(sample),
                        prompt_tokens=n_tok, run_tokens=n_tok, seconds=secs,
                        flops=2 * (params["body"] + params["head"]) * n_tok, max_diff=max_diff))
    plan = planned_tokens(sc.tokenizer, sc.prefix_ids, build_workload(probes_big, traits_big, sc.format, **kw))
    meas = {r["part"]: r for r in rows}
    total = 0.0
    for comp, (n_p, p_tok, r_tok) in plan.items():
        m = meas[comp]
        rate = m["run_tokens"] / m["seconds"]
        total += r_tok / rate
        meas[comp]["pred_prompts"], meas[comp]["pred_prompt_tokens"] = n_p, p_tok
        meas[comp]["pred_run_tokens"], meas[comp]["pred_seconds"] = r_tok, r_tok / rate
    for r in rows:
        r.update(load=t_load, params=params, key=sc.loaded.key, fmt=sc.format.name, device=sc.device,
                 batch=sc.batch_size, pred_total=total)
    del sc
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gemma3-270m,smollm2-135m-instruct")
    ap.add_argument("--traits", type=int, default=2, help="traits in the measured workload")
    ap.add_argument("--predict-traits", type=int, default=20)
    ap.add_argument("--probes", default="../shared/data/anthropic-persona",
                    help="directory of Anthropic persona *.jsonl files ('builtin' for the shipped probes)")
    ap.add_argument("--per-trait", type=int, default=8, help="evaluation probes per trait")
    ap.add_argument("--examples", type=int, default=8, help="few-shot pool per trait (persona examples)")
    ap.add_argument("--orderings", type=int, default=1)
    ap.add_argument("--sft-passes", type=int, default=19, help="1 before + poles x seeds x checkpoints")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None,
                    help="default: bfloat16 on a GPU or a CPU with native bf16 (AVX-512 BF16/AMX), else float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--naive-sample", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shots", type=int, default=64, help="many-shot part: shots of the nested sequence")
    ap.add_argument("--manyshot-items", type=int, default=16, help="many-shot part: evaluation items")
    ap.add_argument("--manyshot-only", action="store_true", help="run the many-shot part only")
    args = ap.parse_args(argv)

    import torch

    from psm_bayes.llm import resolve_device
    from psm_bayes.llm.loading import cpu_bf16_native
    from psm_bayes.probes import load_anthropic_persona, load_probes

    if args.probes == "builtin":
        every = load_probes()
    else:
        every = load_anthropic_persona(args.probes)
    counts = {t: int(np.sum(every.trait == t)) for t in dict.fromkeys(every.trait)}
    usable = [t for t, c in counts.items() if c >= 2 * (args.per_trait + args.examples)]
    if len(usable) < args.predict_traits:
        print(f"note: only {len(usable)} traits with enough probes; predicting for those", file=sys.stderr)
    traits_big = usable[:args.predict_traits]
    traits_small = traits_big[:args.traits]
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    native = device.startswith("cuda") or cpu_bf16_native()
    args.dtype = args.dtype or ("bfloat16" if native else "float32")
    bf16_peak = matmul_peak("bfloat16", device, n=2048 if native else 256, reps=10 if native else 2)
    peak = bf16_peak if args.dtype == "bfloat16" else matmul_peak(args.dtype, device, n=1024, reps=5)
    log(f"matmul peak {peak:.0f} GFLOP/s; traits {traits_small} measured, {len(traits_big)} predicted")
    load = os.getloadavg()[0]
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    print_manyshot([bench_manyshot(name, args, every, traits_small[0]) for name in names], args)
    if args.manyshot_only:
        return 0
    rows = []
    for name in names:
        rows += bench_model(name, args, every, traits_small, every, traits_big)

    print(f"\nWhole-run scoring workload, {args.traits} traits measured ({', '.join(traits_small)}), "
          f"prediction for {len(traits_big)} traits; {args.per_trait} probes/trait, {args.examples}-shot personas, "
          f"shots {SHOTS}, {args.orderings} ordering(s), {args.sft_passes} SFT probe passes.")
    print(f"Device {device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'CPU'}), "
          f"{args.dtype}, {args.threads} thread(s); measured {args.dtype} matmul peak {peak:.1f} GFLOP/s "
          f"(% peak is of this); bf16 matmul peak {bf16_peak:.2f} GFLOP/s"
          f"{'' if native else ' (no native bf16 on this CPU: torch emulates it, so scoring runs in float32)'}; "
          f"load average at start {load:.1f}.\n")
    print("| model | format | part | prompts | prompt tokens | run tokens | s | prompt tok/s | run tok/s "
          f"| GFLOP/s | % peak | predicted s, {len(traits_big)} traits |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gf = r["flops"] / r["seconds"] / 1e9
        pred = f"{r['pred_seconds']:.0f}" if "pred_seconds" in r else ""
        print(f"| {r['model']} | {r['fmt']} | {r['part']} | {r['prompts']} | {r['prompt_tokens']} | "
              f"{r['run_tokens']} | {r['seconds']:.1f} | {r['prompt_tokens'] / r['seconds']:.0f} | "
              f"{r['run_tokens'] / r['seconds']:.0f} | {gf:.1f} | {100 * gf / peak:.0f}% | {pred} |")
    print()
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        nv = mine[0]
        parts = mine[1:]
        secs = sum(r["seconds"] for r in parts)
        ptok = sum(r["prompt_tokens"] for r in parts)
        speed = (ptok / secs) / (nv["prompt_tokens"] / nv["seconds"])
        print(f"- {name} ({nv['key']}, {nv['fmt']} format, batch {nv['batch']}, load {nv['load']:.0f} s): "
              f"whole workload {ptok / secs:.0f} prompt tok/s = {speed:.1f}x the naive loop; "
              f"max |naive - scorer| {nv['max_diff']:.1e} nats; predicted scoring time for "
              f"{len(traits_big)} traits: {nv['pred_total'] / 60:.1f} min "
              f"({sum(r['pred_prompts'] for r in parts)} prompts).")
    if not device.startswith("cuda"):
        print("- GPU: not measured (no GPU machine was available in this session); run with --device cuda.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

"""Throughput of :class:`psm_bayes.llm.Scorer` against a naive Hugging Face loop.

Run::

    .venv/bin/python benchmarks/bench_scorer.py [--n-pairs 500] [--dtype float32] [--threads 1]

Both methods score the same ``(context, option)`` pairs in one process: the
persona-conditioned probe pairs that ``psm-bayes score`` produces (persona
description + ``Question: ...\\nAnswer:`` + ``" Yes"``/``" No"``), sampled
from the shipped probes and personas (synthetic pairs if those are missing).

* ``naive HF``: one pair per forward pass (batch 1), full-vocabulary logits
  at every position (``model(input_ids).logits``), float32 log-softmax;
* ``scorer, no prefix sharing``: batched, right-padded, output layer only at
  continuation positions;
* ``scorer``: the default, which also reads options that share a context off
  one forward pass.

Throughput is pair tokens (context + continuation of every pair, the work the
naive loop does) per second, identical for every row, so ratios are
speed-ups.  The methods run interleaved, block by block, so that load from
other processes on a shared machine affects them alike.  Achieved GFLOP/s counts the matmul work actually executed
(``2 x body parameters`` per non-padding token run plus ``2 x head
parameters`` per output-layer position), compared with the single-core matmul
peak measured here with a 2048 x 2048 ``torch.matmul``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time


def make_pairs(n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n_pairs`` (context, continuation) pairs: persona x probe x {" Yes", " No"}."""
    from psm_bayes.llm import prompts

    rng = random.Random(seed)
    try:
        from psm_bayes.probes import load_personas, load_probes

        probes = load_probes()
        personas = load_personas().personas
        contexts = [prompts.description_context(d) for d in personas.descriptions]
        questions = list(probes.items.prompts)
        options = list(probes.items.options[0])
    except (ImportError, FileNotFoundError, ValueError):  # synthetic fallback
        contexts = [prompts.description_context(f"You are assistant number {k}, who likes topic {k * 7}.")
                    for k in range(20)]
        questions = [f"Is statement number {k} something you would say about topic {k % 13}?" for k in range(200)]
        options = [" Yes", " No"]
    combos = [(c, q) for c in contexts for q in questions]
    rng.shuffle(combos)
    pairs: list[tuple[str, str]] = []
    for c, q in combos:
        for o in options:
            pairs.append((c + prompts.item_text(q), o))
        if len(pairs) >= n_pairs:
            break
    return pairs[:n_pairs]


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an ``n x n`` matmul on the current torch thread setting (best of ``reps``)."""
    import torch

    td = torch.float32 if dtype == "float32" else torch.bfloat16
    a = torch.randn(n, n, dtype=td)
    b = torch.randn(n, n, dtype=td)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def naive_scores(loaded, pairs: list[tuple[str, str]], tokenize) -> tuple[list[list[float]], int, float]:
    """Batch-1 full-vocabulary scoring; returns per-token logps, tokens run, seconds."""
    import torch

    model = loaded.model
    out, n_tok = [], 0
    t = time.perf_counter()
    with torch.inference_mode():
        for c, o in pairs:
            ctx, cont = tokenize(c, o)
            ids = torch.tensor([list(ctx + cont)])
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
            out.append([logp[len(ctx) - 1 + j, tok].item() for j, tok in enumerate(cont)])
            n_tok += ids.shape[1]
    return out, n_tok, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-pairs", type=int, default=500)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model", default=None, help="model path or name (default: embedded Gemma 3 270M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, default=50, help="pairs per interleaved block of each method")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import numpy as np

    from psm_bayes.llm.loading import load_model
    from psm_bayes.llm.scorer import Scorer

    t = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, threads=args.threads)
    t_load = time.perf_counter() - t
    params = loaded.n_parameters()
    pairs = make_pairs(args.n_pairs, args.seed)
    ctxs, conts = [p[0] for p in pairs], [p[1] for p in pairs]
    peak = matmul_peak(args.dtype)

    warm = Scorer(loaded, batch_size=args.batch_size)
    warm.score_pairs(ctxs[:8], conts[:8])  # warm-up
    scorers = {"nosharing": Scorer(loaded, batch_size=args.batch_size, share_prefix=False, share_kv=False),
               "default": Scorer(loaded, batch_size=args.batch_size)}
    # Interleave the methods block by block so that load from other processes
    # on a shared machine hits all of them alike.
    naive: list[list[float]] = []
    ours: list = []
    n_tok, naive_secs = 0, 0.0
    block = max(2, args.block - args.block % 2)
    for start in range(0, len(pairs), block):
        sl = slice(start, start + block)
        got, tok, secs = naive_scores(loaded, pairs[sl], warm.tokenize_pair)
        naive += got
        n_tok += tok
        naive_secs += secs
        scorers["nosharing"].score_pairs(ctxs[sl], conts[sl])
        ours += scorers["default"].score_pairs(ctxs[sl], conts[sl])
    rows = [("naive HF (batch 1, full-vocab logits)", n_tok, naive_secs,
             2 * (params["body"] + params["head"]) * n_tok)]
    for key, label in (("nosharing", "scorer, no prefix sharing"), ("default", "scorer (default)")):
        st = scorers[key].stats
        assert st.pair_tokens == n_tok, (st.pair_tokens, n_tok)
        flops = 2 * (params["body"] * st.forward_tokens + params["head"] * st.head_positions)
        rows.append((f"{label}, batch {args.batch_size}", n_tok, st.seconds, flops))
    diffs = np.array([abs(a - b) for r, s in zip(naive, ours) for a, b in zip(r, s.token_logps)])

    base = rows[0][1] / rows[0][2]
    print(f"\nModel {loaded.key}: {params['total'] / 1e6:.1f}M parameters "
          f"(body {params['body'] / 1e6:.1f}M, output layer {params['head'] / 1e6:.1f}M); "
          f"dtype {args.dtype}, {args.threads} thread(s); load {t_load:.1f} s; "
          f"{len(pairs)} pairs, mean {n_tok / len(pairs):.1f} tokens/pair.")
    print(f"Measured {args.dtype} matmul peak (2048x2048, {args.threads} thread(s)): {peak:.1f} GFLOP/s. "
          f"Max |scorer - naive| per-token log p: {diffs.max():.2e} nats.\n")
    print("| method | pairs | tokens | seconds | tokens/s | speed-up | GFLOP/s | % of peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for label, tok, secs, flops in rows:
        rate = tok / secs
        gf = flops / secs / 1e9
        print(f"| {label} | {len(pairs)} | {tok} | {secs:.1f} | {rate:.0f} | {rate / base:.2f}x | "
              f"{gf:.1f} | {100 * gf / peak:.0f}% |")
        out.append({"method": label, "pairs": len(pairs), "tokens": tok, "seconds": secs,
                    "tokens_per_s": rate, "speedup": rate / base, "gflops": gf, "peak_gflops": peak})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": out, "max_abs_diff": float(diffs.max())}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

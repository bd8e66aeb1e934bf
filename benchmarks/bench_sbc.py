"""Benchmark simulation-based calibration: simuk vs the compiled kernel (loop, vmap), Ray vs serial.

Runs SBC of a catalogued model (default: the canonical persona_selection, or
persona_mixture until it is catalogued, on the catalogue's small ``sizes``,
``L = 99`` draws thinned by 2, 300 warm-up) for ``--replicates`` prior draws
with

* ``loop``: one compiled single-replicate NUTS called in a Python loop
  (the serial baseline, and the CPU default);
* ``vmap``: jitted ``jax.vmap`` of the same NUTS over chunks of 50
  replicates, and over all replicates in one call;
* ``simuk``: the simuk library (NumPyro ``MCMC`` per replicate), timed on
  ``--simuk-replicates`` and extrapolated; the fast path is kept only if it
  beats this row;
* ``fit_nuts`` loop: :func:`psm_bayes.inference.fit_nuts` per replicate
  (recompiles per data set), timed on ``--fit-replicates`` and extrapolated;
* Ray: a local Ray with 2 workers running ``loop`` chunks (one per worker)
  and ``vmap`` chunks of 50.

Wall times include compilation and prior draws. A second table times the
compiled sampling alone (no compilation) per vmap chunk size. Prints
markdown tables with speed-ups relative to the serial loop.

Usage::

    .venv/bin/python benchmarks/bench_sbc.py [--replicates 200] [--model persona_selection]
"""

from __future__ import annotations

import argparse
import time


def _sampling_only(model, data, latents, config, replicates: int, seed: int, chunk: int) -> tuple[float, float]:
    """(compile, sampling) seconds of vmap chunks of ``chunk`` replicates (``chunk=1``: the loop)."""
    import jax

    from psm_bayes.sbc import NUTSKernel, draw_prior
    from psm_bayes.sbc.driver import replicate_keys

    truth, obs = draw_prior(model, data, replicates, seed=seed, latents=latents)
    keys = replicate_keys(seed, replicates)
    run_one = NUTSKernel(model, data, None, config, tuple(truth), {k: v[0] for k, v in obs.items()}).build()
    t0 = time.perf_counter()
    if chunk == 1:
        fn = jax.jit(run_one).lower(keys[0], {k: v[0] for k, v in obs.items()}).compile()
    else:
        fn = jax.jit(jax.vmap(run_one)).lower(keys[:chunk], {k: v[:chunk] for k, v in obs.items()}).compile()
    t1 = time.perf_counter()
    for i in range(0, replicates - chunk + 1, chunk):
        if chunk == 1:
            jax.block_until_ready(fn(keys[i], {k: v[i] for k, v in obs.items()}))
        else:
            jax.block_until_ready(fn(keys[i:i + chunk], {k: v[i:i + chunk] for k, v in obs.items()}))
    return t1 - t0, time.perf_counter() - t1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--fit-replicates", type=int, default=3, help="replicates timed for the fit_nuts loop")
    p.add_argument("--simuk-replicates", type=int, default=10, help="replicates timed for simuk")
    p.add_argument("--model", default=None, help="catalogued model (default: the canonical one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--skip", nargs="*", default=[], choices=["vmap1", "fit", "simuk", "ray", "chunks"], help="rows to skip")
    args = p.parse_args(argv)

    from psm_bayes.inference import configure_jax
    from psm_bayes.models import catalogue
    from psm_bayes.sbc import SBCConfig, run_sbc

    configure_jax()
    name = args.model or ("persona_selection" if "persona_selection" in catalogue.names() else "persona_mixture")
    entry = catalogue.get(name)
    model = entry.model("numpyro")
    data = entry.simulator()(entry.priors(), seed=args.seed, **entry.sizes)[0]
    cfg = SBCConfig(num_warmup=args.warmup)
    R = args.replicates
    rows: list[tuple[str, int, float, str]] = []

    def timed(label, n, **kw):
        res = run_sbc(model, data, replicates=n, seed=args.seed, config=cfg, latents=entry.latents, **kw)
        print(f"  {label}: {res.wall_time:.1f} s, passed {res.passed()}, divergences {res.divergences.sum()}",
              flush=True)
        return res

    def verdict(res) -> str:
        cal = res.calibration()
        return f"{'pass' if not cal['reject'].any() else 'REJECT'} (max excess {cal['excess'].max():.2f})"

    print(f"SBC benchmark: {name}, {R} replicates, L={cfg.num_draws}, thin={cfg.thin}, "
          f"warmup={cfg.num_warmup}", flush=True)
    timed("warm-up run (imports, not reported)", 2, method="loop")
    base = timed("loop", R, method="loop")
    rows.append(("Python loop, one compiled NUTS (serial baseline)", R, base.wall_time, verdict(base)))
    v50 = timed("vmap 50", R, method="vmap", chunk_size=50)
    same = float((v50.ranks == base.ranks).mean())
    rows.append(("jax.vmap, chunks of 50", R, v50.wall_time,
                 f"{verdict(v50)}; {same:.0%} of ranks identical to loop (batched rounding)"))
    if "vmap1" not in args.skip:
        v1 = timed("vmap all", R, method="vmap", chunk_size=R)
        rows.append((f"jax.vmap, one call of {R}", R, v1.wall_time, verdict(v1)))
    if "simuk" not in args.skip:
        n = args.simuk_replicates
        sk = timed("simuk", n, method="simuk")
        rows.append((f"simuk: NumPyro MCMC per replicate ({n} timed, x{R / n:.0f})", R, sk.wall_time * R / n,
                     "extrapolated"))
    if "fit" not in args.skip:
        n = args.fit_replicates
        fit = timed("fit", n, method="fit")
        rows.append((f"Python loop of fit_nuts ({n} timed, x{R / n:.0f})", R, fit.wall_time * R / n, "extrapolated"))
    if "ray" not in args.skip:
        r_loop = timed("ray loop", R, method="loop", ray_address="local", workers=2)
        rows.append(("Ray local, 2 workers, loop (1 chunk each)", R, r_loop.wall_time,
                     f"ranks identical to serial: {bool((r_loop.ranks == base.ranks).all())}"))
        r_vmap = timed("ray vmap", R, method="vmap", chunk_size=50, ray_address="local", workers=2)
        rows.append(("Ray local, 2 workers, vmap chunks of 50", R, r_vmap.wall_time,
                     f"ranks identical to serial vmap: {bool((r_vmap.ranks == v50.ranks).all())}"))

    print()
    print("| method | replicates | wall s (incl. compile) | speed-up vs serial loop | note |")
    print("|---|---:|---:|---:|---|")
    for label, n, wall, note in rows:
        print(f"| {label} | {n} | {wall:.1f} | {base.wall_time / wall:.2f}x | {note} |")
    if "chunks" not in args.skip:
        print()
        print("| replicates per call | compile s | sampling s (compiled, all replicates) | sampling speed-up vs loop |")
        print("|---:|---:|---:|---:|")
        ref = None
        for chunk in (1, 10, 50, R):
            c, s = _sampling_only(model, data, entry.latents, cfg, R, args.seed, chunk)
            ref = ref or s
            label = "1 (loop)" if chunk == 1 else str(chunk)
            print(f"| {label} | {c:.1f} | {s:.2f} | {ref / s:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

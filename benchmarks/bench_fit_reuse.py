"""Per-fit NUTS times before and after compile reuse (one compiled program per model structure).

Run::

    .venv/bin/python benchmarks/bench_fit_reuse.py --cores 1                 # ~10 min on an idle core
    .venv/bin/python benchmarks/bench_fit_reuse.py --cores 2 --methods vectorized,sequential,parallel

Data: the persona-selection simulator at the size of a default run's ICL data
set: 5 personas, 4 traits x (8 evaluation + 8 shot items) = 64 items, shots
1/2/4/8 in both poles = 33 conditions, one log-odds per condition and
evaluation item (1056 measurements), Student-t(5) noise
(``FitSettings.priors()``). Fit ``j`` observes new log-odds simulated from the
model (``forward``, seed ``j``) on the same design; fits ``j >= 2`` also
permute the items (a resampled design of the same sizes, as a power
replicate's). NUTS as a default run: 2 chains x (300 warm-up + 1000 draws),
``target_accept`` 0.9, predictive groups included (what ``fit_with_refit``
pays per fit).

Rows:

* ``before``: NumPyro ``MCMC`` on the model with the data closed over (the
  previous ``psm_bayes.inference`` code, chains in parallel where there are
  host devices, else sequential): every fit compiles;
* ``reuse off``: this release's program built afresh for every fit
  (``compiled.reuse(False)``);
* ``reuse on``: first fit compiles, further fits run the cached program;
  one block per chain method (``--methods``).

Columns: wall and CPU (all threads) seconds of the ``fit_nuts`` call
(CPU seconds are the steadier number on a shared machine), seconds inside JAX
compilation (union of ``/jax/core/compile/*`` spans), XLA compilations,
program hits. ``--cores`` pins the process (``sched_setaffinity``) before
JAX starts; the load average is printed (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

_SPANS: list[tuple[float, float]] = []
_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
           "/jax/core/compile/backend_compile_duration")


def _on_span(event: str, start_time: float, end_time: float, **_) -> None:
    if event in _EVENTS:
        _SPANS.append((start_time, end_time))


def _compile_seconds(t0: float, t1: float) -> float:
    total, end = 0.0, t0
    for a, b in sorted((max(a, t0), min(b, t1)) for a, b in _SPANS):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def cpu_features() -> str:
    """CPU model and the SIMD flags that matter for XLA CPU (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keep = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {'+'.join(keep) or 'no AVX2'}"


def before_fit(model, data, priors, seed: int, warmup: int, samples: int, chains: int):
    """The previous fit: MCMC on the model closed over the data, then eager log-likelihood and predictive."""
    import jax
    from numpyro.infer import MCMC, NUTS, Predictive, init_to_median, log_likelihood

    from psm_bayes.models.base import spec_of

    spec = spec_of(model)
    method = "parallel" if jax.local_device_count() >= chains else "sequential"
    mcmc = MCMC(NUTS(model, target_accept_prob=0.9, init_strategy=init_to_median), num_warmup=warmup,
                num_samples=samples, num_chains=chains, chain_method=method, progress_bar=False)
    key_run, key_pred = jax.random.split(jax.random.PRNGKey(seed))
    mcmc.run(key_run, data, priors, extra_fields=("diverging", "energy", "num_steps", "accept_prob"))
    flat = mcmc.get_samples()
    ll = log_likelihood(model, flat, spec.per_unit(data), priors)
    pp = Predictive(model, posterior_samples=flat, return_sites=list(spec.observed))(key_pred, spec.unobserve(data),
                                                                                   priors)
    return jax.block_until_ready((flat, ll, pp))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pinning)")
    ap.add_argument("--model", default="persona_selection")
    ap.add_argument("--methods", default="vectorized", help="chain methods of the reuse-on rows, comma-separated")
    ap.add_argument("--fits", type=int, default=4, help="fits per reuse-on block")
    ap.add_argument("--before-fits", type=int, default=2, help="fits of the before and reuse-off rows (0: skip)")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    from psm_bayes.inference import configure_jax

    configure_jax(host_devices=max(1, len(os.sched_getaffinity(0))))
    import jax
    import numpy as np

    from psm_bayes.experiments.analysis.fitting import FitSettings
    from psm_bayes.inference import compiled, fit_nuts, nuts
    from psm_bayes.models import catalogue
    from psm_bayes.models.selection_simulate import design, forward

    jax.monitoring.register_event_time_span_listener(_on_span)
    priors = FitSettings().priors()
    model = catalogue.model(args.model)
    base = design(seed=0, n_personas=5, n_traits=4, n_eval=8, n_shot_items=8, shots=(1, 2, 4, 8),
                  observation="measurements")

    def data_for(j: int):
        d = base
        if j >= 2:  # a resampled design of the same sizes: items permuted
            p = np.random.default_rng(j).permutation(d.n_items)
            d = d.replace(loglik=d.loglik[:, p], yes_option=d.yes_option[p], matching_option=d.matching_option[p],
                          item_trait=tuple(np.asarray(d.item_trait)[p].tolist()))
        return d.with_observed({"logodds": forward(args.model, d, priors, seed=j)["logodds"]})

    print(f"# bench_fit_reuse: {args.model}, {base.n_conditions} conditions x {base.n_items} items, "
          f"{len(base.measurement_condition)} measurements, 2 x ({args.warmup} + {args.samples})\n")
    print(f"{time.strftime('%Y-%m-%d')}; {cpu_features()}; python {platform.python_version()}, jax {jax.__version__}; "
          f"pinned to {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores, {jax.local_device_count()} host "
          f"devices; load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n", flush=True)
    rows = []

    def timed(label: str, j: int, fn) -> None:
        info0 = compiled.cache_info()
        t0, c0 = time.time(), time.process_time()
        fn()
        t1, c1 = time.time(), time.process_time()
        info1 = compiled.cache_info()
        rows.append((label, j, t1 - t0, c1 - c0, _compile_seconds(t0, t1), info1["xla_compiles"] - info0["xla_compiles"],
                     info1["hits"] - info0["hits"], os.getloadavg()[0]))
        print(f"{label} fit {j}: {t1 - t0:.1f} s", file=sys.stderr, flush=True)

    kw = dict(priors=priors, num_warmup=args.warmup, num_samples=args.samples, num_chains=2, target_accept=0.9)
    for j in range(args.before_fits):
        d = data_for(j)
        timed("before (closed over)", j, lambda: before_fit(model, d, priors, j, args.warmup, args.samples, 2))
    with compiled.reuse(False):
        for j in range(args.before_fits):
            d = data_for(j)
            timed("reuse off", j, lambda: fit_nuts(model, d, seed=j, **kw))
    for method in args.methods.split(","):
        nuts.DEFAULT_CHAIN_METHOD = method
        compiled.clear_cache()
        for j in range(args.fits):
            d = data_for(j)
            timed(f"reuse on, {nuts.resolve_chain_method(method, 2)}", j, lambda: fit_nuts(model, d, seed=j, **kw))
    print("| path | fit | wall s | CPU s | compile s | XLA compiles | program hits | load (1 min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, j, wall, cpu, comp, n, hits, load in rows:
        print(f"| {label} | {j} | {wall:.1f} | {cpu:.1f} | {comp:.1f} | {n} | {hits} | {load:.1f} |")
    further = [r[2] for r in rows if r[0].startswith("reuse on") and r[1] > 0]
    if further:
        print(f"\nfurther fits with reuse: median {np.median(further):.2f} s, max {max(further):.2f} s (target <= 3 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

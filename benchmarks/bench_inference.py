"""Benchmark NumPyro vs Pyro NUTS on a catalogued model (default: the canonical ``persona_selection``).

Run::

    .venv/bin/python benchmarks/bench_inference.py                 # ~5 min on 2 shared cores
    .venv/bin/python benchmarks/bench_inference.py --model persona_mixture

Part A (K=8 personas, N~2000 episodes simulated with the catalogue's
simulator): NumPyro NUTS and Pyro NUTS, wall time and bulk ESS/s of the
model's main latents (``CatalogueEntry.latents``; min and mean over their
scalar elements).

Part B: how NumPyro NUTS time grows with N (500, 2000, 8000; K=8) and K
(4, 8, 32; N=2000).

Timing conventions
------------------
* ``total``: wall time of one ``psm_bayes.inference.fit_*`` call with
  ``predictive=False`` (what a user waits for, minus the predictive groups).
* ``compile`` (NumPyro only): time spent inside that call tracing to jaxprs,
  lowering to MLIR and XLA-compiling, measured with JAX's own monitoring
  events (``/jax/core/compile/*``, the union of their time spans, so nested
  traces are not double counted).  Every row here is a new model
  structure (other K or N), so every NumPyro row pays it (fits of the same
  structure share one compiled program: ``benchmarks/bench_fit_reuse.py``);
  ``sampling = total - compile``.  Pyro has no compile step (``sampling = total``).
* ESS/s uses ``sampling`` time (warm-up included, compile excluded); the
  ``ESS/s incl. compile`` column uses ``total``.
* Pyro NUTS keeps fewer draws (it is ~50x slower per draw); ESS/s is a rate,
  so it stays comparable (same warm-up fraction, roughly).
* "us per leapfrog step (est.)" = sampling time / (post-warm-up leapfrog
  steps x (warm-up + kept) / kept), i.e. assumes warm-up trees as deep as
  the kept ones.
* NumPyro runs its chains as ``psm_bayes.inference.nuts`` does by default
  (``DEFAULT_CHAIN_METHOD``); Pyro runs them one after another, as
  ``psm_bayes.inference`` does.  torch is limited to one intra-op thread:
  with two threads on a shared 2-core machine Pyro's tiny tensor ops were
  10-40x slower (thread oversubscription), which would flatter NumPyro.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from psm_bayes.inference import configure_jax, fit_nuts

configure_jax()  # program start: float64, one host device per core (before any JAX computation)

import arviz as az  # noqa: E402  (after numpyro)
import jax  # noqa: E402
import torch  # noqa: E402

from psm_bayes.models import catalogue  # noqa: E402

torch.set_num_threads(1)

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_SPANS: list[tuple[float, float]] = []


def _on_span(event: str, start_time: float, end_time: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _SPANS.append((start_time, end_time))


jax.monitoring.register_event_time_span_listener(_on_span)


def _compile_seconds(t0: float, t1: float) -> float:
    """Length of the union of JAX compile spans within wall-clock [t0, t1]."""
    total, end = 0.0, t0
    for a, b in sorted((max(a, t0), min(b, t1)) for a, b in _SPANS):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total

ENTRY = catalogue.get("persona_selection")  # replaced by --model in main()


@dataclass
class Row:
    method: str
    K: int
    N: int
    work: str
    total: float
    compile: float = 0.0
    ess_min: float = float("nan")
    ess_mean: float = float("nan")
    n_leapfrog: float = float("nan")  # post-warm-up leapfrog steps (all chains), NumPyro only
    extra: dict = field(default_factory=dict)

    @property
    def sampling(self) -> float:
        return max(self.total - self.compile, 1e-9)

    def ess_s(self, which: str, total: bool = False) -> float:
        ess = self.ess_min if which == "min" else self.ess_mean
        return ess / (self.total if total else self.sampling)


def problem(K: int, N: int, seed: int = 0):
    """Data with K personas and about N episodes from the model's own simulator."""
    sim = ENTRY.simulator()
    if ENTRY.name == "persona_mixture":
        return sim(seed=seed, n_personas=K, n_episodes=N)[0]
    # the selection family: N episodes spread over (condition, evaluation item) rows, SFT and ICL conditions
    sizes = dict(n_personas=K, sft_episodes=4, n_eval=4)
    rows = len(sim(seed=seed, n_episodes=1, **sizes)[0].episode_condition)
    return sim(seed=seed, n_episodes=max(1, round(N / rows)), **sizes)[0]


def n_episodes(data) -> int:
    if hasattr(data, "episode_count"):  # SelectionData
        return int(np.sum(data.episode_count))
    return int(data.episodes.count.sum())


def _ess(dt) -> tuple[float, float]:
    names = [n for n in ENTRY.latents if n in dt["posterior"].data_vars]
    ess = np.concatenate([np.asarray(v.values, dtype=float).ravel()
                          for v in az.ess(dt, var_names=names, method="bulk").data_vars.values()])
    return float(ess.min()), float(ess.mean())


def _timed(fn):
    """``(result, wall seconds, JAX compile seconds)`` of ``fn()``."""
    t0 = time.time()
    out = fn()
    t1 = time.time()
    return out, t1 - t0, _compile_seconds(t0, t1)


def bench_nuts(lib: str, data, warmup: int, samples: int, chains: int, seed: int = 1) -> Row:
    model = ENTRY.model(lib)
    dt, total, compile_s = _timed(lambda: fit_nuts(model, data, seed=seed, num_warmup=warmup,
                                                   num_samples=samples, num_chains=chains, predictive=False))
    emin, emean = _ess(dt)
    stats = dt["sample_stats"]
    row = Row(f"{lib} NUTS", data.n_personas, n_episodes(data), f"{chains}x({warmup}+{samples})", total,
              compile_s, emin, emean)
    if "n_steps" in stats:
        row.n_leapfrog = float(stats["n_steps"].sum())
    row.extra["divergences"] = int(stats["diverging"].sum())
    return row


def _f(x: float, nd: int = 1) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{nd}f}"


def table_a(rows: list[Row]) -> str:
    out = ["| method | work | total s | compile s | sampling s | ESS min | ESS mean | ESS/s min | "
           "ESS/s mean | ESS/s mean incl. compile | divergences |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.method} | {r.work} | {_f(r.total)} | {_f(r.compile)} | {_f(r.sampling)} | "
                   f"{_f(r.ess_min, 0)} | {_f(r.ess_mean, 0)} | {_f(r.ess_s('min'))} | {_f(r.ess_s('mean'))} | "
                   f"{_f(r.ess_s('mean', total=True))} | {r.extra.get('divergences', '-')} |")
    return "\n".join(out)


def table_b(rows: list[Row]) -> str:
    out = ["| method | K | N | work | total s | compile s | sampling s | sampling us/(N*K) | leapfrog steps "
           "(post-warm-up) | us per leapfrog step (est.) | ESS/s min | ESS/s mean |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        # post-warm-up steps scaled to the whole run (warm-up has roughly the same tree sizes once adapted)
        frac = r.extra["draws_total"] / r.extra["draws_kept"]
        per_step = r.sampling / (r.n_leapfrog * frac) * 1e6 if np.isfinite(r.n_leapfrog) else float("nan")
        out.append(f"| {r.method} | {r.K} | {r.N} | {r.work} | {_f(r.total)} | {_f(r.compile)} | {_f(r.sampling)} | "
                   f"{_f(r.sampling / (r.N * r.K) * 1e6, 2)} | {_f(r.n_leapfrog, 0)} | {_f(per_step, 1)} | "
                   f"{_f(r.ess_s('min'))} | {_f(r.ess_s('mean'))} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global ENTRY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="persona_selection", help="catalogued model with numpyro and pyro backends")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer draws, no N=8000 / K=32 rows")
    args = ap.parse_args(argv)
    ENTRY = catalogue.get(args.model)
    chains = args.chains
    warm, keep = (200, 300) if args.quick else (300, 500)
    pwarm, pkeep = (100, 150) if args.quick else (150, 250)  # Pyro: same warm-up/kept ratio, fewer draws

    print(f"# bench_inference: {ENTRY.name} ({'quick' if args.quick else 'full'})\n")
    print(f"python {platform.python_version()}, cores {os.cpu_count()}, load average at start "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; torch threads {torch.get_num_threads()}; "
          f"ESS over {', '.join(ENTRY.latents)}\n", flush=True)

    # ---------------------------------------------------------------- part A
    data = problem(8, 2000)
    rows_a = [bench_nuts("numpyro", data, warm, keep, chains)]
    print(f"numpyro NUTS done ({rows_a[-1].total:.0f} s)", file=sys.stderr, flush=True)
    rows_a.append(bench_nuts("pyro", data, pwarm, pkeep, chains))
    print(f"pyro NUTS done ({rows_a[-1].total:.0f} s)", file=sys.stderr, flush=True)
    print(f"## A. K=8 personas, N={rows_a[0].N} episodes\n")
    print(table_a(rows_a))
    nn, pn = rows_a
    print("\nNumPyro/Pyro NUTS bulk ESS/s ratio (sampling only): "
          f"min {nn.ess_s('min') / pn.ess_s('min'):.1f}x, mean {nn.ess_s('mean') / pn.ess_s('mean'):.1f}x; "
          f"including NumPyro compile: min {nn.ess_s('min', True) / pn.ess_s('min', True):.1f}x, "
          f"mean {nn.ess_s('mean', True) / pn.ess_s('mean', True):.1f}x (target >= 50x)\n", flush=True)

    # ---------------------------------------------------------------- part B
    sizes = [(8, 500), (8, 2000), (4, 2000)] + ([] if args.quick else [(8, 8000), (32, 2000)])
    rows_b: list[Row] = []
    for K, N in sizes:
        r = nn if (K, N) == (8, 2000) else bench_nuts("numpyro", problem(K, N), warm, keep, chains)
        r.extra.update(draws_total=warm + keep, draws_kept=keep)
        rows_b.append(r)
        print(f"numpyro NUTS K={K} N={N} done ({r.total:.0f} s)", file=sys.stderr, flush=True)
    print("## B. Scaling of NumPyro NUTS with N and K\n")
    print(table_b(rows_b))
    per = np.array([r.sampling / (r.N * r.K) for r in rows_b])
    print(f"\nNumPyro sampling time/(N*K) ranges {per.min() * 1e6:.2f}-{per.max() * 1e6:.2f} us "
          f"(max/min {per.max() / per.min():.1f}); the number of leapfrog steps per draw depends on the posterior "
          "geometry, so time per leapfrog step is the more stable column.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark NumPyro vs Pyro inference on the persona-selection model.

Run::

    .venv/bin/python benchmarks/bench_inference.py            # full (~7 min on 2 shared cores)
    .venv/bin/python benchmarks/bench_inference.py --quick    # fewer draws, no Pyro scaling rows (~3-4 min)

Part A (K=8 personas, N=2000 episodes, simulated with
``simulate(..., priors=Priors(prior_weights_concentration=5.0))``):
NumPyro NUTS, Pyro NUTS, and SVI (both libraries, ``normal`` and ``mvn``
guides): wall time and bulk ESS/s of ``w`` (min and mean over personas).

Part B: how NumPyro NUTS time grows with N (500, 2000, 8000; K=8) and K (4, 8,
32; N=2000), plus Pyro NUTS at the small sizes when not ``--quick``.

Timing conventions
------------------
* ``total``: wall time of one ``psm_bayes.inference.fit_*`` call with
  ``predictive=False`` (what a user waits for, minus the predictive groups).
* ``compile`` (NumPyro only): time spent inside that call tracing to jaxprs,
  lowering to MLIR and XLA-compiling, measured with JAX's own monitoring
  events (``/jax/core/compile/*``, the union of their time spans, so nested
  traces are not double counted).  JAX recompiles for every new
  ``MCMC``/``SVI`` object, so every fit pays it; ``sampling = total -
  compile``.  Pyro has no compile step (``sampling = total``).
* ESS/s uses ``sampling`` time (warm-up included, compile excluded); the
  ``ESS/s incl. compile`` column uses ``total``.
* Pyro NUTS keeps fewer draws (it is ~50x slower per draw); ESS/s is a rate,
  so it stays comparable (same warm-up fraction, roughly).
* "us per leapfrog step (est.)" = sampling time / (post-warm-up leapfrog
  steps x (warm-up + kept) / kept), i.e. assumes warm-up trees as deep as
  the kept ones.
* NumPyro runs its chains in parallel on host devices (one per core, see
  ``psm_bayes.jax_setup``); Pyro runs them one after another, as
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

import psm_bayes.models.persona_mixture_numpyro as npm  # noqa: E402  (configures JAX: x64, host devices)
import arviz as az  # noqa: E402  (after numpyro)
import torch  # noqa: E402

from psm_bayes.inference import fit_nuts, fit_svi  # noqa: E402
from psm_bayes.models.persona_mixture import Priors  # noqa: E402
from psm_bayes.simulate import simulate  # noqa: E402

torch.set_num_threads(1)
import jax  # noqa: E402
import psm_bayes.models.persona_mixture_pyro as ppm  # noqa: E402

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

MODELS = {"numpyro": npm.persona_mixture, "pyro": ppm.persona_mixture}
PRIORS = Priors(prior_weights_concentration=5.0)


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
    return simulate(n_personas=K, n_episodes=N, seed=seed, priors=PRIORS).data


def _ess_w(dt) -> tuple[float, float]:
    ess = np.asarray(az.ess(dt, var_names=["w"], method="bulk")["w"].values, dtype=float)
    return float(ess.min()), float(ess.mean())


def _timed(fn):
    """``(result, wall seconds, JAX compile seconds)`` of ``fn()``."""
    t0 = time.time()
    out = fn()
    t1 = time.time()
    return out, t1 - t0, _compile_seconds(t0, t1)


def bench_nuts(lib: str, data, warmup: int, samples: int, chains: int, seed: int = 1) -> Row:
    model = MODELS[lib]
    dt, total, compile_s = _timed(lambda: fit_nuts(model, data, seed=seed, priors=PRIORS, num_warmup=warmup,
                                                   num_samples=samples, num_chains=chains, predictive=False))
    emin, emean = _ess_w(dt)
    stats = dt["sample_stats"]
    row = Row(f"{lib} NUTS", data.n_personas, len(data.episodes), f"{chains}x({warmup}+{samples})", total,
              compile_s, emin, emean)
    if "n_steps" in stats:
        row.n_leapfrog = float(stats["n_steps"].sum())
    row.extra["divergences"] = int(stats["diverging"].sum())
    return row


def bench_svi(lib: str, data, guide: str, steps: int, seed: int = 1) -> Row:
    model = MODELS[lib]
    _, total, compile_s = _timed(lambda: fit_svi(model, data, seed=seed, priors=PRIORS, guide=guide,
                                                 num_steps=steps, num_draws=1000, predictive=False))
    return Row(f"{lib} SVI ({guide})", data.n_personas, len(data.episodes), f"{steps} steps", total, compile_s)


def _f(x: float, nd: int = 1) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{nd}f}"


def table_a(rows: list[Row]) -> str:
    out = ["| method | work | total s | compile s | sampling s | ESS(w) min | ESS(w) mean | ESS/s min | "
           "ESS/s mean | ESS/s mean incl. compile | divergences |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.method} | {r.work} | {_f(r.total)} | {_f(r.compile)} | {_f(r.sampling)} | "
                   f"{_f(r.ess_min, 0)} | {_f(r.ess_mean, 0)} | {_f(r.ess_s('min'))} | {_f(r.ess_s('mean'))} | "
                   f"{_f(r.ess_s('mean', total=True))} | {r.extra.get('divergences', '-')} |")
    return "\n".join(out)


def table_b(rows: list[Row]) -> str:
    out = ["| method | K | N | work | total s | compile s | sampling s | sampling us/(N*K) | leapfrog steps "
           "(post-warm-up) | us per leapfrog step (est.) | us per step/(N+K*I) | ESS/s min | ESS/s mean |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        # post-warm-up steps scaled to the whole run (warm-up has roughly the same tree sizes once adapted)
        frac = r.extra["draws_total"] / r.extra["draws_kept"]
        per_step = r.sampling / (r.n_leapfrog * frac) * 1e6 if np.isfinite(r.n_leapfrog) else float("nan")
        out.append(f"| {r.method} | {r.K} | {r.N} | {r.work} | {_f(r.total)} | {_f(r.compile)} | {_f(r.sampling)} | "
                   f"{_f(r.sampling / (r.N * r.K) * 1e6, 2)} | {_f(r.n_leapfrog, 0)} | {_f(per_step, 1)} | "
                   f"{_f(per_step / (r.N + r.K * r.extra['n_items']), 4)} | {_f(r.ess_s('min'))} | "
                   f"{_f(r.ess_s('mean'))} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer draws; Pyro NUTS in part A only")
    ap.add_argument("--chains", type=int, default=2)
    args = ap.parse_args(argv)
    chains = args.chains
    warm, keep = (300, 500) if args.quick else (500, 1000)
    pwarm, pkeep = (150, 250) if args.quick else (300, 500)  # Pyro: same warm-up/kept ratio idea, fewer draws
    svi_steps = 2000

    print(f"# bench_inference ({'quick' if args.quick else 'full'})\n")
    print(f"python {platform.python_version()}, cores {os.cpu_count()}, load average at start "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; torch threads {torch.get_num_threads()}\n",
          flush=True)

    # ---------------------------------------------------------------- part A
    data = problem(8, 2000)
    rows_a = [bench_nuts("numpyro", data, warm, keep, chains)]
    print(f"numpyro NUTS done ({rows_a[-1].total:.0f} s)", file=sys.stderr, flush=True)
    rows_a.append(bench_nuts("pyro", data, pwarm, pkeep, chains))
    print(f"pyro NUTS done ({rows_a[-1].total:.0f} s)", file=sys.stderr, flush=True)
    for lib in ("numpyro", "pyro"):
        for guide in ("normal", "mvn"):
            rows_a.append(bench_svi(lib, data, guide, svi_steps))
            print(f"{lib} SVI {guide} done ({rows_a[-1].total:.0f} s)", file=sys.stderr, flush=True)
    print("## A. K=8 personas, N=2000 episodes (60 items, 2 options)\n")
    print(table_a(rows_a))
    nn, pn = rows_a[0], rows_a[1]
    print("\nNumPyro/Pyro NUTS ESS/s ratio (sampling only): "
          f"min {nn.ess_s('min') / pn.ess_s('min'):.1f}x, mean {nn.ess_s('mean') / pn.ess_s('mean'):.1f}x; "
          f"including NumPyro compile: min {nn.ess_s('min', True) / pn.ess_s('min', True):.1f}x, "
          f"mean {nn.ess_s('mean', True) / pn.ess_s('mean', True):.1f}x (target >= 10x)\n", flush=True)

    # ---------------------------------------------------------------- part B
    sizes = [(8, 500), (8, 2000), (8, 8000), (4, 2000), (32, 2000)]
    rows_b: list[Row] = []
    for K, N in sizes:
        d = problem(K, N)
        r = nn if (K, N) == (8, 2000) else bench_nuts("numpyro", d, warm, keep, chains)
        r.extra.update(draws_total=warm + keep, draws_kept=keep, n_items=d.n_items)
        rows_b.append(r)
        print(f"numpyro NUTS K={K} N={N} done ({r.total:.0f} s)", file=sys.stderr, flush=True)
    if not args.quick:
        for K, N in [(8, 500), (4, 2000)]:
            d = problem(K, N)
            r = bench_nuts("pyro", d, pwarm, pkeep, chains)
            r.extra.update(draws_total=pwarm + pkeep, draws_kept=pkeep, n_items=d.n_items)
            rows_b.append(r)
            print(f"pyro NUTS K={K} N={N} done ({r.total:.0f} s)", file=sys.stderr, flush=True)
        pn.extra.update(draws_total=pwarm + pkeep, draws_kept=pkeep, n_items=data.n_items)
        rows_b.append(pn)
    print("## B. Scaling of NUTS with N and K\n")
    print(table_b(rows_b))
    nrows = [r for r in rows_b if r.method.startswith("numpyro")]
    per = np.array([r.sampling / (r.N * r.K) for r in nrows])
    print(f"\nNumPyro sampling time/(N*K) ranges {per.min() * 1e6:.2f}-{per.max() * 1e6:.2f} us "
          f"(max/min {per.max() / per.min():.1f}); it is {'~' if per.max() / per.min() < 2 else 'NOT '}constant. "
          "The likelihood costs O(N + K*I*O) per gradient (the (source, item) table is computed once per "
          "evaluation and gathered per episode), and the number of leapfrog steps per draw depends on the "
          "posterior geometry, so time per leapfrog step / (N + K*I) is the more stable column.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

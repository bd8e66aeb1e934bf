"""Refit a finished run's data with and without the per-condition Yes drift (issue 18).

Run::

    .venv/bin/python benchmarks/drift_refit.py RUN_DIR [--llm gemma3-270m] [--datasets icl sft] \
        [--models persona_selection response_bias ...] [--warmup 300] [--draws 500] [--json FILE]

For each data set of the run (``RUN_DIR/data/<llm>/{icl,sft}.nc``, the log-odds the run fitted) and each
model, two fits with the run's observation model (Student-t(5), item effects): the shipped model (one Yes
offset per condition, pooled within its type) and ``Priors(condition_drift=False)`` (one offset per
condition type, the model before issue 18). Printed: ``logodds_sd`` (posterior mean), divergences, and
the PSM's grouped leave-one-item-out elpd minus each null's (paired se), the comparison the run decides
with, before (per-type) and after (per-condition). 2 chains, ``--warmup`` + ``--draws``, target_accept
0.9, no refits; seeds fixed per (data set, model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from psm_bayes.experiments.analysis.fitting import NULLS, PSM, FitSettings, fit_with_refit
    from psm_bayes.experiments.analysis.fits import grouped_compare
    from psm_bayes.experiments.analysis.power import load_run_data
    from psm_bayes.experiments.analysis.refits import fit_item_loglik
    from psm_bayes.models import catalogue
    from psm_bayes.models.selection import Priors

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--llm", default=None)
    ap.add_argument("--datasets", nargs="+", default=["icl", "sft"])
    ap.add_argument("--models", nargs="+", default=[PSM, *NULLS])
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    settings = FitSettings(num_warmup=args.warmup, num_samples=args.draws, refit_unconverged=False,
                           exact_refits=False)
    out: dict = {"date": str(datetime.date.today()), "run_dir": str(args.run_dir), "rows": []}
    for ds in args.datasets:
        try:
            data, _ = load_run_data(args.run_dir, args.llm, ds)
        except (FileNotFoundError, ValueError) as e:     # one line, not a traceback
            raise SystemExit(str(e)) from None
        print(f"\n## {ds}: {len(data.logodds)} log-odds, {data.n_conditions} conditions, "
              f"{len(data.bias_types)} types", flush=True)
        print("| drift | model | logodds_sd | divergences | max R-hat | PSM minus model (se) | fit s |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, pr in (("per condition", Priors(logodds_df=settings.logodds_df)),
                          ("per type", Priors(logodds_df=settings.logodds_df, condition_drift=False))):
            fits, secs = {}, {}
            for j, m in enumerate(args.models):
                t0 = time.time()
                fits[m] = fit_with_refit(catalogue.model(m), data, settings, 100 * j + 1, priors=pr)
                secs[m] = time.time() - t0
            cmp = grouped_compare(fits, data.measurement_item, None,
                                  {m: fit_item_loglik(dt, data, pr) for m, dt in fits.items()})
            for m, dt in fits.items():
                att = json.loads(dt.attrs["fit_attempts"])[-1]
                r = cmp["rows"][m]
                sd = float(np.mean(dt["posterior"]["logodds_sd"].values))
                diff = "" if m == PSM else f"{r['psm_minus']:+.1f} ({r['psm_minus_se']:.1f})"
                print(f"| {label} | {m} | {sd:.3f} | {att['divergences']} | {att['max_rhat']:.3f} | {diff} "
                      f"| {secs[m]:.0f} |", flush=True)
                out["rows"].append({"dataset": ds, "drift": label, "model": m, "logodds_sd": sd,
                                    "divergences": att["divergences"], "max_rhat": att["max_rhat"],
                                    "psm_minus": None if m == PSM else r["psm_minus"],
                                    "psm_minus_se": None if m == PSM else r["psm_minus_se"], "fit_s": secs[m]})
    if args.json:
        from psm_bayes.experiments.output.outputs import write_json

        write_json(Path(args.json), out)


if __name__ == "__main__":
    main()

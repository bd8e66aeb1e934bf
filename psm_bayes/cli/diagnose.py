"""``psm-bayes diagnose``: summary, convergence check, LOO and plots of fitted DataTrees.

Exit status 0 when every fit is usable (convergence warnings are reported,
not fatal); 1 when a fit is broken -- missing groups, non-finite draws or
chains that never move (:func:`psm_bayes.diagnostics.broken_fit`) -- with one
line per broken fit on stderr naming its problems.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from psm_bayes.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``diagnose``."""
    p = sub.add_parser("diagnose", help="summary, convergence check, LOO and plots of fitted DataTrees",
                       description="Summarise and check fits; several fits are also compared by PSIS-LOO. "
                                   "Writes <out>/diagnostics.json (strict JSON) and one folder per fit.")
    p.add_argument("fits", nargs="+", help="DataTree files from `psm-bayes fit`")
    p.add_argument("--var-names", help="comma-separated variables (default: all small ones)")
    options.add_out(p, "output folder (new, empty, or from an earlier diagnose with --overwrite)", "DIR")
    p.set_defaults(func=run)


def labels(paths: list[str]) -> list[str]:
    """One unique label per path: the file stem, or more of the path where stems repeat.

    ``["fit.nc", "sub/fit.nc"]`` -> ``["fit", "sub-fit"]``; the same path twice
    gets ``-2``, ``-3`` ... suffixes.
    """
    stems = [Path(p).stem for p in paths]
    out = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            parts = [x for x in Path(p).with_suffix("").parts if x not in ("/", ".", "..")]
            stem = "-".join(parts) or stem
        out.append(stem)
    seen: dict[str, int] = {}
    unique = []
    for lab in out:
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab}-{seen[lab]}")
    return unique


def run(args: argparse.Namespace) -> int:
    """Run ``psm-bayes diagnose``."""
    import json

    from psm_bayes import diagnostics as diag
    from psm_bayes import io

    fits = {lab: io.load_datatree(p, flag="fits") for lab, p in zip(labels(args.fits), args.fits)}
    out = io.prepare_output_dir(args.out, command="diagnose", overwrite=args.overwrite)
    var_names = [v.strip() for v in args.var_names.split(",") if v.strip()] if args.var_names else None
    report = {}
    for (name, dt), path in zip(fits.items(), args.fits):
        sub = out / name if len(fits) > 1 else out
        verdict = diag.check(dt, var_names)
        entry = {"file": str(path), "ok": verdict.ok, "max_rhat": verdict.max_rhat,
                 "min_ess_bulk": verdict.min_ess_bulk, "divergences": verdict.divergences,
                 "problems": list(verdict.problems), "broken": list(verdict.broken)}
        report[name] = entry
        if verdict.broken:  # no summary, plots or LOO of draws that are not draws
            print(f"== {name} ({path})\n{json.dumps(io.strict_json(entry))}")
            continue
        table = diag.summary(dt, var_names)
        io.save_table(table, sub / "summary.csv", overwrite=True)
        diag.save_plots(dt, sub, var_names)
        if "log_likelihood" in dt.children:
            try:
                lo = diag.loo(dt)
                entry.update(elpd_loo=float(lo.elpd), se=float(lo.se), p_loo=float(lo.p))
            except ValueError as err:  # e.g. too few draws for Pareto smoothing: say so, keep the rest
                entry["loo_error"] = str(err)
        print(f"== {name} ({path})\n{table.to_string()}\n{json.dumps(io.strict_json(entry))}")
    if len(fits) > 1:
        if all("elpd_loo" in entry for entry in report.values()):
            cmp = diag.compare(fits)
            io.save_table(cmp, out / "compare.csv", overwrite=True)
            print(cmp.to_string())
        else:
            print("no LOO comparison: PSIS-LOO is not available for every fit (see diagnostics.json)")
    io.save_json(report, out / "diagnostics.json", overwrite=True)
    print(f"wrote {out / 'diagnostics.json'}")
    broken = {name: e["broken"] for name, e in report.items() if e["broken"]}
    for name, problems in broken.items():
        print(f"psm-bayes diagnose: fit {name!r} ({report[name]['file']}) is broken: {'; '.join(problems)}",
              file=sys.stderr)
    return 1 if broken else 0

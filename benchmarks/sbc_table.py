"""The SBC table: calibration verdict and posterior contraction for every catalogued model.

For each catalogued model with a simulator (or those named with
``--models``), SBC at the documented sizes (``psm_bayes.sbc.config.SBC_SIZES``,
else the catalogue's ``sizes``) on the catalogue's main latents, decided by
the simultaneous ECDF band test (arviz_stats) at family-wise ``--alpha``, and
the posterior contraction (posterior sd / prior sd; target <= 0.5). Models
in ``psm_bayes.sbc.table.FAULTS`` get more rows, each with a SUBTLE fault
(``psm_bayes.sbc.table.Fault``) that the same test must reject. Prints a
markdown table, with ``--parameters`` also one table per run with every
parameter's contraction and verdict (and writes them with ``--out``,
atomically); ``--workers N`` runs each SBC as N local Ray tasks.

Usage::

    .venv/bin/python benchmarks/sbc_table.py [--replicates 200] [--models persona_selection power_law]
    .venv/bin/python benchmarks/sbc_table.py --models persona_selection encompassing --replicates 100 \
        --draws 49 --warmup 200 --parameters --workers 2
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="catalogued models (default: all with a simulator)")
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--fault-replicates", type=int, default=None,
                   help="replicates of the fault rows (default: --replicates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=99, help="posterior draws L per replicate")
    p.add_argument("--thin", type=int, default=2)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--method", default="auto")
    p.add_argument("--init", choices=("median", "laplace"), default="median",
                   help="NUTS start: prior median with adapted mass, or the run's fits' Laplace start")
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--parameters", action="store_true", help="also print every run's per-parameter table")
    p.add_argument("--workers", type=int, default=1, help="local Ray workers per SBC run (default: serial)")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)

    from psm_bayes.inference import configure_jax
    from psm_bayes.sbc import SBCConfig
    from psm_bayes.sbc.table import calibration_table, markdown, parameter_table

    configure_jax()
    cfg = SBCConfig(num_draws=args.draws, thin=args.thin, num_warmup=args.warmup, init=args.init)
    per_run: list[str] = []

    def keep(res) -> None:
        if args.parameters:
            per_run.append(f"\n{res.model}, fault: {res.meta.get('fault') or 'none'}\n\n"
                           + markdown(parameter_table(res, args.alpha)) + "\n")
            print(per_run[-1], flush=True)

    ray = {} if args.workers <= 1 else {"ray_address": "local", "workers": args.workers}
    table = calibration_table(args.models, replicates=args.replicates, seed=args.seed, config=cfg,
                              alpha=args.alpha, faults=not args.no_faults, progress=True, method=args.method,
                              fault_replicates=args.fault_replicates, on_result=keep, **ray)
    text = (f"SBC table: L={cfg.num_draws}, thin={cfg.thin}, warm-up={cfg.num_warmup}, family-wise alpha="
            f"{args.alpha}, seed={args.seed}\n\n" + markdown(table) + "\n" + "".join(per_run))
    print()
    print(text)
    if args.out:
        from psm_bayes.io import save_text

        save_text(text, args.out)


if __name__ == "__main__":
    main()

"""The SBC table: calibration verdict and posterior contraction for every catalogued model.

For each catalogued model with a simulator (or those named with
``--models``), SBC at the documented sizes (``psm_bayes.sbc.config.SBC_SIZES``,
else the catalogue's ``sizes``) on the catalogue's main latents, decided by
the simultaneous ECDF band test (arviz_stats) at family-wise ``--alpha``, and
the posterior contraction (posterior sd / prior sd; target <= 0.5). Models
in ``psm_bayes.sbc.table.FAULTS`` get a second row with a SUBTLE fault (one
prior scale 1.5x wider in the simulator than in the fitted model) that the
same test must reject. Prints a markdown table (and writes it with
``--out``, atomically).

Usage::

    .venv/bin/python benchmarks/sbc_table.py [--replicates 200] [--models persona_selection power_law]
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
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)

    from psm_bayes.inference import configure_jax
    from psm_bayes.sbc import SBCConfig
    from psm_bayes.sbc.table import calibration_table, markdown

    configure_jax()
    cfg = SBCConfig(num_draws=args.draws, thin=args.thin, num_warmup=args.warmup)
    table = calibration_table(args.models, replicates=args.replicates, seed=args.seed, config=cfg,
                              alpha=args.alpha, faults=not args.no_faults, progress=True, method=args.method,
                              fault_replicates=args.fault_replicates)
    text = (f"SBC table: L={cfg.num_draws}, thin={cfg.thin}, warm-up={cfg.num_warmup}, family-wise alpha="
            f"{args.alpha}, seed={args.seed}\n\n" + markdown(table) + "\n")
    print()
    print(text)
    if args.out:
        from psm_bayes.io import save_text

        save_text(text, args.out)


if __name__ == "__main__":
    main()

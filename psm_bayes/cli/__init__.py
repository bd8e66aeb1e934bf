"""The ``psm-bayes`` command line: one module per subcommand, one error path.

Each command module exposes ``register(subparsers)``; :func:`build_parser`
assembles them (importing the CLI stays cheap: heavy libraries load inside
the command that needs them) and :func:`main` parses, configures JAX
explicitly (:func:`psm_bayes.inference.configure_jax`) and runs the command
through :func:`psm_bayes.cli.errors.run_command`: user errors are one line
and exit status 2, tracebacks only with ``--debug``.

Adding a command: a module ``psm_bayes/cli/<name>.py`` with ``register`` and
its name in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from psm_bayes.cli.errors import Parser, run_command

COMMANDS: tuple[str, ...] = ("simulate", "fit", "diagnose", "score", "run", "study", "sbc")
"""Subcommand modules of :mod:`psm_bayes.cli`, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    parser = Parser(prog="psm-bayes", description="Bayesian persona-selection models.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"psm_bayes.cli.{name}").register(sub)
    for p in sub.choices.values():  # --debug is also accepted after the command name
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv``, configure JAX, run the chosen subcommand; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return int(exc.code or 0)
    from psm_bayes.inference import configure_jax
    from psm_bayes.integrity import use_cache_root

    configure_jax()
    use_cache_root()  # matplotlib's cache under $PSM_BAYES_CACHE too, before anything imports matplotlib
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
